//! `build`: the flags checked and turned into [`vessel_build::BuildOptions`]; the build
//! itself is `vessel_build`'s.

use std::io::Write;

use crate::cli::BuildArgs;
use crate::{CmdResult, Failure, EXIT_ENGINE};
use vessel_engine::Engine;

/// Prints progress like `docker build --progress=plain`, or nothing with `-q`.
struct Plain {
    quiet: bool,
}

impl vessel_build::Report for Plain {
    fn step(&self, line: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }
    fn output(&self, line: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }
}

/// `vessel build`.
pub fn build(engine: &Engine, a: &BuildArgs) -> CmdResult {
    if let Some(p) = &a.platform {
        super::containers::check_platform(p)?;
    }
    let tag = a
        .tag
        .as_deref()
        .map(|t| {
            t.parse::<vessel_image::Reference>()
                .map_err(|e| Failure::new(EXIT_ENGINE, format!("invalid tag {t:?}: {e}")))
        })
        .transpose()?;
    let mut build_args = Vec::new();
    for kv in &a.build_args {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv.as_str(), None),
        };
        if k.is_empty() {
            return Err(Failure::new(
                EXIT_ENGINE,
                format!("invalid --build-arg {kv:?}: expected KEY=VALUE"),
            ));
        }
        build_args.push((k.to_string(), v));
    }
    let opts = vessel_build::BuildOptions {
        context: a.context.clone(),
        dockerfile: a.file.clone(),
        tag,
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        pull: a.pull,
        isolation: super::containers::isolation_of(a.isolation),
    };
    let built = vessel_build::build(engine, &opts, &Plain { quiet: a.quiet })
        .map_err(|e| Failure::new(e.exit_code(), e))?;
    println!("{}", built.image.id);
    Ok(0)
}
