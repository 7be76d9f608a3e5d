//! What every client saw during a run: operations with their invoke and
//! completion times and outcome, watch sessions with every item they
//! received, and the faults the nemesis injected. Times are nanoseconds since
//! the run started. A history is written as JSON lines, one record a line, and
//! read back by `balsa-chaos check`.
//!
//! Every write puts a value no other write uses (`w<op id>`), so a value seen
//! anywhere names the one write that made it.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Nanoseconds since the start of the run.
pub type Time = u64;

/// A completion time that never came: the op's outcome is unknown and it may
/// take effect at any later point.
pub const NEVER: Time = Time::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "camelCase")]
pub enum Call {
    Create {
        value: String,
    },
    /// A compare-and-set on the object's resourceVersion (`expected`), or an
    /// unconditional update when `expected` is None.
    Update {
        value: String,
        expected: Option<u64>,
    },
    Delete {
        expected: Option<u64>,
    },
    Read,
    /// A linearizable list of every object in the workload's namespace.
    List,
}

impl Call {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Call::Create { .. } | Call::Update { .. } | Call::Delete { .. }
        )
    }

    pub fn value(&self) -> Option<&str> {
        match self {
            Call::Create { value } | Call::Update { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// An object as a read saw it: the value of the write that made it and its
/// resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub value: String,
    pub rev: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "camelCase")]
pub enum Reply {
    /// A write took effect at this revision.
    Written { rev: u64 },
    /// A read found the object (or, with None, found it absent).
    Found { object: Option<Seen> },
    /// A list at revision `rev`: every object, by key.
    Listed {
        rev: u64,
        items: Vec<(String, Seen)>,
    },
}

/// Why a request surely had no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Failure {
    NotFound,
    AlreadyExists,
    Conflict,
    /// Anything else that surely had no effect (a refused read, a bad request).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    Ok(Reply),
    Fail {
        failure: Failure,
        message: String,
    },
    /// Timed out or lost: the op may or may not have taken effect.
    Unknown {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpRecord {
    pub id: u64,
    pub client: u32,
    /// The member the request was sent to.
    pub replica: u64,
    /// The object's name (empty for lists).
    pub key: String,
    #[serde(flatten)]
    pub call: Call,
    pub invoke: Time,
    /// When the answer came (for Unknown: when the client gave up).
    pub complete: Time,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl OpRecord {
    pub fn written_rev(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok(Reply::Written { rev }) => Some(rev),
            _ => None,
        }
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "camelCase")]
pub enum WatchItem {
    Event {
        rev: u64,
        kind: EventKind,
        key: String,
        value: String,
        at: Time,
    },
    Bookmark {
        rev: u64,
        at: Time,
    },
}

impl WatchItem {
    pub fn rev(&self) -> u64 {
        match self {
            WatchItem::Event { rev, .. } | WatchItem::Bookmark { rev, .. } => *rev,
        }
    }
}

/// One watch stream, from the request to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchSession {
    pub id: u64,
    pub watcher: u32,
    pub replica: u64,
    /// The stream was asked for the events after this revision.
    pub after: u64,
    /// This session resumes the watcher's previous one from its last revision.
    pub resumed: bool,
    pub start: Time,
    pub end: Time,
    pub items: Vec<WatchItem>,
    /// Why the stream ended.
    pub ended: String,
}

impl WatchSession {
    /// The revision up to which this stream claims to have delivered every
    /// event: its last event or bookmark, or where it started.
    pub fn covered_to(&self) -> u64 {
        self.items
            .iter()
            .map(WatchItem::rev)
            .max()
            .unwrap_or(self.after)
            .max(self.after)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRecord {
    /// e.g. `kill-leader`, `pause`, `partition-leader`, `loss`.
    pub kind: String,
    /// Member ids the fault was aimed at.
    pub targets: Vec<u64>,
    pub start: Time,
    /// When the fault was healed (a kill: when the replica was started again).
    pub end: Time,
    pub note: String,
}

/// One liveness probe: a write of its own object (outside the workload's
/// namespace) sent every few milliseconds whatever earlier probes are
/// doing, so a stuck request never hides that the cluster commits again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRecord {
    pub replica: u64,
    pub invoke: Time,
    pub complete: Time,
    pub ok: bool,
}

/// The final state of one replica, read locally after the cluster healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalState {
    pub replica: u64,
    pub rev: u64,
    pub items: Vec<(String, Seen)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Record {
    Op(OpRecord),
    Watch(WatchSession),
    Fault(FaultRecord),
    Final(FinalState),
    Probe(ProbeRecord),
}

/// A whole history, split by record type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<OpRecord>,
    pub watches: Vec<WatchSession>,
    pub faults: Vec<FaultRecord>,
    pub finals: Vec<FinalState>,
    pub probes: Vec<ProbeRecord>,
}

impl History {
    pub fn push(&mut self, r: Record) {
        match r {
            Record::Op(o) => self.ops.push(o),
            Record::Watch(w) => self.watches.push(w),
            Record::Fault(f) => self.faults.push(f),
            Record::Final(f) => self.finals.push(f),
            Record::Probe(p) => self.probes.push(p),
        }
    }

    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let faults = self.faults.iter().cloned().map(Record::Fault);
        let ops = self.ops.iter().cloned().map(Record::Op);
        let watches = self.watches.iter().cloned().map(Record::Watch);
        let finals = self.finals.iter().cloned().map(Record::Final);
        let probes = self.probes.iter().cloned().map(Record::Probe);
        faults.chain(ops).chain(watches).chain(finals).chain(probes)
    }

    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for r in self.records() {
            serde_json::to_writer(&mut out, &r)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    pub fn read_jsonl(path: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut h = History::default();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let r: Record = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?;
            h.push(r);
        }
        Ok(h)
    }
}

/// A cheap-clone handle every client task records into. Op ids and times
/// come from here, so they are unique and on one clock.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    next_id: u64,
    history: History,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            inner: Arc::default(),
        }
    }

    pub fn now(&self) -> Time {
        self.start.elapsed().as_nanos() as Time
    }

    pub fn at(&self, t: Instant) -> Time {
        t.saturating_duration_since(self.start).as_nanos() as Time
    }

    pub fn next_id(&self) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.next_id += 1;
        g.next_id
    }

    pub fn record(&self, r: Record) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.history.push(r);
    }

    pub fn snapshot(&self) -> History {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.history.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_survives_json_lines() {
        let mut h = History::default();
        h.push(Record::Op(OpRecord {
            id: 1,
            client: 2,
            replica: 3,
            key: "k1".into(),
            call: Call::Update {
                value: "w1".into(),
                expected: Some(4),
            },
            invoke: 10,
            complete: 20,
            outcome: Outcome::Ok(Reply::Written { rev: 5 }),
        }));
        h.push(Record::Watch(WatchSession {
            id: 1,
            watcher: 1,
            replica: 2,
            after: 0,
            resumed: false,
            start: 1,
            end: 9,
            items: vec![WatchItem::Bookmark { rev: 3, at: 4 }],
            ended: "stopped".into(),
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        h.write_jsonl(&path).expect("write");
        assert_eq!(History::read_jsonl(&path).expect("read"), h);
    }
}
