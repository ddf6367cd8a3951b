//! Live tasks: their namespace sets, whether they are followed, and where they come from (the
//! /proc snapshot, a birth, or a first record).
use std::collections::{HashMap, HashSet};

use nstrace_common::NS_SLOTS;

use super::{APPROX_START_NS, NsIdx, Timeline, history::ProcessKey};
use crate::{
    container,
    event::{Comm, NsSet},
    ns::{NsKind, NsType},
};

/// `pid`'s ancestors by the snapshot's parent links, nearest first (at most 4096: a loop in
/// what /proc said must end).
pub(super) fn ancestors(pid: u32, parent_of: &HashMap<u32, u32>) -> impl Iterator<Item = u32> {
    let mut p = pid;
    std::iter::from_fn(move || {
        let parent = *parent_of.get(&p)?;
        (parent != p && parent != 0).then(|| {
            p = parent;
            parent
        })
    })
    .take(4096)
}

/// A live task.
#[derive(Clone, Debug)]
pub(super) struct Task {
    pub(super) pid: u32,
    /// Its process's parent, as last seen.
    pub(super) ppid: u32,
    pub(super) start_ns: u64,
    /// The start time came from /proc, in clock ticks: compare it within a tick.
    pub(super) approx_start: bool,
    pub(super) comm: Comm,
    pub(super) set: [Option<NsIdx>; NS_SLOTS],
    pub(super) in_scope: bool,
    /// Per slot: the task was in the host's namespace of that slot at some point of its life.
    pub(super) ever_host: [bool; NS_SLOTS],
    /// The kernel's set last seen for the task, which `set` is the resolution of (every change
    /// of `set` sets this too, or clears it): while it holds, the next record's `before` needs no
    /// lookups.
    pub(super) raw: Option<NsSet>,
    /// When it was born, if its birth was seen.
    pub(super) born_ns: Option<u64>,
    /// The kernel time of the last record about it: what the timeline holds of it is at least
    /// that fresh.
    pub(super) last_ns: u64,
    /// It runs a container runtime (runc's init re-exec'd, crun), not a container's program:
    /// from its exec, and inherited by its children until theirs.
    pub(super) runtime: bool,
}

impl Task {
    /// It runs a container runtime, by its exec or by its name now (`runc:[1:CHILD]` names
    /// itself after its exec).
    pub(super) fn making(&self) -> bool {
        self.runtime || container::runtime_of(&self.comm).is_some()
    }

    /// What `set` resolves to, when it is the kernel's set last seen for this task: no lookups
    /// needed.
    pub(super) fn resolved_for(&self, set: &NsSet) -> Option<[Option<NsIdx>; NS_SLOTS]> {
        (self.raw.as_ref() == Some(set)).then_some(self.set)
    }

    /// Whether a record's start time (0: not known) names this task, not an earlier holder of
    /// its tid: exactly, or within a tick for a task from /proc.
    pub(super) fn started_at(&self, start_ns: u64) -> bool {
        start_ns == 0
            || self.start_ns == start_ns
            || (self.approx_start && self.start_ns.abs_diff(start_ns) < APPROX_START_NS)
    }
}

/// One process (or thread) found in /proc when tracing began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcEntry {
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub comm: Comm,
    pub start_ns: u64,
    /// Inodes by slot; None where /proc could not show it.
    pub inodes: [Option<u32>; NS_SLOTS],
}

impl ProcEntry {
    /// The task whose namespaces are the host's: pid 1, or kthreadd (pid 2, on the kernel's
    /// initial nsproxy) where pid 1's links cannot be read. In a nested pid namespace, that
    /// namespace's init: the host as nstrace can see it.
    pub fn init_of(entries: &[ProcEntry]) -> Option<&ProcEntry> {
        entries
            .iter()
            .filter(|e| {
                (e.tid == 1 || (e.tid == 2 && e.ppid == 0))
                    && e.inodes[NsKind::Mnt.slot()].is_some()
            })
            .min_by_key(|e| e.tid)
    }
}

/// Which processes the timeline follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    /// These pids and every process born of them, however re-parented.
    Descendants(HashSet<u32>),
}

impl Timeline {
    /// Whether a live task is followed.
    pub fn in_scope(&self, tid: u32) -> bool {
        match self.scope {
            Scope::All => true,
            Scope::Descendants(_) => self.tasks.get(&tid).is_some_and(|t| t.in_scope),
        }
    }

    /// Adds pids to a descendants scope (for a command started after tracing began).
    pub fn follow(&mut self, pid: u32) {
        if let Scope::Descendants(roots) = &mut self.scope {
            roots.insert(pid);
        }
        for task in self.tasks.values_mut() {
            if task.pid == pid {
                task.in_scope = true;
            }
        }
    }

    /// A live task's namespace inodes by slot name, as /proc would show them.
    pub fn live_set(&self, tid: u32) -> Option<Vec<(NsKind, u32)>> {
        let task = self.tasks.get(&tid)?;
        Some(
            NsKind::ALL
                .into_iter()
                .filter_map(|k| task.set[k.slot()].map(|i| (k, self.namespaces[i].inum)))
                .collect(),
        )
    }

    /// Every live task that is followed, as (tid, pid), in tid order.
    pub fn live_tasks(&self) -> Vec<(u32, u32)> {
        let mut tasks: Vec<(u32, u32)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.in_scope || matches!(self.scope, Scope::All))
            .map(|(&tid, t)| (tid, t.pid))
            .collect();
        tasks.sort_unstable();
        tasks
    }

    /// A live task's command name.
    pub fn comm_of(&self, tid: u32) -> Option<Comm> {
        self.tasks.get(&tid).map(|t| t.comm.clone())
    }

    /// Live tids of a process.
    pub fn live_tids(&self, pid: u32) -> Vec<u32> {
        let mut tids: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.pid == pid)
            .map(|(&tid, _)| tid)
            .collect();
        tids.sort_unstable();
        tids
    }

    /// Every task alive now, as /proc would show it: what a record file that starts here needs
    /// (see [`crate::record::rotate`]).
    pub fn live_entries(&self) -> Vec<ProcEntry> {
        let mut entries: Vec<ProcEntry> = self
            .tasks
            .iter()
            .map(|(&tid, t)| ProcEntry {
                tid,
                pid: t.pid,
                ppid: t.ppid,
                comm: t.comm.clone(),
                start_ns: t.start_ns,
                inodes: t.set.map(|idx| idx.map(|i| self.namespace(i).inum)),
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.tid);
        entries
    }

    /// Loads the processes that existed when tracing began.
    pub fn snapshot(&mut self, entries: &[ProcEntry], at_ns: u64) {
        // The init's mnt and net are the host's when it is in the initial pid namespace.
        let init_pid_ns = NsType::Pid.initial_inode();
        if let Some(init) =
            ProcEntry::init_of(entries).filter(|e| e.inodes[NsKind::Pid.slot()] == init_pid_ns)
        {
            self.host_mnt_net = [
                init.inodes[NsKind::Mnt.slot()],
                init.inodes[NsKind::Net.slot()],
            ];
        }
        let parent_of: HashMap<u32, u32> = entries.iter().map(|e| (e.pid, e.ppid)).collect();
        let scoped = matches!(self.scope, Scope::Descendants(_));
        for e in entries {
            let in_scope = self.follows(e.pid, ancestors(e.pid, &parent_of));
            self.add_from_proc(e, at_ns, in_scope);
            if in_scope && scoped && e.tid == e.pid {
                self.history(
                    ProcessKey {
                        pid: e.pid,
                        start_ns: e.start_ns,
                    },
                    e.ppid,
                    &e.comm,
                    true,
                );
            }
        }
    }

    /// A task as /proc showed it at `ts`: its namespaces resolved and joined. Returns its set.
    pub(super) fn add_from_proc(
        &mut self,
        e: &ProcEntry,
        ts: u64,
        in_scope: bool,
    ) -> [Option<NsIdx>; NS_SLOTS] {
        let mut set = [None; NS_SLOTS];
        for kind in NsKind::ALL {
            if let Some(inum) = e.inodes[kind.slot()] {
                set[kind.slot()] = Some(self.resolve(kind.ns_type(), inum, 0, ts));
            }
        }
        let task = Task {
            approx_start: true,
            ppid: e.ppid,
            ..self.new_task(e.pid, e.start_ns, e.comm.clone(), set, in_scope)
        };
        // /proc lists a tid once; a record file may say anything.
        self.remove_task(e.tid, ts);
        self.put_task(e.tid, task);
        set
    }

    /// A live task's namespaces by slot, as the timeline holds them.
    pub fn task_namespaces(&self, tid: u32) -> Option<&[Option<NsIdx>; NS_SLOTS]> {
        self.tasks.get(&tid).map(|t| &t.set)
    }

    /// Whether a live task was ever in the host's namespace of `kind`.
    pub fn was_in_host(&self, tid: u32, kind: NsKind) -> bool {
        self.tasks
            .get(&tid)
            .is_some_and(|t| t.ever_host[kind.slot()])
    }

    /// Whether a new task of process `pid` is followed, the one place this is decided: on the
    /// whole machine, always; otherwise when its process is a root or one of `kin` (its
    /// parent, its process's main thread, its ancestors) is a root or followed.
    pub(super) fn follows(&self, pid: u32, kin: impl IntoIterator<Item = u32>) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Descendants(roots) => {
                roots.contains(&pid)
                    || kin.into_iter().any(|k| {
                        roots.contains(&k) || self.tasks.get(&k).is_some_and(|t| t.in_scope)
                    })
            }
        }
    }

    /// A task of process `pid` in `set`, as nothing more is known of it yet.
    pub(super) fn new_task(
        &self,
        pid: u32,
        start_ns: u64,
        comm: Comm,
        set: [Option<NsIdx>; NS_SLOTS],
        in_scope: bool,
    ) -> Task {
        let runtime = container::runtime_of(&comm).is_some();
        Task {
            pid,
            ppid: 0,
            start_ns,
            approx_start: false,
            comm,
            set,
            in_scope,
            ever_host: self.host_flags(&set),
            raw: None,
            born_ns: None,
            last_ns: 0,
            runtime,
        }
    }

    /// Makes `task` the live task `tid`, a member of its own namespaces: the one place a task
    /// enters the timeline (an earlier task of that tid is removed first).
    pub(super) fn put_task(&mut self, tid: u32, task: Task) {
        debug_assert!(!self.tasks.contains_key(&tid), "task {tid} put twice");
        for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
            if let Some(idx) = task.set[kind.slot()] {
                self.join(idx, tid);
            }
        }
        self.tasks.insert(tid, task);
    }

    /// Removes the live task `tid`, which leaves its namespaces at `ts`.
    pub(super) fn remove_task(&mut self, tid: u32, ts: u64) -> Option<Task> {
        let task = self.tasks.remove(&tid)?;
        self.drop_task(tid, &task, ts);
        Some(task)
    }

    /// The set the timeline holds for a task now (None for a task it does not know): for a
    /// record whose `before` the kernel could not tell (see [`Transition::before_inferred`]).
    pub fn known_set(&self, tid: u32, start_ns: u64) -> Option<NsSet> {
        let task = self.tasks.get(&tid)?;
        if !task.started_at(start_ns) {
            return None;
        }
        if let Some(raw) = task.raw {
            return Some(raw);
        }
        let mut set = NsSet::default();
        for (slot, idx) in task.set.iter().enumerate() {
            if let Some(ns) = idx.map(|idx| &self.namespaces[idx]) {
                set.inum[slot] = ns.inum;
                set.id[slot] = ns.id;
            }
        }
        Some(set)
    }

    /// The process key of a live task: its process's main thread's start when known.
    pub(super) fn process_key(&self, pid: u32, fallback_start: u64) -> ProcessKey {
        let start_ns = self
            .tasks
            .get(&pid)
            .filter(|t| t.pid == pid)
            .map_or(fallback_start, |t| t.start_ns);
        ProcessKey { pid, start_ns }
    }

    /// Makes sure the caller of a record is a live task whose set is `set`; returns what `set`
    /// resolves to, and the start time of its process key when it is its process's main thread
    /// (see [`Self::process_key`]).
    pub(super) fn ensure_task(
        &mut self,
        tid: u32,
        pid: u32,
        start_ns: u64,
        comm: &str,
        set: &NsSet,
        ts: u64,
    ) -> ([Option<NsIdx>; NS_SLOTS], u64) {
        if let Some(task) = self.tasks.get_mut(&tid)
            && (start_ns == 0 || task.start_ns == start_ns)
            && let Some(resolved) = task.resolved_for(set)
        {
            if task.comm != comm {
                task.comm = Comm::from(comm);
            }
            task.last_ns = ts;
            let key_start = if task.pid == pid {
                task.start_ns
            } else {
                start_ns
            };
            return (resolved, key_start);
        }
        let resolved = self.resolve_set(set, ts);
        let known = self.tasks.get(&tid).is_some_and(|t| t.started_at(start_ns));
        if !known {
            self.counts.unknown_tasks += 1;
            self.remove_task(tid, ts);
            let in_scope = self.follows(pid, [pid]);
            let task = Task {
                raw: Some(*set),
                last_ns: ts,
                ..self.new_task(pid, start_ns, Comm::from(comm), resolved, in_scope)
            };
            self.put_task(tid, task);
            return (resolved, start_ns);
        }
        let task = self.tasks.get_mut(&tid).expect("checked above");
        let key_start = if task.pid == pid {
            task.start_ns
        } else {
            start_ns
        };
        task.comm = Comm::from(comm);
        task.raw = Some(*set);
        task.last_ns = ts;
        if task.set != resolved {
            // A record was lost: trust what the kernel says now.
            self.counts.resyncs += 1;
            let old = std::mem::replace(&mut task.set, resolved);
            for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
                if old[kind.slot()] != resolved[kind.slot()] {
                    if let Some(idx) = old[kind.slot()] {
                        self.leave(idx, tid, ts);
                    }
                    if let Some(idx) = resolved[kind.slot()] {
                        self.join(idx, tid);
                    }
                }
            }
        }
        (resolved, key_start)
    }

    pub(super) fn drop_task(&mut self, tid: u32, task: &Task, ts: u64) {
        for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
            if let Some(idx) = task.set[kind.slot()] {
                self.leave(idx, tid, ts);
            }
        }
    }

    /// Whether a thread's own namespaces differ from its process's main thread's.
    pub(super) fn thread_apart(&self, tid: u32, pid: u32) -> bool {
        if tid == pid {
            return false;
        }
        match (self.tasks.get(&tid), self.tasks.get(&pid)) {
            (Some(thread), Some(main)) => NsKind::ALL
                .into_iter()
                .filter(|k| k.is_own())
                .any(|k| thread.set[k.slot()] != main.set[k.slot()]),
            _ => false,
        }
    }
}
