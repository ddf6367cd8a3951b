//! Findings: namespace patterns worth an incident responder's attention.
//!
//! Each rule is a row of [`TRANSITION_RULES`] or [`PROCESS_RULES`]: a stable id, a severity,
//! and a check that looks at one event with the timeline's state around it, through the
//! timeline's methods, and returns what it found. A new rule is a new row.
use crate::event::Comm;
use crate::{
    container::Container,
    event::{Call, Transition},
    ns::{NsKind, NsType},
};

use super::{FINDING_LIMIT, NsIdx, Timeline};

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

/// What userspace read of a live process (after its exec, or at start): what the rules about
/// processes look at.
pub struct Look<'a> {
    pub pid: u32,
    /// Its container, when known.
    pub container: Option<&'a Container>,
    /// The text of `/proc/PID/uid_map`.
    pub uid_map: &'a str,
}

/// What a process rule needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// A look at the process (its uid_map): checked at every look.
    EveryLook,
    /// The process's container: checked at every look once it is known, and after each move
    /// of the process; said once per container, whose other processes would say the same.
    Attributed,
}

/// A rule about a process, from what userspace read of it.
pub struct ProcessRule {
    pub id: &'static str,
    pub severity: Severity,
    pub when: When,
    pub check: fn(&Timeline, &Look<'_>) -> Option<Hit>,
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
        id: "NS-USERNS-ROOTMAP",
        severity: Severity::Medium,
        when: When::EveryLook,
        check: root_mapping,
    },
    ProcessRule {
        id: "NS-SHARES-HOST",
        severity: Severity::Medium,
        when: When::Attributed,
        check: shares_host,
    },
    ProcessRule {
        id: "NS-JOINS-CONTAINER",
        severity: Severity::Medium,
        when: When::Attributed,
        check: joins_other_container,
    },
    ProcessRule {
        id: "NS-PARTIAL-JOIN",
        severity: Severity::Low,
        when: When::EveryLook,
        check: partial_join,
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
    tl.task_namespaces(t.tid)?;
    let mut reached = Vec::new();
    let mut kinds = Vec::new();
    for kind in t.changed() {
        if !host_checked(kind) || tl.was_in_host(t.tid, kind) {
            continue;
        }
        let ns = t.after.get(kind);
        let idx = tl.namespace_of_inode(kind.ns_type(), ns.inum)?;
        if tl.namespace(idx).host {
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
fn shares_host(tl: &Timeline, look: &Look<'_>) -> Option<Hit> {
    let set = tl.task_namespaces(look.pid)?;
    let mnt = set[NsKind::Mnt.slot()]?;
    // nstrace's own container (a DaemonSet's pod) needs the host's pid namespace to trace it.
    // Only a process with the host's privileges can enter another's mount namespace.
    if tl.namespace(mnt).host || tl.own_mnt == Some(tl.namespace(mnt).inum) {
        return None;
    }
    let mut shared = Vec::new();
    let mut names = Vec::new();
    for kind in [NsKind::Pid, NsKind::Ipc, NsKind::Net, NsKind::Uts] {
        if let Some(idx) = set[kind.slot()]
            && tl.namespace(idx).host
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

/// The slots a partial join is judged on: what a container isolates and a process can enter.
const JOINABLE: [NsKind; 5] = [
    NsKind::Mnt,
    NsKind::Uts,
    NsKind::Ipc,
    NsKind::Pid,
    NsKind::Net,
];

/// A process from outside a container that entered some of its namespaces and stayed in the
/// host's others (`nsenter -t PID -m -p`, an exec that missed the network namespace): a mixed
/// set, looked at once the process has exec'd (a tool entering one namespace at a time is
/// mixed until it is done). The container's own processes (sharing the host's on purpose is
/// NS-SHARES-HOST) and a runtime making or entering a container are not judged. Said once per
/// process.
fn partial_join(tl: &Timeline, look: &Look<'_>) -> Option<Hit> {
    let task = tl.tasks.get(&look.pid)?;
    if task.making() {
        return None;
    }
    let set = task.set;
    let container = JOINABLE
        .iter()
        .find_map(|k| tl.namespace(set[k.slot()]?).owner.as_ref())?;
    if look.container == Some(container) {
        return None;
    }
    let theirs = tl.container_sets.get(container)?;
    let (mut joined, mut stayed) = (Vec::new(), Vec::new());
    for kind in JOINABLE {
        let (Some(their), Some(mine)) = (theirs[kind.slot()], set[kind.slot()]) else {
            continue;
        };
        // Where the container has the host's own, staying there says nothing.
        if tl.namespace(their).host {
            continue;
        }
        if mine == their {
            joined.push((kind, mine));
        } else if tl.namespace(mine).host {
            stayed.push(kind.name());
        }
    }
    if joined.is_empty() || stayed.is_empty() {
        return None;
    }
    let said = tl
        .findings()
        .iter()
        .any(|f| f.id == "NS-PARTIAL-JOIN" && f.pid == look.pid);
    if said {
        return None;
    }
    let names: Vec<&str> = joined.iter().map(|(k, _)| k.name()).collect();
    Some(Hit {
        severity: None,
        namespaces: joined.iter().map(|&(_, idx)| idx).collect(),
        message: format!(
            "entered the {} namespace{} of {} but stayed in the host's {}: a partial join \
             (nsenter with some of -m -u -i -p -n, or a join that missed one)",
            names.join(", "),
            if names.len() > 1 { "s" } else { "" },
            tl.container_label(container),
            stayed.join(", ")
        ),
    })
}

/// A container in a namespace that belongs to another container (--pid=container:X,
/// --ipc=container:X): the two see each other's processes or IPC.
fn joins_other_container(tl: &Timeline, look: &Look<'_>) -> Option<Hit> {
    let container = look.container?;
    let set = tl.task_namespaces(look.pid)?;
    let mut joined = Vec::new();
    let mut names = Vec::new();
    let mut others = Vec::new();
    for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
        let Some(idx) = set[kind.slot()] else {
            continue;
        };
        if let Some(owner) = &tl.namespace(idx).owner
            && owner != container
        {
            joined.push(idx);
            names.push(kind.name());
            let label = tl.container_label(owner);
            if !others.contains(&label) {
                others.push(label);
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

impl Timeline {
    #[expect(
        clippy::too_many_arguments,
        reason = "a finding names everything it is about"
    )]
    pub(super) fn found(
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

    /// Runs the process rules (those checked `when`, or all), as one look at the process.
    pub(super) fn process_rules(
        &mut self,
        when: Option<When>,
        look: &Look<'_>,
        ts_ns: u64,
        comm: &str,
        making: bool,
    ) {
        let mut hits = Vec::new();
        // A runtime's own process in a container (`making`: runc's init, runc:[1:CHILD], crun)
        // is halfway through making it: in the host's pid namespace until its child is born,
        // say. The container is looked at once the runtime has exec'd its program.
        for rule in PROCESS_RULES
            .iter()
            .filter(|r| when.is_none_or(|w| r.when == w))
        {
            // The rules about containers say a thing once per container: its other processes
            // would say the same.
            let said = rule.when == When::Attributed
                && (making
                    || look.container.is_none()
                    || self
                        .findings
                        .iter()
                        .any(|f| f.id == rule.id && f.container.as_ref() == look.container));
            if !said && let Some(hit) = (rule.check)(self, look) {
                hits.push((rule, hit));
            }
        }
        for (rule, hit) in hits {
            self.found(rule.id, rule.severity, hit, ts_ns, look.pid, look.pid, comm);
        }
    }
}

/// A user namespace made by a non-root user who mapped uid 0 in it to their own uid
/// (`unshare -r`): root in there without being root. A root runtime mapping a container's root
/// to an unprivileged uid (`podman run --uidmap`) makes the container safer, and is not one.
/// Said once per user namespace.
fn root_mapping(tl: &Timeline, look: &Look<'_>) -> Option<Hit> {
    let user = tl.task_namespaces(look.pid)?[NsKind::User.slot()]?;
    let ns = tl.namespace(user);
    let maker = ns.created.as_ref().filter(|c| c.uid != 0)?;
    if ns.host {
        return None;
    }
    let outside = look.uid_map.lines().find_map(|l| {
        let mut f = l.split_whitespace().map(|v| v.parse::<u64>().ok());
        match (f.next().flatten(), f.next().flatten()) {
            (Some(0), Some(outside)) if outside == u64::from(maker.uid) => Some(outside),
            _ => None,
        }
    })?;
    let said = tl
        .findings()
        .iter()
        .any(|f| f.id == "NS-USERNS-ROOTMAP" && f.namespaces == [user]);
    (!said).then(|| Hit {
        severity: None,
        namespaces: vec![user],
        message: format!(
            "uid {outside} mapped itself to root in its own user namespace: it holds every \
             capability over the namespaces that user namespace owns"
        ),
    })
}
