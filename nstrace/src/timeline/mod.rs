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
//!
//! One file a concern: [`namespaces`] (the registry), [`tasks`] (live tasks and which are
//! followed), [`history`] (what each process did), `apply` (records into all three),
//! `containers` (what userspace reads of a process: its container, and the container's
//! names), [`findings`] (the rules), `gaps` (losses and healing from /proc), `fold` (what keeps
//! memory flat).
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{container::Container, event::Loss, names::Names, ns::NsType};

mod apply;
mod containers;
pub mod findings;
mod fold;
mod gaps;
pub mod history;
pub mod namespaces;
pub mod tasks;
use findings::Finding;
pub use fold::{Folded, Group, KEEP_HISTORIES, KEEP_NAMESPACES};
pub use gaps::Heal;
pub use history::{Cause, Change, Move, ProcessHistory, ProcessKey};
pub use namespaces::{Creation, Membership, Namespace, NsIdx};
use tasks::Task;
pub use tasks::{ProcEntry, Scope};

/// Entries kept in one namespace's membership log; later ones are counted.
const LOG_LIMIT: usize = 256;

/// A pinned namespace's log entries kept at most live (`--ns`): some 10 MiB; later ones are
/// counted.
pub const PINNED_LOG_LIMIT: usize = 100_000;
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

/// Counters of what the timeline saw (the summary's `counts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub transitions: u64,
    /// `transitions` by call, in [`Call::ALL`](crate::event::Call::ALL)'s order.
    #[serde(skip)]
    pub by_call: [u64; 6],
    pub forks: u64,
    pub execs: u64,
    pub exits: u64,
    /// Records about a task the timeline had not seen (born before a gap, or lost).
    pub unknown_tasks: u64,
    /// Times a task's reported set differed from the model's (a record was lost).
    pub resyncs: u64,
    pub histories_dropped: u64,
    #[serde(skip)]
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
    /// nstrace's own mount namespace, when it runs in a container of its own.
    own_mnt: Option<u32>,
    /// Namespaces asked about, by type and inode or id (see `pin`).
    pins: Vec<(Option<NsType>, u64)>,
    /// Entries a pinned namespace's log keeps at most: all of a recording's (its file bounds
    /// them), [`PINNED_LOG_LIMIT`] live (a trace may run for days).
    pub pinned_log_limit: usize,
    /// Containers of live processes, by pid.
    containers: FxHashMap<u32, Container>,
    /// Each container's namespace set, as its first process was seen in it.
    container_sets:
        std::collections::BTreeMap<Container, [Option<NsIdx>; nstrace_common::NS_SLOTS]>,
    /// Every container seen, and those not yet taken (see `take_new_containers`).
    seen_containers: FxHashSet<Container>,
    new_containers: Vec<Container>,
    /// What each container's engine calls it, once known.
    names: FxHashMap<Container, Names>,
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
            own_mnt: None,
            pins: Vec::new(),
            pinned_log_limit: usize::MAX,
            containers: FxHashMap::default(),
            container_sets: std::collections::BTreeMap::new(),
            seen_containers: FxHashSet::default(),
            new_containers: Vec::new(),
            names: FxHashMap::default(),
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
    /// nstrace's own mount namespace: when it is not the host's, nstrace runs in a container,
    /// whose sharing of the host's pid namespace is how it traces (see `shares_host`).
    pub fn set_own_mnt(&mut self, inode: u32) {
        self.own_mnt = Some(inode);
    }

    /// Tasks followed now, and namespace rows held (alive, or kept for the summary).
    pub fn tracked(&self) -> (usize, usize) {
        (self.tasks.len(), self.live_rows())
    }

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
}

#[cfg(test)]
mod tests;
