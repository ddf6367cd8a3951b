//! Folding: what keeps a long trace's memory flat.
//!
//! The first [`KEEP_HISTORIES`] process histories and [`KEEP_NAMESPACES`] namespace rows are
//! kept in full. Past that, a process that exits is folded into a count of its kind (its comm
//! and what it did), unless a finding names it. A namespace without members (emptied, or only
//! ever a task's namespace for children) is folded into a count of its kind (its type and what
//! made it) once nothing kept refers to it. A sweep finds
//! those namespaces by marking everything a live task, a kept history, a finding or a kept
//! namespace refers to. Folded rows are reused for new namespaces, so indices stay small.
//! The summary prints the counts beside the kept rows.
use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use super::{Namespace, NsIdx, ProcessKey, Timeline};
use crate::{event::Comm, ns::NsType};

/// Process histories kept in full before exited ones are folded.
pub const KEEP_HISTORIES: usize = 1000;
/// Namespace rows kept in full before emptied ones are folded.
pub const KEEP_NAMESPACES: usize = 2000;

/// Folded things of one kind: how many, and over what time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Group {
    fn add(&mut self, ts_ns: u64) {
        if self.count == 0 {
            self.first_ns = ts_ns;
        }
        self.count += 1;
        self.first_ns = self.first_ns.min(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
    }
}

/// What was folded, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Exited processes by (comm, what they did: their distinct calls, or "no moves").
    pub processes: BTreeMap<(Comm, String), Group>,
    /// Emptied namespaces by (type, what made them: `comm call`, or "seen").
    pub namespaces: BTreeMap<(NsType, String), Group>,
}

impl Folded {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.namespaces.is_empty()
    }
}

/// The last few shapes made, by the calls they were made of: a storm folds thousands of
/// processes that did the same thing, and describing their calls again each time was most of
/// the cost of folding them.
#[derive(Debug, Default)]
pub(super) struct Shapes {
    made: Vec<(Calls, String)>,
    next: usize,
}

/// A process's moves as a shape depends on them: each call and how it ended.
type Calls = Vec<(super::Cause, Option<i32>)>;

impl Shapes {
    const KEEP: usize = 8;

    fn shape(&mut self, moves: &[super::Move]) -> String {
        let same = |key: &[(super::Cause, Option<i32>)]| {
            key.len() == moves.len()
                && key
                    .iter()
                    .zip(moves)
                    .all(|((cause, errno), m)| *cause == m.cause && *errno == m.errno)
        };
        if let Some((_, text)) = self.made.iter().find(|(key, _)| same(key)) {
            return text.clone();
        }
        let text = shape(moves);
        let key = moves.iter().map(|m| (m.cause.clone(), m.errno)).collect();
        if self.made.len() < Self::KEEP {
            self.made.push((key, text.clone()));
        } else {
            self.made[self.next] = (key, text.clone());
            self.next = (self.next + 1) % Self::KEEP;
        }
        text
    }
}

/// What a process did, for its folded kind: its distinct calls in order, or "no moves".
fn shape(moves: &[super::Move]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for m in moves {
        let what = match m.errno {
            Some(errno) => format!(
                "{} refused ({})",
                m.cause.describe(),
                crate::ns::errno_name(errno)
            ),
            None => m.cause.describe(),
        };
        if !seen.contains(&what) {
            seen.push(what);
        }
    }
    if seen.is_empty() {
        "no moves".into()
    } else {
        seen.join(", ")
    }
}

impl Timeline {
    /// A process ended: past the limit, and unless a finding names it, its history becomes a
    /// count.
    pub(super) fn fold_process(&mut self, key: ProcessKey, ts_ns: u64) {
        if self.histories.len() <= KEEP_HISTORIES || self.flagged.contains(&key) {
            return;
        }
        let Some(h) = self.histories.remove(&key) else {
            return;
        };
        let mut what = self.shapes.shape(&h.moves);
        if h.moves_dropped > 0 {
            what.push_str(&format!(" ({} more moves)", h.moves_dropped));
        }
        if self.uncertain_since(&h).is_some() {
            what.push_str(" (records may be missing)");
        }
        self.folded
            .processes
            .entry((h.comm.clone(), what))
            .or_default()
            .add(h.born_ns.unwrap_or(ts_ns));
        self.order_dead += 1;
        if self.order_dead > self.order.len() / 2 {
            let histories = &self.histories;
            self.order.retain(|k| histories.contains_key(k));
            self.order_dead = 0;
        }
    }

    /// A namespace row is wanted: a folded one when there is one.
    pub(super) fn new_row(&mut self, ns: Namespace) -> NsIdx {
        self.rows_made += 1;
        match self.free.pop() {
            Some(idx) => {
                self.namespaces[idx] = ns;
                idx
            }
            None => {
                self.namespaces.push(ns);
                self.namespaces.len() - 1
            }
        }
    }

    pub(super) fn live_rows(&self) -> usize {
        self.namespaces.len() - self.free.len()
    }

    /// Between records (never in the middle of one, whose indices are not all stored yet):
    /// sweeps when enough rows were made since the last sweep.
    pub(super) fn maybe_sweep(&mut self) {
        if self.live_rows() > KEEP_NAMESPACES && self.rows_made >= KEEP_NAMESPACES / 2 {
            self.rows_made = 0;
            self.sweep();
        }
    }

    /// Folds every emptied namespace nothing kept refers to.
    fn sweep(&mut self) {
        let mut marked: FxHashSet<NsIdx> = FxHashSet::default();
        for task in self.tasks.values() {
            marked.extend(task.set.iter().flatten());
        }
        for h in self.histories.values() {
            marked.extend(h.start_set.iter().flatten());
            for m in &h.moves {
                for c in &m.changes {
                    marked.extend(c.from.into_iter().chain(c.to));
                }
            }
        }
        for f in &self.findings {
            marked.extend(f.namespaces.iter().copied());
        }
        for set in self.container_sets.values() {
            marked.extend(set.iter().flatten());
        }
        // A namespace without members is kept only while something refers to it: one that was
        // only ever some task's pid_for_children or time_for_children has never had a member
        // and never empties.
        let keep = |ns: &Namespace| !ns.folded && (ns.host || ns.pinned || ns.members() > 0);
        for (idx, ns) in self.namespaces.iter().enumerate() {
            if keep(ns) {
                marked.insert(idx);
            }
        }
        // A kept namespace keeps its ancestry.
        let mut stack: Vec<NsIdx> = marked.iter().copied().collect();
        while let Some(idx) = stack.pop() {
            if let Some(parent) = self.namespaces[idx].parent
                && marked.insert(parent)
            {
                stack.push(parent);
            }
        }
        for idx in 0..self.namespaces.len() {
            if marked.contains(&idx) || self.namespaces[idx].folded {
                continue;
            }
            self.fold_namespace(idx);
        }
    }

    fn fold_namespace(&mut self, idx: NsIdx) {
        let ns = std::mem::replace(&mut self.namespaces[idx], Namespace::folded());
        if self.by_inode.get(&(ns.ty, ns.inum)) == Some(&idx) {
            self.by_inode.remove(&(ns.ty, ns.inum));
        }
        if ns.id != 0 && self.by_id.get(&(ns.ty, ns.id)) == Some(&idx) {
            self.by_id.remove(&(ns.ty, ns.id));
        }
        let made = match &ns.created {
            Some(c) => format!("made by {} {}", c.comm, c.call.name()),
            None => "seen".into(),
        };
        self.folded
            .namespaces
            .entry((ns.ty, made))
            .or_default()
            .add(ns.first_seen_ns);
        self.free.push(idx);
    }

    /// What was folded.
    pub fn folded(&self) -> &Folded {
        &self.folded
    }
}

impl Namespace {
    /// The placeholder of a folded row: shown nowhere, reused by the next new namespace.
    fn folded() -> Self {
        Self {
            folded: true,
            ..Self::new(NsType::Uts, 0, 0, 0, false)
        }
    }
}
