//! Record files: JSON Lines that `nstrace report` turns back into the same timeline.
//!
//! Line 1 is a header (format version, kernel, the host's namespace set, the clock); then one
//! `process` line per task that existed when tracing began; then every record in kernel-time
//! order, in the same shape as `--json` prints (plus forks, execs and exits). A line that does
//! not parse is reported with its number, and every good line is still read.
use crate::event::Comm;
use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::{
    clock::WallClock,
    event::{Call, Child, Exec, Exit, Fork, NsSet, Record, Transition},
    ns::NsKind,
    pipeline::Pipeline,
    timeline::{ProcEntry, Scope, Timeline},
};

pub const FORMAT: &str = "nstrace-record";

/// A record file being written: every line reaches the file whole, or not at all. A write that
/// fails part-way (a full disk) is cut back to the last whole line, so the file always replays.
pub struct RecordFile {
    file: File,
    path: String,
    line: Vec<u8>,
    /// Bytes of whole lines in the file.
    committed: u64,
}

impl RecordFile {
    /// Creates `path` (0600, never through a symlink), replacing what was there.
    pub fn create(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Self {
            file,
            path: path.display().to_string(),
            line: Vec::with_capacity(1024),
            committed: 0,
        })
    }

    fn commit(&mut self) -> io::Result<()> {
        use std::io::Write as _;
        if self.line.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.line) {
            let _ = self.file.set_len(self.committed);
            self.line.clear();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "writing the record file {}: {e}; it holds every whole line written before",
                    self.path
                ),
            ));
        }
        self.committed += self.line.len() as u64;
        self.line.clear();
        Ok(())
    }
}

impl io::Write for RecordFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        if buf.contains(&b'\n') {
            self.commit()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.commit()
    }
}
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
        }
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
struct SetLine {
    mnt: u64,
    uts: u64,
    ipc: u64,
    pid: u64,
    pid_for_children: u64,
    net: u64,
    user: u64,
    cgroup: u64,
    time: u64,
    time_for_children: u64,
}

impl SetLine {
    fn values(&self) -> [u64; nstrace_common::NS_SLOTS] {
        let mut v = [0; nstrace_common::NS_SLOTS];
        for (kind, value) in [
            (NsKind::Mnt, self.mnt),
            (NsKind::Uts, self.uts),
            (NsKind::Ipc, self.ipc),
            (NsKind::Pid, self.pid),
            (NsKind::PidForChildren, self.pid_for_children),
            (NsKind::Net, self.net),
            (NsKind::User, self.user),
            (NsKind::Cgroup, self.cgroup),
            (NsKind::Time, self.time),
            (NsKind::TimeForChildren, self.time_for_children),
        ] {
            v[kind.slot()] = value;
        }
        v
    }
}

fn set(inodes: &SetLine, ids: Option<&SetLine>) -> NsSet {
    NsSet {
        inum: inodes.values().map(|v| v as u32),
        id: ids.map_or([0; nstrace_common::NS_SLOTS], SetLine::values),
    }
}

#[derive(Deserialize)]
struct ChildLine {
    tid: u32,
    #[serde(default)]
    start_boottime_ns: u64,
    ns_tid: u32,
    ns: SetLine,
    ns_id: Option<SetLine>,
}

#[derive(Deserialize)]
struct TransitionLine {
    ts_ns: u64,
    call: String,
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    comm: Comm,
    ns_tid: u32,
    pid_level: u32,
    start_boottime_ns: u64,
    flags: u64,
    fd: Option<i32>,
    ret: i64,
    before: SetLine,
    after: SetLine,
    before_id: Option<SetLine>,
    after_id: Option<SetLine>,
    child: Option<ChildLine>,
}

#[derive(Deserialize)]
struct LifeLine {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: Comm,
    start_boottime_ns: u64,
    parent_pid: Option<u32>,
    parent_tid: Option<u32>,
    parent_start_boottime_ns: Option<u64>,
    old_tid: Option<u32>,
    filename: Option<String>,
    code: Option<i32>,
    group_dead: Option<bool>,
}

#[derive(Deserialize)]
struct FollowLine {
    pid: u32,
}

#[derive(Deserialize)]
struct ObservationLine {
    ts_ns: u64,
    pid: u32,
    cgroup: String,
    #[serde(default)]
    uid_map: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Header(Header),
    Follow(FollowLine),
    Observation(ObservationLine),
    Process(ProcessLine),
    Transition(Box<TransitionLine>),
    Fork(LifeLine),
    Exec(LifeLine),
    Exit(LifeLine),
}

fn call(name: &str) -> Result<Call, String> {
    Ok(match name {
        "clone" => Call::Clone,
        "clone3" => Call::Clone3,
        "unshare" => Call::Unshare,
        "setns" => Call::Setns,
        "fork" => Call::Fork,
        "exec" => Call::Exec,
        other => return Err(format!("unknown call {other:?}")),
    })
}

impl TryFrom<TransitionLine> for Transition {
    type Error = String;

    fn try_from(t: TransitionLine) -> Result<Self, String> {
        Ok(Transition {
            ts_ns: t.ts_ns,
            call: call(&t.call)?,
            flags: t.flags,
            ret: t.ret,
            fd: t.fd,
            tid: t.tid,
            pid: t.pid,
            ppid: t.ppid,
            uid: t.uid,
            ns_tid: t.ns_tid,
            pid_level: t.pid_level,
            start_boottime_ns: t.start_boottime_ns,
            comm: t.comm,
            before: set(&t.before, t.before_id.as_ref()),
            after: set(&t.after, t.after_id.as_ref()),
            child: t.child.map(|c| Child {
                tid: c.tid,
                start_ns: c.start_boottime_ns,
                ns_tid: c.ns_tid,
                ns: set(&c.ns, c.ns_id.as_ref()),
            }),
        })
    }
}

/// One line of a record file, parsed.
pub enum Entry {
    Header(Header),
    Process(ProcEntry),
    /// `nstrace run` began following this pid (its command).
    Follow(u32),
    /// What was read of a process after its exec: (pid, ts_ns, cgroup, uid_map).
    Observation(u32, u64, String, String),
    Record(Record),
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
        Line::Observation(o) => Entry::Observation(o.pid, o.ts_ns, o.cgroup, o.uid_map),
        Line::Transition(t) => Entry::Record(Record::Transition(Box::new((*t).try_into()?))),
        Line::Fork(l) => Entry::Record(Record::Fork(Fork {
            ts_ns: l.ts_ns,
            tid: l.tid,
            pid: l.pid,
            start_ns: l.start_boottime_ns,
            parent_tid: l.parent_tid.ok_or("a fork without parent_tid")?,
            parent_pid: l.parent_pid.ok_or("a fork without parent_pid")?,
            parent_start_ns: l.parent_start_boottime_ns.unwrap_or(0),
            comm: l.comm,
        })),
        Line::Exec(l) => Entry::Record(Record::Exec(Box::new(Exec {
            ts_ns: l.ts_ns,
            tid: l.tid,
            pid: l.pid,
            old_tid: l.old_tid.unwrap_or(l.tid),
            start_ns: l.start_boottime_ns,
            comm: l.comm,
            filename: l.filename.unwrap_or_default(),
        }))),
        Line::Exit(l) => Entry::Record(Record::Exit(Exit {
            ts_ns: l.ts_ns,
            tid: l.tid,
            pid: l.pid,
            start_ns: l.start_boottime_ns,
            code: l.code.unwrap_or(0),
            group_dead: l.group_dead.unwrap_or(l.tid == l.pid),
            comm: l.comm,
        })),
    })
}

/// A bad line: its number (from 1) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub error: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("opening {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("reading line {line}: {source}")]
    Read { line: usize, source: io::Error },
    #[error(
        "{0} is not an nstrace record: its first line is not a header (record one with `nstrace record -o FILE`)"
    )]
    NoHeader(String),
}

/// Reads a record file, handing every good entry to `each`; returns the header and the bad
/// lines.
pub fn replay(
    path: &Path,
    mut each: impl FnMut(Entry) -> io::Result<()>,
) -> Result<(Header, Vec<BadLine>), ReplayError> {
    let file = File::open(path).map_err(|source| ReplayError::Open {
        path: path.display().to_string(),
        source,
    })?;
    // Parsing JSON is half the work: one thread parses while this one applies, batch by batch.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Parsed>>(8);
    let parser = std::thread::spawn(move || parse_lines(file, &tx));
    let mut header = None;
    let mut bad = Vec::new();
    let no_header = || ReplayError::NoHeader(path.display().to_string());
    for batch in rx {
        for parsed in batch {
            let (number, result) = match parsed {
                Parsed::Line(number, result) => (number, result),
                Parsed::Failed(line, source) => return Err(ReplayError::Read { line, source }),
            };
            match result {
                Ok(Entry::Header(h)) if header.is_none() => {
                    header = Some(h.clone());
                    each(Entry::Header(h)).map_err(|source| ReplayError::Read {
                        line: number,
                        source,
                    })?;
                }
                Ok(Entry::Header(_)) => bad.push(BadLine {
                    line: number,
                    error: "a second header".into(),
                }),
                Ok(_) | Err(_) if header.is_none() => return Err(no_header()),
                Ok(entry) => each(entry).map_err(|source| ReplayError::Read {
                    line: number,
                    source,
                })?,
                Err(error) => bad.push(BadLine {
                    line: number,
                    error,
                }),
            }
        }
    }
    // The parser ends with the file (or at an error already returned above).
    let _ = parser.join();
    let header = header.ok_or_else(no_header)?;
    Ok((header, bad))
}

/// One line of a record file as the parser thread hands it over.
enum Parsed {
    /// Its number and what it held.
    Line(usize, Result<Entry, String>),
    /// Reading failed at this line.
    Failed(usize, io::Error),
}

/// Reads and parses every line, in batches; stops early when the receiver is gone.
fn parse_lines(file: File, tx: &std::sync::mpsc::SyncSender<Vec<Parsed>>) {
    const BATCH: usize = 1024;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = String::new();
    let mut number = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        buf.clear();
        number += 1;
        let n = match reader.read_line(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                batch.push(Parsed::Failed(number, e));
                let _ = tx.send(batch);
                return;
            }
        };
        if n == 0 {
            break;
        }
        let line = buf.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            continue;
        }
        let result = parse_line(line).map_err(|error| {
            if buf.ends_with('\n') {
                error
            } else {
                format!("truncated ({error})")
            }
        });
        batch.push(Parsed::Line(number, result));
        if batch.len() == BATCH
            && tx
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .is_err()
        {
            return;
        }
    }
    let _ = tx.send(batch);
}

/// The header of a record file (its first line).
pub fn read_header(path: &Path) -> Result<Header, ReplayError> {
    let file = File::open(path).map_err(|source| ReplayError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let mut first = String::new();
    BufReader::new(file)
        .read_line(&mut first)
        .map_err(|source| ReplayError::Read { line: 1, source })?;
    match parse_line(first.trim_end()) {
        Ok(Entry::Header(h)) => Ok(h),
        _ => Err(ReplayError::NoHeader(path.display().to_string())),
    }
}

/// Replays a record file through `pipeline`, as it ran live: the snapshot, the followed pids
/// (the header's and `follow` lines, unless `pids` overrides them), the observations, then every
/// record in order. Returns the header and the lines that did not parse; every other line was
/// applied.
pub fn rebuild(
    path: &Path,
    pids: &[u32],
    pipeline: &mut Pipeline<'_>,
) -> Result<(Header, Vec<BadLine>), ReplayError> {
    let scope = |pids: &[u32], scoped: bool| {
        if scoped {
            Scope::Descendants(pids.iter().copied().collect())
        } else {
            Scope::All
        }
    };
    pipeline.timeline = Timeline::new(scope(pids, !pids.is_empty()));
    let mut start_ts = 0;
    let mut snapshot = Vec::new();
    let mut started = false;
    let start = |pipeline: &mut Pipeline<'_>,
                 snapshot: &mut Vec<ProcEntry>,
                 started: &mut bool,
                 at: u64| {
        if !*started {
            *started = true;
            pipeline.timeline.snapshot(snapshot, at);
            snapshot.clear();
        }
    };
    let (header, bad) = replay(path, |entry| {
        match entry {
            Entry::Header(h) => {
                if pids.is_empty() {
                    pipeline.timeline = Timeline::new(scope(&h.pids, h.scoped));
                }
                start_ts = h.start_ts_ns;
            }
            Entry::Process(p) => snapshot.push(p),
            Entry::Follow(pid) => {
                start(pipeline, &mut snapshot, &mut started, start_ts);
                if pids.is_empty() {
                    pipeline.timeline.follow(pid);
                }
            }
            Entry::Observation(pid, ts, cgroup, uid_map) => {
                start(pipeline, &mut snapshot, &mut started, start_ts);
                pipeline.observed(pid, ts, &cgroup, &uid_map)?;
            }
            Entry::Record(r) => {
                start(pipeline, &mut snapshot, &mut started, start_ts);
                pipeline.feed(&r, false)?;
            }
        }
        Ok(())
    })?;
    start(pipeline, &mut snapshot, &mut started, header.start_ts_ns);
    Ok((header, bad))
}
