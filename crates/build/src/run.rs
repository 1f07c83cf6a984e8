//! A RUN step: a container or microVM of the image-so-far, through the engine like any
//! instance (catalogue, default network, cgroups), started by this process, its output
//! streamed to the build's report. A container's overlay upper directory is the step's
//! change; a microVM's guest sends its change as a layer tar (see
//! `vessel_agent::protocol::Kind::Changes`), which the VM backend writes to the instance's
//! `changes.tar`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use vessel_engine::backend::Stdio;
use vessel_engine::request::{Isolation, RunRequest};
use vessel_engine::{CreateSpec, Engine};

use crate::{Error, Report, Result};

/// What the RUN container runs.
pub struct RunSpec {
    /// An image with the layers of the image-so-far.
    pub image: String,
    /// argv.
    pub args: Vec<String>,
    /// `K=V`: the build's ENV over the ARGs in scope.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// USER.
    pub user: String,
    /// A container or a microVM.
    pub isolation: Isolation,
}

/// What a successful step changed.
pub enum Changes<'a> {
    /// A container's overlay upper directory.
    Upper(&'a Path),
    /// A microVM's changes: an OCI layer tar from the guest, untrusted.
    Tar(&'a Path),
}

/// How a RUN ended.
pub struct Ran<T> {
    /// Exit code (128 + signal if killed).
    pub code: i32,
    /// The last lines of its output.
    pub tail: Vec<String>,
    /// What `on_upper` made of the upper directory, when the code is 0.
    pub made: Option<T>,
}

const TAIL: usize = 10;

enum Msg {
    Line(String),
    Exited(Result<i32>),
}

/// Runs `spec` to completion; on success, gives `on_changes` what the step changed
/// before the instance is removed. The instance is removed whatever happens.
pub fn run<T>(
    engine: &Engine,
    spec: RunSpec,
    report: &dyn Report,
    on_changes: impl FnOnce(Changes<'_>) -> Result<T>,
) -> Result<Ran<T>> {
    let isolation = spec.isolation;
    let network = vessel_network::Mode::parse("bridge").map_err(|e| Error::Engine(e.into()))?;
    let inst = engine.create(
        CreateSpec {
            image: spec.image.clone(),
            name: None,
        },
        |_, _, id| {
            Ok(RunRequest {
                env: spec.env.clone(),
                workdir: spec.workdir.clone(),
                user: spec.user.clone(),
                hostname: id.get(..12).unwrap_or(id).to_string(),
                network: network.clone(),
                export_changes: isolation == Isolation::Vm,
                ..RunRequest::plain(isolation, spec.args.clone())
            })
        },
    )?;
    let dir = engine.instance_dir(&inst.id);
    let ran: Result<Ran<T>> = (|| {
        let (code, tail) = start_and_wait(engine, &inst, &dir, report)?;
        let made = match (code, isolation) {
            (0, Isolation::Container) => Some(on_changes(Changes::Upper(&dir.join("upper")))?),
            (0, Isolation::Vm) => Some(on_changes(Changes::Tar(&dir.join("changes.tar")))?),
            _ => None,
        };
        Ok(Ran { code, tail, made })
    })();
    let purged = engine.purge(&inst);
    let ran = ran?;
    purged?;
    Ok(ran)
}

fn start_and_wait(
    engine: &Engine,
    inst: &vessel_engine::catalogue::Instance,
    dir: &Path,
    report: &dyn Report,
) -> Result<(i32, Vec<String>)> {
    let io = |op: &'static str| move |e: std::io::Error| Error::io(op, "/dev/null", e);
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io("pipe")(e.into()))?;
    let w2 = w.try_clone().map_err(io("dup"))?;
    let null = std::fs::File::open("/dev/null").map_err(io("open"))?;
    let backend = engine.backend(inst.request.isolation)?;
    let started = backend.start(
        inst,
        dir,
        Stdio::Fds {
            stdin: null.into(),
            stdout: w,
            stderr: w2,
        },
    )?;
    let (tx, rx) = mpsc::channel();
    let mut tail: Vec<String> = Vec::new();
    // Not scoped: a reader left blocked on a pipe something else holds open must not hold
    // up the build; it ends with the process.
    let lines = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::from(r)).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if lines.send(Msg::Line(text)).is_err() {
                break;
            }
        }
    });
    let code = std::thread::scope(|s| {
        let started = &started;
        s.spawn(move || {
            let exit = backend.wait(inst, started).map(|e| e.code);
            let _ = tx.send(Msg::Exited(exit.map_err(Error::from)));
        });
        let mut code = None;
        loop {
            // Once the process is gone, output still in the pipe is read until it stays
            // quiet a moment: something it left behind could hold the pipe open forever.
            let msg = match code {
                None => rx.recv().ok(),
                Some(_) => rx.recv_timeout(Duration::from_millis(300)).ok(),
            };
            match msg {
                Some(Msg::Line(l)) => {
                    report.output(&l);
                    tail.push(l);
                    if tail.len() > TAIL {
                        tail.remove(0);
                    }
                }
                Some(Msg::Exited(c)) => code = Some(c),
                None => break,
            }
        }
        code.unwrap_or_else(|| {
            Err(Error::Internal(
                "the RUN container's wait ended without a status".into(),
            ))
        })
    });
    drop(started);
    Ok((code?, tail))
}
