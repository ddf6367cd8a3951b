//! Record files: what `nstrace report` turns back into the same timeline.
//!
//! Two encodings of the same entries. JSON Lines (the default): line 1 is a header (format
//! version, kernel, the host's namespace set, the clock); then one `process` line per task that
//! existed when tracing began; then every record in kernel-time order, in the same shape as
//! `--json` prints (plus forks, execs and exits). Binary (`--binary`): [`BIN_MAGIC`], then one
//! frame per entry, a 4-byte little-endian length and a postcard-encoded [`Frame`]; header,
//! process, follow and observation entries are JSON lines inside a frame, records are their
//! decoded form. Binary files are about a fifth of the size and replay several times faster.
//! `report` tells them apart by their first bytes. An entry that does not parse is reported with
//! its number, and every good entry is still read.
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
    event::{Call, Child, Exec, Exit, Fork, NsSet, Record, Spare, Transition},
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
    /// What a whole entry is called in messages: "line", or "frame" in a binary file.
    unit: &'static str,
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
            unit: "line",
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
                    "writing the record file {}: {e}; it holds every whole {} written before",
                    self.path, self.unit
                ),
            ));
        }
        self.committed += self.line.len() as u64;
        self.line.clear();
        Ok(())
    }

    /// Adds one whole binary frame. Frames are written in batches of about 64 KiB and at every
    /// flush (each drain of the kernel's buffers); a failed write is cut back to the last whole
    /// frame.
    pub fn frame(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.line.extend_from_slice(bytes);
        if self.line.len() >= 64 * 1024 {
            self.commit()?;
        }
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
    #[serde(default)]
    before_inferred: bool,
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
            child: t.child.map(|c| {
                Box::new(Child {
                    tid: c.tid,
                    start_ns: c.start_boottime_ns,
                    ns_tid: c.ns_tid,
                    ns: set(&c.ns, c.ns_id.as_ref()),
                })
            }),
            before_inferred: t.before_inferred,
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

/// The first bytes of a binary record file (the high byte keeps it from passing for text).
pub const BIN_MAGIC: [u8; 8] = *b"\x89nsrec\n\x02";

/// The longest frame a reader accepts: a longer length means the file is corrupt from there on.
const MAX_FRAME: usize = 1 << 20;

/// One entry of a binary record file, as written.
#[derive(Serialize)]
enum FrameRef<'a> {
    Json(&'a str),
    Transition(&'a Transition),
    Fork(&'a Fork),
    Exec(&'a Exec),
    Exit(&'a Exit),
}

/// One entry of a binary record file, as read (the same encoding as [`FrameRef`]).
#[derive(Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "read on the parser's stack, then moved into a recycled allocation"
)]
enum Frame {
    /// A header, process, follow or observation line.
    Json(String),
    Transition(Transition),
    Fork(Fork),
    Exec(Box<Exec>),
    Exit(Exit),
}

/// Parses one binary frame, putting a transition in one of the `spare` allocations when there is
/// one.
fn parse_frame(bytes: &[u8], spare: &mut Spare) -> Result<Entry, String> {
    let (frame, rest) =
        postcard::take_from_bytes::<Frame>(bytes).map_err(|e| format!("undecodable frame: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the frame's entry", rest.len()));
    }
    Ok(match frame {
        Frame::Json(line) => parse_line(&line)?,
        Frame::Transition(t) => Entry::Record(Record::Transition(match spare.pop() {
            Some(mut slot) => {
                *slot = t;
                slot
            }
            None => Box::new(t),
        })),
        Frame::Fork(f) => Entry::Record(Record::Fork(f)),
        Frame::Exec(e) => Entry::Record(Record::Exec(e)),
        Frame::Exit(x) => Entry::Record(Record::Exit(x)),
    })
}

/// A record file in the binary encoding: the same entries as the JSON Lines [`JsonSink`]
/// writes to a record file, a frame each.
///
/// [`JsonSink`]: crate::output::json::JsonSink
pub struct BinSink {
    file: RecordFile,
    frame: Vec<u8>,
}

impl BinSink {
    pub fn new(mut file: RecordFile) -> io::Result<Self> {
        file.unit = "frame";
        file.frame(&BIN_MAGIC)?;
        Ok(Self {
            file,
            frame: Vec::with_capacity(512),
        })
    }

    fn put(&mut self, entry: &FrameRef<'_>) -> io::Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        frame.extend_from_slice(&[0; 4]);
        let mut frame = postcard::to_extend(entry, frame).map_err(io::Error::other)?;
        let len = u32::try_from(frame.len() - 4).map_err(io::Error::other)?;
        frame[..4].copy_from_slice(&len.to_le_bytes());
        let written = self.file.frame(&frame);
        self.frame = frame;
        written
    }
}

impl crate::output::Sink for BinSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.put(&match record {
            Record::Transition(t) => FrameRef::Transition(t),
            Record::Fork(f) => FrameRef::Fork(f),
            Record::Exec(e) => FrameRef::Exec(e),
            Record::Exit(x) => FrameRef::Exit(x),
        })
    }

    fn note(&mut self, line: &serde_json::Value) -> io::Result<()> {
        self.put(&FrameRef::Json(&line.to_string()))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(&mut self.file)
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
    #[error(
        "{path} is a binary nstrace record of version {found}, and this nstrace reads version \
         {reads}: replay it with the nstrace that recorded it, or record it again"
    )]
    BinaryVersion { path: String, found: u8, reads: u8 },
}

/// Reads a record file, handing every good entry to `each`; returns the header and the bad
/// lines.
pub fn replay(
    path: &Path,
    mut each: impl FnMut(&Entry) -> io::Result<()>,
) -> Result<(Header, Vec<BadLine>), ReplayError> {
    let mut reader = open_record(path, 1 << 20)?;
    let binary = is_binary(&mut reader).map_err(|source| ReplayError::Read { line: 1, source })?;
    let unit = if binary { "frame" } else { "line" };
    // Parsing is much of the work: one thread parses while this one applies, batch by batch.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Parsed>>(8);
    // Transitions' allocations go back to the parser to be filled again: neither thread then
    // allocates or frees one per record.
    let (spent_tx, returned) = std::sync::mpsc::sync_channel::<Spare>(4);
    let parser = std::thread::spawn(move || parse_entries(reader, &tx, &returned));
    let mut spent = Spare::with_capacity(BATCH);
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
                    each(&Entry::Header(h.clone())).map_err(|source| ReplayError::Read {
                        line: number,
                        source,
                    })?;
                    header = Some(h);
                }
                Ok(Entry::Header(_)) => bad.push(BadLine {
                    line: number,
                    error: "a second header".into(),
                    unit,
                }),
                Ok(_) | Err(_) if header.is_none() => return Err(no_header()),
                Ok(entry) => {
                    each(&entry).map_err(|source| ReplayError::Read {
                        line: number,
                        source,
                    })?;
                    if let Entry::Record(Record::Transition(t)) = entry {
                        spent.push(t);
                        if spent.len() == BATCH {
                            // A full return channel: these are freed here instead.
                            let _ = spent_tx.try_send(std::mem::take(&mut spent));
                        }
                    }
                }
                Err(error) => bad.push(BadLine {
                    line: number,
                    error,
                    unit,
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

/// Opens a record file for reading, with a buffer of `capacity` bytes; refuses a binary record
/// of another version by name.
fn open_record(path: &Path, capacity: usize) -> Result<BufReader<File>, ReplayError> {
    let file = File::open(path).map_err(|source| ReplayError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(capacity, file);
    if let Some(found) = other_binary_version(&mut reader) {
        return Err(ReplayError::BinaryVersion {
            path: path.display().to_string(),
            found,
            reads: BIN_MAGIC[BIN_MAGIC.len() - 1],
        });
    }
    Ok(reader)
}

/// Whether the file is in the binary encoding (its first bytes, left unread).
fn is_binary(reader: &mut impl BufRead) -> io::Result<bool> {
    Ok(reader.fill_buf()?.starts_with(&BIN_MAGIC))
}

/// The version of a binary record file this nstrace does not read (its first bytes, left
/// unread): [`BIN_MAGIC`] but for the last byte, the version.
fn other_binary_version(reader: &mut impl BufRead) -> Option<u8> {
    let (ours, prefix) = BIN_MAGIC.split_last()?;
    let head = reader.fill_buf().ok()?;
    let version = *head.strip_prefix(prefix)?.first()?;
    (version != *ours).then_some(version)
}

const BATCH: usize = 1024;

/// What a reader hands over for each entry: its number and what it held. Returning false stops
/// the reading.
type Each<'a> = dyn FnMut(usize, Result<Entry, String>) -> bool + 'a;

/// Reads every entry of a record file in either encoding (told apart by its first bytes),
/// handing each to `each`. Errs with the entry number where reading the file failed.
pub fn read_entries(reader: impl BufRead, each: &mut Each<'_>) -> Result<(), (usize, io::Error)> {
    read_entries_reusing(reader, None, each)
}

/// [`read_entries`], filling transitions into the allocations `returned` hands back.
fn read_entries_reusing(
    mut reader: impl BufRead,
    returned: Option<&std::sync::mpsc::Receiver<Spare>>,
    each: &mut Each<'_>,
) -> Result<(), (usize, io::Error)> {
    if is_binary(&mut reader).map_err(|e| (1, e))? {
        read_frames(reader, returned, each)
    } else {
        read_lines(reader, each)
    }
}

/// The parser thread of [`replay`]: every entry, in batches; stops early when the receiver is
/// gone.
fn parse_entries(
    reader: impl BufRead,
    tx: &std::sync::mpsc::SyncSender<Vec<Parsed>>,
    returned: &std::sync::mpsc::Receiver<Spare>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let read = read_entries_reusing(reader, Some(returned), &mut |number, result| {
        batch.push(Parsed::Line(number, result));
        batch.len() < BATCH
            || tx
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .is_ok()
    });
    if let Err((number, e)) = read {
        batch.push(Parsed::Failed(number, e));
    }
    let _ = tx.send(batch);
}

/// The frames of a binary file. Reading stops at a frame that is cut short or whose length
/// cannot be right: nothing after it can be found.
fn read_frames(
    mut reader: impl BufRead,
    returned: Option<&std::sync::mpsc::Receiver<Spare>>,
    each: &mut Each<'_>,
) -> Result<(), (usize, io::Error)> {
    let mut spare = Spare::new();
    let mut magic = [0; BIN_MAGIC.len()];
    reader.read_exact(&mut magic).map_err(|e| (1, e))?;
    let mut buf = Vec::new();
    for number in 1.. {
        let mut len = [0u8; 4];
        match read_full(&mut reader, &mut len).map_err(|e| (number, e))? {
            0 => break,
            4 => {}
            _ => {
                each(number, Err("truncated (a cut-off frame length)".into()));
                break;
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            each(
                number,
                Err(format!(
                    "a frame of {len} bytes: the file is corrupt from here on, and nothing after \
                     this point can be read"
                )),
            );
            break;
        }
        buf.resize(len, 0);
        let got = read_full(&mut reader, &mut buf).map_err(|e| (number, e))?;
        if got < len {
            each(number, Err(format!("truncated ({got} of its {len} bytes)")));
            break;
        }
        if spare.is_empty()
            && let Some(more) = returned.and_then(|r| r.try_recv().ok())
        {
            spare = more;
        }
        if !each(number, parse_frame(&buf, &mut spare)) {
            break;
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(reader: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The lines of a JSON Lines file.
fn read_lines(mut reader: impl BufRead, each: &mut Each<'_>) -> Result<(), (usize, io::Error)> {
    let mut buf = String::new();
    for number in 1.. {
        buf.clear();
        if reader.read_line(&mut buf).map_err(|e| (number, e))? == 0 {
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
        if !each(number, result) {
            break;
        }
    }
    Ok(())
}

/// The header of a record file (its first line).
pub fn read_header(path: &Path) -> Result<Header, ReplayError> {
    let reader = open_record(path, 8 * 1024)?;
    // The first entry of either encoding, and no further; it must be the first line or frame.
    let mut first = None;
    read_entries(reader, &mut |number, entry| {
        first = Some((number, entry));
        false
    })
    .map_err(|(line, source)| ReplayError::Read { line, source })?;
    match first {
        Some((1, Ok(Entry::Header(h)))) => Ok(h),
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
            Entry::Process(p) => snapshot.push(p.clone()),
            Entry::Follow(pid) => {
                start(pipeline, &mut snapshot, &mut started, start_ts);
                if pids.is_empty() {
                    pipeline.timeline.follow(*pid);
                }
            }
            Entry::Observation(pid, ts, cgroup, uid_map) => {
                start(pipeline, &mut snapshot, &mut started, start_ts);
                pipeline.observed(*pid, *ts, cgroup, uid_map)?;
            }
            Entry::Record(r) => {
                start(pipeline, &mut snapshot, &mut started, start_ts);
                pipeline.feed(r, false)?;
            }
        }
        Ok(())
    })?;
    start(pipeline, &mut snapshot, &mut started, header.start_ts_ns);
    Ok((header, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Sink as _;

    fn set(base: u32) -> NsSet {
        NsSet {
            inum: std::array::from_fn(|i| base + i as u32),
            id: std::array::from_fn(|i| u64::from(base) * 10 + i as u64),
        }
    }

    /// One record of each kind, with every optional part present somewhere. Fields of the same
    /// type hold different values, so that the golden file notices two of them trading places.
    fn records() -> Vec<Record> {
        let setns = Transition {
            ts_ns: 5_000,
            call: Call::Setns,
            flags: 0x0400_0000,
            ret: 0,
            fd: Some(7),
            tid: 43,
            pid: 42,
            ppid: 41,
            uid: 1000,
            ns_tid: 3,
            pid_level: 2,
            start_boottime_ns: 900,
            comm: Comm::from("nsenter"),
            before: set(4026531830),
            after: set(4026532100),
            child: None,
            before_inferred: true,
        };
        let clone = Transition {
            ts_ns: 6_000,
            call: Call::Clone3,
            flags: 0x7c02_0000,
            ret: -22,
            fd: None,
            comm: Comm::from("crun ünï"),
            child: Some(Box::new(Child {
                tid: 77,
                start_ns: 5_999,
                ns_tid: 1,
                ns: set(4026532200),
            })),
            ..setns.clone()
        };
        vec![
            Record::Fork(Fork {
                ts_ns: 1_000,
                tid: 44,
                pid: 42,
                start_ns: 900,
                parent_tid: 41,
                parent_pid: 40,
                parent_start_ns: 100,
                comm: Comm::from("sh"),
            }),
            Record::Exec(Box::new(Exec {
                ts_ns: 2_000,
                tid: 46,
                pid: 42,
                old_tid: 43,
                start_ns: 900,
                comm: Comm::from("nsenter"),
                filename: "/usr/bin/nsenter".into(),
            })),
            Record::Transition(Box::new(setns)),
            Record::Transition(Box::new(clone)),
            Record::Exit(Exit {
                ts_ns: 9_000,
                tid: 47,
                pid: 42,
                start_ns: 900,
                code: 256,
                group_dead: true,
                comm: Comm::from("nsenter"),
            }),
        ]
    }

    /// A binary record file of a header, a process line and `records()`, as bytes.
    fn binary_file() -> Vec<u8> {
        // One file per call: the tests run on parallel threads of one process.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("nstrace-bin-{}-{call}", std::process::id()));
        let mut sink = BinSink::new(RecordFile::create(&path).unwrap()).unwrap();
        let header = Header::new("6.18".into(), 0, 0, BTreeMap::new(), false, vec![], false);
        sink.note(&serde_json::to_value(&header).unwrap()).unwrap();
        let process = ProcEntry {
            tid: 42,
            pid: 42,
            ppid: 1,
            comm: Comm::from("sh"),
            start_ns: 900,
            inodes: [Some(4026531840); nstrace_common::NS_SLOTS],
        };
        sink.note(&serde_json::to_value(ProcessLine::from(&process)).unwrap())
            .unwrap();
        for r in records() {
            sink.record(&r).unwrap();
        }
        sink.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        bytes
    }

    fn read_all(bytes: &[u8]) -> Vec<(usize, Result<Entry, String>)> {
        let mut out = Vec::new();
        read_entries(bytes, &mut |n, e| {
            out.push((n, e));
            true
        })
        .unwrap();
        out
    }

    fn records_of(entries: &[(usize, Result<Entry, String>)]) -> Vec<Record> {
        entries
            .iter()
            .filter_map(|(_, e)| match e {
                Ok(Entry::Record(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_binary_file_reads_back_every_entry_exactly() {
        let bytes = binary_file();
        assert!(bytes.starts_with(&BIN_MAGIC));
        let entries = read_all(&bytes);
        assert!(matches!(entries[0], (1, Ok(Entry::Header(ref h))) if h.kernel == "6.18"));
        assert!(matches!(entries[1], (2, Ok(Entry::Process(ref p))) if p.pid == 42));
        assert_eq!(records_of(&entries), records());
        assert_eq!(entries.len(), 2 + records().len());
    }

    /// Files recorded by earlier builds must read the same: the encoding follows the records'
    /// field order, so a change to a record type shows here. After a deliberate change, bump
    /// [`BIN_MAGIC`]'s version byte and regenerate with NSTRACE_BLESS=1.
    #[test]
    fn the_binary_encoding_matches_the_golden_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/testdata/record.golden.bin"
        );
        let got = binary_file();
        if std::env::var_os("NSTRACE_BLESS").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read(path).expect("the golden file");
        assert!(
            got == want,
            "the binary record encoding changed. A record type's fields or their order: bump \
             BIN_MAGIC's version byte so that older files are refused by name. Only a JSON \
             line (header, process) that older files still read: no bump. Then \
             NSTRACE_BLESS=1 to accept"
        );
        assert_eq!(records_of(&read_all(&want)), records());
    }

    #[test]
    fn a_binary_file_of_another_version_is_refused_by_name() {
        let mut bytes = binary_file();
        let at = BIN_MAGIC.len() - 1;
        bytes[at] = 1;
        let path = std::env::temp_dir().join(format!("nstrace-v1-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let result = replay(&path, |_| Ok(()));
        let header = read_header(&path);
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            header,
            Err(ReplayError::BinaryVersion { found: 1, .. })
        ));
        let Err(err) = result else {
            panic!("a version-1 file was read");
        };
        let err = err.to_string();
        assert!(
            err.contains("binary nstrace record of version 1")
                && err.contains(&format!("reads version {}", BIN_MAGIC[at])),
            "{err}"
        );
    }

    #[test]
    fn a_binary_file_cut_anywhere_keeps_every_whole_frame_before_the_cut() {
        let bytes = binary_file();
        let whole = read_all(&bytes).len();
        for cut in BIN_MAGIC.len()..bytes.len() {
            let entries = read_all(&bytes[..cut]);
            let good = entries.iter().filter(|(_, e)| e.is_ok()).count();
            let bad: Vec<_> = entries
                .iter()
                .filter_map(|(_, e)| e.as_ref().err())
                .collect();
            assert!(bad.len() <= 1, "cut at {cut}: {bad:?}");
            assert!(bad.iter().all(|e| e.starts_with("truncated")), "{bad:?}");
            assert!(good < whole, "cut at {cut}");
            // Every frame that ends before the cut is read.
            let expected = records();
            let got = records_of(&entries);
            assert_eq!(got[..], expected[..got.len()], "cut at {cut}");
        }
    }

    #[test]
    fn a_damaged_frame_is_reported_and_the_frames_after_it_are_read() {
        let mut bytes = binary_file();
        // The fifth frame (the setns): keep its length, scramble its entry.
        let mut at = BIN_MAGIC.len();
        for _ in 0..4 {
            at += 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        bytes[at + 4] = 0xee;
        let entries = read_all(&bytes);
        assert_eq!(entries.len(), 2 + records().len());
        assert!(
            matches!(&entries[4], (5, Err(e)) if e.contains("undecodable")),
            "{:?}",
            entries[4].1.as_ref().err()
        );
        let mut expected = records();
        expected.remove(2);
        assert_eq!(records_of(&entries), expected);
    }

    #[test]
    fn an_impossible_frame_length_stops_the_reading_with_a_reason() {
        let mut bytes = binary_file();
        let first =
            BIN_MAGIC.len() + 4 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        bytes[first..first + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let entries = read_all(&bytes);
        assert_eq!(entries.len(), 2);
        assert!(
            matches!(&entries[1], (2, Err(e)) if e.contains("corrupt from here on")),
            "{:?}",
            entries[1].1.as_ref().err()
        );
    }
}
