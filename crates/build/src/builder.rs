//! The build, step by step: stages resolved, each instruction applied to the state of its
//! stage (layers and image config), layer steps looked up in and recorded to the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use parse_dockerfile::{Command, HealthcheckArguments, Instruction, JsonOrStringArray, Source};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use vessel_container::Root;
use vessel_engine::Engine;
use vessel_image::{Digest, ImageRecord, LayerRecord, Reference, Store};

use crate::cache::Cache;
use crate::copy::{self, Attrs};
use crate::ignore::Ignore;
use crate::overlay::Overlay;
use crate::source::{self, Confine, Matched, SourceRoot};
use crate::words::{self, Vars};
use crate::{BuildOptions, Built, Error, Report, Result};

/// The Dockerfile and `.dockerignore` are read up to this size.
const MAX_FILE: u64 = 1 << 20;
/// An image config is read up to this size.
const MAX_CONFIG: u64 = 8 << 20;
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image a stage has built so far.
#[derive(Clone)]
struct State {
    layers: Vec<LayerRecord>,
    /// The image config document but its `config` (Docker's extra fields kept).
    doc: Map<String, Value>,
    /// Its `config` object (Docker's Healthcheck, OnBuild and Shell kept).
    cfg: Map<String, Value>,
    /// An image in the store with exactly these layers, if one is known.
    anchor: Option<Digest>,
    /// The cache key of everything up to here.
    key: String,
}

/// Per-stage scope: the ARGs declared in it (`None`: declared, no value).
#[derive(Default)]
struct Scope {
    args: BTreeMap<String, Option<String>>,
    /// Whether CMD was set in this stage (ENTRYPOINT otherwise clears an inherited one).
    cmd_set: bool,
}

struct Builder<'a> {
    engine: &'a Engine,
    store: &'a Store,
    opts: &'a BuildOptions,
    report: &'a dyn Report,
    cache: Cache,
    file: String,
    text: &'a str,
    escape: char,
    context: SourceRoot,
    build_args: BTreeMap<String, String>,
    used_args: BTreeSet<String>,
    meta: BTreeMap<String, String>,
    /// Start offsets of every instruction, in order: an instruction ends where the next
    /// one starts.
    starts: Vec<usize>,
    step: usize,
    total: usize,
    built: Vec<Option<State>>,
    names: Vec<Option<String>>,
    intermediates: Vec<Digest>,
    runs: usize,
}

/// Builds the image `opts` describes, reporting progress to `report`.
pub fn build(engine: &Engine, opts: &BuildOptions, report: &dyn Report) -> Result<Built> {
    if !opts.context.is_dir() {
        return Err(Error::Flag(format!(
            "unable to prepare context: {} is not a directory",
            opts.context.display()
        )));
    }
    let dockerfile = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| opts.context.join("Dockerfile"));
    let text = read_capped(&dockerfile).map_err(|e| {
        Error::Dockerfile(format!("read the Dockerfile {}: {e}", dockerfile.display()))
    })?;
    let file = dockerfile
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let parsed = parse_dockerfile::parse(&text).map_err(|e| Error::Step {
        file: file.clone(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let escape = parsed
        .parser_directives
        .escape
        .as_ref()
        .map(|d| d.value.value)
        .unwrap_or('\\');
    if let Some(s) = &parsed.parser_directives.syntax {
        report.step(&format!(
            "note: the syntax directive ({}) is ignored: vessel has one Dockerfile frontend",
            s.value.value
        ));
    }
    let ignore = match read_capped(&opts.context.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(Error::Dockerfile(format!("read .dockerignore: {e}"))),
    };
    let context = SourceRoot::open(&opts.context, Confine::Beneath, ignore).map_err(Error::Flag)?;
    let mut build_args = BTreeMap::new();
    for (k, v) in &opts.build_args {
        match v {
            Some(v) => {
                build_args.insert(k.clone(), v.clone());
            }
            None => {
                if let Ok(v) = std::env::var(k) {
                    build_args.insert(k.clone(), v);
                }
            }
        }
    }
    let mut b = Builder {
        engine,
        store: engine.store()?,
        opts,
        report,
        cache: Cache::new(engine.root()),
        file,
        text: &text,
        escape,
        context,
        build_args,
        used_args: BTreeSet::new(),
        meta: BTreeMap::new(),
        starts: parsed.instructions.iter().map(start_of).collect(),
        step: 0,
        total: 0,
        built: Vec::new(),
        names: Vec::new(),
        intermediates: Vec::new(),
        runs: 0,
    };
    b.run(&parsed)
}

fn read_capped(p: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(p)?
        .take(MAX_FILE + 1)
        .read_to_string(&mut s)?;
    if s.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other("larger than 1 MiB"));
    }
    Ok(s)
}

/// Where an instruction starts in the text.
fn start_of(i: &Instruction<'_>) -> usize {
    match i {
        Instruction::Add(x) => x.add.span.start,
        Instruction::Arg(x) => x.arg.span.start,
        Instruction::Cmd(x) => x.cmd.span.start,
        Instruction::Copy(x) => x.copy.span.start,
        Instruction::Entrypoint(x) => x.entrypoint.span.start,
        Instruction::Env(x) => x.env.span.start,
        Instruction::Expose(x) => x.expose.span.start,
        Instruction::From(x) => x.from.span.start,
        Instruction::Healthcheck(x) => x.healthcheck.span.start,
        Instruction::Label(x) => x.label.span.start,
        Instruction::Maintainer(x) => x.maintainer.span.start,
        Instruction::Onbuild(x) => x.onbuild.span.start,
        Instruction::Run(x) => x.run.span.start,
        Instruction::Shell(x) => x.shell.span.start,
        Instruction::Stopsignal(x) => x.stopsignal.span.start,
        Instruction::User(x) => x.user.span.start,
        Instruction::Volume(x) => x.volume.span.start,
        Instruction::Workdir(x) => x.workdir.span.start,
        _ => 0,
    }
}

fn chain(prev: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    for p in parts {
        h.update([0]);
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The variables an instruction sees: ARGs in scope under the ENV.
struct Env<'a> {
    env: Vec<(String, String)>,
    args: &'a BTreeMap<String, Option<String>>,
}

impl Vars for Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.args.get(name).cloned().flatten())
    }
}

impl State {
    fn scratch() -> State {
        let mut doc = Map::new();
        doc.insert("architecture".into(), json!("amd64"));
        doc.insert("os".into(), json!("linux"));
        doc.insert("history".into(), json!([]));
        State {
            layers: Vec::new(),
            doc,
            cfg: Map::new(),
            anchor: None,
            key: chain("", &["scratch"]),
        }
    }

    /// The `config` object of the image config.
    fn cfg(&mut self) -> &mut Map<String, Value> {
        &mut self.cfg
    }

    /// The whole config document.
    fn document(&self) -> Value {
        let mut d = self.doc.clone();
        d.insert("config".into(), Value::Object(self.cfg.clone()));
        Value::Object(d)
    }

    fn get_str(&self, field: &str) -> Option<String> {
        self.cfg.get(field)?.as_str().map(str::to_string)
    }

    fn env(&self) -> Vec<(String, String)> {
        self.cfg
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
        let list: Vec<Value> = env.iter().map(|(k, v)| json!(format!("{k}={v}"))).collect();
        self.cfg().insert("Env".into(), Value::Array(list));
    }

    fn shell(&self) -> Vec<String> {
        self.cfg
            .get("Shell")
            .and_then(|s| serde_json::from_value::<Vec<String>>(s.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn workdir(&self) -> String {
        self.get_str("WorkingDir")
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    fn history(&mut self, created_by: &str, empty: bool) {
        let mut h = json!({"created": now(), "created_by": created_by, "comment": "vessel build"});
        if empty {
            h["empty_layer"] = json!(true);
        }
        let list = self.doc.entry("history").or_insert_with(|| json!([]));
        match list.as_array_mut() {
            Some(a) => a.push(h),
            None => *list = json!([h]),
        }
    }

    /// A metadata-only step.
    fn meta(&mut self, created_by: &str) {
        self.key = chain(&self.key, &[created_by]);
        self.history(created_by, true);
    }

    fn apply(&mut self, key: String, layer: Option<LayerRecord>, created_by: &str) {
        self.key = key;
        self.history(created_by, layer.is_none());
        if let Some(l) = layer {
            self.layers.push(l);
            self.anchor = None;
        }
    }
}

/// Lexically cleans an absolute path inside the image.
fn clean_abs(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(s: &str) -> Option<i64> {
    vessel_engine::health::go_duration_ns(s)
}

impl Builder<'_> {
    fn at(&self, offset: usize, message: impl std::fmt::Display) -> Error {
        Error::Step {
            file: self.file.clone(),
            line: self.text[..offset.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
            message: message.to_string(),
        }
    }

    /// Where the instruction starting at `start` ends: at the next one, or the file's end.
    fn end_of(&self, start: usize) -> usize {
        self.starts
            .iter()
            .copied()
            .find(|&s| s > start)
            .unwrap_or(self.text.len())
    }

    /// The instruction's source text starting at `start`: continuations joined, comments
    /// dropped.
    fn source(&self, start: usize) -> String {
        words::shell_text(&self.text[start..self.end_of(start)], self.escape)
            .trim()
            .to_string()
    }

    fn header(&mut self, start: usize) {
        self.step += 1;
        let src = self.source(start);
        let first = src.lines().next().unwrap_or_default();
        self.report
            .step(&format!("STEP {}/{}: {first}", self.step, self.total));
    }

    /// An `ARG NAME[=DEFAULT]` word: its name and value, the `--build-arg` of that name
    /// (then marked used) or else the default.
    fn declare_arg(&mut self, word: &str) -> (String, Option<String>) {
        let (k, default) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word.to_string(), None),
        };
        match self.build_args.get(&k) {
            Some(v) => {
                self.used_args.insert(k.clone());
                let v = v.clone();
                (k, Some(v))
            }
            None => (k, default),
        }
    }

    fn run(&mut self, parsed: &parse_dockerfile::Dockerfile<'_>) -> Result<Built> {
        // ARGs before the first FROM: for FROM lines only (and ARG defaults in stages).
        for a in parsed.global_args() {
            let start = a.arg.span.start;
            let vars = self.meta.clone();
            for w in words::words(&a.arguments.value, self.escape, &vars)
                .map_err(|e| self.at(start, e))?
            {
                let (k, value) = self.declare_arg(&w);
                if let Some(v) = value {
                    self.meta.insert(k, v);
                }
            }
        }
        let stages: Vec<_> = parsed.stages().collect();
        self.names = stages
            .iter()
            .map(|s| {
                s.from
                    .as_
                    .as_ref()
                    .map(|(_, n)| n.value.to_ascii_lowercase())
            })
            .collect();
        let target = match &self.opts.target {
            Some(t) => self
                .names
                .iter()
                .position(|n| n.as_deref() == Some(&t.to_ascii_lowercase()))
                .ok_or_else(|| Error::Flag(format!("target stage {t:?} could not be found")))?,
            None => stages.len().saturating_sub(1),
        };
        // The stages the target needs, and no others (as BuildKit).
        let mut deps: Vec<Vec<usize>> = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let mut d = Vec::new();
            let base = words::word(&s.from.image.value, self.escape, &self.meta)
                .map_err(|e| self.at(s.from.from.span.start, e))?;
            if let Some(j) = self.stage_index(&base) {
                if j >= i {
                    return Err(self.at(
                        s.from.from.span.start,
                        format!("FROM {base}: stage {base} is this one or a later one: a cycle"),
                    ));
                }
                d.push(j);
            }
            for ins in s.instructions {
                if let Instruction::Copy(c) = ins {
                    if let Some(f) = c.options.iter().find(|f| f.name.value == "from") {
                        let v = f
                            .value
                            .as_ref()
                            .map(|v| v.value.to_string())
                            .unwrap_or_default();
                        if let Some(j) = self.stage_index(&v) {
                            if j >= i {
                                return Err(self.at(
                                    c.copy.span.start,
                                    format!("COPY --from={v}: stage {v} is this one or a later one: a cycle"),
                                ));
                            }
                            d.push(j);
                        }
                    }
                }
            }
            deps.push(d);
        }
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(deps[i].iter().copied());
            }
        }
        self.total = needed
            .iter()
            .map(|&i| 1 + stages[i].instructions.len())
            .sum();
        self.built = vec![None; stages.len()];
        for &i in &needed {
            let st = self.stage(i, &stages[i])?;
            self.built[i] = Some(st);
        }
        let mut fin = self.built[target]
            .clone()
            .ok_or_else(|| Error::Internal("the target stage was not built".into()))?;
        let unused: Vec<&String> = self
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k))
            .collect();
        if !unused.is_empty() {
            self.report.step(&format!(
                "[Warning] One or more build-args {unused:?} were not consumed"
            ));
        }
        fin.doc.insert("created".into(), json!(now()));
        let shown = self.opts.tag.as_ref().map(|t| t.to_string());
        self.report
            .step(&format!("COMMIT {}", shown.as_deref().unwrap_or("")));
        let image = commit(
            self.store,
            &fin.document(),
            &fin.layers,
            self.opts.tag.as_ref(),
        )?;
        // Intermediate images of the target's own chain: the final image now holds their
        // layers. Those of other stages stay (untagged), keeping their layers for the cache.
        for id in std::mem::take(&mut self.intermediates) {
            let Ok(img) = self.store.get(&id) else {
                continue;
            };
            if id != image.id && img.layers.iter().all(|l| fin.layers.contains(l)) {
                let _ = self.engine.remove_image(&id.to_string(), false);
            }
        }
        self.report.step(&format!("--> {}", &image.id.hex()[..12]));
        if let Some(t) = &shown {
            self.report.step(&format!("Successfully tagged {t}"));
        }
        Ok(Built {
            image,
            runs: self.runs,
        })
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self
            .names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|&i| i < self.names.len())
    }

    fn stage(&mut self, i: usize, s: &parse_dockerfile::Stage<'_, '_>) -> Result<State> {
        let from = s.from;
        let start = from.from.span.start;
        self.header(start);
        for f in &from.options {
            let v = f
                .value
                .as_ref()
                .map(|v| v.value.to_string())
                .unwrap_or_default();
            match f.name.value.as_ref() {
                "platform" => {
                    let v =
                        words::word(&v, self.escape, &self.meta).map_err(|e| self.at(start, e))?;
                    if v != "linux/amd64" && !v.is_empty() {
                        return Err(self.at(
                            start,
                            format!("FROM --platform={v}: only linux/amd64 is supported"),
                        ));
                    }
                }
                n => return Err(self.at(start, format!("FROM --{n}: unknown flag"))),
            }
        }
        let base = words::word(&from.image.value, self.escape, &self.meta)
            .map_err(|e| self.at(start, e))?;
        let mut st = if base.eq_ignore_ascii_case("scratch") {
            State::scratch()
        } else if let Some(j) = self.stage_index(&base).filter(|&j| j < i) {
            self.built[j]
                .clone()
                .ok_or_else(|| Error::Internal(format!("stage {j} was not built")))?
        } else {
            self.image_state(&base).map_err(|e| self.at(start, e))?
        };
        let mut scope = Scope::default();
        for ins in s.instructions {
            self.instruction(&mut st, &mut scope, ins)?;
        }
        Ok(st)
    }

    /// The state of an image: from the store, or pulled.
    fn image_state(&self, name: &str) -> Result<State, String> {
        let img = self.image(name)?;
        let raw = self
            .store
            .read_blob(&img.id, MAX_CONFIG)
            .map_err(|e| e.to_string())?;
        let mut doc: Map<String, Value> =
            serde_json::from_slice(&raw).map_err(|e| format!("image config of {name}: {e}"))?;
        let cfg = match doc.remove("config") {
            Some(Value::Object(c)) => c,
            _ => Map::new(),
        };
        if cfg
            .get("OnBuild")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err(format!(
                "FROM {name}: the image has ONBUILD triggers, which vessel build does not run"
            ));
        }
        Ok(State {
            layers: img.layers.clone(),
            doc,
            cfg,
            anchor: Some(img.id.clone()),
            key: chain("", &["image", &img.id.to_string()]),
        })
    }

    fn image(&self, name: &str) -> Result<ImageRecord, String> {
        if !self.opts.pull {
            match self.store.resolve(name) {
                Ok(i) => return Ok(i),
                Err(vessel_image::Error::ImageNotFound(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let reference: Reference = name
            .parse()
            .map_err(|e| format!("invalid image reference {name:?}: {e}"))?;
        self.report.step(&format!("Pulling {reference}"));
        vessel_image::registry::pull(
            self.store,
            &reference,
            &vessel_image::registry::RegistryOptions {
                auth: None,
                insecure: false,
                // As docker build: the credentials of `vessel login`.
                stored_credentials: true,
            },
            &vessel_image::progress::NoProgress,
        )
        .map_err(|e| match self.opts.pull {
            true => format!("{name}: --pull: the pull failed: {e}"),
            false => format!("{name}: not in the store, and the pull failed: {e}"),
        })
    }

    fn vars<'s>(&self, st: &State, scope: &'s Scope) -> Env<'s> {
        Env {
            env: st.env(),
            args: &scope.args,
        }
    }

    fn word(&self, s: &str, vars: &dyn Vars, start: usize) -> Result<String> {
        words::word(s, self.escape, vars).map_err(|e| self.at(start, e))
    }

    /// `K=V ...` pairs (ENV, LABEL), or the old `K V` form.
    fn pairs(&self, raw: &str, vars: &dyn Vars, start: usize) -> Result<Vec<(String, String)>> {
        let first = raw.split_whitespace().next().unwrap_or_default();
        if !first.contains('=') {
            let rest = raw.trim_start()[first.len()..].trim();
            if rest.is_empty() {
                return Err(self.at(start, format!("{first}: needs a value (K=V or K V)")));
            }
            return Ok(vec![(
                self.word(first, vars, start)?,
                self.word(rest, vars, start)?,
            )]);
        }
        let mut out = Vec::new();
        for w in words::words(raw, self.escape, vars).map_err(|e| self.at(start, e))? {
            let Some((k, v)) = w.split_once('=') else {
                return Err(self.at(start, format!("{w:?}: expected K=V")));
            };
            if k.is_empty() {
                return Err(self.at(start, format!("{w:?}: empty name")));
            }
            out.push((k.to_string(), v.to_string()));
        }
        Ok(out)
    }

    fn command(&self, st: &State, c: &Command<'_>) -> Option<Vec<String>> {
        match c {
            Command::Exec(list) => Some(list.value.iter().map(|s| s.value.to_string()).collect()),
            Command::Shell(s) => {
                let mut v = st.shell();
                v.push(words::shell_text(s.value, self.escape));
                Some(v)
            }
            _ => None,
        }
    }

    fn instruction(
        &mut self,
        st: &mut State,
        scope: &mut Scope,
        ins: &Instruction<'_>,
    ) -> Result<()> {
        let start = start_of(ins);
        self.header(start);
        let vars = self.vars(st, scope);
        match ins {
            Instruction::Arg(a) => {
                for w in words::words(&a.arguments.value, self.escape, &vars)
                    .map_err(|e| self.at(start, e))?
                {
                    // A stage's ARG without a value of its own inherits the global one.
                    let (k, value) = self.declare_arg(&w);
                    let value = value.or_else(|| self.meta.get(&k).cloned());
                    let text = match &value {
                        Some(v) => format!("ARG {k}={v}"),
                        None => format!("ARG {k}"),
                    };
                    scope.args.insert(k, value);
                    st.meta(&text);
                }
            }
            Instruction::Env(e) => {
                let pairs = self.pairs(&e.arguments.value, &vars, start)?;
                let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                for (k, v) in &pairs {
                    st.set_env(k, v);
                }
                st.meta(&format!("ENV {}", text.join(" ")));
            }
            Instruction::Label(l) => {
                let pairs = self.pairs(&l.arguments.value, &vars, start)?;
                let cfg = st.cfg();
                let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in &pairs {
                    labels[k.as_str()] = json!(v);
                }
                let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                st.meta(&format!("LABEL {}", text.join(" ")));
            }
            Instruction::Maintainer(m) => {
                let name = m.name.value.to_string();
                st.doc.insert("author".into(), json!(name));
                st.meta(&format!("MAINTAINER {name}"));
            }
            Instruction::User(u) => {
                let user = self.word(&u.arguments.value, &vars, start)?;
                st.cfg().insert("User".into(), json!(user));
                st.meta(&format!("USER {user}"));
            }
            Instruction::Stopsignal(s) => {
                let sig = self.word(&s.arguments.value, &vars, start)?;
                st.cfg().insert("StopSignal".into(), json!(sig));
                st.meta(&format!("STOPSIGNAL {sig}"));
            }
            Instruction::Expose(e) => {
                let mut ports = Vec::new();
                for a in &e.arguments {
                    let w = self.word(&a.value, &vars, start)?;
                    let (p, proto) = w.split_once('/').unwrap_or((w.as_str(), "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                        return Err(
                            self.at(start, format!("EXPOSE {w}: invalid protocol {proto:?}"))
                        );
                    }
                    let bad = || self.at(start, format!("EXPOSE {w}: invalid port"));
                    let (lo, hi) = match p.split_once('-') {
                        Some((a, b)) => (
                            a.parse::<u16>().map_err(|_| bad())?,
                            b.parse::<u16>().map_err(|_| bad())?,
                        ),
                        None => {
                            let n = p.parse::<u16>().map_err(|_| bad())?;
                            (n, n)
                        }
                    };
                    if lo == 0 || hi < lo {
                        return Err(bad());
                    }
                    for n in lo..=hi {
                        ports.push(format!("{n}/{proto}"));
                    }
                }
                let cfg = st.cfg();
                let map = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !map.is_object() {
                    *map = json!({});
                }
                for p in &ports {
                    map[p.as_str()] = json!({});
                }
                st.meta(&format!("EXPOSE {}", ports.join(" ")));
            }
            Instruction::Volume(v) => {
                let raw: Vec<String> = match &v.arguments {
                    JsonOrStringArray::Json(l) => {
                        l.value.iter().map(|s| s.value.to_string()).collect()
                    }
                    JsonOrStringArray::String(l) => l.iter().map(|s| s.value.to_string()).collect(),
                };
                let mut vols = Vec::new();
                for r in raw {
                    let w = self.word(&r, &vars, start)?;
                    if w.is_empty() {
                        return Err(self.at(start, "VOLUME: empty path"));
                    }
                    vols.push(w);
                }
                let cfg = st.cfg();
                let map = cfg.entry("Volumes").or_insert_with(|| json!({}));
                if !map.is_object() {
                    *map = json!({});
                }
                for p in &vols {
                    map[p.as_str()] = json!({});
                }
                st.meta(&format!("VOLUME {vols:?}"));
            }
            Instruction::Shell(s) => {
                let shell: Vec<String> = s.arguments.iter().map(|a| a.value.to_string()).collect();
                st.cfg().insert("Shell".into(), json!(shell));
                st.meta(&format!("SHELL {shell:?}"));
            }
            Instruction::Cmd(c) => {
                let cmd = self
                    .command(st, &c.arguments)
                    .ok_or_else(|| self.at(start, "CMD: unsupported form"))?;
                st.cfg().insert("Cmd".into(), json!(cmd));
                scope.cmd_set = true;
                st.meta(&format!("CMD {cmd:?}"));
            }
            Instruction::Entrypoint(e) => {
                let ep = self
                    .command(st, &e.arguments)
                    .ok_or_else(|| self.at(start, "ENTRYPOINT: unsupported form"))?;
                let cfg = st.cfg();
                cfg.insert("Entrypoint".into(), json!(ep));
                if !scope.cmd_set {
                    // Docker: an ENTRYPOINT clears the CMD inherited from the base image.
                    cfg.remove("Cmd");
                }
                st.meta(&format!("ENTRYPOINT {ep:?}"));
            }
            Instruction::Healthcheck(h) => {
                let mut hc = Map::new();
                match &h.arguments {
                    HealthcheckArguments::None { .. } => {
                        hc.insert("Test".into(), json!(["NONE"]));
                    }
                    HealthcheckArguments::Cmd { arguments, .. } => {
                        let test = match arguments {
                            Command::Exec(l) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(l.value.iter().map(|s| s.value.to_string()));
                                t
                            }
                            Command::Shell(s) => vec![
                                "CMD-SHELL".to_string(),
                                words::shell_text(s.value, self.escape),
                            ],
                            _ => return Err(self.at(start, "HEALTHCHECK: unsupported form")),
                        };
                        hc.insert("Test".into(), json!(test));
                        for f in &h.options {
                            let v = f
                                .value
                                .as_ref()
                                .map(|v| v.value.to_string())
                                .unwrap_or_default();
                            let key = match f.name.value.as_ref() {
                                "interval" => "Interval",
                                "timeout" => "Timeout",
                                "start-period" => "StartPeriod",
                                "start-interval" => "StartInterval",
                                "retries" => {
                                    let n: i64 = v.parse().map_err(|_| {
                                        self.at(
                                            start,
                                            format!("HEALTHCHECK --retries={v}: not a number"),
                                        )
                                    })?;
                                    hc.insert("Retries".into(), json!(n));
                                    continue;
                                }
                                n => {
                                    return Err(
                                        self.at(start, format!("HEALTHCHECK --{n}: unknown flag"))
                                    )
                                }
                            };
                            let ns = duration_ns(&v).ok_or_else(|| {
                                self.at(
                                    start,
                                    format!("HEALTHCHECK --{}={v}: not a duration", f.name.value),
                                )
                            })?;
                            hc.insert(key.into(), json!(ns));
                        }
                    }
                    _ => return Err(self.at(start, "HEALTHCHECK: unsupported form")),
                }
                st.cfg().insert("Healthcheck".into(), Value::Object(hc));
                let text = self.source(start);
                st.meta(&text);
            }
            Instruction::Onbuild(o) => {
                let trigger = self.source(start_of(&o.instruction));
                let cfg = st.cfg();
                let list = cfg.entry("OnBuild").or_insert_with(|| json!([]));
                match list.as_array_mut() {
                    Some(a) => a.push(json!(trigger)),
                    None => *list = json!([trigger]),
                }
                st.meta(&format!("ONBUILD {trigger}"));
            }
            Instruction::Workdir(w) => {
                let dir = self.word(&w.arguments.value, &vars, start)?;
                let dir = if dir.starts_with('/') {
                    clean_abs(&dir)
                } else {
                    clean_abs(&format!("{}/{dir}", st.workdir()))
                };
                st.cfg().insert("WorkingDir".into(), json!(dir));
                let text = format!("WORKDIR {dir}");
                let key = chain(&st.key, &[&text]);
                let d = PathBuf::from(&dir);
                self.fs_step(st, key, &text, start, |root| {
                    root.mkdir_all(&d).map(drop).map_err(|e| e.to_string())
                })?;
            }
            Instruction::Run(r) => self.run_step(st, scope, r, start)?,
            Instruction::Copy(c) => {
                let srcs: Vec<&Source<'_>> = c.src.iter().collect();
                self.copy_step(st, scope, "COPY", &c.options, &srcs, &c.dest.value, start)?
            }
            Instruction::Add(a) => {
                let srcs: Vec<&Source<'_>> = a.src.iter().collect();
                self.copy_step(st, scope, "ADD", &a.options, &srcs, &a.dest.value, start)?
            }
            Instruction::From(_) => {
                return Err(self.at(start, "FROM inside a stage (internal parse error)"))
            }
            _ => return Err(self.at(start, "unsupported instruction")),
        }
        Ok(())
    }

    fn cached(&self, key: &str) -> Option<Option<LayerRecord>> {
        if self.opts.no_cache {
            return None;
        }
        let hit = self.cache.get(self.store, key)?;
        self.report.step(&format!("--> Using cache {}", &key[..12]));
        Some(hit)
    }

    fn layer_dirs(&self, st: &State) -> Vec<PathBuf> {
        st.layers
            .iter()
            .map(|l| self.store.layer_path(&l.diff_id))
            .collect()
    }

    /// A step that changes files: `change` writes into the image's root through a private
    /// overlay, whose upper directory becomes the layer (none if nothing changed).
    fn fs_step(
        &mut self,
        st: &mut State,
        key: String,
        created_by: &str,
        start: usize,
        change: impl FnOnce(&Root) -> Result<(), String>,
    ) -> Result<()> {
        if let Some(hit) = self.cached(&key) {
            st.apply(key, hit, created_by);
            return Ok(());
        }
        let mut ov = Overlay::mount(self.store.tmp_path("build"), &self.layer_dirs(st))?;
        {
            let root = Root::open(ov.merged()).map_err(|e| self.at(start, e))?;
            change(&root).map_err(|e| self.at(start, e))?;
        }
        let upper = ov.finish()?;
        let layer = self.changes_layer(crate::run::Changes::Upper(upper))?;
        drop(ov);
        self.cache.put(&key, layer.as_ref());
        self.done(&layer);
        st.apply(key, layer, created_by);
        Ok(())
    }

    /// The layer of a RUN step's changes; `None` if it changed nothing.
    fn changes_layer(&self, changes: crate::run::Changes<'_>) -> Result<Option<LayerRecord>> {
        match changes {
            crate::run::Changes::Upper(upper) => {
                let empty = std::fs::read_dir(upper)
                    .map_err(|e| Error::io("read", upper, e))?
                    .next()
                    .is_none();
                if empty {
                    return Ok(None);
                }
                Ok(Some(vessel_image::import::store_upper_layer(
                    self.store, upper,
                )?))
            }
            crate::run::Changes::Tar(tar) => {
                let f = std::fs::File::open(tar).map_err(|e| Error::io("open", tar, e))?;
                let empty = tar::Archive::new(f)
                    .entries()
                    .map_err(|e| Error::io("read", tar, e))?
                    .next()
                    .is_none();
                if empty {
                    return Ok(None);
                }
                Ok(Some(vessel_image::import::store_layer_tar(
                    self.store, tar,
                )?))
            }
        }
    }

    fn done(&self, layer: &Option<LayerRecord>) {
        if let Some(l) = layer {
            self.report.step(&format!("--> {}", &l.diff_id.hex()[..12]));
        }
    }

    /// An image in the store with the state's layers (committed untagged if none is).
    fn anchor(&mut self, st: &mut State) -> Result<Digest> {
        if let Some(a) = &st.anchor {
            return Ok(a.clone());
        }
        let img = commit(self.store, &st.document(), &st.layers, None)?;
        self.intermediates.push(img.id.clone());
        st.anchor = Some(img.id.clone());
        Ok(img.id)
    }

    fn run_step(
        &mut self,
        st: &mut State,
        scope: &Scope,
        r: &parse_dockerfile::RunInstruction<'_>,
        start: usize,
    ) -> Result<()> {
        if let Some(f) = r.options.first() {
            return Err(self.at(start, format!("RUN --{}: not supported", f.name.value)));
        }
        let args = match (&r.arguments, r.here_docs.as_slice()) {
            (Command::Shell(s), [doc]) if s.value.trim().is_empty() => {
                let mut v = st.shell();
                v.push(doc.value.to_string());
                v
            }
            (Command::Shell(_), docs) if !docs.is_empty() => {
                // The shell reads the here-documents itself: give it the whole text.
                let body = self.text[r.run.span.end..self.end_of(start)].trim();
                let mut v = st.shell();
                v.push(body.to_string());
                v
            }
            (c, _) => self
                .command(st, c)
                .ok_or_else(|| self.at(start, "RUN: unsupported form"))?,
        };
        let mut env = st.env();
        for (k, v) in &scope.args {
            if let Some(v) = v {
                if !env.iter().any(|(e, _)| e == k) {
                    env.push((k.clone(), v.clone()));
                }
            }
        }
        let args_text: Vec<String> = scope
            .args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        let created_by = format!("RUN {}", args.join(" "));
        let key = chain(
            &st.key,
            &[
                "RUN",
                &serde_json::to_string(&args).unwrap_or_default(),
                &args_text.join("\0"),
            ],
        );
        if let Some(hit) = self.cached(&key) {
            st.apply(key, hit, &created_by);
            return Ok(());
        }
        if st.layers.is_empty() {
            return Err(self.at(
                start,
                "RUN needs a root filesystem, and this image has none (FROM scratch)",
            ));
        }
        let image = self.anchor(st)?;
        let mut env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.into());
        }
        let spec = crate::run::RunSpec {
            image: image.to_string(),
            args,
            env,
            workdir: st.workdir(),
            user: st.get_str("User").unwrap_or_default(),
            isolation: self.opts.isolation,
        };
        self.runs += 1;
        let ran = crate::run::run(self.engine, spec, self.report, |changes| {
            self.changes_layer(changes)
        })
        .map_err(|e| self.at(start, format!("RUN: {e}")))?;
        let Some(layer) = ran.made.filter(|_| ran.code == 0) else {
            return Err(self.at(
                start,
                format!("RUN exited with {}: {}", ran.code, ran.tail.join("\n")),
            ));
        };
        self.cache.put(&key, layer.as_ref());
        self.done(&layer);
        st.apply(key, layer, &created_by);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &mut self,
        st: &mut State,
        scope: &Scope,
        what: &str,
        options: &[parse_dockerfile::Flag<'_>],
        srcs: &[&Source<'_>],
        dest: &str,
        start: usize,
    ) -> Result<()> {
        let vars = self.vars(st, scope);
        let mut from = None;
        let mut chown = None;
        let mut chmod = None;
        for f in options {
            let v = f
                .value
                .as_ref()
                .map(|v| v.value.to_string())
                .unwrap_or_default();
            let v = self.word(&v, &vars, start)?;
            match (f.name.value.as_ref(), what) {
                ("from", "COPY") => from = Some(v),
                ("chown", _) => chown = Some(v),
                ("chmod", _) => {
                    let m = u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            self.at(start, format!("{what} --chmod={v}: not an octal mode"))
                        })?;
                    chmod = Some(m);
                }
                ("link", _) => {}
                (n, _) => return Err(self.at(start, format!("{what} --{n}: not supported"))),
            }
        }
        let dest_w = self.word(dest, &vars, start)?;
        let dest_abs = if dest_w.starts_with('/') {
            dest_w.clone()
        } else {
            format!("{}/{dest_w}", st.workdir())
        };
        let dest_dir = dest_w.ends_with('/') || dest_w == "." || dest_w.ends_with("/.");
        let dest_path = PathBuf::from(clean_abs(&dest_abs));
        // Where the sources come from: the context, another stage or an image.
        let mut from_key = String::from("context");
        let mut from_state = None;
        if let Some(f) = &from {
            let state = match self.stage_index(f) {
                Some(j) => self.built[j].clone().ok_or_else(|| {
                    self.at(
                        start,
                        format!("{what} --from={f}: stage {f} was not built before this one"),
                    )
                })?,
                None => self
                    .image_state(f)
                    .map_err(|e| self.at(start, format!("{what} --from={f}: {e}")))?,
            };
            from_key = format!("from {}", state.key);
            from_state = Some(state);
        }
        let from_view = match &from_state {
            Some(s) => Some(Overlay::mount(
                self.store.tmp_path("from"),
                &self.layer_dirs(s),
            )?),
            None => None,
        };
        let other;
        let root_src: &SourceRoot = match &from_view {
            Some(v) => {
                other = SourceRoot::open(v.merged(), Confine::InRoot, Ignore::default())
                    .map_err(|e| self.at(start, e))?;
                &other
            }
            None => &self.context,
        };
        let mut matched: Vec<Matched> = Vec::new();
        let mut docs: Vec<(String, String)> = Vec::new();
        let mut texts = Vec::new();
        for s in srcs {
            match s {
                Source::Path(p) => {
                    let p = self.word(&p.value, &vars, start)?;
                    if what == "ADD" && (p.contains("://") || p.starts_with("git@")) {
                        return Err(
                            self.at(start, format!("ADD {p}: remote URLs are not supported"))
                        );
                    }
                    matched.extend(
                        root_src
                            .expand(&p)
                            .map_err(|e| self.at(start, format!("{what} {e}")))?,
                    );
                    texts.push(p);
                }
                Source::HereDoc(d) => {
                    let body = if d.expand {
                        self.word(&d.value, &vars, start)
                            .unwrap_or_else(|_| d.value.to_string())
                    } else {
                        d.value.to_string()
                    };
                    let name = format!("heredoc{}", docs.len());
                    texts.push(format!("<<{name}"));
                    docs.push((name, body));
                }
                _ => return Err(self.at(start, format!("{what}: unsupported source"))),
            }
        }
        let count = matched.len() + docs.len();
        if count > 1 && !dest_dir {
            return Err(self.at(
                start,
                format!("When using {what} with more than one source file, the destination must be a directory and end with a / ({dest_w})"),
            ));
        }
        let digest = source::digest(&matched).map_err(|e| self.at(start, e))?;
        let doc_text: Vec<String> = docs.iter().map(|(_, b)| b.clone()).collect();
        let created_by = format!("{what} {} {}", texts.join(" "), dest_path.display());
        let key = chain(
            &st.key,
            &[
                what,
                &from_key,
                &format!("{chown:?} {chmod:?}"),
                &texts.join("\0"),
                &dest_path.to_string_lossy(),
                &dest_w,
                &digest,
                &doc_text.join("\0"),
            ],
        );
        let owner = match &chown {
            Some(c) => Some(
                self.owner(st, c)
                    .map_err(|e| self.at(start, format!("{what} --chown={c}: {e}")))?,
            ),
            None => None,
        };
        let attrs = Attrs {
            chown: owner,
            keep_owner: from.is_some(),
            chmod,
        };
        let add = what == "ADD";
        let store = self.store;
        self.fs_step(st, key, &created_by, start, |root| {
            for m in &matched {
                if let Some(top) = m.entries.first().filter(|_| add && !m.is_dir) {
                    if is_archive(&top.host) {
                        extract(store, root, &top.host, &dest_path, attrs)?;
                        continue;
                    }
                }
                let into = dest_dir || (!m.is_dir && copy::is_dir(root, &dest_path));
                copy::copy(root, m, &dest_path, into, attrs)?;
            }
            for (name, body) in &docs {
                let target = if dest_dir {
                    dest_path.join(name)
                } else {
                    dest_path.clone()
                };
                copy::write_text(root, &target, body, attrs)?;
            }
            Ok(())
        })?;
        drop(from_view);
        Ok(())
    }

    /// `--chown=user[:group]`: numbers, or names from the image's /etc/passwd and
    /// /etc/group. Without a group, the group id is the user id (as Docker).
    fn owner(&self, st: &State, spec: &str) -> Result<(u32, u32), String> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let top_first: Vec<PathBuf> = self.layer_dirs(st).into_iter().rev().collect();
        let uid = match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                vessel_engine::userdb::resolve(u, &top_first)
                    .map_err(|e| e.to_string())?
                    .uid
            }
        };
        let gid = match g {
            None => uid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    vessel_engine::userdb::resolve(&format!("0:{g}"), &top_first)
                        .map_err(|e| e.to_string())?
                        .gid
                }
            },
        };
        Ok((uid, gid))
    }
}

/// Whether a local ADD source is a tar archive (plain, gzip or zstd): ADD extracts those.
fn is_archive(p: &Path) -> bool {
    let Ok(f) = std::fs::File::open(p) else {
        return false;
    };
    let Ok(stream) = vessel_image::unpack::decompress(f) else {
        return false;
    };
    let mut head = Vec::new();
    if stream.take(512).read_to_end(&mut head).is_err() || head.len() < 512 {
        return false;
    }
    &head[257..262] == b"ustar"
}

/// ADD of a local archive: unpacked (as hostile as any layer) into a staging directory,
/// then copied into `dest` with the owners it carried.
fn extract(
    store: &Store,
    root: &Root,
    tar: &Path,
    dest: &Path,
    attrs: Attrs,
) -> Result<(), String> {
    let staging = store.tmp_path("add");
    std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let result = (|| {
        let f = std::fs::File::open(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
        let budget = store.disk_budget().map_err(|e| e.to_string())?;
        vessel_image::unpack::unpack_layer_within(f, &staging, budget)
            .map_err(|e| format!("extract {}: {e}", tar.display()))?;
        let src = SourceRoot::open(&staging, Confine::InRoot, Ignore::default())?;
        let attrs = Attrs {
            keep_owner: true,
            ..attrs
        };
        for m in src.expand(".")? {
            copy::copy(root, &m, dest, true, attrs)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Stores `config` (with `layers` as its rootfs) and its manifest, and commits the image.
fn commit(
    store: &Store,
    config: &Value,
    layers: &[LayerRecord],
    tag: Option<&Reference>,
) -> Result<ImageRecord> {
    Ok(vessel_image::import::commit_json(
        store, config, layers, tag,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("5x"), None);
        assert_eq!(duration_ns(""), None);
    }

    #[test]
    fn paths_clean_inside_the_image() {
        assert_eq!(clean_abs("/a/../../b/./c/"), "/b/c");
        assert_eq!(clean_abs("/"), "/");
    }
}
