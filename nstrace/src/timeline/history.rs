//! Process histories: who moved where, why, and when, kept per process for the summary.
use nstrace_common::NS_SLOTS;

use super::{HISTORY_LIMIT, NsIdx, Timeline};
use crate::{
    container::Container,
    event::{Call, Comm, Transition},
    ns::NsKind,
};

/// Adds a move to a history, or past its cap only counts it (the move is then not built).
pub(super) fn push_move(h: &mut ProcessHistory, m: impl FnOnce() -> Move) {
    if h.moves.len() < MOVE_LIMIT {
        h.moves.push(m());
    } else {
        h.moves_dropped += 1;
    }
}

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
    /// A plain fork into the caller's pid_for_children: only ever an attempt, refused because
    /// that namespace's init has exited (a fork that succeeds is its child's `BornInto`).
    ForkInto,
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
            Cause::ForkInto => "fork into its pid namespace for children".into(),
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
    /// Its namespaces as the timeline knew them when its history began (slots a first move
    /// changed may already hold the move's result: its `from` is the set before).
    pub start_set: [Option<NsIdx>; NS_SLOTS],
}

/// Moves kept per process; later ones are counted.
pub(super) const MOVE_LIMIT: usize = 1000;

impl Timeline {
    /// The history of a followed process, made on first use.
    pub(super) fn history(
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
                let task = self
                    .tasks
                    .get(&key.pid)
                    .filter(|t| t.pid == key.pid && t.start_ns == key.start_ns);
                let born_ns = task.and_then(|t| t.born_ns);
                let start_set = task.map_or([None; NS_SLOTS], |t| t.set);
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
                    container: self.containers.get(&key.pid).cloned(),
                    start_set,
                }))
            }
        }
    }

    /// Adds a move (or an attempt) to the caller's history.
    #[expect(
        clippy::too_many_arguments,
        reason = "a move names everything it is about"
    )]
    pub(super) fn record_move(
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
}
