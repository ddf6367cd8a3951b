//! Record files: what `nstrace report` turns back into the same timeline.
//!
//! Two encodings of the same entries. JSON Lines (the default): line 1 is a header (format
//! version, kernel, the host's namespace set, the clock); then one `process` line per task that
//! existed when tracing began; then every record in kernel-time order, in the same shape as
//! `--json` prints (plus forks, execs and exits), every loss of records where it was found, and
//! after a loss the `resync` line and `process` lines of /proc read again. Binary (`--binary`):
//! [`BIN_MAGIC`], then one frame per entry, a 4-byte little-endian length and a postcard-encoded
//! frame; every entry but a record is a JSON line inside a frame, records are their decoded
//! form. Binary files are about a fifth of the size and replay several times faster. `report`
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
    event::{Call, Child, Exec, Exit, Fork, Loss, NsSet, Record, Transition},
    ns::NsKind,
    timeline::ProcEntry,
};

pub mod read;
pub mod write;

pub use read::{ReplayError, Replayed, Source, read_entries, rebuild, replay};
pub use write::{BinSink, RecordFile};

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
    Loss(Loss),
    Resync(ResyncLine),
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

/// A loss as a JSON line: `{"type": "loss", "ts_ns", "noticed_ns", "cpu", "records",
/// "batches"}` (the live stream adds `time`).
pub fn loss_line(loss: &Loss) -> serde_json::Value {
    let mut value = serde_json::json!({"type": "loss"});
    if let (Some(line), Ok(serde_json::Value::Object(fields))) =
        (value.as_object_mut(), serde_json::to_value(loss))
    {
        line.extend(fields);
    }
    value
}

/// One line of a record file, parsed.
pub enum Entry {
    Header(Header),
    Process(ProcEntry),
    /// `nstrace run` began following this pid (its command).
    Follow(u32),
    /// What was read of a process after its exec: (pid, ts_ns, cgroup, uid_map).
    Observation(u32, u64, String, String),
    /// Records lost in the kernel, where the live run found them.
    Loss(Loss),
    /// /proc re-read after a loss, from `read_from` until `ts`: the `process` entries that
    /// follow are what it showed.
    Resync {
        read_from: u64,
        ts: u64,
    },
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
        Line::Loss(l) => Entry::Loss(l),
        Line::Resync(r) => Entry::Resync {
            read_from: r.read_from_ns,
            ts: r.ts_ns,
        },
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
        read_entries(
            Box::new(std::io::Cursor::new(bytes.to_vec())),
            &mut |n, e| {
                out.push((n, e));
                true
            },
        )
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
        let result = Source::open(&path);
        let _ = std::fs::remove_file(&path);
        let Err(err) = result else {
            panic!("a version-1 file was read");
        };
        assert!(matches!(err, ReplayError::BinaryVersion { found: 1, .. }));
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

    /// The JSON Lines record of `records()` (and a loss), as `--json` and `-o` write it: pinned,
    /// and read back whole. Regenerate with NSTRACE_BLESS=1 after a deliberate change.
    #[test]
    fn json_lines_match_the_golden_file_and_read_back() {
        use crate::output::{Sink as _, json::JsonSink};
        let loss = Loss {
            ts_ns: 9_500,
            noticed_ns: 9_900,
            cpu: 1,
            records: 24,
            batches: 2,
        };
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out, WallClock::with_offset(0), true);
            for r in records() {
                sink.record(&r).unwrap();
            }
            sink.loss(&loss).unwrap();
        }
        let got = String::from_utf8(out).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/testdata/record.golden.jsonl"
        );
        if std::env::var_os("NSTRACE_BLESS").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).expect("the golden file");
        assert_eq!(
            got, want,
            "the JSON Lines changed (NSTRACE_BLESS=1 to accept)"
        );
        let back: Vec<Entry> = want.lines().map(|l| parse_line(l).unwrap()).collect();
        let (read, losses): (Vec<_>, Vec<_>) = back
            .into_iter()
            .partition(|e| matches!(e, Entry::Record(_)));
        let read: Vec<Record> = read
            .into_iter()
            .filter_map(|e| match e {
                Entry::Record(r) => Some(r),
                _ => None,
            })
            .collect();
        // Every field a record holds goes through (the JSON drops only what it derives).
        let expected = records();
        assert_eq!(read, expected);
        assert!(matches!(&losses[..], [Entry::Loss(l)] if *l == loss));
    }
}
