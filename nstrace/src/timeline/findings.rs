//! Findings: namespace patterns worth an incident responder's attention.
//!
//! Each rule is a row of [`TRANSITION_RULES`] or [`PROCESS_RULES`]: a stable id, a severity,
//! and a check that looks at one event with the timeline's state around it and returns what it
//! found. A new rule is a new row.
use crate::event::Comm;
use crate::{
    container::Container,
    event::{Call, Transition},
    ns::{NsKind, NsType},
};

use super::{NsIdx, Timeline};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Stable, for filters and alerts: `NS-SETNS-HOST`.
    pub id: &'static str,
    pub severity: Severity,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub container: Option<Container>,
    pub namespaces: Vec<NsIdx>,
    /// Why it matters, in one sentence.
    pub message: String,
}

/// What a rule found: severity (when the row's is not enough), namespaces, sentence.
pub struct Hit {
    pub severity: Option<Severity>,
    pub namespaces: Vec<NsIdx>,
    pub message: String,
}

/// A rule about one transition, seen before the timeline applies it.
pub struct TransitionRule {
    pub id: &'static str,
    pub severity: Severity,
    pub check: fn(&Timeline, &Transition) -> Option<Hit>,
}

/// A rule about a process once its container is known (at exec).
pub struct ProcessRule {
    pub id: &'static str,
    pub severity: Severity,
    pub check: fn(&Timeline, u32, &Container) -> Option<Hit>,
}

pub const TRANSITION_RULES: &[TransitionRule] = &[
    TransitionRule {
        id: "NS-SETNS-HOST",
        severity: Severity::Medium,
        check: setns_into_host,
    },
    TransitionRule {
        id: "NS-USERNS-UNPRIVILEGED",
        severity: Severity::Medium,
        check: unprivileged_userns,
    },
    TransitionRule {
        id: "NS-REFUSED",
        severity: Severity::Low,
        check: refused,
    },
];

pub const PROCESS_RULES: &[ProcessRule] = &[
    ProcessRule {
        id: "NS-SHARES-HOST",
        severity: Severity::Medium,
        check: shares_host,
    },
    ProcessRule {
        id: "NS-JOINS-CONTAINER",
        severity: Severity::Medium,
        check: joins_other_container,
    },
];

/// Whether reaching the host's namespace in this slot is an escape: every slot but
/// time_for_children (the host's clock offsets give nothing away).
fn host_checked(kind: NsKind) -> bool {
    kind != NsKind::TimeForChildren
}

/// setns into one of the host's namespaces by a task that was never in it: how a process born
/// in a container reaches the host (nsenter -t 1). Returning home (ip netns add) is not one.
fn setns_into_host(tl: &Timeline, t: &Transition) -> Option<Hit> {
    if t.call != Call::Setns || t.errno().is_some() {
        return None;
    }
    let task = tl.tasks.get(&t.tid)?;
    let mut reached = Vec::new();
    let mut kinds = Vec::new();
    for kind in t.changed() {
        if !host_checked(kind) || task.ever_host[kind.slot()] {
            continue;
        }
        let ns = t.after.get(kind);
        let idx = *tl.by_inode.get(&(kind.ns_type(), ns.inum))?;
        if tl.namespaces[idx].host {
            reached.push(idx);
            kinds.push(kind);
        }
    }
    if reached.is_empty() {
        return None;
    }
    let severe = kinds
        .iter()
        .any(|k| matches!(k.ns_type(), NsType::Mnt | NsType::Pid));
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    Some(Hit {
        severity: severe.then_some(Severity::High),
        namespaces: reached,
        message: format!(
            "entered the host's {} namespace{} from a process that was never in it: a way out of \
             a container{}",
            names.join(", "),
            if names.len() > 1 { "s" } else { "" },
            if severe {
                " that reaches the host's files or processes"
            } else {
                ""
            }
        ),
    })
}

/// A user namespace made by an unprivileged user: the usual first step of kernel exploits that
/// need CAP_SYS_ADMIN "inside".
fn unprivileged_userns(_: &Timeline, t: &Transition) -> Option<Hit> {
    let made = match t.call {
        Call::Unshare | Call::Clone | Call::Clone3 => t.flags & NsKind::User.clone_flag() != 0,
        _ => false,
    };
    if !made || t.uid == 0 || t.errno().is_some() {
        return None;
    }
    Some(Hit {
        severity: None,
        namespaces: Vec::new(),
        message: format!(
            "uid {} created a user namespace without privilege: inside it the process holds every \
             capability",
            t.uid
        ),
    })
}

/// A namespace change the kernel refused with EPERM: an attempt, worth recording.
fn refused(_: &Timeline, t: &Transition) -> Option<Hit> {
    if t.errno() != Some(libc::EPERM) || matches!(t.call, Call::Fork | Call::Exec) {
        return None;
    }
    Some(Hit {
        severity: None,
        namespaces: Vec::new(),
        message: format!(
            "{} ({}) was refused (EPERM): an attempt to change namespaces without the privilege",
            t.call.name(),
            t.flag_names().join("|")
        ),
    })
}

/// A container that shares one of the host's pid, ipc, net or uts namespaces while isolated in
/// its mount namespace (docker --pid=host, --ipc=host, --network=host, --uts=host). Sharing the
/// host's user namespace is what every rootful container does, and is not flagged.
fn shares_host(tl: &Timeline, pid: u32, _: &Container) -> Option<Hit> {
    let task = tl.tasks.get(&pid)?;
    let mnt = task.set[NsKind::Mnt.slot()]?;
    if tl.namespaces[mnt].host {
        return None;
    }
    let mut shared = Vec::new();
    let mut names = Vec::new();
    for kind in [NsKind::Pid, NsKind::Ipc, NsKind::Net, NsKind::Uts] {
        if let Some(idx) = task.set[kind.slot()]
            && tl.namespaces[idx].host
        {
            shared.push(idx);
            names.push(kind.name());
        }
    }
    if shared.is_empty() {
        return None;
    }
    let severe = names.contains(&"pid");
    Some(Hit {
        severity: severe.then_some(Severity::High),
        namespaces: shared,
        message: format!(
            "a container shares the host's {} namespace{}: it sees {}",
            names.join(", "),
            if names.len() > 1 { "s" } else { "" },
            names
                .iter()
                .map(|n| match *n {
                    "pid" => "the host's processes",
                    "ipc" => "the host's IPC objects",
                    "net" => "the host's network",
                    _ => "the host's hostname",
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A container in a namespace that belongs to another container (--pid=container:X,
/// --ipc=container:X): the two see each other's processes or IPC.
fn joins_other_container(tl: &Timeline, pid: u32, container: &Container) -> Option<Hit> {
    let task = tl.tasks.get(&pid)?;
    let mut joined = Vec::new();
    let mut names = Vec::new();
    let mut others = Vec::new();
    for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
        let Some(idx) = task.set[kind.slot()] else {
            continue;
        };
        if let Some(owner) = &tl.namespaces[idx].owner
            && owner != container
        {
            joined.push(idx);
            names.push(kind.name());
            if !others.contains(&owner.short()) {
                others.push(owner.short());
            }
        }
    }
    if joined.is_empty() {
        return None;
    }
    Some(Hit {
        severity: None,
        namespaces: joined,
        message: format!(
            "the container joined the {} namespace{} of {}: they see each other's {}",
            names.join(", "),
            if names.len() > 1 { "s" } else { "" },
            others.join(", "),
            if names.contains(&"pid") {
                "processes"
            } else {
                "resources"
            }
        ),
    })
}
