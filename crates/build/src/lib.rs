//! `vessel build`: an image from a Dockerfile and a context directory, into the store.
//!
//! The Dockerfile is parsed by the `parse-dockerfile` crate; word processing and variable
//! substitution are ours ([`words`]). Each RUN runs in a container of the image-so-far
//! through the engine; COPY, ADD and WORKDIR write through a private overlay of it. Either
//! way the step's overlay upper directory becomes its layer, stored like any other, and
//! the step is recorded in the build cache ([`cache`]) under a key of everything it
//! depends on.

mod builder;
pub mod cache;
mod copy;
pub mod ignore;
mod overlay;
mod run;
mod source;
pub mod words;

use std::path::PathBuf;

pub use builder::build;

/// Build errors. [`Error::exit_code`] follows `docker build`: 1 for a failed build, 125 for
/// bad flags.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag value (`--build-arg`, `--isolation`, ...).
    #[error("{0}")]
    Flag(String),
    /// A step failed: names the Dockerfile and the line.
    #[error("{file}:{line}: {message}")]
    Step {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line of the instruction.
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// The Dockerfile could not be read or is not one.
    #[error("{0}")]
    Dockerfile(String),
    /// From the image store.
    #[error(transparent)]
    Image(#[from] vessel_image::Error),
    /// From the engine (a RUN container).
    #[error(transparent)]
    Engine(#[from] vessel_engine::EngineError),
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

impl Error {
    /// Wraps an I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The exit status `vessel build` ends with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Flag(_) => 125,
            _ => 1,
        }
    }
}

/// Result alias for the builder.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile (`CONTEXT/Dockerfile` if `None`).
    pub dockerfile: Option<PathBuf>,
    /// `-t`: the new image's name.
    pub tag: Option<vessel_image::Reference>,
    /// `--build-arg K=V` (or `K` alone: the caller's environment value), in order.
    pub build_args: Vec<(String, Option<String>)>,
    /// `--target`: the stage to build (the last one if `None`).
    pub target: Option<String>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// `--pull`: pull every `FROM` image from its registry, even one in the store (a
    /// pull that fails fails the build, as Docker's).
    pub pull: bool,
    /// `--isolation`: what runs each `RUN` step, a container or a microVM (whose guest
    /// kernel keeps an untrusted Dockerfile's commands off the host's).
    pub isolation: vessel_engine::request::Isolation,
}

/// Where progress goes (`docker build --progress=plain` style lines).
pub trait Report {
    /// A step or status line (`STEP 3/9: RUN ...`, `--> Using cache`).
    fn step(&self, line: &str);
    /// A line of a RUN's output.
    fn output(&self, line: &str);
}

/// A finished build.
pub struct Built {
    /// The new image.
    pub image: vessel_image::ImageRecord,
    /// How many RUN steps ran (not taken from the cache).
    pub runs: usize,
}
