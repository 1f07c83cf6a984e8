//! Command-line grammar (clap). Parsing only: every command's behaviour lives in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run any OCI image as a container or as a KVM microVM, and compare the two.
#[derive(Parser, Debug)]
#[command(
    name = "vessel",
    version,
    about,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// Data root for images and instances
    #[arg(
        long,
        global = true,
        env = "VESSEL_ROOT",
        default_value = "/var/lib/vessel"
    )]
    pub root: PathBuf,
    /// Debug logging (same as --log-level debug)
    #[arg(short = 'D', long, global = true)]
    pub debug: bool,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive)
    #[arg(long, global = true)]
    pub log_level: Option<String>,
}

pub use crate::template::Format;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create and start an instance from an image
    Run(Box<RunArgs>),
    /// Create an instance without starting it
    Create(Box<RunArgs>),
    /// Start created or stopped instances
    Start {
        /// Attach to the instance's output and wait for it
        #[arg(short, long)]
        attach: bool,
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// List instances
    Ps(PsArgs),
    /// Show an instance's output
    Logs(LogsArgs),
    /// Run a command in a running instance
    Exec(ExecArgs),
    /// Attach this terminal's input and output to a running instance
    Attach(AttachArgs),
    /// Copy files between a running container and the host: `cp CONTAINER:SRC DEST`,
    /// `cp SRC CONTAINER:DEST`; `-` for a tar stream on stdout or stdin
    Cp {
        /// CONTAINER:PATH, a host path, or - (a tar stream on stdin)
        src: String,
        /// CONTAINER:PATH, a host path, or - (a tar stream on stdout)
        dest: String,
    },
    /// List an instance's published ports (PRIVATE/PROTO -> HOSTIP:HOSTPORT)
    Port {
        /// Instance
        instance: String,
        /// Only this port (PORT or PORT/PROTO)
        port: Option<String>,
    },
    /// List the files a container changed: A added, C changed, D deleted
    Diff {
        /// Instance
        instance: String,
    },
    /// Create an image from a container's changes
    Commit {
        /// Author (e.g. "Jane Doe <jane@example.com>")
        #[arg(short, long)]
        author: Option<String>,
        /// Apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV,
        /// WORKDIR, USER, LABEL, STOPSIGNAL)
        #[arg(short, long = "change")]
        changes: Vec<String>,
        /// Commit message
        #[arg(short, long)]
        message: Option<String>,
        /// Pause the container while committing (--pause=false: do not)
        #[arg(short, long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
        pause: bool,
        /// Instance
        instance: String,
        /// REPOSITORY[:TAG] for the new image
        reference: Option<String>,
    },
    /// Write a running container's filesystem to a tar archive
    Export {
        /// Write to FILE instead of stdout
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Instance
        instance: String,
    },
    /// Show how an image was made, newest step first
    History {
        /// Show the full commands and ids
        #[arg(long)]
        no_trunc: bool,
        /// Only show image ids
        #[arg(short, long)]
        quiet: bool,
        /// Image
        image: String,
    },
    /// (internal) the container side of `cp`, in the container's mount namespace (or in
    /// a view of its file system the process mounts for itself)
    #[command(name = "__cp", hide = true)]
    CpServe {
        /// The container's init
        #[arg(long, required_unless_present = "view", conflicts_with = "view")]
        pid: Option<i32>,
        /// The view to mount (JSON of vessel_engine::view::View)
        #[arg(long)]
        view: Option<String>,
        /// Copy this directory of the view into --into (a new volume's copy-up)
        #[arg(long, requires = "into", requires = "view", conflicts_with_all = ["out", "dest"])]
        copy_up: Option<String>,
        /// The host directory a copy-up fills
        #[arg(long)]
        into: Option<std::path::PathBuf>,
        /// Added to the owners a copy-up gives (a --userns container's base id)
        #[arg(long, default_value_t = 0)]
        shift: u32,
        /// Write the Engine API's stat of this path to stdout (JSON)
        #[arg(long, conflicts_with_all = ["dest", "out", "copy_up"])]
        stat: Option<String>,
        /// Write a tar of this path to stdout
        #[arg(long, conflicts_with = "dest", required_unless_present_any = ["dest", "copy_up", "stat"])]
        out: Option<String>,
        /// Place the tar read from stdin here
        #[arg(long = "in")]
        dest: Option<String>,
        /// The tar holds a directory's contents
        #[arg(long)]
        contents: bool,
    },
    /// Stop running instances (stop signal, then SIGKILL after a timeout)
    Stop {
        /// Seconds to wait before killing
        #[arg(short = 't', long = "time")]
        time: Option<u32>,
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Send a signal to running instances
    Kill {
        /// Signal name or number
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Restart instances: stop (as `stop` does), then start them in the background
    Restart {
        /// Seconds to wait for each to stop before SIGKILL (default: its --stop-timeout)
        #[arg(short = 't', long = "time")]
        time: Option<u32>,
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Freeze every process of running instances
    Pause {
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Thaw paused instances
    Unpause {
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Rename an instance
    Rename {
        /// The instance
        instance: String,
        /// Its new name
        new_name: String,
    },
    /// Show the processes of a running instance (ps -ef's columns)
    Top {
        /// The instance
        instance: String,
        /// ps options (none are supported: vessel reads /proc itself)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Show what running instances use: CPU, memory, network and block I/O, processes
    Stats(StatsArgs),
    /// Change the limits of instances while they run (or before they start)
    Update(UpdateArgs),
    /// Wait for instances to stop and print their exit codes
    Wait {
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Remove instances
    Rm {
        /// Kill and remove running instances
        #[arg(short, long)]
        force: bool,
        /// Remove the instances' anonymous volumes too (named ones stay)
        #[arg(short, long)]
        volumes: bool,
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Show instances' state and configuration as JSON
    Inspect {
        /// Format the output: json, or a template per document (`{{.State.Status}}`)
        #[arg(short, long, value_name = "json|TEMPLATE")]
        format: Option<Format>,
        /// Instances (or images)
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Measure container vs microVM on this host, side by side, for one image
    Compare(CompareArgs),
    /// Serve the Docker Engine API on a Unix socket (for docker, docker-py, Compose)
    Serve {
        /// Where to listen: unix:///PATH, or fd:// for the socket systemd passes (socket
        /// activation, deploy/vessel.socket); TCP is refused
        #[arg(short = 'H', long = "host", default_value = "unix:///run/vessel.sock")]
        host: String,
        /// Group allowed to use the socket (mode 0660); root only without one
        #[arg(long)]
        group: Option<String>,
    },
    /// runc-compatible low-level runtime commands on OCI bundles (as `vessel-runc`)
    Oci(OciArgs),
    /// (internal) the per-instance monitor process
    #[command(name = "__monitor", hide = true)]
    Monitor {
        /// Instance id (none with --standby)
        #[arg(required_unless_present = "standby")]
        id: Option<String>,
        /// Start ahead of need, and take the instance (and its attach clients) from the
        /// control socket on descriptor 4
        #[arg(long, conflicts_with_all = ["id", "attached", "attach_fds"])]
        standby: bool,
        /// Copy output to our stdout/stderr as well as the log
        #[arg(long)]
        attached: bool,
        /// Attach-socket clients connected before the start, on these descriptors
        #[arg(long = "attach-fd")]
        attach_fds: Vec<i32>,
    },
    /// (internal) an exec for `vessel serve`: runs SPEC (JSON) in instance ID (fd 3: control)
    #[command(name = "__exec", hide = true)]
    ExecHelper {
        /// Instance id
        id: String,
        /// The exec's spec, as JSON
        spec: String,
    },
    /// (internal) the end of a detached container's monitor, run by vessel-shim
    #[command(name = "__monitor-finish", hide = true)]
    MonitorFinish {
        /// Instance id
        id: String,
        /// The container's exit status
        #[arg(long, allow_negative_numbers = true)]
        code: i32,
    },
    /// (internal) the health checker of instance ID, started by its monitor
    #[command(name = "__health", hide = true)]
    Health {
        /// Instance id
        id: String,
    },
    /// (internal) a microVM's jailed VMM process, started by its monitor (fds 3-5 and up)
    #[command(name = "__vmm", hide = true)]
    Vmm,
    /// Lifecycle events of instances, images, volumes and networks (as `docker events`)
    Events {
        /// Show events from this time on: Unix seconds, RFC 3339, or a duration ago (10m)
        #[arg(long)]
        since: Option<String>,
        /// Stop at this time (without it, follow until interrupted)
        #[arg(long)]
        until: Option<String>,
        /// KEY=VALUE: type, event, container, image, volume, network, label
        #[arg(short = 'f', long = "filter")]
        filters: Vec<String>,
        /// Output format (json: one Docker-shaped event per line; or a template)
        #[arg(long, default_value = "table", value_name = "table|json|TEMPLATE")]
        format: Format,
    },
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage named volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage instances as a whole
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Disk use and clean-up across images, instances, volumes and networks
    #[command(subcommand)]
    System(SystemCommand),
    /// System-wide information: instances by state, images, the host and the engine
    Info {
        /// Format the output: json, or a template (`{{.ServerVersion}}`, `{{json .}}`)
        #[arg(short, long, value_name = "json|TEMPLATE")]
        format: Option<Format>,
    },
    /// List images
    Images(ImagesArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag {
        /// Image name or id
        source: String,
        /// New name[:tag]
        target: String,
    },
    /// Build an image from a Dockerfile and a context directory
    Build(BuildArgs),
    /// Import a root filesystem (directory or tar, optionally compressed) as an image
    Import(ImportArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Log in to a registry (credentials kept in Docker's config.json or its helper)
    Login(LoginArgs),
    /// Log out from a registry
    Logout {
        /// The registry (Docker Hub if none)
        server: Option<String>,
    },
    /// Load images from a docker-archive or oci-archive tar
    Load(LoadArgs),
    /// Save images to a docker-archive or oci-archive tar
    Save(SaveArgs),
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Remove every instance that is not running
    Prune {
        /// Do not ask (vessel never asks)
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Disk used by images, instances, volumes and the build cache
    Df,
    /// System-wide information (as `vessel info`)
    Info {
        /// Format the output: json, or a template (`{{.ServerVersion}}`, `{{json .}}`)
        #[arg(short, long, value_name = "json|TEMPLATE")]
        format: Option<Format>,
    },
    /// Remove stopped instances, unused networks, dangling images (all unused ones with
    /// --all) and, with --volumes, unused volumes
    Prune {
        /// Remove every image no instance uses, not only untagged ones
        #[arg(short, long)]
        all: bool,
        /// Remove unused volumes too
        #[arg(long)]
        volumes: bool,
        /// Do not ask (vessel never asks)
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume (a random name if none is given); an existing one is kept as is
    Create {
        /// Driver: only `local`
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Label KEY=VALUE
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Driver options (the local driver of vessel takes none)
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
        /// Volume name
        name: Option<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only show names
        #[arg(short, long)]
        quiet: bool,
        /// Filter: dangling=true|false, name=TEXT, label=KEY[=VALUE]
        #[arg(short, long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
    },
    /// Show volumes as JSON
    Inspect {
        /// Format the output: json, or a template per document (`{{.State.Status}}`)
        #[arg(short, long, value_name = "json|TEMPLATE")]
        format: Option<Format>,
        /// Volume names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while an instance, even a stopped one, uses them)
    #[command(alias = "remove")]
    Rm {
        /// Accepted for Docker's sake: a missing volume is then not an error
        #[arg(short, long)]
        force: bool,
        /// Volume names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the volumes no instance uses (only anonymous ones without --all)
    Prune {
        /// Remove named volumes too
        #[arg(short, long)]
        all: bool,
        /// Do not ask (vessel never asks)
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a bridge network
    Create {
        /// IPv4 subnet in CIDR form (default: a free /24 in 10.89.0.0/16)
        #[arg(long)]
        subnet: Option<String>,
        /// MTU of the bridge and of every instance's link on it (default 65521, the
        /// most a tap takes, near loopback's: the bridge never leaves the host; 1500 is
        /// Docker's default)
        #[arg(long)]
        mtu: Option<u32>,
        /// Driver option KEY=VALUE: `mtu` or `com.docker.network.driver.mtu` (as Podman
        /// and Docker spell --mtu)
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
        /// Set metadata on the network
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Record the network as attachable (any container may join a local bridge
        /// network: as in Docker, this changes only what inspect shows)
        #[arg(long)]
        attachable: bool,
        /// Network name
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only show names
        #[arg(short, long)]
        quiet: bool,
        /// Output format
        #[arg(long, default_value = "table", value_name = "table|json|TEMPLATE")]
        format: Format,
    },
    /// Show networks and the instances on them as JSON
    Inspect {
        /// Format the output: json, or a template per document (`{{.State.Status}}`)
        #[arg(short, long, value_name = "json|TEMPLATE")]
        format: Option<Format>,
        /// Network names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while instances use them)
    #[command(alias = "remove")]
    Rm {
        /// Network names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network no instance uses
    Prune,
    /// Connect an instance to one more network (a running container gets the interface
    /// at once, a stopped one at its next start)
    Connect {
        /// Another name of the instance on the network
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// IPv4 address on the network, instead of the next free one
        #[arg(long, value_name = "ADDRESS")]
        ip: Option<std::net::Ipv4Addr>,
        /// Network name or id
        network: String,
        /// Instance name or id
        instance: String,
    },
    /// Disconnect an instance from a network
    Disconnect {
        /// Take it off the network even if its interface cannot be taken down
        #[arg(short, long)]
        force: bool,
        /// Network name or id
        network: String,
        /// Instance name or id
        instance: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show an image's configuration (Env, Cmd, Entrypoint, WorkingDir, User...) as JSON
    Inspect {
        /// Format the output: json, or a template per document (`{{.State.Status}}`)
        #[arg(short, long, value_name = "json|TEMPLATE")]
        format: Option<Format>,
        /// Image names or ids
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove one or more images
    Rm(RmiArgs),
    /// Import a root filesystem as an image
    Import(ImportArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Load images from a tar archive
    Load(LoadArgs),
    /// Save images to a tar archive
    Save(SaveArgs),
    /// Remove the images no instance uses: untagged ones, or every one with --all
    Prune {
        /// Remove every unused image, not only untagged ones
        #[arg(short, long)]
        all: bool,
        /// Do not ask (vessel never asks)
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, default_value = "table", value_name = "table|json|TEMPLATE")]
    pub format: Format,
    /// Show full image ids
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove even if in use or referenced by several tags
    #[arg(short, long)]
    pub force: bool,
    /// Image names or ids
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name[:tag] for the new image
    #[arg(short, long = "tag")]
    pub tag: Option<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short, long = "file")]
    pub file: Option<PathBuf>,
    /// A build argument, KEY=VALUE (or KEY: its value from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last one)
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, taking nothing from the build cache
    #[arg(long)]
    pub no_cache: bool,
    /// Pull every FROM image from its registry, even one already in the store
    #[arg(long)]
    pub pull: bool,
    /// The image's platform: linux/amd64, the only one vessel builds
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print only the new image's id
    #[arg(short, long)]
    pub quiet: bool,
    /// Where RUN steps run: container, or vm (each RUN in a microVM of its own kernel)
    #[arg(long, value_enum, default_value_t = IsolationArg::Container)]
    pub isolation: IsolationArg,
    /// The build context directory
    pub context: PathBuf,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, STOPSIGNAL)
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// Root filesystem: a directory, or a tar / tar.gz / tar.zst file
    pub source: PathBuf,
    /// Name[:tag] for the new image
    pub reference: Option<String>,
}

/// Registry connection options.
#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Registry user name (or VESSEL_REGISTRY_USER)
    #[arg(long, env = "VESSEL_REGISTRY_USER")]
    pub username: Option<String>,
    /// Registry password (or VESSEL_REGISTRY_PASSWORD)
    #[arg(long, env = "VESSEL_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Use plain HTTP (always on for localhost and 127.0.0.0/8)
    #[arg(long)]
    pub insecure: bool,
    /// Print no progress
    #[arg(short, long)]
    pub quiet: bool,
}

/// `run --pull`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// When the image is not in the store (Docker's default)
    Missing,
    /// Always, before creating the instance
    Always,
    /// Never: an image not in the store is an error
    Never,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry (Docker Hub if none)
    pub server: Option<String>,
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible to every user in the process list: prefer --password-stdin)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// Use plain HTTP (always on for localhost and 127.0.0.0/8)
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The image's platform: linux/amd64 (the only one vessel runs)
    #[arg(long)]
    pub platform: Option<String>,
    /// [registry/]repository[:tag|@digest]
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Local image name or id
    pub image: String,
    /// Destination [registry/]repository[:tag]; defaults to the image name
    pub destination: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this tar archive instead of standard input
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Print no progress
    #[arg(short, long)]
    pub quiet: bool,
}

/// Archive layout written by `save`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// docker save layout (manifest.json), also readable as OCI
    Docker,
    /// OCI image layout (index.json, oci-layout)
    Oci,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive layout
    #[arg(long, value_enum, default_value_t = ArchiveKind::Docker)]
    pub format: ArchiveKind,
    /// Images to save
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Which isolation runs an instance.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationArg {
    /// Namespaces and cgroups on the host kernel
    Container,
    /// A KVM microVM with its own guest kernel
    Vm,
}

/// `run` and `create`.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run in the background and print the instance id
    #[arg(short, long)]
    pub detach: bool,
    /// Keep standard input open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the instance when it exits
    #[arg(long)]
    pub rm: bool,
    /// Name the instance
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Hostname
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Bind mount a host path (/host:/inside[:ro]), a named volume (NAME:/inside[:ro],
    /// made if missing), or a new anonymous volume (/inside; `rm -v` takes it)
    #[arg(short, long = "volume")]
    pub volumes: Vec<String>,
    /// Attach a mount: type=bind|volume|tmpfs,source=...,target=...[,readonly]
    /// [,tmpfs-size=...][,tmpfs-mode=...]
    #[arg(long = "mount", value_name = "SPEC")]
    pub mounts: Vec<String>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (e.g. 64m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit (e.g. 0.5)
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// container (default) or vm
    #[arg(long, value_enum, default_value_t = IsolationArg::Container)]
    pub isolation: IsolationArg,
    /// Run an init as PID 1 that forwards signals and reaps zombies
    #[arg(long)]
    pub init: bool,
    /// Run in a private user namespace (root inside is unprivileged outside)
    #[arg(long)]
    pub userns: bool,
    /// Network: "bridge" (the default network), a network's name, "none" (loopback
    /// only) or "host" (share the host's); given again, more bridge networks to join
    /// (a container only)
    #[arg(long = "network", alias = "net", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Add a network-scoped alias for the container (a user-defined network only)
    #[arg(long = "network-alias", alias = "net-alias", value_name = "NAME")]
    pub network_aliases: Vec<String>,
    /// IPv4 address on the (first, user-defined) network, instead of the next free one
    #[arg(long, value_name = "ADDRESS")]
    pub ip: Option<String>,
    /// Publish a port on the host: [[ip:]hostPort:]containerPort[/tcp|udp] (no host
    /// port: a random free one)
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every exposed port (the image's and --expose) on a random host port
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports (PORT[/PROTO], FIRST-LAST[/PROTO])
    #[arg(long = "expose", value_name = "PORT")]
    pub expose: Vec<String>,
    /// Command to run to check health (in the instance, by /bin/sh -c)
    #[arg(long = "health-cmd", value_name = "COMMAND")]
    pub health_cmd: Option<String>,
    /// Time between health checks (ms|s|m|h; default 30s)
    #[arg(long = "health-interval", value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3)
    #[arg(
        long = "health-retries",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub health_retries: Option<i64>,
    /// Maximum time a health check may run (ms|s|m|h; default 30s)
    #[arg(long = "health-timeout", value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Start period: failures in it do not count toward the retries (ms|s|m|h; default 0s)
    #[arg(long = "health-start-period", value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Time between health checks during the start period (ms|s|m|h; default 5s)
    #[arg(long = "health-start-interval", value_name = "DURATION")]
    pub health_start_interval: Option<String>,
    /// Disable any health check the image specifies
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Override the image's entrypoint ("" clears it)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Signal that stop sends first
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// VM: boot this kernel (bzImage or ELF vmlinux) instead of the default guest kernel
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// VM: show the guest's console output on the terminal
    #[arg(long)]
    pub console: bool,
    /// Seconds stop waits before SIGKILL
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// Logging driver: json-file (the default) or none
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver option: max-size=SIZE (e.g. 10m; -1: no limit), max-file=N
    /// (default: max-size=20m, max-file=5)
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE or KEY lines; # comments);
    /// -e flags win over it
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Set a label (KEY=VALUE or KEY), over the image's labels
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add a line to /etc/hosts (NAME:IP; IP may be host-gateway)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// Nameserver for /etc/resolv.conf (replaces the host's)
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// Add a Linux capability (NAME, CAP_NAME or ALL; containers only)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (NAME, CAP_NAME or ALL; containers only)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Resource limit NAME=SOFT[:HARD], e.g. nofile=1024:2048 (containers only)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Mount a tmpfs at PATH (noexec,nosuid,nodev unless OPTIONS say; containers only)
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Write the instance id to FILE (which must not exist)
    #[arg(long = "cidfile", value_name = "FILE")]
    pub cidfile: Option<PathBuf>,
    /// Restart policy: no, always, unless-stopped, on-failure[:MAX-RETRIES] (Docker's
    /// backoff; always and unless-stopped instances start again with `vessel serve`)
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Read labels from a file (KEY=VALUE lines; # comments); -l flags win over it
    #[arg(long = "label-file", value_name = "FILE")]
    pub label_files: Vec<PathBuf>,
    /// Search domain for /etc/resolv.conf (replaces the host's)
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Give the container every capability, every host device, no seccomp filter and
    /// writable /sys (no isolation from the host's kernel; containers only)
    #[arg(long)]
    pub privileged: bool,
    /// Give a host device: HOST[:CONTAINER[:PERMISSIONS]], permissions of r, w, m
    /// (containers only)
    #[arg(long = "device", value_name = "HOST[:CONTAINER[:PERMS]]")]
    pub devices: Vec<String>,
    /// no-new-privileges[=true|false], seccomp=unconfined|PROFILE.json,
    /// systempaths=unconfined, apparmor=unconfined, label=disable (containers only)
    #[arg(long = "security-opt", value_name = "OPTION")]
    pub security_opts: Vec<String>,
    /// Set a namespaced kernel parameter: KEY=VALUE (net.*, kernel.shm*, kernel.msg*,
    /// kernel.sem, fs.mqueue.*; containers only)
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctls: Vec<String>,
    /// PID namespace: host (see and signal the host's processes) or private (containers
    /// only)
    #[arg(long, value_name = "MODE")]
    pub pid: Option<String>,
    /// IPC namespace and /dev/shm: private, shareable, host or none (containers only)
    #[arg(long, value_name = "MODE")]
    pub ipc: Option<String>,
    /// Size of /dev/shm (e.g. 128m; default 64m; containers only)
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Add a supplementary group (a name in the image's /etc/group, or an id; containers
    /// only)
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// CPU weight relative to other containers (2 to 262144, default 1024; containers
    /// only)
    #[arg(
        long = "cpu-shares",
        short = 'c',
        value_name = "WEIGHT",
        allow_negative_numbers = true
    )]
    pub cpu_shares: Option<i64>,
    /// CPUs the container may run on, e.g. 0-2,4 (containers only)
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory plus swap limit (needs --memory; -1: unlimited swap; default: no swap;
    /// containers only)
    #[arg(long = "memory-swap", value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Pull the image first: missing (when it is not in the store), always, never
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// The image's platform: linux/amd64 (the only one vessel runs)
    #[arg(long)]
    pub platform: Option<String>,
    /// Image name or id
    pub image: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Which isolations `compare` runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareIsolation {
    /// Both, side by side
    Both,
    /// Containers only
    Container,
    /// MicroVMs only
    Vm,
}

/// `compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Samples per timed measurement
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Also write the report as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a self-contained HTML report with charts to FILE
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Which isolations to measure
    #[arg(long, value_enum, default_value_t = CompareIsolation::Both)]
    pub isolation: CompareIsolation,
    /// Memory budget for the "idle instances that fit" extrapolation (e.g. 1g)
    #[arg(long, default_value = "1g")]
    pub budget: String,
    /// Print no progress
    #[arg(short, long)]
    pub quiet: bool,
    /// Image name or id
    pub image: String,
    /// Your own workload, timed like `true` (after --)
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all instances (default: running only)
    #[arg(short, long)]
    pub all: bool,
    /// Only show ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, default_value = "table", value_name = "table|json|TEMPLATE")]
    pub format: Format,
    /// Show full ids and commands
    #[arg(long)]
    pub no_trunc: bool,
    /// Show the N instances created last, in any state (0 or less: no limit)
    #[arg(
        short = 'n',
        long = "last",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub last: Option<i64>,
    /// Show the instance created last, in any state (-n 1; -n wins)
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Only instances matching KEY=VALUE: id, name, label (KEY or KEY=VALUE), status
    /// (created, running, paused, restarting, exited, dead), ancestor (an image),
    /// exited (an exit code), isolation, health (starting, healthy, unhealthy, none);
    /// the same key again widens, another narrows
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Show sizes: what each instance wrote (its writable layer, or a microVM's writable
    /// disk as allocated) and, as virtual, that plus its image
    #[arg(short, long)]
    pub size: bool,
}

/// `stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one sample (over one second) and exit
    #[arg(long)]
    pub no_stream: bool,
    /// Show every instance, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Output format
    #[arg(long, default_value = "table", value_name = "table|json|TEMPLATE")]
    pub format: Format,
    /// Show full ids
    #[arg(long)]
    pub no_trunc: bool,
    /// Instances (default: every running one)
    pub instances: Vec<String>,
}

/// `update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 512m)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU quota (e.g. 1.5)
    #[arg(long)]
    pub cpus: Option<String>,
    /// Process limit (-1: unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// CPU weight (2 to 262144)
    #[arg(long = "cpu-shares", short = 'c')]
    pub cpu_shares: Option<i64>,
    /// CPUs allowed, e.g. 0-2,4
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// New restart policy: no, always, unless-stopped, on-failure[:MAX-RETRIES]
    #[arg(long)]
    pub restart: Option<String>,
    /// Instances
    #[arg(required = true)]
    pub instances: Vec<String>,
}

/// `logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow the output while the instance runs
    #[arg(short, long)]
    pub follow: bool,
    /// Prefix each line with its timestamp
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only the last N lines
    #[arg(short = 'n', long)]
    pub tail: Option<usize>,
    /// Instance
    pub instance: String,
}

/// `attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach standard input
    #[arg(long)]
    pub no_stdin: bool,
    /// Pass the signals attach receives on to the instance (not with a terminal;
    /// --sig-proxy=false: do not)
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// The key sequence that detaches, leaving the instance running (default
    /// ctrl-p,ctrl-q)
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// The instance
    pub instance: String,
}

/// `exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep standard input open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Instance
    pub instance: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `vessel oci`: runc's command line (the `vessel-oci` crate parses it).
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct OciArgs {
    /// runc's global flags, command and arguments (`vessel oci --help` lists them)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}
