//! Record files: what `nstrace report` turns back into the same timeline.
//!
//! Two encodings of the same entries. JSON Lines (the default): line 1 is a header (format
//! version, kernel, the host's namespace set, the clock); then one `process` line per task that
//! existed when tracing began; then every record in kernel-time order, in the same shape as
//! `--json` prints (plus forks, execs and exits), every loss of records where it was found, and
//! after a loss the `resync` line and `process` lines of /proc read again. Binary (`--binary`):
//! [`BIN_MAGIC`], then one frame per entry, a 4-byte little-endian length and a postcard-encoded
//! frame; every entry but a record is a JSON line inside a frame, records are their decoded
//! form. Binary files are smaller and replay faster (docs/bench.md). `report`
//! tells them apart by their first bytes. An entry that does not parse is reported with its
//! number, and every good entry is still read.
//!
//! This file is the JSON Lines schema and its parser; [`write`] writes either encoding, [`read`]
//! reads and replays it.
use crate::event::Comm;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    clock::WallClock,
    container::Container,
    event::{Loss, Record},
    lines::{LifeLine, TransitionLine},
    names::Names,
    ns::NsKind,
    timeline::ProcEntry,
};

pub mod binary;
pub mod evidence;
pub mod read;
pub mod replay;
pub mod rotate;
pub mod write;

pub use binary::{BIN_MAGIC, BinSink};
pub use read::{ReplayError, Source, read_entries};
pub use replay::{Replayed, rebuild, replay};
pub use write::RecordFile;

pub const FORMAT: &str = "nstrace-record";

pub const VERSION: u32 = 1;

fn header_kind() -> String {
    "header".into()
}

fn process_kind() -> String {
    "process".into()
}

/// The first line of a record file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// Always "header" (read from the tag).
    #[serde(rename = "type", skip_deserializing, default = "header_kind")]
    pub kind: String,
    pub format: String,
    pub version: u32,
    /// `uname -r` of the traced machine.
    pub kernel: String,
    /// Unix time minus the kernel's CLOCK_MONOTONIC, in ns, when tracing began.
    pub clock_offset_ns: i64,
    /// Kernel time of the snapshot.
    pub start_ts_ns: u64,
    /// The namespace set of pid 1 (the host's, unless nstrace runs nested).
    pub host: BTreeMap<String, u32>,
    /// nstrace itself ran in a nested pid namespace.
    pub nested: bool,
    /// The pids followed (`--pid`).
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Only `pids`, `follow` lines and their descendants were followed (`--pid`, `run`);
    /// otherwise the whole machine.
    #[serde(default)]
    pub scoped: bool,
    /// The node's name and the boot's id (see [`crate::origin`]): absent in older records.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// nstrace's own mount namespace (its container's, when it runs in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_mnt: Option<u32>,
}

impl Header {
    pub fn new(
        kernel: String,
        clock_offset_ns: i64,
        start_ts_ns: u64,
        host: BTreeMap<String, u32>,
        nested: bool,
        pids: Vec<u32>,
        scoped: bool,
    ) -> Self {
        Self {
            pids,
            scoped,
            kind: "header".into(),
            format: FORMAT.into(),
            version: VERSION,
            kernel,
            clock_offset_ns,
            start_ts_ns,
            host,
            nested,
            node: String::new(),
            boot_id: String::new(),
            own_mnt: None,
        }
    }

    /// Where the record was made, when it says.
    pub fn origin(&self) -> Option<crate::origin::Origin> {
        (!self.node.is_empty() || !self.boot_id.is_empty()).then(|| crate::origin::Origin {
            node: self.node.clone(),
            boot_id: self.boot_id.clone(),
        })
    }

    pub fn clock(&self) -> WallClock {
        WallClock::with_offset(i128::from(self.clock_offset_ns))
    }
}

/// A task present when tracing began.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessLine {
    /// Always "process" (read from the tag).
    #[serde(rename = "type", skip_deserializing, default = "process_kind")]
    pub kind: String,
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub comm: Comm,
    pub start_ns: u64,
    /// Inodes by slot name; slots /proc could not show are absent.
    pub ns: BTreeMap<String, u32>,
}

impl From<&ProcEntry> for ProcessLine {
    fn from(e: &ProcEntry) -> Self {
        Self {
            kind: "process".into(),
            tid: e.tid,
            pid: e.pid,
            ppid: e.ppid,
            comm: e.comm.clone(),
            start_ns: e.start_ns,
            ns: NsKind::ALL
                .into_iter()
                .filter_map(|k| e.inodes[k.slot()].map(|i| (k.name().to_owned(), i)))
                .collect(),
        }
    }
}

impl From<ProcessLine> for ProcEntry {
    fn from(p: ProcessLine) -> Self {
        let mut inodes = [None; nstrace_common::NS_SLOTS];
        for kind in NsKind::ALL {
            inodes[kind.slot()] = p.ns.get(kind.name()).copied();
        }
        Self {
            tid: p.tid,
            pid: p.pid,
            ppid: p.ppid,
            comm: p.comm,
            start_ns: p.start_ns,
            inodes,
        }
    }
}

#[derive(Deserialize)]
struct FollowLine {
    pid: u32,
}

/// The start of a re-reading of /proc after lost records: the `process` lines that follow it,
/// up to the next other entry, are what /proc showed, read from `read_from_ns` until `ts_ns`
/// (where it takes its place in the stream).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResyncLine {
    #[serde(rename = "type", skip_deserializing, default = "resync_kind")]
    pub kind: String,
    pub ts_ns: u64,
    pub read_from_ns: u64,
}

fn resync_kind() -> String {
    "resync".into()
}

impl ResyncLine {
    pub fn new(read_from_ns: u64, ts_ns: u64) -> Self {
        Self {
            kind: resync_kind(),
            ts_ns,
            read_from_ns,
        }
    }
}

/// A container's names, as its engine gave them (live), where they came in the stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerLine {
    #[serde(rename = "type", skip_deserializing, default = "container_kind")]
    pub kind: String,
    pub runtime: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Empty when the engine had none.
    pub names: Names,
}

fn container_kind() -> String {
    "container".into()
}

impl ContainerLine {
    pub fn new(container: &Container, names: &Names) -> Self {
        Self {
            kind: container_kind(),
            runtime: container.runtime.into(),
            id: container.id.clone(),
            pod_uid: container.pod.clone(),
            names: names.clone(),
        }
    }

    fn into_entry(self) -> Result<Entry, String> {
        let runtime = crate::container::runtime_named(&self.runtime)
            .ok_or_else(|| format!("unknown container runtime {:?}", self.runtime))?;
        let container = Container {
            runtime,
            id: self.id,
            pod: self.pod_uid,
        };
        Ok(Entry::Container(container, self.names))
    }
}

#[derive(Deserialize)]
struct ObservationLine {
    ts_ns: u64,
    pid: u32,
    cgroup: String,
    #[serde(default)]
    uid_map: String,
    #[serde(default)]
    runtime: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Header(Header),
    Follow(FollowLine),
    Observation(ObservationLine),
    Container(ContainerLine),
    Loss(Loss),
    Resync(ResyncLine),
    Evidence(evidence::EvidenceLine),
    Process(ProcessLine),
    Transition(Box<TransitionLine>),
    Fork(LifeLine),
    Exec(LifeLine),
    Exit(LifeLine),
}

/// One line of a record file, parsed.
pub enum Entry {
    Header(Header),
    Process(ProcEntry),
    /// `nstrace run` began following this pid (its command).
    Follow(u32),
    /// What was read of a process after its exec: (pid, ts_ns, cgroup, uid_map).
    /// And the runtime whose state had the container its cgroup names without one.
    Observation(u32, u64, String, String, Option<&'static str>),
    /// A container's names, from its engine.
    Container(Container, Names),
    /// Records lost in the kernel, where the live run found them.
    Loss(Loss),
    /// /proc re-read after a loss, from `read_from` until `ts`: the `process` entries that
    /// follow are what it showed.
    Resync {
        read_from: u64,
        ts: u64,
    },
    Record(Record),
    /// A finding this file is the evidence of (see [`evidence`]).
    Evidence(evidence::EvidenceLine),
}

/// Parses one line of a record file.
pub fn parse_line(line: &str) -> Result<Entry, String> {
    let json = |e: serde_json::Error| e.to_string();
    // Records are written with their type first: read them straight into their struct, which
    // is several times faster than serde's tagged-enum path (it buffers the whole object).
    let parsed: Line = match line
        .strip_prefix(r#"{"type":""#)
        .and_then(|r| r.split_once('"'))
    {
        Some(("transition", _)) => Line::Transition(serde_json::from_str(line).map_err(json)?),
        Some(("fork", _)) => Line::Fork(serde_json::from_str(line).map_err(json)?),
        Some(("exec", _)) => Line::Exec(serde_json::from_str(line).map_err(json)?),
        Some(("exit", _)) => Line::Exit(serde_json::from_str(line).map_err(json)?),
        _ => serde_json::from_str(line).map_err(json)?,
    };
    Ok(match parsed {
        Line::Header(h) => {
            if h.format != FORMAT || h.version != VERSION {
                return Err(format!(
                    "format {} version {} is not {FORMAT} version {VERSION}",
                    h.format, h.version
                ));
            }
            Entry::Header(h)
        }
        Line::Process(p) => Entry::Process(p.into()),
        Line::Follow(f) => Entry::Follow(f.pid),
        Line::Observation(o) => {
            let runtime = match o.runtime.as_deref() {
                None => None,
                Some(name) => Some(
                    crate::container::runtime_named(name)
                        .ok_or_else(|| format!("unknown container runtime {name:?}"))?,
                ),
            };
            Entry::Observation(o.pid, o.ts_ns, o.cgroup, o.uid_map, runtime)
        }
        Line::Container(c) => c.into_entry()?,
        Line::Loss(l) => Entry::Loss(l),
        Line::Resync(r) => Entry::Resync {
            read_from: r.read_from_ns,
            ts: r.ts_ns,
        },
        Line::Evidence(e) => Entry::Evidence(e),
        Line::Transition(t) => Entry::Record(Record::Transition(Box::new((*t).into()))),
        Line::Fork(l) => Entry::Record(Record::Fork(l.into_fork()?)),
        Line::Exec(l) => Entry::Record(Record::Exec(Box::new(l.into_exec()))),
        Line::Exit(l) => Entry::Record(Record::Exit(l.into_exit())),
    })
}

/// A bad entry: its number (from 1) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The line (JSON Lines) or frame (binary) number.
    pub line: usize,
    pub error: String,
    /// "line" or "frame".
    pub unit: &'static str,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.unit, self.line, self.error)
    }
}

#[cfg(test)]
mod tests;
