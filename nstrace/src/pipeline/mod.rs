//! Ordered records → the timeline → the sinks, live or replayed.
//!
//! The one place where the pure timeline meets I/O: live, it reads what the kernel records
//! cannot carry (a process's cgroup and uid_map after exec, its container's names) and archives
//! it so that a replay sees exactly what the live run saw.
use std::{
    collections::{BTreeMap, VecDeque},
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    container::{Attribution, Container},
    event::{Loss, Record},
    metrics::{Counts, Metrics, PUBLISH_PERIOD},
    names::NameSource,
    output::{FindingView, HealView, Sink, note_line, reader_gone},
    record::{ProcessLine, ResyncLine},
    timeline::{ProcEntry, Timeline},
};

mod filter;
mod held;

pub use filter::Filter;
use held::Out;
pub use held::{HOLD_LIMIT, NAME_WAIT, OWNER_WAIT_NS};

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
    /// Live: where containers' names come from (a replay has them in its record).
    pub names: Option<Box<dyn NameSource>>,
    /// Containers whose names are due, and until when they are waited for (a replay: until
    /// their `container` line).
    pending: BTreeMap<Container, Option<Instant>>,
    /// Output waiting for names (see [`held`]).
    held: VecDeque<Out>,
    /// How long names are waited for ([`NAME_WAIT`]).
    pub name_wait: Duration,
    /// The latest kernel time seen (records, drains).
    now_ns: u64,
    /// Live with `--metrics`: where the counts below are published (see [`crate::metrics`]).
    pub metrics: Option<Arc<Metrics>>,
    findings_made: BTreeMap<(&'static str, &'static str), u64>,
    lost_by_cpu: BTreeMap<u32, u64>,
    /// The oldest record's age at the outputs, the largest since the last publication.
    lag_ns: u64,
    published: Option<Instant>,
    /// Containers' labels as transitions carry them, made once a container (until its names
    /// come).
    labels: rustc_hash::FxHashMap<Container, std::rc::Rc<str>>,
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
            names: None,
            pending: BTreeMap::new(),
            held: VecDeque::new(),
            name_wait: NAME_WAIT,
            now_ns: 0,
            metrics: None,
            findings_made: BTreeMap::new(),
            lost_by_cpu: BTreeMap::new(),
            lag_ns: 0,
            published: None,
            labels: Default::default(),
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
        if self.filter.past(record.ts_ns()) {
            return Ok(());
        }
        // Names that came since the last record go before it, in the record file too.
        self.now_ns = self.now_ns.max(record.ts_ns());
        self.poll_names(Duration::ZERO)?;
        if let Some(archive) = &mut self.archive {
            archive.record(record)?;
        }
        // A process's container before the record (an exit forgets it), when output may wait.
        let pid = record.pid();
        let before = if self.direct() {
            None
        } else {
            self.timeline.container_of(pid).cloned()
        };
        let followed = self.timeline.apply(record);
        if followed && self.filter.accepts(record) {
            self.emit_record(record, pid, before)?;
        }
        if live && let Record::Exec(e) = record {
            self.observe(e.pid, e.ts_ns)?;
        }
        self.findings()?;
        // After the findings: evidence of one the record made starts before the record.
        if let Some(archive) = &mut self.archive
            && archive.rotation_due()
        {
            archive.rotate(&self.timeline.live_entries(), record.ts_ns())?;
        }
        Ok(())
    }

    /// Live: reads the process's cgroup and uid_map (gone processes are skipped quietly).
    pub fn observe(&mut self, pid: u32, ts_ns: u64) -> io::Result<()> {
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return Ok(());
        };
        let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        // A container its cgroup names without its runtime (runc, crun without a cgroups path):
        // whose state has it.
        let runtime = match crate::container::attribute(&cgroup) {
            Some(Attribution::Container(c)) if c.runtime.is_empty() => {
                crate::names::read::runtime_with_state(&c.id, &crate::names::Roots::default())
            }
            _ => None,
        };
        self.observed(pid, ts_ns, &cgroup, &uid_map, runtime)
    }

    /// What was read of a process, live or from a record file: its cgroup, its uid_map, and
    /// the runtime whose state has the container its cgroup names without one.
    pub fn observed(
        &mut self,
        pid: u32,
        ts_ns: u64,
        cgroup: &str,
        uid_map: &str,
        runtime: Option<&'static str>,
    ) -> io::Result<()> {
        if self.filter.past(ts_ns) {
            return Ok(());
        }
        if let Some(archive) = &mut self.archive {
            let mut line = json!({
                "type": "observation",
                "ts_ns": ts_ns,
                "pid": pid,
                "cgroup": cgroup,
                "uid_map": uid_map,
            });
            if let Some(runtime) = runtime {
                line["runtime"] = runtime.into();
            }
            archive.note(&line)?;
        }
        self.timeline
            .observe_in(pid, ts_ns, cgroup, uid_map, runtime);
        self.ask_names();
        self.findings()
    }

    /// Records the kernel could not deliver: kept in the record file, shown in every output
    /// whatever the filter, and counted in the timeline; /proc is to be read again.
    pub fn lost(&mut self, loss: &Loss) -> io::Result<()> {
        if self.filter.past(loss.ts_ns) {
            return Ok(());
        }
        if let Some(archive) = &mut self.archive {
            archive.loss(loss)?;
        }
        self.timeline.lost(loss);
        *self.lost_by_cpu.entry(loss.cpu).or_default() += loss.records;
        self.resync_due = true;
        self.loss_noticed_ns = self.loss_noticed_ns.max(loss.noticed_ns);
        self.emit(Out::Loss(loss.clone()))
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
        if self.filter.past(ts_ns) {
            return Ok(());
        }
        if let Some(archive) = &mut self.archive {
            note_line(&mut **archive, &ResyncLine::new(read_from, ts_ns))?;
            for entry in entries {
                note_line(&mut **archive, &ProcessLine::from(entry))?;
            }
        }
        if read_from >= self.loss_noticed_ns {
            self.resync_due = false;
        }
        let heals = self.timeline.resync(entries, read_from, ts_ns);
        if !self.filter.findings_only {
            let comm = self.filter.comm.clone();
            for heal in heals
                .into_iter()
                .filter(|h| comm.as_ref().is_none_or(|c| *c == h.comm))
            {
                let changes = HealView::new(&self.timeline, &heal).changes;
                let container = self.timeline.container_of(heal.pid).cloned();
                self.emit(Out::Heal {
                    heal,
                    changes,
                    container,
                })?;
            }
        }
        self.findings()
    }

    /// Hands new findings to the sinks.
    fn findings(&mut self) -> io::Result<()> {
        let fresh = self.timeline.take_new_findings().to_vec();
        for f in &fresh {
            *self
                .findings_made
                .entry((f.id, f.severity.name()))
                .or_default() += 1;
            let view = FindingView::new(&self.timeline, f);
            // The archive: evidence keeps the time around it (a record file ignores it).
            if let Some(archive) = &mut self.archive {
                archive.finding(&view)?;
            }
            self.emit(Out::Finding {
                view,
                container: f.container.clone(),
            })?;
        }
        Ok(())
    }

    /// Live: a batch of records reached the outputs, the oldest `lag_ns` after it was made.
    pub fn reached_outputs(&mut self, lag_ns: u64) {
        self.lag_ns = self.lag_ns.max(lag_ns);
    }

    /// Live, at every drain: the collector is alive; every [`PUBLISH_PERIOD`], what was
    /// counted is published.
    fn publish_metrics(&mut self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        metrics.heartbeat(crate::clock::monotonic_ns());
        if self
            .published
            .is_some_and(|at| at.elapsed() < PUBLISH_PERIOD)
        {
            return;
        }
        self.published = Some(Instant::now());
        let c = &self.timeline.counts;
        let (tracked_tasks, tracked_namespaces) = self.timeline.tracked();
        metrics.publish(&Counts {
            transitions: c.by_call,
            records: c.transitions + c.forks + c.execs + c.exits,
            findings: self.findings_made.iter().map(|(k, n)| (*k, *n)).collect(),
            lost: self.lost_by_cpu.iter().map(|(k, n)| (*k, *n)).collect(),
            tracked_tasks,
            tracked_namespaces,
            lag_ns: std::mem::take(&mut self.lag_ns),
        });
    }

    /// Makes what was written visible, once nothing waits for names; live, on every drain.
    pub fn flush(&mut self) -> io::Result<()> {
        self.poll_names(Duration::ZERO)?;
        if let Some(archive) = &mut self.archive {
            archive.flush()?;
        }
        each_sink(&mut self.sinks, &mut self.closed, |s| s.flush())
    }
}

#[cfg(test)]
mod tests;
