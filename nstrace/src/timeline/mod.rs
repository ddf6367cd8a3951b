//! The timeline: a pure model of processes and namespaces over time.
//!
//! Fed records in kernel-time order (see `transport::Reorder`), after a snapshot of the processes
//! that existed when tracing began. No I/O: everything here is tested on recorded streams.
//!
//! Identity:
//! - A task is its tid while it lives; a process is (pid, start time), safe against pid reuse.
//! - A namespace is (type, ns_id) where the kernel has ns_id (6.18+), otherwise (type, inode, first
//!   sighting): an inode is reused as soon as its namespace is freed, and a sighting of a known
//!   inode with a different ns_id is a new namespace.
//!
//! Memory stays bounded: exited tasks leave the live state, processes that never moved are
//! forgotten when they exit, and per-namespace logs and the number of histories kept are capped
//! (what is cut is counted).
use crate::event::Comm;
use std::collections::{HashMap, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::{
    container::{self, Container},
    event::{Call, Exec, Exit, Fork, KindSet, Loss, NsSet, Record, Transition},
    ns::{NsKind, NsType},
};

pub mod findings;
mod fold;
mod gaps;
use findings::{Finding, Hit, PROCESS_RULES, Severity, TRANSITION_RULES};
pub use fold::{Folded, Group, KEEP_HISTORIES, KEEP_NAMESPACES};
pub use gaps::Heal;
use nstrace_common::{NS_SLOTS, flags::NS_MASK};

/// An index into [`Timeline::namespaces`].
pub type NsIdx = usize;

/// Entries kept in one namespace's membership log; later ones are counted.
const LOG_LIMIT: usize = 256;
/// How far a /proc start time (clock ticks) may be from the kernel's exact one.
const APPROX_START_NS: u64 = 20_000_000;
/// Findings kept; later ones are counted.
const FINDING_LIMIT: usize = 10_000;
/// Process histories kept; later ones are counted.
const HISTORY_LIMIT: usize = 100_000;
/// Losses kept; later ones are counted.
pub const LOSS_LIMIT: usize = 10_000;
/// Exits remembered for a reading of /proc: a storm's worth while /proc is read.
const RECENT_EXITS: usize = 8192;

/// A process, safe against pid reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    /// start_boottime of the thread first seen for this process, ns since boot.
    pub start_ns: u64,
}

/// Why a task's namespaces changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// It was there when tracing began.
    Present,
    /// Born by a fork: its parent's namespaces.
    Inherited {
        parent: u32,
    },
    /// Born by clone/clone3 with CLONE_NEW*.
    Clone {
        call: Call,
        flags: u64,
        parent: u32,
    },
    /// Born by a plain fork into its parent's pid_for_children or time_for_children.
    BornInto {
        parent: u32,
    },
    Unshare {
        flags: u64,
    },
    /// setns with a namespace fd or a pidfd.
    Setns {
        fd: i32,
        nstype: u64,
    },
    /// Entered time_for_children at exec.
    Exec,
    Exit,
    /// Found so when /proc was read again after lost records: the record of how is lost.
    Resync,
    /// Gone when /proc was read again after lost records: its exit was among them.
    Vanished,
}

impl Cause {
    pub fn describe(&self) -> String {
        let flags = |f: u64, clone: bool| crate::ns::flag_names(f, clone).join("|");
        match self {
            Cause::Present => "present when tracing began".into(),
            Cause::Inherited { parent } => format!("inherited from {parent} at fork"),
            Cause::Clone {
                call,
                flags: f,
                parent,
            } => format!(
                "born of {parent} by {}({})",
                call.name(),
                flags(*f, *call == Call::Clone)
            ),
            Cause::BornInto { parent } => {
                format!("born of {parent} by fork into its pid/time namespace for children")
            }
            Cause::Unshare { flags: f } => format!("unshare({})", flags(*f, false)),
            Cause::Setns { fd, nstype } => {
                let t = if *nstype == 0 {
                    "0".into()
                } else {
                    flags(*nstype, false)
                };
                format!("setns({fd}, {t})")
            }
            Cause::Exec => "exec (entering time_for_children)".into(),
            Cause::Exit => "exit".into(),
            Cause::Resync => "found so in /proc after lost records".into(),
            Cause::Vanished => "gone from /proc after lost records (its exit was lost)".into(),
        }
    }
}

/// One slot's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: NsKind,
    pub from: Option<NsIdx>,
    pub to: Option<NsIdx>,
}

/// One entry of a process's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub ts_ns: u64,
    pub tid: u32,
    pub comm: Comm,
    pub cause: Cause,
    pub changes: Vec<Change>,
    /// Set when the kernel refused the call: nothing changed.
    pub errno: Option<i32>,
    /// The thread is now in other namespaces than its process's main thread.
    pub thread_apart: bool,
}

/// What the timeline knows of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessHistory {
    pub key: ProcessKey,
    pub ppid: u32,
    pub comm: Comm,
    /// The last program it exec'd.
    pub exe: Option<String>,
    /// When it was born, if during the trace.
    pub born_ns: Option<u64>,
    /// When it ended and how (wait status).
    pub exited: Option<(u64, i32)>,
    /// It was gone when /proc was read again at this time after lost records: its exit was
    /// among them.
    pub vanished: Option<u64>,
    pub moves: Vec<Move>,
    /// Moves past the limit, counted (a process in a setns loop).
    pub moves_dropped: u64,
    /// Its container, once known.
    pub container: Option<Container>,
}

/// Who made a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creation {
    pub process: ProcessKey,
    pub tid: u32,
    pub comm: Comm,
    pub call: Call,
    pub flags: u64,
    pub ts_ns: u64,
}

/// A task's entry into, or exit from, a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub ts_ns: u64,
    pub tid: u32,
    pub pid: u32,
    pub comm: Comm,
    pub cause: Cause,
    pub entered: bool,
}

/// One namespace over its observed life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub ty: NsType,
    pub inum: u32,
    /// The kernel's ns_id, 0 when not (yet) known.
    pub id: u64,
    pub first_seen_ns: u64,
    pub created: Option<Creation>,
    /// One of the machine's initial namespaces.
    pub host: bool,
    /// The pid or user namespace this one was created in, when seen.
    pub parent: Option<NsIdx>,
    members: FxHashSet<u32>,
    pub peak_members: usize,
    /// Distinct tasks that were ever members.
    pub total_members: u64,
    pub log: Vec<Membership>,
    pub log_dropped: u64,
    /// When its last member task left (the kernel may keep it alive through a bind mount or an
    /// open fd, as `ip netns add` does).
    pub emptied_ns: Option<u64>,
    /// Something happened to it during the trace (or to an in-scope task in it).
    pub touched: bool,
    /// Its inode was seen again with another ns_id: this namespace is gone.
    pub replaced: bool,
    /// The container whose process first lived in it (never for the host's).
    pub owner: Option<Container>,
    /// A folded row's placeholder (see `fold`): no namespace.
    pub folded: bool,
}

impl Namespace {
    /// A namespace first seen at `first_seen_ns`, with nothing known of it yet.
    fn new(ty: NsType, inum: u32, id: u64, first_seen_ns: u64, host: bool) -> Self {
        Self {
            ty,
            inum,
            id,
            first_seen_ns,
            created: None,
            host,
            parent: None,
            members: FxHashSet::default(),
            peak_members: 0,
            total_members: 0,
            log: Vec::new(),
            log_dropped: 0,
            emptied_ns: None,
            touched: false,
            replaced: false,
            owner: None,
            folded: false,
        }
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    pub fn label(&self) -> String {
        if self.host {
            format!("{}:[{}] (host)", self.ty, self.inum)
        } else {
            format!("{}:[{}]", self.ty, self.inum)
        }
    }
}

/// A live task.
#[derive(Clone, Debug)]
struct Task {
    pid: u32,
    start_ns: u64,
    /// The start time came from /proc, in clock ticks: compare it within a tick.
    approx_start: bool,
    comm: Comm,
    set: [Option<NsIdx>; NS_SLOTS],
    in_scope: bool,
    /// Per slot: the task was in the host's namespace of that slot at some point of its life.
    ever_host: [bool; NS_SLOTS],
    /// The kernel's set last seen for the task, which `set` is the resolution of (every change
    /// of `set` sets this too, or clears it): while it holds, the next record's `before` needs no
    /// lookups.
    raw: Option<NsSet>,
    /// When it was born, if its birth was seen.
    born_ns: Option<u64>,
    /// The kernel time of the last record about it: what the timeline holds of it is at least
    /// that fresh.
    last_ns: u64,
}

impl Task {
    /// What `set` resolves to, when it is the kernel's set last seen for this task: no lookups
    /// needed.
    fn resolved_for(&self, set: &NsSet) -> Option<[Option<NsIdx>; NS_SLOTS]> {
        (self.raw.as_ref() == Some(set)).then_some(self.set)
    }

    /// Whether a record's start time (0: not known) names this task, not an earlier holder of
    /// its tid: exactly, or within a tick for a task from /proc.
    fn started_at(&self, start_ns: u64) -> bool {
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

/// Which processes the timeline follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    /// These pids and every process born of them, however re-parented.
    Descendants(HashSet<u32>),
}

/// Counters of what the timeline saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub transitions: u64,
    pub forks: u64,
    pub execs: u64,
    pub exits: u64,
    /// Records about a task the timeline had not seen (born before a gap, or lost).
    pub unknown_tasks: u64,
    /// Times a task's reported set differed from the model's (a record was lost).
    pub resyncs: u64,
    pub histories_dropped: u64,
    pub findings_dropped: u64,
    /// Records the kernel could not deliver (see [`Loss`]), and the batches they were in.
    pub lost_records: u64,
    pub lost_batches: u64,
    /// Losses past [`LOSS_LIMIT`], only counted.
    pub losses_dropped: u64,
    /// Tasks /proc no longer showed, and tasks it showed that the timeline did not know, when
    /// it was read again after lost records.
    pub vanished: u64,
    pub found: u64,
}

#[derive(Debug)]
pub struct Timeline {
    tasks: FxHashMap<u32, Task>,
    namespaces: Vec<Namespace>,
    by_inode: FxHashMap<(NsType, u32), NsIdx>,
    by_id: FxHashMap<(NsType, u64), NsIdx>,
    histories: FxHashMap<ProcessKey, ProcessHistory>,
    /// Processes in the order they first did something worth showing.
    order: Vec<ProcessKey>,
    /// The live process with a history, by pid.
    latest: FxHashMap<u32, ProcessKey>,
    scope: Scope,
    /// Host inodes of mnt and net (pid 1's, when it is in the initial pid namespace).
    host_mnt_net: [Option<u32>; 2],
    /// Containers of live processes, by pid.
    containers: FxHashMap<u32, Container>,
    /// Every finding, in order (capped); `fresh` of them not yet taken.
    findings: Vec<Finding>,
    fresh: usize,
    pub counts: Counts,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    /// Processes a finding names: never folded.
    flagged: FxHashSet<ProcessKey>,
    /// What was folded, and the rows free for reuse (see `fold`).
    folded: Folded,
    /// Shapes of folded processes, made once for many.
    shapes: fold::Shapes,
    free: Vec<NsIdx>,
    /// Rows made since the last sweep.
    rows_made: usize,
    /// Every loss of records, in the order found (capped).
    losses: Vec<Loss>,
    /// Their times, as spans (first, last) of losses close together: what makes a process's
    /// history uncertain.
    loss_spans: std::collections::BTreeMap<u64, u64>,
    /// The last exits seen (tid, time), newest last: a reading of /proc that began before one
    /// still shows its task.
    recent_exits: std::collections::VecDeque<(u32, u64)>,
    /// Folded keys still in `order`.
    order_dead: usize,
}

impl Timeline {
    pub fn new(scope: Scope) -> Self {
        Self {
            tasks: FxHashMap::default(),
            namespaces: Vec::new(),
            by_inode: FxHashMap::default(),
            by_id: FxHashMap::default(),
            histories: FxHashMap::default(),
            order: Vec::new(),
            latest: FxHashMap::default(),
            scope,
            host_mnt_net: [None, None],
            containers: FxHashMap::default(),
            findings: Vec::new(),
            fresh: 0,
            counts: Counts::default(),
            first_ns: None,
            last_ns: 0,
            flagged: FxHashSet::default(),
            folded: Folded::default(),
            shapes: fold::Shapes::default(),
            free: Vec::new(),
            rows_made: 0,
            order_dead: 0,
            losses: Vec::new(),
            loss_spans: std::collections::BTreeMap::new(),
            recent_exits: std::collections::VecDeque::new(),
        }
    }

    /// Every namespace seen, in order of first sighting.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    pub fn namespace(&self, idx: NsIdx) -> &Namespace {
        &self.namespaces[idx]
    }

    /// Histories of the processes that moved (or, with a pid scope, every process followed), in
    /// the order they first did so.
    pub fn histories(&self) -> impl Iterator<Item = &ProcessHistory> {
        self.order.iter().filter_map(|k| self.histories.get(k))
    }

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

    /// Per slot: whether the namespace is the host's.
    fn host_flags(&self, set: &[Option<NsIdx>; NS_SLOTS]) -> [bool; NS_SLOTS] {
        let mut out = [false; NS_SLOTS];
        for (flag, idx) in out.iter_mut().zip(set) {
            *flag = idx.is_some_and(|i| self.namespaces[i].host);
        }
        out
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a finding names everything it is about"
    )]
    fn found(
        &mut self,
        id: &'static str,
        severity: Severity,
        hit: Hit,
        ts_ns: u64,
        pid: u32,
        tid: u32,
        comm: &str,
    ) {
        let key = self.process_key(pid, 0);
        self.flagged.insert(key);
        if self.findings.len() >= FINDING_LIMIT {
            self.counts.findings_dropped += 1;
            return;
        }
        self.findings.push(Finding {
            id,
            severity: hit.severity.unwrap_or(severity),
            ts_ns,
            pid,
            tid,
            comm: Comm::from(comm),
            container: self.containers.get(&pid).cloned(),
            namespaces: hit.namespaces,
            message: hit.message,
        });
    }

    /// Findings made since the last call.
    pub fn take_new_findings(&mut self) -> &[Finding] {
        let new = &self.findings[self.fresh..];
        self.fresh = self.findings.len();
        new
    }

    /// Every finding so far.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The container of a live process, when known.
    pub fn container_of(&self, pid: u32) -> Option<&Container> {
        self.containers.get(&pid)
    }

    /// What userspace read of a live process at `ts_ns` (after its exec, or at start): the text of
    /// `/proc/PID/cgroup` and of `/proc/PID/uid_map`. Attributes the process to its container,
    /// the container to the namespaces it is first seen in, and runs the process rules.
    pub fn observe(&mut self, pid: u32, ts_ns: u64, cgroup: &str, uid_map: &str) {
        let Some(task) = self.tasks.get(&pid) else {
            return;
        };
        let (set, in_scope, comm) = (task.set, task.in_scope, task.comm.clone());
        if in_scope {
            self.root_mapping(pid, ts_ns, &comm, &set, uid_map);
        }
        let Some(container) = container::attribute(cgroup).and_then(|a| a.container().cloned())
        else {
            return;
        };
        if self.containers.get(&pid) == Some(&container) {
            return;
        }
        self.containers.insert(pid, container.clone());
        let key = self.process_key(pid, 0);
        if let Some(h) = self.histories.get_mut(&key) {
            h.container = Some(container.clone());
        }
        if in_scope {
            for rule in PROCESS_RULES {
                // Once per container: its other processes say the same.
                let said = self
                    .findings
                    .iter()
                    .any(|f| f.id == rule.id && f.container.as_ref() == Some(&container));
                if said {
                    continue;
                }
                if let Some(hit) = (rule.check)(self, pid, &container) {
                    self.found(rule.id, rule.severity, hit, ts_ns, pid, pid, &comm);
                }
            }
        }
        for idx in set.into_iter().flatten() {
            let ns = &mut self.namespaces[idx];
            if !ns.host && ns.owner.is_none() {
                ns.owner = Some(container.clone());
            }
        }
    }

    /// A process in a user namespace of its own that maps uid 0 inside to a non-root uid
    /// outside (`unshare -r`): root in there without being root.
    fn root_mapping(
        &mut self,
        pid: u32,
        ts_ns: u64,
        comm: &str,
        set: &[Option<NsIdx>; NS_SLOTS],
        uid_map: &str,
    ) {
        let Some(user) = set[NsKind::User.slot()] else {
            return;
        };
        if self.namespaces[user].host {
            return;
        }
        let outside = uid_map.lines().find_map(|l| {
            let mut f = l.split_whitespace().map(|v| v.parse::<u64>().ok());
            match (f.next().flatten(), f.next().flatten()) {
                (Some(0), Some(outside)) if outside != 0 => Some(outside),
                _ => None,
            }
        });
        let Some(outside) = outside else {
            return;
        };
        if self
            .findings
            .iter()
            .any(|f| f.id == "NS-USERNS-ROOTMAP" && f.namespaces == [user])
        {
            return;
        }
        let hit = Hit {
            severity: None,
            namespaces: vec![user],
            message: format!(
                "uid {outside} mapped itself to root in its own user namespace: it holds every \
                 capability over the namespaces that user namespace owns"
            ),
        };
        self.found(
            "NS-USERNS-ROOTMAP",
            Severity::Medium,
            hit,
            ts_ns,
            pid,
            pid,
            comm,
        );
    }

    /// Loads the processes that existed when tracing began.
    pub fn snapshot(&mut self, entries: &[ProcEntry], at_ns: u64) {
        // pid 1's mnt and net are the host's when it is in the initial pid namespace; where its
        // links cannot be read, kthreadd's (pid 2, on the kernel's initial nsproxy) are.
        let init_pid_ns = NsType::Pid.initial_inode();
        let readable = |e: &&ProcEntry| {
            (e.tid == 1 || (e.tid == 2 && e.ppid == 0))
                && e.inodes[NsKind::Pid.slot()] == init_pid_ns
                && e.inodes[NsKind::Mnt.slot()].is_some()
        };
        if let Some(init) = entries.iter().filter(readable).min_by_key(|e| e.tid) {
            self.host_mnt_net = [
                init.inodes[NsKind::Mnt.slot()],
                init.inodes[NsKind::Net.slot()],
            ];
        }
        let roots = match &self.scope {
            Scope::All => None,
            Scope::Descendants(roots) => Some(roots.clone()),
        };
        let parent_of: HashMap<u32, u32> = entries.iter().map(|e| (e.pid, e.ppid)).collect();
        for e in entries {
            let in_scope = match &roots {
                None => true,
                Some(roots) => descends(e.pid, roots, &parent_of),
            };
            self.add_from_proc(e, at_ns, in_scope);
            if in_scope && roots.is_some() && e.tid == e.pid {
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
    fn add_from_proc(
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
        for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
            if let Some(idx) = set[kind.slot()] {
                self.join(idx, e.tid);
            }
        }
        self.tasks.insert(
            e.tid,
            Task {
                pid: e.pid,
                start_ns: e.start_ns,
                approx_start: true,
                comm: e.comm.clone(),
                set,
                in_scope,
                ever_host: self.host_flags(&set),
                raw: None,
                born_ns: None,
                last_ns: 0,
            },
        );
        set
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

    /// Applies one record. Returns whether it concerns a followed task.
    pub fn apply(&mut self, record: &Record) -> bool {
        let ts = record.ts_ns();
        self.first_ns.get_or_insert(ts);
        self.last_ns = self.last_ns.max(ts);
        let followed = match record {
            Record::Transition(t) => self.transition(t),
            Record::Fork(f) => self.fork(f),
            Record::Exec(e) => self.exec(e),
            Record::Exit(x) => self.exit(x),
        };
        self.maybe_sweep();
        followed
    }

    /// The namespace of `ty` with this inode and id, seen at `ts`: found or made.
    fn resolve(&mut self, ty: NsType, inum: u32, id: u64, ts: u64) -> NsIdx {
        if id != 0
            && let Some(&idx) = self.by_id.get(&(ty, id))
        {
            // The inode names this namespace now (a stale record may have named another).
            if self.by_inode.get(&(ty, inum)) != Some(&idx) {
                self.by_inode.insert((ty, inum), idx);
            }
            return idx;
        }
        if let Some(&idx) = self.by_inode.get(&(ty, inum)) {
            let known = self.namespaces[idx].id;
            if id == 0 || known == 0 || known == id {
                if known == 0 && id != 0 {
                    self.namespaces[idx].id = id;
                    self.by_id.insert((ty, id), idx);
                }
                return idx;
            }
            // Same inode, another id: the old namespace was freed and its inode reused.
            let old = &mut self.namespaces[idx];
            old.replaced = true;
            old.emptied_ns.get_or_insert(ts);
        }
        let host = match ty {
            NsType::Mnt => self.host_mnt_net[0] == Some(inum),
            NsType::Net => self.host_mnt_net[1] == Some(inum),
            _ => ty.initial_inode() == Some(inum),
        };
        let idx = self.new_row(Namespace::new(ty, inum, id, ts, host));
        self.by_inode.insert((ty, inum), idx);
        if id != 0 {
            self.by_id.insert((ty, id), idx);
        }
        idx
    }

    /// The namespaces of a transition's `after`: the slots it shares with `before` are the
    /// ones `before` resolved to.
    fn resolve_after(
        &mut self,
        t: &Transition,
        changed: KindSet,
        before: [Option<NsIdx>; NS_SLOTS],
        ts: u64,
    ) -> [Option<NsIdx>; NS_SLOTS] {
        let mut out = before;
        for kind in changed {
            let ns = t.after.get(kind);
            out[kind.slot()] =
                (ns.inum != 0).then(|| self.resolve(kind.ns_type(), ns.inum, ns.id, ts));
        }
        out
    }

    fn resolve_set(&mut self, set: &NsSet, ts: u64) -> [Option<NsIdx>; NS_SLOTS] {
        let mut out = [None; NS_SLOTS];
        for kind in NsKind::ALL {
            let ns = set.get(kind);
            if ns.inum != 0 {
                out[kind.slot()] = Some(self.resolve(kind.ns_type(), ns.inum, ns.id, ts));
            }
        }
        out
    }

    fn join(&mut self, idx: NsIdx, tid: u32) {
        let ns = &mut self.namespaces[idx];
        if ns.members.insert(tid) {
            ns.total_members += 1;
            ns.peak_members = ns.peak_members.max(ns.members.len());
            ns.emptied_ns = None;
        }
    }

    /// Records an entry or exit in the namespace's log. Inherited entries and exits of the host
    /// namespaces are only counted: every process on the machine is in them.
    fn log(&mut self, idx: NsIdx, entry: Membership, explicit: bool, in_scope: bool) {
        self.log_with(idx, entry.tid, entry.pid, explicit, in_scope, || entry);
    }

    /// [`Self::log`], building the entry only when it is kept (a full log only counts).
    fn log_with(
        &mut self,
        idx: NsIdx,
        tid: u32,
        pid: u32,
        explicit: bool,
        in_scope: bool,
        entry: impl FnOnce() -> Membership,
    ) {
        let ns = &mut self.namespaces[idx];
        if ns.host && !explicit {
            return;
        }
        ns.touched |= in_scope;
        if !explicit && tid != pid {
            // Threads coming and going with their process: counted, not listed.
            return;
        }
        if ns.log.len() < LOG_LIMIT {
            ns.log.push(entry());
        } else {
            ns.log_dropped += 1;
        }
    }

    fn leave(&mut self, idx: NsIdx, tid: u32, ts: u64) {
        let ns = &mut self.namespaces[idx];
        if ns.members.remove(&tid) && ns.members.is_empty() {
            ns.emptied_ns = Some(ts);
        }
    }

    /// The history of a followed process, made on first use.
    fn history(
        &mut self,
        key: ProcessKey,
        ppid: u32,
        comm: &str,
        in_scope: bool,
    ) -> Option<&mut ProcessHistory> {
        if !in_scope {
            return None;
        }
        let full = self.histories.len() >= HISTORY_LIMIT;
        match self.histories.entry(key) {
            std::collections::hash_map::Entry::Occupied(h) => Some(h.into_mut()),
            std::collections::hash_map::Entry::Vacant(_) if full => {
                self.counts.histories_dropped += 1;
                None
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                self.order.push(key);
                self.latest.insert(key.pid, key);
                // Its birth, when it was seen: a process of the trace's own.
                let born_ns = self
                    .tasks
                    .get(&key.pid)
                    .filter(|t| t.pid == key.pid && t.start_ns == key.start_ns)
                    .and_then(|t| t.born_ns);
                Some(slot.insert(ProcessHistory {
                    key,
                    ppid,
                    comm: Comm::from(comm),
                    exe: None,
                    born_ns,
                    exited: None,
                    vanished: None,
                    moves: Vec::new(),
                    moves_dropped: 0,
                    container: None,
                }))
            }
        }
    }

    /// The process key of a live task: its process's main thread's start when known.
    fn process_key(&self, pid: u32, fallback_start: u64) -> ProcessKey {
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
    fn ensure_task(
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
            if let Some(old) = self.tasks.remove(&tid) {
                self.drop_task(tid, &old, ts);
            }
            let in_scope = match &self.scope {
                Scope::All => true,
                Scope::Descendants(roots) => {
                    roots.contains(&pid) || self.tasks.get(&pid).is_some_and(|t| t.in_scope)
                }
            };
            for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
                if let Some(idx) = resolved[kind.slot()] {
                    self.join(idx, tid);
                }
            }
            self.tasks.insert(
                tid,
                Task {
                    pid,
                    start_ns,
                    approx_start: false,
                    comm: Comm::from(comm),
                    set: resolved,
                    in_scope,
                    ever_host: self.host_flags(&resolved),
                    raw: Some(*set),
                    born_ns: None,
                    last_ns: ts,
                },
            );
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

    fn drop_task(&mut self, tid: u32, task: &Task, ts: u64) {
        for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
            if let Some(idx) = task.set[kind.slot()] {
                self.leave(idx, tid, ts);
            }
        }
    }

    fn transition(&mut self, t: &Transition) -> bool {
        self.counts.transitions += 1;
        let ts = t.ts_ns;
        let (before, start_ns) =
            self.ensure_task(t.tid, t.pid, t.start_boottime_ns, &t.comm, &t.before, ts);
        let in_scope = self.in_scope(t.tid);
        if in_scope {
            for rule in TRANSITION_RULES {
                if let Some(hit) = (rule.check)(self, t) {
                    self.found(rule.id, rule.severity, hit, ts, t.pid, t.tid, &t.comm);
                }
            }
        }
        let key = if t.tid == t.pid {
            ProcessKey {
                pid: t.pid,
                start_ns,
            }
        } else {
            self.process_key(t.pid, t.start_boottime_ns)
        };
        let cause = match t.call {
            Call::Unshare => Cause::Unshare { flags: t.flags },
            Call::Setns => Cause::Setns {
                fd: t.fd.unwrap_or(-1),
                nstype: t.flags,
            },
            Call::Exec => Cause::Exec,
            Call::Clone | Call::Clone3 | Call::Fork => Cause::Present,
        };
        let failed = t
            .errno()
            .filter(|_| !matches!(t.call, Call::Fork | Call::Exec));
        if let Some(errno) = failed {
            let attempt = match t.call {
                Call::Clone | Call::Clone3 => Cause::Clone {
                    call: t.call,
                    flags: t.flags,
                    parent: t.pid,
                },
                _ => cause,
            };
            self.record_move(key, t, in_scope, attempt, Vec::new, Some(errno), false);
            return in_scope;
        }

        let changed = t.changed();
        if !changed.is_empty() {
            let after = self.resolve_after(t, changed, before, ts);
            for kind in changed {
                let slot = kind.slot();
                // The caller's own set is `before` (ensure_task made it so).
                let (from, to) = (before[slot], after[slot]);
                if t.call == Call::Unshare
                    && t.flags & kind.clone_flag() != 0
                    && let Some(to) = to
                {
                    self.created(to, key, t, from);
                }
                if kind.is_own() {
                    if let Some(from) = from {
                        self.leave(from, t.tid, ts);
                        self.log_with(from, t.tid, t.pid, true, in_scope, || {
                            membership(t, cause.clone(), false)
                        });
                    }
                    if let Some(to) = to {
                        self.join(to, t.tid);
                        self.log_with(to, t.tid, t.pid, true, in_scope, || {
                            membership(t, cause.clone(), true)
                        });
                    }
                } else if let Some(to) = to {
                    self.namespaces[to].touched |= in_scope;
                }
            }
            let host = self.host_flags(&after);
            if let Some(task) = self.tasks.get_mut(&t.tid) {
                task.set = after;
                task.raw = Some(t.after);
                for (ever, now) in task.ever_host.iter_mut().zip(host) {
                    *ever |= now;
                }
            }
            let thread_apart = self.thread_apart(t.tid, t.pid);
            // A process in a setns loop soon fills its history: its moves are then only counted,
            // and their changes never built.
            let changes = || {
                changed
                    .iter()
                    .map(|kind| Change {
                        kind,
                        from: before[kind.slot()],
                        to: after[kind.slot()],
                    })
                    .collect()
            };
            self.record_move(key, t, in_scope, cause, changes, None, thread_apart);
        } else if t.call == Call::Setns {
            // A setns that landed where the caller was: worth a line in its history.
            self.record_move(key, t, in_scope, cause, Vec::new, None, false);
        }
        if let Some(child) = &t.child {
            self.birth(t, child, key, in_scope);
        }
        in_scope
    }

    /// Adds a move (or an attempt) to the caller's history.
    #[expect(
        clippy::too_many_arguments,
        reason = "a move names everything it is about"
    )]
    fn record_move(
        &mut self,
        key: ProcessKey,
        t: &Transition,
        in_scope: bool,
        cause: Cause,
        changes: impl FnOnce() -> Vec<Change>,
        errno: Option<i32>,
        thread_apart: bool,
    ) {
        if let Some(h) = self.history(key, t.ppid, &t.comm, in_scope) {
            if h.comm != t.comm {
                h.comm.clone_from(&t.comm);
            }
            push_move(h, || Move {
                ts_ns: t.ts_ns,
                tid: t.tid,
                comm: t.comm.clone(),
                cause,
                changes: changes(),
                errno,
                thread_apart,
            });
        }
    }

    /// Marks a namespace as made by this call; a new pid or user namespace is the child of the
    /// caller's own.
    fn created(
        &mut self,
        idx: NsIdx,
        key: ProcessKey,
        t: &Transition,
        caller_before: Option<NsIdx>,
    ) {
        let ns = &self.namespaces[idx];
        if ns.created.is_some() || ns.total_members > 0 {
            return;
        }
        let parent = match ns.ty {
            NsType::Pid => self
                .tasks
                .get(&t.tid)
                .and_then(|task| task.set[NsKind::Pid.slot()]),
            NsType::User => caller_before,
            _ => None,
        };
        let in_scope = self.in_scope(t.tid);
        let ns = &mut self.namespaces[idx];
        ns.parent = parent;
        ns.touched |= in_scope;
        ns.created = Some(Creation {
            process: key,
            tid: t.tid,
            comm: t.comm.clone(),
            call: t.call,
            flags: t.flags,
            ts_ns: t.ts_ns,
        });
    }

    /// Whether a thread's own namespaces differ from its process's main thread's.
    fn thread_apart(&self, tid: u32, pid: u32) -> bool {
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

    /// A child born by clone/clone3 with CLONE_NEW*, or by a fork into another pid/time
    /// namespace.
    fn birth(
        &mut self,
        t: &Transition,
        child: &crate::event::Child,
        key: ProcessKey,
        in_scope: bool,
    ) {
        let ts = t.ts_ns;
        let thread = t.flags & libc::CLONE_THREAD as u64 != 0 && t.call != Call::Fork;
        let pid = if thread { t.pid } else { child.tid };
        let parent_set = self.tasks.get(&t.tid).map(|task| task.set);
        let set = self.resolve_set(&child.ns, ts);
        let cause = match t.call {
            Call::Fork => Cause::BornInto { parent: t.pid },
            call => Cause::Clone {
                call,
                flags: t.flags,
                parent: t.pid,
            },
        };
        if let Some(old) = self.tasks.remove(&child.tid) {
            self.drop_task(child.tid, &old, ts);
        }
        self.tasks.insert(
            child.tid,
            Task {
                pid,
                start_ns: child.start_ns,
                approx_start: false,
                comm: t.comm.clone(),
                set,
                in_scope,
                ever_host: self.host_flags(&set),
                raw: None,
                born_ns: Some(ts),
                last_ns: ts,
            },
        );
        let child_key = ProcessKey {
            pid,
            start_ns: child.start_ns,
        };
        let mut changes = Vec::new();
        for kind in NsKind::ALL {
            let slot = kind.slot();
            let from = parent_set.and_then(|s| s[slot]);
            let moved = set[slot] != from;
            if moved {
                changes.push(Change {
                    kind,
                    from,
                    to: set[slot],
                });
                if matches!(t.call, Call::Clone | Call::Clone3)
                    && t.flags & kind.clone_flag() & NS_MASK != 0
                    && let Some(to) = set[slot]
                {
                    let caller_user = parent_set.and_then(|s| s[NsKind::User.slot()]);
                    self.created(to, key, t, caller_user);
                }
            }
            if kind.is_own()
                && let Some(idx) = set[slot]
            {
                self.join(idx, child.tid);
                let entry = Membership {
                    ts_ns: ts,
                    tid: child.tid,
                    pid,
                    comm: t.comm.clone(),
                    cause: cause.clone(),
                    entered: true,
                };
                self.log(idx, entry, moved, in_scope);
            }
        }
        let comm = t.comm.clone();
        let ppid = t.pid;
        if let Some(h) = self.history(child_key, ppid, &comm, in_scope) {
            h.born_ns = Some(ts);
            push_move(h, || Move {
                ts_ns: ts,
                tid: child.tid,
                comm,
                cause,
                changes,
                errno: None,
                thread_apart: false,
            });
        }
    }

    fn fork(&mut self, f: &Fork) -> bool {
        self.counts.forks += 1;
        let ts = f.ts_ns;
        // A plain fork's child is in its parent's set exactly (a child born elsewhere is a
        // transition): it inherits the kernel set that resolves to it, too.
        let parent = self
            .tasks
            .get(&f.parent_tid)
            .map(|p| (p.set, p.in_scope, p.raw));
        if parent.is_none() {
            self.counts.unknown_tasks += 1;
        }
        let (set, parent_in_scope, raw) = parent.unwrap_or(([None; NS_SLOTS], false, None));
        let in_scope = match &self.scope {
            Scope::All => true,
            Scope::Descendants(roots) => {
                parent_in_scope || roots.contains(&f.pid) || roots.contains(&f.parent_pid)
            }
        };
        if let Some(old) = self.tasks.remove(&f.tid) {
            self.drop_task(f.tid, &old, ts);
        }
        self.tasks.insert(
            f.tid,
            Task {
                pid: f.pid,
                start_ns: f.start_ns,
                approx_start: false,
                comm: f.comm.clone(),
                set,
                in_scope,
                ever_host: self.host_flags(&set),
                raw,
                born_ns: Some(ts),
                last_ns: ts,
            },
        );
        if f.tid == f.pid && matches!(self.scope, Scope::Descendants(_)) {
            // Following a command: every process it starts has a track, moved or not.
            let key = ProcessKey {
                pid: f.pid,
                start_ns: f.start_ns,
            };
            if let Some(h) = self.history(key, f.parent_pid, &f.comm, in_scope) {
                h.born_ns = Some(ts);
            }
        }
        let cause = Cause::Inherited {
            parent: f.parent_pid,
        };
        for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
            if let Some(idx) = set[kind.slot()] {
                self.join(idx, f.tid);
                self.log_with(idx, f.tid, f.pid, false, in_scope, || Membership {
                    ts_ns: ts,
                    tid: f.tid,
                    pid: f.pid,
                    comm: f.comm.clone(),
                    cause: cause.clone(),
                    entered: true,
                });
            }
        }
        in_scope
    }

    fn exec(&mut self, e: &Exec) -> bool {
        self.counts.execs += 1;
        if e.old_tid != e.tid
            && let Some(mut task) = self.tasks.remove(&e.old_tid)
        {
            // A non-leader thread exec'd: it takes over the leader's tid and, as the kernel
            // does (de_thread), its start time, so the process keeps its identity. The leader
            // may already have exited.
            if let Some(leader) = self.tasks.remove(&e.tid) {
                self.drop_task(e.tid, &leader, e.ts_ns);
                task.start_ns = leader.start_ns;
                task.approx_start = leader.approx_start;
            } else {
                task.start_ns = e.start_ns;
                task.approx_start = false;
            }
            self.drop_task(e.old_tid, &task, e.ts_ns);
            for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
                if let Some(idx) = task.set[kind.slot()] {
                    self.join(idx, e.tid);
                }
            }
            self.tasks.insert(e.tid, task);
        }
        let Some(task) = self.tasks.get_mut(&e.tid) else {
            self.counts.unknown_tasks += 1;
            return matches!(self.scope, Scope::All);
        };
        task.comm = e.comm.clone();
        task.last_ns = e.ts_ns;
        let in_scope = task.in_scope;
        let key = self.process_key(e.pid, e.start_ns);
        if let Some(h) = self.histories.get_mut(&key) {
            h.comm = e.comm.clone();
            h.exe = Some(e.filename.clone());
        }
        in_scope || matches!(self.scope, Scope::All)
    }

    fn exit(&mut self, x: &Exit) -> bool {
        self.counts.exits += 1;
        let ts = x.ts_ns;
        if self.recent_exits.len() == RECENT_EXITS {
            self.recent_exits.pop_front();
        }
        self.recent_exits.push_back((x.tid, ts));
        let Some(task) = self.tasks.remove(&x.tid) else {
            self.counts.unknown_tasks += 1;
            return matches!(self.scope, Scope::All);
        };
        let in_scope = task.in_scope;
        for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
            if let Some(idx) = task.set[kind.slot()] {
                self.leave(idx, x.tid, ts);
                let entry = Membership {
                    ts_ns: ts,
                    tid: x.tid,
                    pid: x.pid,
                    comm: x.comm.clone(),
                    cause: Cause::Exit,
                    entered: false,
                };
                self.log(idx, entry, false, in_scope);
            }
        }
        if x.group_dead {
            self.containers.remove(&x.pid);
            // The last thread may not be the main one: the process is the latest one with its
            // pid that has a history.
            if let Some(key) = self.latest.remove(&x.pid)
                && let Some(h) = self.histories.get_mut(&key)
            {
                h.exited = Some((ts, x.code));
                self.fold_process(key, ts);
            }
        }
        in_scope
    }
}

fn membership(t: &Transition, cause: Cause, entered: bool) -> Membership {
    Membership {
        ts_ns: t.ts_ns,
        tid: t.tid,
        pid: t.pid,
        comm: t.comm.clone(),
        cause,
        entered,
    }
}

/// Moves kept per process; later ones are counted.
const MOVE_LIMIT: usize = 1000;

/// Adds a move to a history, or past its cap only counts it (the move is then not built).
fn push_move(h: &mut ProcessHistory, m: impl FnOnce() -> Move) {
    if h.moves.len() < MOVE_LIMIT {
        h.moves.push(m());
    } else {
        h.moves_dropped += 1;
    }
}

/// Whether `pid` is one of `roots` or descends from one, by the snapshot's parent links.
fn descends(pid: u32, roots: &HashSet<u32>, parent_of: &HashMap<u32, u32>) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        if roots.contains(&p) {
            return true;
        }
        match parent_of.get(&p) {
            Some(&pp) if pp != p && pp != 0 => p = pp,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests;
