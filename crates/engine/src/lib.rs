//! The engine: names, ids, the instance catalogue, lifecycle rules, logs. It picks the
//! backend from the request's isolation and never asks which one ran an instance except
//! to dispatch to it.

pub mod access;
pub mod backend;
pub mod bundle;
pub mod catalogue;
pub mod commit;
pub mod config;
pub mod container;
pub mod copy;
pub mod events;
pub mod exec;
pub mod filters;
pub mod health;
pub mod info;
pub mod init;
pub mod inspect;
pub mod lifecycle;
pub use vessel_shim::logs;
pub mod monitor;
pub mod names;
pub mod networks;
pub mod options;
pub mod request;
pub mod restart;
pub mod userdb;
pub mod view;
pub mod vm;
mod vm_exec;
pub mod vm_jail;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vessel_image::{ImageRecord, Store};

pub use self::config::{EngineConfig, RUN_DIR};

use self::backend::Backend;
use self::catalogue::{Catalogue, Instance, Status};
use self::container::ContainerBackend;
use self::request::{Isolation, RunRequest};

/// Engine errors. Each maps to Docker's exit status through [`EngineError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A bad flag value; names the flag.
    #[error("{0}")]
    InvalidFlag(String),
    /// From the image store (image not found, ...).
    #[error(transparent)]
    Image(#[from] vessel_image::Error),
    /// From networking (unknown network, port in use, ...).
    #[error(transparent)]
    Network(#[from] vessel_network::Error),
    /// `--name` already taken.
    #[error(
        "the name {0:?} is already in use by another instance: remove it or choose another name"
    )]
    NameInUse(String),
    /// No instance by that name or id.
    #[error("no such instance: {0}")]
    NoSuchInstance(String),
    /// No volume by that name.
    #[error("no such volume: {0}")]
    NoSuchVolume(String),
    /// An id prefix matching several instances.
    #[error("id prefix {0} matches several instances: give more digits")]
    Ambiguous(String),
    /// The command does not exist in the image.
    #[error("{0}")]
    CommandNotFound(String),
    /// The command exists but cannot be executed.
    #[error("{0}")]
    NotExecutable(String),
    /// An operation the instance's state forbids (`rm` of a running one...).
    #[error("{0}")]
    Conflict(String),
    /// The backend failed.
    #[error("{0}")]
    Backend(String),
    /// The catalogue database failed.
    #[error("instance database {0}: {1}")]
    Db(PathBuf, #[source] rusqlite::Error),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Wraps an I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> EngineError {
        EngineError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Docker's exit status for a failure to run: 127 not found, 126 not executable,
    /// 125 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            EngineError::CommandNotFound(_) => 127,
            EngineError::NotExecutable(_) => 126,
            _ => 125,
        }
    }
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The engine over one data root.
pub struct Engine {
    /// Its settings; `config.root` is the data root.
    config: EngineConfig,
    /// Opened on first use: the monitor never needs it unless it removes (`--rm`).
    store: std::sync::OnceLock<Store>,
    catalogue: Catalogue,
    container: ContainerBackend,
    vm: vm::VmBackend,
    networks: vessel_network::Networks,
    /// Instance directories moved into the trash, deleted when the engine is dropped:
    /// after the monitor's last report, not before it.
    trashed: std::sync::Mutex<Vec<PathBuf>>,
    /// Whether that deletion happens in this process ([`Engine::delete_trash_here`]) or
    /// in a background `rm`.
    trash_here: std::sync::atomic::AtomicBool,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let moved = std::mem::take(self.trashed.get_mut().unwrap_or_else(|e| e.into_inner()));
        let trash = self.config.root.join("trash");
        if *self.trash_here.get_mut() {
            vessel_container::trash::empty_now(&trash, &moved);
        } else {
            vessel_container::trash::empty_soon(&trash, &moved);
        }
    }
}

/// What `create` needs beyond the request.
pub struct CreateSpec {
    /// The image as the user named it.
    pub image: String,
    /// `--name`.
    pub name: Option<String>,
}

impl Engine {
    /// Opens the engine with the settings of `config` (on its data root).
    pub fn open(config: &EngineConfig) -> Result<Engine> {
        Ok(Engine::open_with(
            config,
            None,
            Catalogue::open(&config.root)?,
        ))
    }

    /// [`Engine::open`] without opening any database yet: each is opened on first use.
    /// For a monitor handed its instance, which starts it before it records anything.
    pub fn open_deferred(config: &EngineConfig) -> Engine {
        Engine::open_with(config, None, Catalogue::deferred(&config.root))
    }

    /// [`Engine::open`], opening the image store first: for `vessel run`, whose monitor
    /// (forked just before) opens the catalogue first. Each database is then opened
    /// first by one of the two processes, which rebuilds its WAL index, and then by the
    /// other, which finds it ready; opening the same one at once, one would wait for the
    /// other's rebuild.
    pub fn open_store_first(config: &EngineConfig) -> Result<Engine> {
        let store = Store::open(&config.root)?;
        store.warm();
        Ok(Engine::open_with(
            config,
            Some(store),
            Catalogue::open(&config.root)?,
        ))
    }

    fn open_with(config: &EngineConfig, store: Option<Store>, catalogue: Catalogue) -> Engine {
        let store = store.map(std::sync::OnceLock::from).unwrap_or_default();
        let networks = || vessel_network::Networks::new(config.network_dir.clone());
        let container = ContainerBackend::new(
            config.run_dir.join("runtime"),
            networks(),
            config.init.clone(),
            config.entry.clone(),
        );
        Engine {
            config: config.clone(),
            store,
            catalogue,
            container,
            vm: vm::VmBackend::new(config, networks()),
            networks: networks(),
            trashed: std::sync::Mutex::new(Vec::new()),
            trash_here: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Readies what starting a container needs (the sealed entry program) ahead of the
    /// start: for a monitor waiting for its instance.
    pub fn prepare_starts(&self) {
        self.container.prepare_starts();
    }

    /// Deletes what [`Engine::purge`] moved into the trash in this process, when the
    /// engine is dropped, instead of in a background `rm`: for a process whose results
    /// are all reported by then (a monitor), which nobody waits for.
    pub fn delete_trash_here(&self) {
        self.trash_here
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Begins slow host work that a start of an instance of `isolation` (in a user
    /// namespace of its own with `userns`) will need and that depends on nothing else,
    /// so that it overlaps with opening the engine, recording the instance and starting
    /// its monitor. Call it first thing; drop what it returns once the instance has
    /// started (or failed to).
    pub fn warm_up(isolation: Isolation, userns: bool) -> Option<Box<dyn std::any::Any>> {
        match isolation {
            // A container in a user namespace is moved into its cgroup by the runtime,
            // whose migration then finds the kernel's cgroup rwsem ready for writers
            // instead of waiting out an RCU grace period (see
            // vessel_container::cgroups::warm). Any other container joins its cgroup
            // without that rwsem (cgroups::SelfJoin); warming would only make the
            // creation of its cgroup wait for the warming write.
            Isolation::Container if userns => vessel_container::warm_cgroup_attach()
                .map(|w| Box::new(w) as Box<dyn std::any::Any>),
            Isolation::Container | Isolation::Vm => None,
        }
    }

    /// The image store.
    pub fn store(&self) -> Result<&Store> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = Store::open(&self.config.root)?;
        Ok(self.store.get_or_init(|| s))
    }

    /// The host's networks.
    pub fn networks(&self) -> &vessel_network::Networks {
        &self.networks
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// The settings the engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The backend for an isolation.
    pub fn backend(&self, isolation: Isolation) -> Result<&dyn Backend> {
        match isolation {
            Isolation::Container => Ok(&self.container),
            Isolation::Vm => Ok(&self.vm),
        }
    }

    /// An instance's directory.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("instances").join(id)
    }

    /// Makes an instance's directory: root's alone (`0700`), as its config, logs, disks
    /// and upper directory are; with a user namespace `0710` and of the group the
    /// container's root maps to, which must reach the files bind-mounted from it.
    fn instance_dir_create(&self, dir: &Path, userns: bool) -> Result<()> {
        let io = |e| EngineError::io("create", dir, e);
        if let Some(parent) = dir.parent() {
            vessel_db::private_dir(parent, 0o711).map_err(io)?;
        }
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        if userns {
            std::os::unix::fs::chown(dir, None, Some(container::USERNS_HOST_ID)).map_err(io)?;
            vessel_db::restrict(dir, 0o710).map_err(io)
        } else {
            vessel_db::restrict(dir, 0o700).map_err(io)
        }
    }

    /// The log file of an instance.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.instance_dir(id).join("log.json")
    }

    /// Resolves the image and records a new instance, with its directory prepared.
    /// `finish` completes the request from the image's config (Cmd, Env, ...).
    pub fn create(
        &self,
        spec: CreateSpec,
        finish: impl FnOnce(
            &ImageRecord,
            &oci_spec::image::ImageConfiguration,
            &str,
        ) -> Result<RunRequest>,
    ) -> Result<Instance> {
        let image = self.store()?.resolve(&spec.image)?;
        let config = self.store()?.config(&image)?;
        tracing::debug!("create: image resolved");
        let id = names::new_id();
        let request = finish(&image, &config, &id)?;
        tracing::debug!("create: request built");
        let backend = self.backend(request.isolation)?;
        let layers = self.store()?.layer_dirs(&image)?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut inst = Instance {
            id: id.clone(),
            name: String::new(),
            image: spec.image.clone(),
            image_id: image.id.to_string(),
            status: Status::Created,
            pid: None,
            monitor: None,
            exit_code: None,
            oom_killed: false,
            created: now,
            started_at: None,
            finished_at: None,
            error: None,
            request,
        };
        match spec.name {
            Some(n) => {
                names::validate(&n)?;
                inst.name = n;
                self.catalogue.insert(&inst)?;
            }
            None => {
                // Generated names can collide; try a few before giving up.
                let mut tries = 0;
                loop {
                    inst.name = names::generate();
                    match self.catalogue.insert(&inst) {
                        Err(EngineError::NameInUse(_)) if tries < 20 => tries += 1,
                        r => break r?,
                    }
                }
            }
        }
        tracing::debug!("create: recorded");
        self.instance_event(&inst, "create", &[]);
        let dir = self.instance_dir(&id);
        // The directory first: a network lease names it, and is reclaimed without it.
        let prepared = self
            .instance_dir_create(&dir, inst.request.userns)
            .and_then(|()| {
                if inst.request.volumes.iter().any(|v| v.name.is_some()) {
                    self.resolve_volumes(&mut inst.request)?;
                    self.catalogue.set_request(&inst.id, &inst.request)?;
                }
                Ok(())
            })
            .and_then(|()| self.attach(&mut inst))
            .and_then(|()| {
                self.store()?
                    .hold(&image.id, &id)
                    .map_err(EngineError::from)
            })
            .and_then(|()| {
                tracing::debug!("create: image held");
                backend.prepare(&inst, &dir, &layers)
            })
            .and_then(|()| self.populate_volumes(&inst, &layers));
        if let Err(e) = prepared {
            // With the anonymous volumes made for it (no other instance uses them yet).
            let _ = self.purge_with(&inst, true);
            return Err(e);
        }
        self.announce(&inst);
        Ok(inst)
    }

    /// Gives a new instance its address and host ports, and records them.
    fn attach(&self, inst: &mut Instance) -> Result<()> {
        // On a user-defined network an instance is also known by its short id, as in
        // Docker (whose inspect lists it among the aliases; Compose looks for it there).
        let user_network = matches!(&inst.request.network,
            vessel_network::Mode::Bridge(n) if n != vessel_network::DEFAULT_NETWORK);
        let short = inst.id.get(..12).unwrap_or(&inst.id).to_string();
        if user_network && !inst.request.network_aliases.contains(&short) {
            inst.request.network_aliases.push(short.clone());
        }
        let req = &inst.request;
        let att = self.networks.attach(
            &inst.id,
            &inst.name,
            &req.network_aliases,
            &req.network,
            &req.ports,
            &self.instance_dir(&inst.id),
            req.ip,
        )?;
        let joined = att.is_some() || !inst.request.join.is_empty();
        inst.request.attachment = att;
        for j in std::mem::take(&mut inst.request.join) {
            let net = j.network;
            let mut names = j.aliases;
            if net != vessel_network::DEFAULT_NETWORK && !names.contains(&short) {
                names.push(short.clone());
            }
            let taken = inst.request.attachments().map(|a| a.interface.as_str());
            let interface = vessel_network::free_interface(&inst.name, taken)?;
            let more = self.networks.attach_more(
                &inst.id,
                &inst.name,
                &names,
                &net,
                &interface,
                &self.instance_dir(&inst.id),
                j.ip,
            )?;
            inst.request.more_networks.push(more);
        }
        if joined {
            self.catalogue.set_request(&inst.id, &inst.request)?;
        }
        Ok(())
    }

    /// Undoes [`Engine::announce`]: drops a departing instance's line from the hosts
    /// files of the instances still on its networks.
    fn forget(&self, inst: &Instance) {
        for att in inst.request.attachments() {
            self.forget_on(inst, att);
        }
    }

    /// Drops an instance's line from the hosts files of the other instances on the
    /// network of `att`. Rewritten in place, since the files are bind-mounted (a rename
    /// would leave the instances the old file); running VMs get theirs anew through their
    /// monitor.
    fn forget_on(&self, inst: &Instance, att: &vessel_network::Attachment) {
        if att.network == vessel_network::DEFAULT_NETWORK {
            return;
        }
        let Ok(peers) = self.networks.peers(att) else {
            return;
        };
        let gone = container::hosts_line(att.ip, &inst.name, inst.request.aliases_on(att));
        for p in peers.iter().filter(|p| p.instance != inst.id) {
            let hosts = self.instance_dir(&p.instance).join("hosts");
            let Ok(text) = std::fs::read_to_string(&hosts) else {
                self.refresh_vm_hosts(&p.instance, Some(&gone));
                continue;
            };
            if !text.lines().any(|l| l == gone) {
                continue;
            }
            let kept: String = text
                .lines()
                .filter(|l| *l != gone)
                .map(|l| format!("{l}\n"))
                .collect();
            if let Err(e) = std::fs::write(&hosts, kept) {
                tracing::warn!(file = %hosts.display(), error = %e, "could not drop a peer from a hosts file");
            }
        }
    }

    /// A running VM's `/etc/hosts` lives in its guest: sends it the whole file anew,
    /// without the line `gone` (a departing instance, whose lease still counts).
    fn refresh_vm_hosts(&self, instance: &str, gone: Option<&str>) {
        let dir = self.instance_dir(instance);
        let peer = match self.catalogue.find(instance) {
            Ok(p) if p.request.isolation == Isolation::Vm && p.status == Status::Running => p,
            _ => return,
        };
        let Ok(hosts) = container::hosts(&self.networks, &peer) else {
            return;
        };
        let hosts: String = hosts
            .lines()
            .filter(|l| Some(*l) != gone)
            .map(|l| format!("{l}\n"))
            .collect();
        if let Err(e) = vm_exec::update_hosts(&dir, &hosts) {
            tracing::warn!(vm = %peer.name, error = %e, "could not update a VM's hosts file");
        }
    }

    /// Makes a new instance on user networks resolvable by name from the instances
    /// already on them.
    fn announce(&self, inst: &Instance) {
        for att in inst.request.attachments() {
            self.announce_on(inst, att);
        }
    }

    /// Makes an instance resolvable by name from the other instances on the network of
    /// `att` (a user network): a line in their `/etc/hosts` (bind-mounted from their
    /// directory, so the change is visible inside at once; a running VM's comes whole
    /// through its monitor).
    fn announce_on(&self, inst: &Instance, att: &vessel_network::Attachment) {
        if att.network == vessel_network::DEFAULT_NETWORK {
            return; // as Docker: no name resolution on the default bridge
        }
        let Ok(peers) = self.networks.peers(att) else {
            return;
        };
        let line = format!(
            "{}\n",
            container::hosts_line(att.ip, &inst.name, inst.request.aliases_on(att))
        );
        for p in peers.iter().filter(|p| p.instance != inst.id) {
            let hosts = self.instance_dir(&p.instance).join("hosts");
            if !hosts.exists() {
                self.refresh_vm_hosts(&p.instance, None);
                continue;
            }
            use std::io::Write;
            let appended = std::fs::OpenOptions::new()
                .append(true)
                .open(&hosts)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = appended {
                tracing::warn!(file = %hosts.display(), error = %e, "could not add a peer to a hosts file");
            }
        }
    }

    /// Finds an instance and refreshes its status from the processes that exist.
    pub fn get(&self, key: &str) -> Result<Instance> {
        let inst = self.catalogue.find(key)?;
        Ok(self.refresh(inst))
    }

    /// Every instance, refreshed.
    pub fn list(&self) -> Result<Vec<Instance>> {
        Ok(self
            .catalogue
            .list()?
            .into_iter()
            .map(|i| self.refresh(i))
            .collect())
    }

    /// Removes every instance that is not running (`container prune`). Returns the ids
    /// removed and the bytes their directories held.
    pub fn container_prune(&self) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for inst in self.list()? {
            if inst.status == Status::Running {
                continue;
            }
            let size = vessel_image::store::dir_size(&self.instance_dir(&inst.id));
            // Gone already (a concurrent rm) is no failure of the prune.
            match self.remove(&inst.id, false) {
                Ok(()) => {
                    bytes += size;
                    removed.push(inst.id);
                }
                Err(EngineError::NoSuchInstance(_)) | Err(EngineError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((removed, bytes))
    }

    /// Removes image (or tag) `key` from the store (see `Store::remove`), with the
    /// microVM root disk built for each image deleted.
    pub fn remove_image(
        &self,
        key: &str,
        force: bool,
    ) -> Result<Vec<vessel_image::store::Removed>> {
        let removed = self.store()?.remove(key, force)?;
        for r in &removed {
            if let vessel_image::store::Removed::Deleted(d) = r {
                vm::remove_image_disk(&self.config.root, &d.to_string());
            }
        }
        Ok(removed)
    }

    /// Removes the images no instance uses (`image prune`): untagged ones, or with `all`
    /// every one. Returns what was untagged and deleted, and the bytes reclaimed.
    pub fn image_prune(&self, all: bool) -> Result<(Vec<vessel_image::store::Removed>, u64)> {
        let store = self.store()?;
        let images_dir = self.config.root.join("images");
        let before = vessel_image::store::dir_size(&images_dir);
        let used: std::collections::HashSet<String> = self
            .catalogue
            .list()?
            .into_iter()
            .map(|i| i.image_id)
            .collect();
        let mut out = Vec::new();
        for image in store.list()? {
            if (!all && !image.tags.is_empty()) || used.contains(&image.id.to_string()) {
                continue;
            }
            // By tag, so that an image with several goes whole; the last one deletes it.
            let keys: Vec<String> = if image.tags.is_empty() {
                vec![image.id.to_string()]
            } else {
                image.tags.clone()
            };
            for k in keys {
                match self.remove_image(&k, false) {
                    Ok(r) => out.extend(r),
                    // Used meanwhile, or gone: kept, or nothing to do.
                    Err(EngineError::Image(
                        vessel_image::Error::InUse(..) | vessel_image::Error::ImageNotFound(_),
                    )) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let after = vessel_image::store::dir_size(&images_dir);
        Ok((out, before.saturating_sub(after)))
    }

    /// The named volumes.
    pub fn volumes(&self) -> volumes::Volumes {
        volumes::Volumes::new(&self.config.root)
    }

    /// The ids of the instances (in any state) that use volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .catalogue
            .list()?
            .into_iter()
            .filter(|i| {
                i.request
                    .volumes
                    .iter()
                    .any(|v| v.name.as_deref() == Some(name))
            })
            .map(|i| i.id)
            .collect())
    }

    /// Removes volume `name`, refused while an instance (even a stopped one) uses it.
    pub fn volume_remove(&self, name: &str) -> Result<()> {
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            let short: Vec<&str> = users.iter().map(|u| &u[..12.min(u.len())]).collect();
            return Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                short.join(", ")
            )));
        }
        self.volumes().remove(name)?;
        self.record_event("volume", "destroy", name, "", Default::default());
        Ok(())
    }

    /// Creates volume `name` (see [`volumes::Volumes::create`]) and records the event.
    pub fn volume_create(
        &self,
        name: Option<&str>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<volumes::VolumeInfo> {
        let v = self.volumes().create(name, labels)?;
        self.record_event("volume", "create", &v.name, "", Default::default());
        Ok(v)
    }

    /// Removes the volumes no instance uses: only anonymous ones unless `all`. Returns
    /// the names removed and the bytes reclaimed.
    pub fn volume_prune(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for v in self.volumes().list()? {
            if !all && !v.labels.contains_key(volumes::ANONYMOUS_LABEL) {
                continue;
            }
            if !self.volume_users(&v.name)?.is_empty() {
                continue;
            }
            let size = volumes::Volumes::size(&v);
            match self.volumes().remove(&v.name) {
                Ok(()) => {}
                // Removed by someone else since the list: not ours to report.
                Err(EngineError::NoSuchVolume(_)) => continue,
                Err(EngineError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
            self.record_event("volume", "destroy", &v.name, "", Default::default());
            bytes += size;
            removed.push(v.name);
        }
        Ok((removed, bytes))
    }

    /// The catalogue (for the monitor).
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Makes the recorded status truthful: a "running" instance whose monitor is gone is
    /// dead (its exit was never recorded), whether or not its process lingers.
    pub fn refresh(&self, mut inst: Instance) -> Instance {
        if inst.status != Status::Running {
            return inst;
        }
        let monitor_alive = inst
            .monitor
            .is_some_and(|(pid, start)| catalogue::alive(pid, start));
        if monitor_alive {
            return inst;
        }
        // Re-read: the monitor may have recorded the exit just now.
        if let Ok(fresh) = self.catalogue.find(&inst.id) {
            if fresh.status != Status::Running {
                return fresh;
            }
        }
        let lingering = self
            .backend(inst.request.isolation)
            .map(|b| b.alive(&inst))
            .unwrap_or(false);
        let why = if lingering {
            "the monitor process died; the instance's processes still run unwatched (vessel rm -f cleans up)"
        } else {
            "the monitor process died before recording the exit status"
        };
        let _ = self.catalogue.set_dead(&inst.id, why);
        inst.status = Status::Dead;
        inst.error = Some(why.to_string());
        inst
    }

    /// Sends a signal to a running instance.
    pub fn kill(&self, inst: &Instance, signal: i32) -> Result<()> {
        if inst.status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "instance {} is not running",
                inst.name
            )));
        }
        if signal == libc::SIGKILL || signal == inst.request.stop_signal {
            self.mark_stopped_by_user(&inst.id);
        }
        self.backend(inst.request.isolation)?.kill(inst, signal)?;
        self.instance_event(inst, "kill", &[("signal", signal.to_string())]);
        if signal == libc::SIGKILL {
            self.thaw_for_signal(inst);
        }
        Ok(())
    }

    /// Waits until the instance is no longer running (or `timeout` passes); returns it.
    pub fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<Instance> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut delay = Duration::from_millis(5);
        loop {
            let inst = self.get(key)?;
            if inst.status != Status::Running {
                return Ok(inst);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(inst);
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout` seconds.
    pub fn stop(&self, key: &str, timeout: Option<u32>) -> Result<Instance> {
        let inst = self.get(key)?;
        // Stopped by the user: its restart policy (also one waiting out its backoff now)
        // does not start it again. Looked at again after the mark: a restart made just
        // before it has started a run by now, which is stopped here.
        self.mark_stopped_by_user(&inst.id);
        let inst = self.get(&inst.id)?;
        if inst.status != Status::Running {
            return Ok(inst);
        }
        let secs = timeout.unwrap_or(inst.request.stop_timeout);
        let backend = self.backend(inst.request.isolation)?;
        let _ = backend.kill(&inst, inst.request.stop_signal);
        self.instance_event(
            &inst,
            "kill",
            &[("signal", inst.request.stop_signal.to_string())],
        );
        // A paused instance cannot act on the signal until it is thawed (Docker's way).
        self.thaw_for_signal(&inst);
        let mut after = self.wait(&inst.id, Some(Duration::from_secs(secs as u64)))?;
        if after.status == Status::Running {
            let _ = backend.kill(&inst, libc::SIGKILL);
            self.instance_event(&inst, "kill", &[("signal", libc::SIGKILL.to_string())]);
            after = self.wait(&inst.id, Some(Duration::from_secs(30)))?;
        }
        self.instance_event(&inst, "stop", &[]);
        Ok(after)
    }

    /// `rm`: refuses a running instance unless `force`, which kills it first. Removes
    /// every trace: processes, cgroups, the directory, the catalogue row, the image hold.
    pub fn remove(&self, key: &str, force: bool) -> Result<()> {
        self.remove_with(key, force, false)
    }

    /// [`Engine::remove`], and with `volumes` (`rm -v`) the instance's anonymous
    /// volumes too, as `--rm` takes them; named volumes stay.
    pub fn remove_with(&self, key: &str, force: bool, volumes: bool) -> Result<()> {
        let mut inst = self.get(key)?;
        if force {
            // As in `stop`: after the mark, no restart comes; one made before it runs.
            self.mark_stopped_by_user(&inst.id);
            inst = self.get(&inst.id)?;
        }
        match inst.status {
            Status::Running if !force => {
                return Err(EngineError::Conflict(format!(
                    "cannot remove running instance {}: stop it first, or use rm -f",
                    inst.name
                )))
            }
            Status::Running => {
                let _ = self
                    .backend(inst.request.isolation)?
                    .kill(&inst, libc::SIGKILL);
                self.thaw_for_signal(&inst);
                // Give the monitor a moment to record the exit and clean up itself.
                self.wait(&inst.id, Some(Duration::from_secs(10)))?;
                if let Some((pid, start)) = inst.monitor {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while catalogue::alive(pid, start) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            _ => {}
        }
        let inst = self.catalogue.find(&inst.id).unwrap_or(inst);
        // A monitor that outlived everything (hung) must not keep writing the catalogue.
        if let Some((pid, start)) = inst.monitor {
            if catalogue::alive(pid, start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                // Let it be gone before cleaning up, so the two never clean up at once.
                let deadline = Instant::now() + Duration::from_secs(2);
                while catalogue::alive(pid, start) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        self.purge_with(&inst, volumes)
    }

    /// Removes an instance's traces without asking (the monitor's `--rm`, failed creates),
    /// with its anonymous volumes if it was made with `--rm`.
    pub fn purge(&self, inst: &Instance) -> Result<()> {
        self.purge_with(inst, inst.request.auto_remove)
    }

    /// [`Engine::purge`], taking the anonymous volumes if `volumes`.
    fn purge_with(&self, inst: &Instance, volumes: bool) -> Result<()> {
        let dir = self.instance_dir(&inst.id);
        if let Ok(b) = self.backend(inst.request.isolation) {
            b.cleanup(inst, &dir)?;
        }
        tracing::debug!("purge: backend cleaned up");
        // Gone from its place at once; its contents are deleted when we are dropped.
        if let Some(moved) =
            vessel_container::trash::move_to_trash(&dir, &self.config.root.join("trash"))
                .map_err(|e| EngineError::io("remove", &dir, e))?
        {
            self.trashed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(moved);
        }
        tracing::debug!("purge: directory trashed");
        self.store()?.release(&inst.id)?;
        tracing::debug!("purge: image released");
        for att in inst.request.attachments() {
            self.networks.disconnect(&inst.id, att)?;
        }
        self.forget(inst);
        // `--rm` and `rm -v` take the instance's anonymous volumes with it, as Docker's do
        // (one another instance still uses stays).
        if volumes || inst.request.auto_remove {
            for v in inst.request.volumes.iter().filter(|v| v.anonymous) {
                let Some(name) = &v.name else { continue };
                let others = self
                    .volume_users(name)
                    .map(|u| u.iter().any(|i| *i != inst.id))
                    .unwrap_or(true);
                if !others && self.volumes().remove(name).is_ok() {
                    self.record_event("volume", "destroy", name, "", Default::default());
                }
            }
        }
        // Only a bridge network hands out leases (one may be left by a crashed attach).
        if matches!(inst.request.network, vessel_network::Mode::Bridge(_)) {
            self.networks.release(&inst.id)?;
        }
        self.catalogue.delete(&inst.id)?;
        self.instance_event(inst, "destroy", &[]);
        Ok(())
    }
}
