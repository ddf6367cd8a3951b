//! Evidence of findings (`--evidence DIR`): for each finding, a record file of the seconds
//! around it, which `nstrace report` replays as it does any record, so that a node keeps what
//! led to a finding without recording everything.
//!
//! The archive's entries are kept in memory from a snapshot of the timeline on: every window
//! (`--evidence-window`) a new snapshot is taken, as rotation makes one (see [`Carried`]), and
//! what came before the older of the last two goes, so that the entries since a snapshot at
//! least a window old are always at hand. A finding opens a file in DIR: that snapshot, every
//! entry since, an `evidence` line saying what was found; then every entry as it comes, until a
//! window after the finding (a later finding stretches the file, [`STRETCH_WINDOWS`] windows
//! after its first at most; past that a new file begins). The file is a record: header and
//! `process` lines first, whole entries, 0600, a new name never replacing one.
//!
//! Memory is bounded: past [`KEPT_ENTRIES`] entries in memory the entries before the newer
//! snapshot go, and when there are none (a storm) a snapshot is taken at once and the entries
//! before it go; a file whose time before the finding was cut so says
//! (`"cut": true`, with `from_ns` where it begins). After `--evidence-keep` files, later
//! findings are counted and said, not kept: the first evidence of an attack is what a flood of
//! findings after it cannot push out. A file that cannot be written (a full disk) is said, and
//! no more evidence is kept; the trace goes on.
use std::{cell::Cell, collections::VecDeque, io, path::PathBuf, rc::Rc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rotate::{Carried, file_sink};
use crate::{
    clock::WallClock,
    event::{Loss, Record, Spare},
    output::{FindingView, Sink, file::Directory},
    timeline::ProcEntry,
};

/// Entries kept in memory at most (a transition is about 420 bytes: some 7 MiB): past it, the
/// time kept before a finding is cut short.
pub const KEPT_ENTRIES: usize = 16_384;

/// The `evidence` line: what was found, and what of the time around it the file holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EvidenceLine {
    #[serde(rename = "type", skip_deserializing, default = "evidence_kind")]
    pub kind: String,
    /// The finding's time, id and process.
    pub ts_ns: u64,
    pub id: String,
    pub pid: u32,
    /// Where the file's snapshot was taken: its time before the finding begins there (the
    /// trace's start when the file starts with the trace's own header).
    pub from_ns: u64,
    /// The window asked for, before and after.
    pub window_ns: u64,
    /// The time before the finding is shorter than the window (the memory cap, or the trace's
    /// start).
    pub cut: bool,
}

fn evidence_kind() -> String {
    "evidence".into()
}

/// What evidence is kept: where, the window around each finding, and how many files at most.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub window_ns: u64,
    pub keep: usize,
}

/// A snapshot of the timeline: its lines (a record's start), and the entry it comes before.
struct Snapshot {
    ts_ns: u64,
    lines: Vec<Value>,
    /// The index, from the trace's start, of the first entry after it.
    at: u64,
}

enum Kept {
    Record(Record),
    Note(Value),
    Loss(Loss),
}

impl Kept {
    fn write(&self, sink: &mut dyn Sink) -> io::Result<()> {
        match self {
            Kept::Record(r) => sink.record(r),
            Kept::Note(line) => sink.note(line),
            Kept::Loss(loss) => sink.loss(loss),
        }
    }
}

/// A file being written: until when, and where.
struct Open {
    sink: Box<dyn Sink>,
    until_ns: u64,
    /// Where its snapshot was taken, and how far later findings may stretch it.
    from_ns: u64,
    limit_ns: u64,
    path: PathBuf,
}

/// Windows after its first finding a file may be stretched to by later ones: a process that
/// raises a finding every few seconds cannot turn one file into a recording of everything.
pub const STRETCH_WINDOWS: u64 = 10;

pub struct Evidence {
    dir: Directory,
    window: Window,
    clock: WallClock,
    carried: Carried,
    /// The older of the last two snapshots, and the newer (the trace's start at first: no
    /// lines, its entries from the header on).
    older: Option<Snapshot>,
    newer: Snapshot,
    kept: VecDeque<Kept>,
    /// Transitions' allocations from entries that went, filled again by the next ones: a
    /// storm then neither allocates nor frees one per record.
    spare: Spare,
    /// Entries kept in memory at most ([`KEPT_ENTRIES`]).
    pub cap: usize,
    /// The index, from the trace's start, of `kept[0]`.
    first: u64,
    now_ns: u64,
    /// The memory cap was reached: a snapshot is due now.
    full: bool,
    open: Option<Open>,
    /// Files written, findings not kept (past `keep`), and whether writing failed.
    written: usize,
    not_kept: u64,
    failed: bool,
}

impl Evidence {
    pub fn new(dir: Directory, window: Window, clock: WallClock) -> Self {
        Self {
            dir,
            window,
            clock,
            carried: Carried::default(),
            older: None,
            newer: Snapshot {
                ts_ns: 0,
                lines: Vec::new(),
                at: 0,
            },
            kept: VecDeque::new(),
            spare: Vec::new(),
            cap: KEPT_ENTRIES,
            first: 0,
            now_ns: 0,
            full: false,
            open: None,
            written: 0,
            not_kept: 0,
            failed: false,
        }
    }

    fn keep(&mut self, entry: Kept) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        if let Some(open) = &mut self.open
            && let Err(e) = entry.write(open.sink.as_mut())
        {
            self.fail(&e);
        }
        self.kept.push_back(entry);
        if self.kept.len() >= self.cap {
            if self.older.take().is_some() && self.newer.at > self.first {
                // The newer snapshot is base enough: the entries before it go, no snapshot.
                self.drop_until(self.newer.at);
            } else {
                self.full = true;
            }
        }
        Ok(())
    }

    /// Time moved on to `ts_ns`: a file whose window ended is closed first.
    fn advance(&mut self, ts_ns: u64) {
        self.now_ns = self.now_ns.max(ts_ns);
        if self.open.as_ref().is_some_and(|o| self.now_ns > o.until_ns) {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some(mut open) = self.open.take()
            && let Err(e) = open.sink.flush()
        {
            self.open = Some(open);
            self.fail(&e);
        }
    }

    /// Writing failed: said once, and no more evidence is kept (the trace goes on).
    fn fail(&mut self, e: &io::Error) {
        let path = self
            .open
            .take()
            .map(|o| o.path.display().to_string())
            .unwrap_or_else(|| self.dir.path().display().to_string());
        crate::say!(
            "nstrace: warning: evidence: writing {path}: {e}; no more evidence is kept (the \
             trace goes on)"
        );
        self.failed = true;
        self.kept = VecDeque::new();
        self.spare = Vec::new();
        self.older = None;
        self.newer.lines = Vec::new();
    }

    /// The entries before index `from` go (their transitions' allocations are kept to fill
    /// again).
    fn drop_until(&mut self, from: u64) {
        while self.first < from
            && let Some(gone) = self.kept.pop_front()
        {
            self.first += 1;
            if let Kept::Record(Record::Transition(t)) = gone
                && self.spare.len() < KEPT_ENTRIES
            {
                self.spare.push(t);
            }
        }
    }

    /// The snapshot a file for a finding at `ts_ns` starts from: the latest at least a window
    /// before it, else the oldest there is.
    fn snapshot_for(&self, ts_ns: u64) -> &Snapshot {
        if self.newer.ts_ns.saturating_add(self.window.window_ns) <= ts_ns {
            return &self.newer;
        }
        self.older.as_ref().unwrap_or(&self.newer)
    }

    /// The `evidence` line of a finding in a file whose snapshot was taken at `from_ns`.
    fn line_for(&self, finding: &FindingView, from_ns: u64) -> io::Result<Value> {
        let line = EvidenceLine {
            kind: evidence_kind(),
            ts_ns: finding.ts_ns,
            id: finding.id.to_owned(),
            pid: finding.pid,
            from_ns,
            window_ns: self.window.window_ns,
            cut: from_ns.saturating_add(self.window.window_ns) > finding.ts_ns,
        };
        crate::output::line_value(&line)
    }

    /// A new file in the directory, named by the finding's time, id and pid.
    fn create(&self, finding: &FindingView) -> io::Result<(Box<dyn Sink>, PathBuf)> {
        let time = self
            .clock
            .to_utc(finding.ts_ns)
            .format("%Y%m%dT%H%M%S%.3fZ");
        let stem = format!("{time}-{}-{}", finding.id, finding.pid);
        let mut made = self.dir.create_new(&format!("{stem}.jsonl"));
        // A name taken (the same finding of the same process in the same millisecond, or a
        // file left there): the next number.
        for n in 2..1000 {
            match &made {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    made = self.dir.create_new(&format!("{stem}-{n}.jsonl"));
                }
                _ => break,
            }
        }
        let out = made?;
        let path = out.path.clone();
        Ok((file_sink(out, false, Rc::new(Cell::new(0)))?, path))
    }

    fn open(&mut self, finding: &FindingView) -> io::Result<()> {
        let (mut sink, path) = self.create(finding)?;
        let snapshot = self.snapshot_for(finding.ts_ns);
        for line in &snapshot.lines {
            sink.note(line)?;
        }
        let from = usize::try_from(snapshot.at - self.first).unwrap_or(usize::MAX);
        for entry in self.kept.iter().skip(from) {
            entry.write(sink.as_mut())?;
        }
        let from_ns = snapshot.ts_ns;
        sink.note(&self.line_for(finding, from_ns)?)?;
        sink.flush()?;
        crate::say!(
            "nstrace: evidence of {} (pid {}) kept in {}",
            finding.id,
            finding.pid,
            path.display()
        );
        self.written += 1;
        let window = self.window.window_ns;
        self.open = Some(Open {
            sink,
            until_ns: finding.ts_ns.saturating_add(window),
            from_ns,
            limit_ns: finding
                .ts_ns
                .saturating_add(window.saturating_mul(STRETCH_WINDOWS)),
            path,
        });
        Ok(())
    }
}

impl Sink for Evidence {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        self.advance(record.ts_ns());
        self.carried.record(record);
        let kept = match (record, self.spare.pop()) {
            (Record::Transition(t), Some(mut spare)) => {
                spare.copy_from(t);
                Record::Transition(spare)
            }
            (record, spare) => {
                self.spare.extend(spare);
                record.clone()
            }
        };
        self.keep(Kept::Record(kept))
    }

    fn note(&mut self, line: &Value) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        // An observation or resync after the window is not the open file's.
        if let Some(ts) = line["ts_ns"].as_u64() {
            self.advance(ts);
        }
        self.carried.note(line);
        if line["type"] == "header"
            && let Some(ts) = line["start_ts_ns"].as_u64()
        {
            self.newer.ts_ns = ts;
            self.now_ns = self.now_ns.max(ts);
        }
        self.keep(Kept::Note(line.clone()))
    }

    fn loss(&mut self, loss: &Loss) -> io::Result<()> {
        self.advance(loss.ts_ns);
        self.keep(Kept::Loss(loss.clone()))
    }

    /// Opens a file for the finding, or stretches the one open.
    fn finding(&mut self, finding: &FindingView) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        // Within the open file's window, and its stretch: the file goes on; else a new one.
        let until = finding.ts_ns.saturating_add(self.window.window_ns);
        if let Some((from_ns, stretches)) = self.open.as_ref().map(|o| {
            (
                o.from_ns,
                finding.ts_ns <= o.until_ns && until <= o.limit_ns,
            )
        }) {
            if stretches {
                let line = self.line_for(finding, from_ns)?;
                if let Some(open) = &mut self.open {
                    open.until_ns = open.until_ns.max(until);
                    if let Err(e) = open.sink.note(&line) {
                        self.fail(&e);
                    }
                }
                return Ok(());
            }
            self.close();
        }
        if self.written >= self.window.keep {
            self.not_kept += 1;
            if self.not_kept == 1 {
                crate::say!(
                    "nstrace: warning: evidence: {} files kept (--evidence-keep): later \
                     findings' evidence is not kept, only counted",
                    self.written
                );
            }
            return Ok(());
        }
        if let Err(e) = self.open(finding) {
            self.fail(&e);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(open) = &mut self.open
            && let Err(e) = open.sink.flush()
        {
            self.fail(&e);
        }
        Ok(())
    }

    /// A snapshot is due a window after the newer one, or at once when memory is full.
    fn rotation_due(&self) -> bool {
        !self.failed
            && (self.full || self.now_ns >= self.newer.ts_ns.saturating_add(self.window.window_ns))
    }

    fn rotate(&mut self, tasks: &[ProcEntry], ts_ns: u64) -> io::Result<()> {
        let at = self.first + self.kept.len() as u64;
        let snapshot = Snapshot {
            ts_ns,
            lines: self.carried.start(tasks, ts_ns)?,
            at,
        };
        let older = std::mem::replace(&mut self.newer, snapshot);
        self.older = if self.full { None } else { Some(older) };
        let from = self.older.as_ref().map_or(at, |o| o.at);
        self.drop_until(from);
        self.full = false;
        Ok(())
    }
}

impl Drop for Evidence {
    fn drop(&mut self) {
        self.close();
        if self.not_kept > 0 {
            crate::say!(
                "nstrace: evidence: {} files kept in {}; the evidence of {} later findings was \
                 not kept (--evidence-keep {})",
                self.written,
                self.dir.path().display(),
                self.not_kept,
                self.window.keep
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        event::{Call, NsSet, Transition},
        pipeline::{Filter, Pipeline},
        record::{Header, ProcessLine, Source, rebuild},
        timeline::{Scope, Timeline},
    };

    const SH: u32 = 100;
    const SECOND: u64 = 1_000_000_000;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nstrace-evidence-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn host() -> NsSet {
        NsSet {
            inum: std::array::from_fn(|i| 4026531830 + i as u32),
            id: std::array::from_fn(|i| 1000 + i as u64),
        }
    }

    /// A setns of the shell into what it is in (nothing changes) at `ts_ns`, or a refused
    /// unshare (NS-REFUSED).
    fn call(ts_ns: u64, refused: bool) -> Record {
        let mut t = Transition::blank();
        t.ts_ns = ts_ns;
        t.tid = SH;
        t.pid = SH;
        t.ppid = 1;
        t.start_boottime_ns = 5;
        t.comm = "sh".into();
        t.before = host();
        t.after = host();
        if refused {
            t.call = Call::Unshare;
            t.flags = libc::CLONE_NEWNET as u64;
            t.ret = -libc::EPERM as i64;
        } else {
            t.fd = Some(3);
        }
        Record::Transition(Box::new(t))
    }

    /// A trace of the shell: a setns every 100 ms until `end_s`, refused unshares instead at
    /// the tenths of a second in `refused`; evidence kept in `dir` as live.
    fn trace(dir: &Path, window: Window, cap: usize, refused: &[u64], end_s: u64) {
        let mut evidence = Evidence::new(
            Directory::open(dir).unwrap(),
            window,
            WallClock::with_offset(0),
        );
        evidence.cap = cap;
        let task = ProcEntry {
            tid: SH,
            pid: SH,
            ppid: 1,
            comm: "sh".into(),
            start_ns: 5,
            inodes: host().inum.map(Some),
        };
        let header = Header::new(
            "6.18".into(),
            0,
            0,
            Default::default(),
            false,
            vec![],
            false,
        );
        evidence
            .note(&serde_json::to_value(&header).unwrap())
            .unwrap();
        evidence
            .note(&serde_json::to_value(ProcessLine::from(&task)).unwrap())
            .unwrap();
        let mut pipeline = Pipeline::new(Timeline::new(Scope::All), Filter::default());
        pipeline.archive = Some(&mut evidence);
        pipeline.snapshot(&[task], 0).unwrap();
        for step in 1..=end_s * 10 {
            let ts = step * SECOND / 10;
            let refuse = refused.contains(&step);
            pipeline.feed(&call(ts, refuse), false).unwrap();
        }
        pipeline.flush().unwrap();
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    /// The file replayed: its findings' ids and times, its records' first and last times, and
    /// its evidence lines.
    fn replayed(path: &Path) -> (Vec<(&'static str, u64)>, u64, u64, Vec<EvidenceLine>) {
        let mut pipeline = Pipeline::new(Timeline::new(Scope::All), Filter::default());
        let (_, replayed) = rebuild(Source::open(path).unwrap(), &[], &mut pipeline).unwrap();
        assert_eq!(replayed.bad_count(), 0, "{:?}", replayed.bad);
        let found = pipeline
            .timeline
            .findings()
            .iter()
            .map(|f| (f.id, f.ts_ns))
            .collect();
        let times: Vec<u64> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(r#"{"type":"transition""#))
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["ts_ns"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        (found, times[0], *times.last().unwrap(), replayed.evidence)
    }

    #[test]
    fn a_finding_keeps_a_window_before_and_after_that_replays() {
        let dir = scratch("window");
        let window = Window {
            window_ns: SECOND,
            keep: 10,
        };
        trace(&dir, window, KEPT_ENTRIES, &[50], 9);
        let files = files(&dir);
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with("-NS-REFUSED-100.jsonl"), "{name}");
        let (found, first, last, evidence) = replayed(&files[0]);
        // The finding made again from the file alone.
        assert_eq!(found, [("NS-REFUSED", 5 * SECOND)]);
        // From the latest snapshot at least a window before it (snapshots every window), until
        // a window after it.
        assert!(
            first > 3 * SECOND && first <= 4 * SECOND + SECOND / 10,
            "{first}"
        );
        assert_eq!(last, 6 * SECOND);
        assert_eq!(evidence.len(), 1);
        let e = &evidence[0];
        assert_eq!(
            (e.id.as_str(), e.pid, e.ts_ns),
            ("NS-REFUSED", SH, 5 * SECOND)
        );
        assert!(e.from_ns + SECOND <= e.ts_ns && !e.cut, "{e:?}");
        let mode = std::fs::metadata(&files[0]).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn findings_in_one_window_share_a_file_and_past_keep_are_counted() {
        let dir = scratch("keep");
        let window = Window {
            window_ns: SECOND,
            keep: 1,
        };
        // 2 and 2.5 s share a file (until 3.5 s); 6 s is past --evidence-keep 1.
        trace(&dir, window, KEPT_ENTRIES, &[20, 25, 60], 8);
        let files = files(&dir);
        assert_eq!(files.len(), 1, "{files:?}");
        let (found, _, last, evidence) = replayed(&files[0]);
        let half = SECOND / 2;
        assert_eq!(
            found,
            [("NS-REFUSED", 2 * SECOND), ("NS-REFUSED", 5 * half)]
        );
        assert_eq!(last, 7 * half);
        let times: Vec<u64> = evidence.iter().map(|e| e.ts_ns).collect();
        assert_eq!(times, [2 * SECOND, 5 * half]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_memory_cap_cuts_the_time_before_and_says_so() {
        let window = Window {
            window_ns: 4 * SECOND,
            keep: 10,
        };
        // 5 entries at most: a snapshot every half second, where a window is four. Wherever
        // the cap falls, the record that made the finding is in its file.
        for step in 55..=64 {
            let dir = scratch(&format!("cap-{step}"));
            trace(&dir, window, 5, &[step], 8);
            let files = files(&dir);
            let (found, first, _, evidence) = replayed(&files[0]);
            assert_eq!(found, [("NS-REFUSED", step * SECOND / 10)], "step {step}");
            assert!(first >= 5 * SECOND, "{first}");
            assert!(evidence[0].cut, "{:?}", evidence[0]);
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn a_file_stretches_ten_windows_at_most() {
        let dir = scratch("stretch");
        let window = Window {
            window_ns: SECOND,
            keep: 10,
        };
        // A finding every half second from 1 s to 20 s: the first file takes those until
        // 10 s (a window after them within ten of the first), the next those from 10.5 s to
        // 19.5 s, a third the last.
        let refused: Vec<u64> = (2..=40).map(|half| half * 5).collect();
        trace(&dir, window, KEPT_ENTRIES, &refused, 22);
        let files = files(&dir);
        assert_eq!(files.len(), 3, "{files:?}");
        let (first, _, last, evidence) = replayed(&files[0]);
        assert_eq!(evidence.len(), 19, "{evidence:?}");
        // It ends where the next begins (with the record of the finding that could not
        // stretch it).
        assert_eq!(last, 21 * SECOND / 2);
        assert_eq!(first.len(), 20, "{first:?}");
        let (_, _, _, second) = replayed(&files[1]);
        let times: Vec<u64> = second.iter().map(|e| e.ts_ns).collect();
        assert_eq!(
            times,
            (21..=39).map(|half| half * SECOND / 2).collect::<Vec<_>>()
        );
        let (_, _, _, third) = replayed(&files[2]);
        assert_eq!(third[0].ts_ns, 20 * SECOND);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("open");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Directory::open(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by other users"), "{e}");
        std::fs::remove_dir(&dir).unwrap();
        // Made 0700 when missing.
        Directory::open(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(dir);
    }
}
