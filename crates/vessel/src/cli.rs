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

/// Output format of listing and inspect commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

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
        /// Instances
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Show instances' state and configuration as JSON
    Inspect {
        /// Instances (or images)
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Measure container vs microVM on this host, side by side, for one image
    Compare(CompareArgs),
    /// runc-compatible low-level runtime commands on OCI bundles
    #[command(subcommand)]
    Oci(OciCommand),
    /// (internal) the per-instance monitor process
    #[command(name = "__monitor", hide = true)]
    Monitor {
        /// Instance id
        id: String,
        /// Copy output to our stdout/stderr as well as the log
        #[arg(long)]
        attached: bool,
    },
    /// (internal) the monitor forked by `run` before the instance exists: reports on fd 3,
    /// reads the instance id from fd 4
    #[command(name = "__monitor-early", hide = true)]
    MonitorEarly {
        /// Copy output to our stdout/stderr as well as the log
        #[arg(long)]
        attached: bool,
        /// Forward our stdin
        #[arg(long)]
        stdin: bool,
        /// The instance has a terminal
        #[arg(long)]
        tty: bool,
        /// The instance is removed when it exits (`--rm`)
        #[arg(long)]
        remove: bool,
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
    /// (internal) a microVM's jailed VMM process, started by its monitor (fds 3-5 and up)
    #[command(name = "__vmm", hide = true)]
    Vmm,
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
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
    /// Load images from a docker-archive or oci-archive tar
    Load(LoadArgs),
    /// Save images to a docker-archive or oci-archive tar
    Save(SaveArgs),
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
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show networks and the instances on them as JSON
    Inspect {
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
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show an image's configuration (Env, Cmd, Entrypoint, WorkingDir, User...) as JSON
    Inspect {
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
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
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
    /// Print only the new image's id
    #[arg(short, long)]
    pub quiet: bool,
    /// Where RUN steps run: container (vm is not supported by build yet)
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

#[derive(Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
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
    /// Bind mount a host path: /host:/inside[:ro]
    #[arg(short, long = "volume")]
    pub volumes: Vec<String>,
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
    /// only) or "host" (share the host's)
    #[arg(long)]
    pub network: Option<String>,
    /// Publish a port on the host: [ip:]hostPort:containerPort[/tcp|udp]
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
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
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show full ids and commands
    #[arg(long)]
    pub no_trunc: bool,
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

/// `vessel oci`: the runc command-line interface, so engines can use vessel as a runtime.
#[derive(Subcommand, Debug)]
pub enum OciCommand {
    /// Create a container from a bundle (the process waits for `start`)
    Create {
        /// Bundle directory (holding config.json)
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// Unix socket that receives the pty master (with process.terminal)
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Write the init pid here
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Runtime state directory
        #[arg(long, default_value = "/run/vessel/oci")]
        state_root: PathBuf,
        /// Container id
        id: String,
    },
    /// Start a created container
    Start {
        /// Runtime state directory
        #[arg(long, default_value = "/run/vessel/oci")]
        state_root: PathBuf,
        /// Container id
        id: String,
    },
    /// Print a container's OCI state as JSON
    State {
        /// Runtime state directory
        #[arg(long, default_value = "/run/vessel/oci")]
        state_root: PathBuf,
        /// Container id
        id: String,
    },
    /// Send a signal to a container
    Kill {
        /// Signal every process of the container
        #[arg(short, long)]
        all: bool,
        /// Runtime state directory
        #[arg(long, default_value = "/run/vessel/oci")]
        state_root: PathBuf,
        /// Container id
        id: String,
        /// Signal name or number
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a container (its cgroup and state)
    Delete {
        /// Kill it first if it runs
        #[arg(short, long)]
        force: bool,
        /// Runtime state directory
        #[arg(long, default_value = "/run/vessel/oci")]
        state_root: PathBuf,
        /// Container id
        id: String,
    },
}
