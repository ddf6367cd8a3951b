//! The namespace registry: every namespace seen, found by its ns_id or inode, who is in it, who
//! entered and left it, and who made it.
use nstrace_common::NS_SLOTS;
use rustc_hash::FxHashSet;

use super::{
    LOG_LIMIT, Timeline,
    history::{Cause, ProcessKey},
};
use crate::{
    container::Container,
    event::{Call, Comm, KindSet, NsSet, Transition},
    ns::{NsKind, NsType},
};

/// An index into [`Timeline::namespaces`].
pub type NsIdx = usize;

/// Who made a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creation {
    pub process: ProcessKey,
    pub tid: u32,
    /// The caller's uid.
    pub uid: u32,
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
    pub(super) members: FxHashSet<u32>,
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
    /// Asked about (`report --ns`): never folded, its whole log kept.
    pub pinned: bool,
}

impl Namespace {
    /// A namespace first seen at `first_seen_ns`, with nothing known of it yet.
    pub(super) fn new(ty: NsType, inum: u32, id: u64, first_seen_ns: u64, host: bool) -> Self {
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
            pinned: false,
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

impl Timeline {
    /// Keeps every namespace of `ty` (any type: None) whose inode or kernel id is `key` whole,
    /// its full log included, however long the trace (`report --ns`).
    pub fn pin(&mut self, ty: Option<NsType>, key: u64) {
        self.pins.push((ty, key));
    }

    /// The pins, to carry over to a new timeline.
    pub fn pins(&self) -> &[(Option<NsType>, u64)] {
        &self.pins
    }

    fn pinned(&self, ty: NsType, inum: u32, id: u64) -> bool {
        self.pins.iter().any(|&(t, key)| {
            t.is_none_or(|t| t == ty) && (u64::from(inum) == key || (id != 0 && id == key))
        })
    }

    /// Every namespace row (not folded) of `ty` (any: None) whose inode or kernel id is `key`,
    /// in the order first seen: an inode may name several over a long trace.
    pub fn find_namespaces(&self, ty: Option<NsType>, key: u64) -> Vec<NsIdx> {
        let mut found: Vec<NsIdx> = (0..self.namespaces.len())
            .filter(|&i| {
                let ns = &self.namespaces[i];
                !ns.folded
                    && ty.is_none_or(|t| t == ns.ty)
                    && (u64::from(ns.inum) == key || (ns.id != 0 && ns.id == key))
            })
            .collect();
        found.sort_by_key(|&i| self.namespaces[i].first_seen_ns);
        found
    }

    /// The namespace of `ty` with this inode and id, seen at `ts`: found or made.
    pub(super) fn resolve(&mut self, ty: NsType, inum: u32, id: u64, ts: u64) -> NsIdx {
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
                    self.namespaces[idx].pinned |= self.pinned(ty, inum, id);
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
        let mut ns = Namespace::new(ty, inum, id, ts, host);
        ns.pinned = self.pinned(ty, inum, id);
        let idx = self.new_row(ns);
        self.by_inode.insert((ty, inum), idx);
        if id != 0 {
            self.by_id.insert((ty, id), idx);
        }
        idx
    }

    /// The namespaces of a transition's `after`: the slots it shares with `before` are the
    /// ones `before` resolved to.
    pub(super) fn resolve_after(
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

    pub(super) fn resolve_set(&mut self, set: &NsSet, ts: u64) -> [Option<NsIdx>; NS_SLOTS] {
        let mut out = [None; NS_SLOTS];
        for kind in NsKind::ALL {
            let ns = set.get(kind);
            if ns.inum != 0 {
                out[kind.slot()] = Some(self.resolve(kind.ns_type(), ns.inum, ns.id, ts));
            }
        }
        out
    }

    pub(super) fn join(&mut self, idx: NsIdx, tid: u32) {
        let ns = &mut self.namespaces[idx];
        if ns.members.insert(tid) {
            ns.total_members += 1;
            ns.peak_members = ns.peak_members.max(ns.members.len());
            ns.emptied_ns = None;
        }
    }

    /// Records an entry or exit in the namespace's log. Inherited entries and exits of the host
    /// namespaces are only counted: every process on the machine is in them.
    pub(super) fn log(&mut self, idx: NsIdx, entry: Membership, explicit: bool, in_scope: bool) {
        self.log_with(idx, entry.tid, entry.pid, explicit, in_scope, || entry);
    }

    /// [`Self::log`], building the entry only when it is kept (a full log only counts).
    pub(super) fn log_with(
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
        let limit = if ns.pinned {
            self.pinned_log_limit
        } else {
            LOG_LIMIT
        };
        if ns.log.len() < limit {
            ns.log.push(entry());
        } else {
            ns.log_dropped += 1;
        }
    }

    pub(super) fn leave(&mut self, idx: NsIdx, tid: u32, ts: u64) {
        let ns = &mut self.namespaces[idx];
        if ns.members.remove(&tid) && ns.members.is_empty() {
            ns.emptied_ns = Some(ts);
        }
    }

    /// Marks a namespace as made by this call; a new pid or user namespace is the child of the
    /// caller's own.
    pub(super) fn created(
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
            uid: t.uid,
            comm: t.comm.clone(),
            call: t.call,
            flags: t.flags,
            ts_ns: t.ts_ns,
        });
    }

    /// Per slot: whether the namespace is the host's.
    pub(super) fn host_flags(&self, set: &[Option<NsIdx>; NS_SLOTS]) -> [bool; NS_SLOTS] {
        let mut out = [false; NS_SLOTS];
        for (flag, idx) in out.iter_mut().zip(set) {
            *flag = idx.is_some_and(|i| self.namespaces[i].host);
        }
        out
    }

    /// The namespace of `ty` this inode names now.
    pub fn namespace_of_inode(&self, ty: NsType, inum: u32) -> Option<NsIdx> {
        self.by_inode.get(&(ty, inum)).copied()
    }
}
