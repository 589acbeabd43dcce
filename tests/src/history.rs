//! The history a fault-suite worker writes: one JSON line per event, with CLOCK_MONOTONIC times,
//! flushed at once so that a SIGKILLed worker leaves only whole lines.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::fenced_store::monotonic_ns;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// `lock()` called.
    AcquireInvoke,
    /// `lock()` returned a guard with this token; `shared`: a read lock's.
    AcquireOk {
        token: u64,
        #[serde(default)]
        shared: bool,
    },
    /// `lock()` failed.
    AcquireError { message: String },
    /// The guard's `lost()` fired.
    Lost { token: u64, reason: String },
    /// A fenced read and its outcome.
    Read { token: u64, value: u64, ok: bool },
    /// A fenced write of `value` and its outcome (`ok`: acknowledged by the store).
    Write { token: u64, value: u64, ok: bool },
    /// `release()` called.
    ReleaseInvoke { token: u64 },
    /// `release()` returned Ok.
    ReleaseOk { token: u64 },
    /// `release()` returned an error (for example: the lock had been lost).
    ReleaseError { token: u64, message: String },
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The worker.
    pub worker: u32,
    /// CLOCK_MONOTONIC ns.
    pub t: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Appends entries to a history file.
pub struct HistoryWriter {
    worker: u32,
    file: std::fs::File,
}

impl HistoryWriter {
    /// Opens (appends to) `path`.
    pub fn open(path: &std::path::Path, worker: u32) -> std::io::Result<Self> {
        Ok(HistoryWriter { worker, file: std::fs::File::options().create(true).append(true).open(path)? })
    }

    /// Writes one event, timestamped now, as one line.
    pub fn log(&mut self, event: Event) {
        let entry = Entry { worker: self.worker, t: monotonic_ns(), event };
        if let Ok(mut line) = serde_json::to_string(&entry) {
            line.push('\n');
            let _ = self.file.write_all(line.as_bytes());
        }
    }
}

/// Reads every whole line of the histories in `paths`, sorted by time.
pub fn read(paths: &[std::path::PathBuf]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect::<Vec<_>>())
        .collect();
    entries.sort_by_key(|e| e.t);
    entries
}
