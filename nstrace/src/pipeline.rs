//! Ordered records → the timeline → the sinks, live or replayed.
//!
//! The one place where the pure timeline meets I/O: live, it reads what the kernel records
//! cannot carry (a process's cgroup and uid_map after exec) and archives it so that a replay
//! sees exactly what the live run saw.
use std::io;

use serde_json::json;

use crate::{
    event::{Loss, Record},
    ns::NsType,
    output::{FindingView, HealView, Sink, reader_gone},
    record::{ProcessLine, ResyncLine},
    timeline::{ProcEntry, Timeline},
};

/// What is printed: records of followed processes that pass these.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records whose command name is this.
    pub comm: Option<String>,
    /// Only transitions that move one of these types (forks, execs and exits always pass).
    pub types: Option<Vec<NsType>>,
    /// Only findings.
    pub findings_only: bool,
}

impl Filter {
    pub fn accepts(&self, record: &Record) -> bool {
        if self.findings_only {
            return false;
        }
        if let Some(comm) = &self.comm {
            let name = match record {
                Record::Transition(t) => &t.comm,
                Record::Fork(f) => &f.comm,
                Record::Exec(e) => &e.comm,
                Record::Exit(x) => &x.comm,
            };
            if name != comm {
                return false;
            }
        }
        match (&self.types, record) {
            (Some(types), Record::Transition(t)) => {
                let moved = t.changed().into_iter().chain(t.child_moved());
                let flagged = types
                    .iter()
                    .any(|ty| t.flags & ty.own_slot().clone_flag() != 0);
                flagged || moved.map(|k| k.ns_type()).any(|ty| types.contains(&ty))
            }
            _ => true,
        }
    }
}

pub struct Pipeline<'a> {
    pub timeline: Timeline,
    pub filter: Filter,
    /// Shown what is followed and passes the filter, and every finding.
    pub sinks: Vec<&'a mut dyn Sink>,
    /// Given every record and observation, whatever the scope and filter (a record file).
    pub archive: Option<&'a mut dyn Sink>,
    /// Transitions shown.
    pub shown: u64,
    /// A sink's reader went away (`nstrace | head`).
    pub closed: bool,
    /// Records were lost since /proc was last read again (see [`Pipeline::resynced`]).
    pub resync_due: bool,
    /// When the latest loss applied was found: a reading of /proc that began before it does
    /// not cover it.
    loss_noticed_ns: u64,
}

/// Runs `f` on every sink; a sink whose reader went away (see [`reader_gone`]) is dropped and
/// noted.
fn each_sink(
    sinks: &mut Vec<&mut dyn Sink>,
    closed: &mut bool,
    mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>,
) -> io::Result<()> {
    let mut result = Ok(());
    sinks.retain_mut(|sink| match f(&mut **sink) {
        Ok(()) => true,
        Err(e) if reader_gone(&e) => {
            *closed = true;
            false
        }
        Err(e) => {
            if result.is_ok() {
                result = Err(io::Error::new(e.kind(), format!("writing the output: {e}")));
            }
            true
        }
    });
    result
}

impl<'a> Pipeline<'a> {
    pub fn new(timeline: Timeline, filter: Filter) -> Self {
        Self {
            timeline,
            filter,
            sinks: Vec::new(),
            archive: None,
            shown: 0,
            closed: false,
            resync_due: false,
            loss_noticed_ns: 0,
        }
    }

    pub fn start(&mut self) -> io::Result<()> {
        each_sink(&mut self.sinks, &mut self.closed, |s| s.start())
    }

    /// Live: the processes running when tracing began, observed one by one.
    pub fn snapshot(&mut self, entries: &[ProcEntry], at_ns: u64) -> io::Result<()> {
        self.timeline.snapshot(entries, at_ns);
        for e in entries.iter().filter(|e| e.tid == e.pid) {
            self.observe(e.pid, at_ns)?;
        }
        Ok(())
    }

    /// Applies one record; live, an exec is followed by a look at the process's cgroup. A
    /// transition whose `before` the kernel could not tell gets the timeline's (and says so), in
    /// the record file too.
    pub fn feed(&mut self, record: &Record, live: bool) -> io::Result<()> {
        if let Record::Transition(t) = record
            && t.before.is_unknown()
            && let Some(before) = self.timeline.known_set(t.tid, t.start_boottime_ns)
        {
            let mut t = t.clone();
            t.infer_before(before);
            return self.feed_as_is(&Record::Transition(t), live);
        }
        self.feed_as_is(record, live)
    }

    fn feed_as_is(&mut self, record: &Record, live: bool) -> io::Result<()> {
        if let Some(archive) = &mut self.archive {
            archive.record(record)?;
        }
        let followed = self.timeline.apply(record);
        if followed && self.filter.accepts(record) {
            if matches!(record, Record::Transition(_)) {
                self.shown += 1;
            }
            each_sink(&mut self.sinks, &mut self.closed, |s| s.record(record))?;
        }
        if live && let Record::Exec(e) = record {
            self.observe(e.pid, e.ts_ns)?;
        }
        self.findings()
    }

    /// Live: reads the process's cgroup and uid_map (gone processes are skipped quietly).
    pub fn observe(&mut self, pid: u32, ts_ns: u64) -> io::Result<()> {
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return Ok(());
        };
        let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        self.observed(pid, ts_ns, &cgroup, &uid_map)
    }

    /// What was read of a process, live or from a record file.
    pub fn observed(
        &mut self,
        pid: u32,
        ts_ns: u64,
        cgroup: &str,
        uid_map: &str,
    ) -> io::Result<()> {
        if let Some(archive) = &mut self.archive {
            archive.note(&json!({
                "type": "observation",
                "ts_ns": ts_ns,
                "pid": pid,
                "cgroup": cgroup,
                "uid_map": uid_map,
            }))?;
        }
        self.timeline.observe(pid, ts_ns, cgroup, uid_map);
        self.findings()
    }

    /// Records the kernel could not deliver: kept in the record file, shown in every output
    /// whatever the filter, and counted in the timeline; /proc is to be read again.
    pub fn lost(&mut self, loss: &Loss) -> io::Result<()> {
        if let Some(archive) = &mut self.archive {
            archive.loss(loss)?;
        }
        self.timeline.lost(loss);
        self.resync_due = true;
        self.loss_noticed_ns = self.loss_noticed_ns.max(loss.noticed_ns);
        each_sink(&mut self.sinks, &mut self.closed, |s| s.loss(loss))
    }

    /// What /proc showed, read again after lost records from `read_from` until `ts_ns` (live,
    /// or from a record file): the timeline heals, and what it corrected for followed tasks is
    /// shown.
    pub fn resynced(
        &mut self,
        read_from: u64,
        ts_ns: u64,
        entries: &[ProcEntry],
    ) -> io::Result<()> {
        if let Some(archive) = &mut self.archive {
            let line = ResyncLine::new(read_from, ts_ns);
            archive.note(&serde_json::to_value(line).map_err(io::Error::other)?)?;
            for entry in entries {
                archive.note(
                    &serde_json::to_value(ProcessLine::from(entry)).map_err(io::Error::other)?,
                )?;
            }
        }
        if read_from >= self.loss_noticed_ns {
            self.resync_due = false;
        }
        let heals = self.timeline.resync(entries, read_from, ts_ns);
        if !self.filter.findings_only {
            let Self {
                timeline,
                sinks,
                closed,
                filter,
                ..
            } = self;
            for heal in heals
                .iter()
                .filter(|h| filter.comm.as_ref().is_none_or(|c| *c == h.comm))
            {
                let view = HealView::new(timeline, heal);
                each_sink(sinks, closed, |s| s.heal(&view))?;
            }
        }
        self.findings()
    }

    /// Hands new findings to the sinks.
    fn findings(&mut self) -> io::Result<()> {
        let Self {
            timeline,
            sinks,
            closed,
            ..
        } = self;
        let fresh = timeline.take_new_findings().to_vec();
        for f in &fresh {
            let view = FindingView::new(timeline, f);
            each_sink(sinks, closed, |s| s.finding(&view))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(archive) = &mut self.archive {
            archive.flush()?;
        }
        each_sink(&mut self.sinks, &mut self.closed, |s| s.flush())
    }
}

#[cfg(test)]
mod tests {
    use nstrace_common::NS_SLOTS;

    use super::*;
    use crate::{
        event::{Call, NsSet, Transition},
        timeline::Scope,
    };

    /// Keeps every record it is given.
    #[derive(Default)]
    struct Kept(Vec<Record>);

    impl Sink for Kept {
        fn record(&mut self, record: &Record) -> io::Result<()> {
            self.0.push(record.clone());
            Ok(())
        }
        fn loss(&mut self, _loss: &Loss) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const SH: u32 = 100;
    const START: u64 = 5_000_000;

    /// A shell found in /proc (inodes only), then a setns of it whose `before` the kernel could
    /// not tell, and a second one whose `before` it could.
    fn setns_of_a_snapshot_task(kept: &mut Kept, archive: &mut Kept) {
        let host: [u32; NS_SLOTS] = std::array::from_fn(|i| 4026531830 + i as u32);
        let mut timeline = Timeline::new(Scope::All);
        timeline.snapshot(
            &[ProcEntry {
                tid: SH,
                pid: SH,
                ppid: 1,
                comm: "sh".into(),
                start_ns: START,
                inodes: host.map(Some),
            }],
            0,
        );
        let mut pipeline = Pipeline::new(timeline, Filter::default());
        pipeline.sinks.push(kept);
        pipeline.archive = Some(archive);
        let mut after = NsSet {
            inum: host,
            id: std::array::from_fn(|i| 1000 + i as u64),
        };
        after.inum[1] = 4026532177;
        after.id[1] = 2000;
        let mut t = Transition::blank();
        t.ts_ns = 10;
        t.call = Call::Setns;
        t.tid = SH;
        t.pid = SH;
        t.start_boottime_ns = START;
        t.comm = "sh".into();
        t.after = after;
        pipeline
            .feed(&Record::Transition(Box::new(t.clone())), true)
            .unwrap();
        let mut back = t;
        back.ts_ns = 20;
        back.before = after;
        back.after.inum[1] = host[1];
        back.after.id[1] = 1001;
        pipeline
            .feed(&Record::Transition(Box::new(back)), true)
            .unwrap();
    }

    #[test]
    fn an_unknown_before_is_taken_from_the_timeline_and_marked() {
        let (mut kept, mut archive) = (Kept::default(), Kept::default());
        setns_of_a_snapshot_task(&mut kept, &mut archive);
        let transitions: Vec<&Transition> = kept
            .0
            .iter()
            .filter_map(|r| match r {
                Record::Transition(t) => Some(&**t),
                _ => None,
            })
            .collect();
        let [first, second] = transitions[..] else {
            panic!("two transitions, got {transitions:?}")
        };
        assert!(first.before_inferred);
        assert_eq!(first.before.inum[0], 4026531830);
        assert_eq!(first.before.inum[1], 4026531831, "the uts the shell was in");
        // Where the shell stayed, the kernel's id is taken; where it moved, /proc had none.
        assert_eq!(first.before.id[0], 1000);
        assert_eq!(first.before.id[1], 0);
        assert_eq!(first.changed(), [crate::ns::NsKind::Uts]);
        assert!(!second.before_inferred, "the kernel told this one");
        // The record file keeps what was shown: a replay shows the same.
        assert_eq!(archive.0, kept.0);
    }

    /// A sink whose reader is gone: every write fails as `error` does.
    struct Gone(i32);

    impl Sink for Gone {
        fn record(&mut self, _: &Record) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(self.0))
        }
        fn loss(&mut self, _: &Loss) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(self.0))
        }
    }

    #[test]
    fn a_closed_pipe_or_a_hung_up_terminal_drops_its_sink_and_the_trace_goes_on() {
        for errno in [libc::EPIPE, libc::EIO] {
            let (mut gone, mut archive) = (Gone(errno), Kept::default());
            let mut pipeline = Pipeline::new(Timeline::new(Scope::All), Filter::default());
            pipeline.sinks.push(&mut gone);
            pipeline.archive = Some(&mut archive);
            let t = Transition::blank();
            pipeline
                .feed(&Record::Transition(Box::new(t.clone())), true)
                .unwrap_or_else(|e| panic!("errno {errno}: {e}"));
            assert!(
                pipeline.closed && pipeline.sinks.is_empty(),
                "errno {errno}"
            );
            pipeline
                .feed(&Record::Transition(Box::new(t)), true)
                .unwrap();
            drop(pipeline);
            assert_eq!(archive.0.len(), 2, "the record goes on");
        }
        // Any other failure is an error that says so.
        let mut full = Gone(libc::ENOSPC);
        let mut pipeline = Pipeline::new(Timeline::new(Scope::All), Filter::default());
        pipeline.sinks.push(&mut full);
        let err = pipeline
            .feed(&Record::Transition(Box::new(Transition::blank())), true)
            .unwrap_err();
        assert!(err.to_string().starts_with("writing the output"), "{err}");
    }
}
