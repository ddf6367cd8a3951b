//! Gaps in the record stream: records the kernel could not deliver, and healing from /proc.
//!
//! A loss is kept where it was found. Every process that lived through one may miss records from
//! then on: its history is uncertain from the first loss it lived through (computed from the
//! spans of loss times, not marked per process, so a lossy storm costs nothing here). After a
//! loss the collector reads /proc again, which takes from `read_from` to `ts` (milliseconds:
//! a task is read at some moment in between), and the reading enters the stream at `ts`, after
//! every record before it. [`Timeline::resync`] then corrects what /proc shows otherwise, where
//! /proc can be trusted over the records:
//!
//! - a task in other namespaces than the timeline holds is moved there, with a
//!   [`Cause::Resync`] in its history (its move was lost), unless a record about it came after
//!   the reading began: that record is fresher than what /proc showed;
//! - a task /proc no longer shows is gone (its exit was lost), unless it was born after the
//!   reading began (/proc may have been read before its birth);
//! - a task the timeline does not know is added (its birth was lost), unless it exited after
//!   the reading began (/proc showed it before its exit).
//!
//! A move there and back inside the gap leaves no trace in /proc: that is what "uncertain"
//! warns of.
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    APPROX_START_NS, Cause, Change, LOSS_LIMIT, Membership, Move, ProcEntry, ProcessHistory,
    ProcessKey, Scope, Timeline, history::push_move,
};
use crate::{
    event::{Comm, Loss},
    ns::NsKind,
};

/// Loss times closer than this to one already kept are not kept again: a lossy storm loses
/// something every drain, and "uncertain from" needs no finer grain.
const LOSS_TIME_GRAIN_NS: u64 = 10_000_000;

/// A task whose namespaces were corrected from /proc after lost records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heal {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    /// From what the timeline held (None: unknown) to what /proc showed.
    pub changes: Vec<Change>,
    /// The task was not known before: these are its changes from its parent's set.
    pub found: bool,
}

impl ProcessHistory {
    /// When it ended: its exit, or when /proc showed it gone.
    pub fn end_ns(&self) -> Option<u64> {
        self.exited.map(|(t, _)| t).or(self.vanished)
    }
}

impl Timeline {
    /// Records were lost: kept, counted, and every process alive then is uncertain from then.
    pub fn lost(&mut self, loss: &Loss) {
        let c = &mut self.counts;
        c.lost_records = c.lost_records.saturating_add(loss.records);
        c.lost_batches = c.lost_batches.saturating_add(loss.batches);
        if self.losses.len() < LOSS_LIMIT {
            self.losses.push(loss.clone());
        } else {
            c.losses_dropped += 1;
        }
        self.add_loss_time(loss.ts_ns);
    }

    /// Adds a loss time to the spans, joining the spans it falls near.
    fn add_loss_time(&mut self, ts: u64) {
        let spans = &mut self.loss_spans;
        let (mut first, mut last) = (ts, ts);
        // A span that starts before `ts` and reaches near it.
        if let Some((&f, &l)) = spans.range(..=ts).next_back()
            && l.saturating_add(LOSS_TIME_GRAIN_NS) >= ts
        {
            spans.remove(&f);
            (first, last) = (f, l.max(ts));
        }
        // Spans that start near after it.
        while let Some((&f, &l)) = spans
            .range(first..=last.saturating_add(LOSS_TIME_GRAIN_NS))
            .next()
        {
            spans.remove(&f);
            last = last.max(l);
        }
        spans.insert(first, last);
    }

    /// Every loss kept, in the order found.
    pub fn losses(&self) -> &[Loss] {
        &self.losses
    }

    /// The first loss the process lived through: its records from then on may be missing.
    pub fn uncertain_since(&self, h: &ProcessHistory) -> Option<u64> {
        let from = h.born_ns.unwrap_or(0);
        // The spans do not overlap: the first that reaches past its birth.
        let span = self
            .loss_spans
            .range(..=from)
            .next_back()
            .filter(|&(_, &last)| last >= from)
            .or_else(|| self.loss_spans.range(from..).next())?;
        let since = (*span.0).max(from);
        h.end_ns().is_none_or(|end| since <= end).then_some(since)
    }

    /// What /proc showed, read from `read_from` until `ts_ns` after lost records: the timeline
    /// is made to agree with it where /proc is the fresher (see the module's documentation).
    /// Returns what was corrected for tasks that are followed. A reading that found nothing
    /// (/proc could not be listed) changes nothing.
    pub fn resync(&mut self, entries: &[ProcEntry], read_from: u64, ts_ns: u64) -> Vec<Heal> {
        if entries.is_empty() {
            return Vec::new();
        }
        self.first_ns.get_or_insert(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
        let by_tid: FxHashMap<u32, &ProcEntry> = entries.iter().map(|e| (e.tid, e)).collect();
        let mut tids: Vec<u32> = self.tasks.keys().copied().collect();
        tids.sort_unstable();
        let mut known = FxHashSet::default();
        let mut heals = Vec::new();
        for tid in tids {
            let task = &self.tasks[&tid];
            let same = by_tid.get(&tid).copied().filter(|e| {
                e.pid == task.pid && e.start_ns.abs_diff(task.start_ns) < APPROX_START_NS
            });
            let (fresher, young) = (
                task.last_ns >= read_from,
                task.born_ns.is_some_and(|b| b >= read_from),
            );
            match same {
                None if young => {}
                None => self.vanish(tid, ts_ns),
                Some(_) if fresher => {
                    known.insert(tid);
                }
                Some(e) => {
                    known.insert(tid);
                    heals.extend(self.heal(tid, e, ts_ns));
                }
            }
        }
        // Tasks that exited while /proc was read: it may still have shown them.
        let exited: FxHashSet<u32> = self
            .recent_exits
            .iter()
            .rev()
            .take_while(|&&(_, at)| at >= read_from)
            .map(|&(tid, _)| tid)
            .collect();
        for e in entries
            .iter()
            .filter(|e| !known.contains(&e.tid) && !exited.contains(&e.tid))
        {
            heals.extend(self.found_task(e, ts_ns));
        }
        self.maybe_sweep();
        heals
    }

    /// A task /proc no longer shows: it left its namespaces unseen.
    fn vanish(&mut self, tid: u32, ts: u64) {
        let Some(task) = self.tasks.remove(&tid) else {
            return;
        };
        self.counts.vanished += 1;
        for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
            if let Some(idx) = task.set[kind.slot()] {
                self.leave(idx, tid, ts);
                let entry = Membership {
                    ts_ns: ts,
                    tid,
                    pid: task.pid,
                    comm: task.comm.clone(),
                    cause: Cause::Vanished,
                    entered: false,
                };
                self.log(idx, entry, false, task.in_scope);
            }
        }
        if tid == task.pid {
            self.containers.remove(&task.pid);
            if let Some(key) = self.latest.remove(&task.pid)
                && let Some(h) = self.histories.get_mut(&key)
            {
                h.vanished = Some(ts);
                self.fold_process(key, ts);
            }
        }
    }

    /// A known task as /proc shows it: moved where it differs.
    fn heal(&mut self, tid: u32, e: &ProcEntry, ts: u64) -> Option<Heal> {
        let task = self.tasks.get(&tid)?;
        let (pid, start_ns, comm, in_scope, set) = (
            task.pid,
            task.start_ns,
            task.comm.clone(),
            task.in_scope,
            task.set,
        );
        let mut changes = Vec::new();
        for kind in NsKind::ALL {
            let slot = kind.slot();
            // A link /proc could not show (pid_for_children before its namespace has a
            // process) says nothing.
            let Some(inum) = e.inodes[slot] else { continue };
            if set[slot].is_some_and(|i| self.namespaces[i].inum == inum) {
                continue;
            }
            let to = self.resolve(kind.ns_type(), inum, 0, ts);
            changes.push(Change {
                kind,
                from: set[slot],
                to: Some(to),
            });
        }
        if changes.is_empty() {
            return None;
        }
        self.counts.resyncs += 1;
        let mut after = set;
        for c in &changes {
            after[c.kind.slot()] = c.to;
            if !c.kind.is_own() {
                continue;
            }
            let entry = |entered| Membership {
                ts_ns: ts,
                tid,
                pid,
                comm: comm.clone(),
                cause: Cause::Resync,
                entered,
            };
            if let Some(from) = c.from {
                self.leave(from, tid, ts);
                self.log(from, entry(false), true, in_scope);
            }
            if let Some(to) = c.to {
                self.join(to, tid);
                self.log(to, entry(true), true, in_scope);
            }
        }
        let host = self.host_flags(&after);
        if let Some(task) = self.tasks.get_mut(&tid) {
            task.set = after;
            task.raw = None;
            for (ever, now) in task.ever_host.iter_mut().zip(host) {
                *ever |= now;
            }
        }
        let key = if tid == pid {
            ProcessKey { pid, start_ns }
        } else {
            self.process_key(pid, start_ns)
        };
        self.heal_history(key, e.ppid, &comm, in_scope, ts, tid, &changes);
        in_scope.then(|| Heal {
            ts_ns: ts,
            pid,
            tid,
            comm,
            changes,
            found: false,
        })
    }

    /// A task /proc shows that the timeline did not know: born in the gap.
    fn found_task(&mut self, e: &ProcEntry, ts: u64) -> Option<Heal> {
        self.counts.found += 1;
        let parent = if e.tid == e.pid { e.ppid } else { e.pid };
        let parent_task = self.tasks.get(&parent).map(|t| (t.set, t.in_scope));
        let in_scope = self.follows(e.pid, [parent]);
        let set = self.add_from_proc(e, ts, in_scope);
        // Where it is not in its parent's namespaces, it moved (or was born elsewhere) unseen.
        let from = parent_task.map(|(s, _)| s);
        let changes: Vec<Change> = NsKind::ALL
            .into_iter()
            .filter(|k| {
                set[k.slot()].is_some() && from.is_some_and(|f| f[k.slot()] != set[k.slot()])
            })
            .map(|kind| Change {
                kind,
                from: from.and_then(|f| f[kind.slot()]),
                to: set[kind.slot()],
            })
            .collect();
        let key = ProcessKey {
            pid: e.pid,
            start_ns: e.start_ns,
        };
        if changes.is_empty() {
            // Following a command, every process it starts has a track, moved or not.
            if e.tid == e.pid && matches!(self.scope, Scope::Descendants(_)) {
                self.history(key, e.ppid, &e.comm, in_scope);
            }
            return None;
        }
        self.heal_history(key, e.ppid, &e.comm, in_scope, ts, e.tid, &changes);
        in_scope.then(|| Heal {
            ts_ns: ts,
            pid: e.pid,
            tid: e.tid,
            comm: e.comm.clone(),
            changes,
            found: true,
        })
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a healing move names everything it is about"
    )]
    fn heal_history(
        &mut self,
        key: ProcessKey,
        ppid: u32,
        comm: &str,
        in_scope: bool,
        ts: u64,
        tid: u32,
        changes: &[Change],
    ) {
        if let Some(h) = self.history(key, ppid, comm, in_scope) {
            push_move(h, || Move {
                ts_ns: ts,
                tid,
                comm: Comm::from(comm),
                cause: Cause::Resync,
                changes: changes.to_vec(),
                errno: None,
                thread_apart: false,
            });
        }
    }
}
