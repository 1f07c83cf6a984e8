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
