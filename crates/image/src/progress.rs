//! Progress reporting for long transfers. The library reports; the CLI draws.

/// Receives progress events for transfers (pull, push, load). Implementations must be
/// cheap: `advance` is called for every chunk.
pub trait Progress: Sync {
    /// A transfer of `total` bytes (if known) started; `id` is a short label (a digest prefix).
    fn start(&self, id: &str, what: &str, total: Option<u64>);
    /// `bytes` more bytes of `id` were transferred.
    fn advance(&self, id: &str, bytes: u64);
    /// `id` finished, with a closing word ("Pull complete", "Already exists").
    fn finish(&self, id: &str, status: &str);
    /// A status line not tied to one transfer ("Digest: sha256:...").
    fn message(&self, msg: &str);
}

/// A [`Progress`] that ignores everything (tests, `--quiet`).
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: &str, _: Option<u64>) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str, _: &str) {}
    fn message(&self, _: &str) {}
}
