//! What is printed of the records: `--comm`, `--type`, `--findings`, `--container`, live
//! `--ns`.
use crate::{container::Container, event::Record, ns::NsType, timeline::Timeline};

/// What is printed: records of followed processes that pass these.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records whose command name is this.
    pub comm: Option<String>,
    /// Only transitions that move one of these types (forks, execs and exits always pass).
    pub types: Option<Vec<NsType>>,
    /// Only findings.
    pub findings_only: bool,
    /// Only records, findings and corrections about processes of this container: a name, an
    /// id or its start, `runtime:id` (see [`crate::names::matches`]).
    pub container: Option<String>,
    /// Only what happened from this kernel time on (`--since`); what came before still builds
    /// the timeline, so that the window starts from the state it had.
    pub since_ns: Option<u64>,
    /// Nothing after this kernel time (`--until`, `--at`): later records are not applied.
    pub until_ns: Option<u64>,
    /// Live `--ns`: only transitions into, out of or within this namespace (its type, when
    /// given, and its inode or id).
    pub namespace: Option<(Option<NsType>, u64)>,
}

impl Filter {
    /// Whether a record passes, by what it says itself (its container is looked at later, by
    /// [`Filter::in_container`], once its container's names are known).
    pub fn accepts(&self, record: &Record) -> bool {
        if self.findings_only || !self.in_window(record.ts_ns()) {
            return false;
        }
        if let Some(comm) = &self.comm {
            let name = match record {
                Record::Transition(t) => &t.comm,
                Record::Fork(f) => &f.comm,
                Record::Exec(e) => &e.comm,
                Record::Exit(x) => &x.comm,
            };
            if name != comm {
                return false;
            }
        }
        if let (Some((ty, key)), Record::Transition(t)) = (self.namespace, record) {
            let sets = [
                Some(&t.before),
                Some(&t.after),
                t.child.as_ref().map(|c| &c.ns),
            ];
            let holds = |set: &crate::event::NsSet| {
                crate::ns::NsKind::ALL.into_iter().any(|k| {
                    ty.is_none_or(|ty| k.ns_type() == ty)
                        && (u64::from(set.inum[k.slot()]) == key || set.id[k.slot()] == key)
                })
            };
            if !sets.into_iter().flatten().any(holds) {
                return false;
            }
        }
        match (&self.types, record) {
            (Some(types), Record::Transition(t)) => {
                let moved = t.changed().into_iter().chain(t.child_moved());
                let flagged = types
                    .iter()
                    .any(|ty| t.flags & ty.own_slot().clone_flag() != 0);
                flagged || moved.map(|k| k.ns_type()).any(|ty| types.contains(&ty))
            }
            _ => true,
        }
    }
}

impl Filter {
    /// Whether kernel time `ts_ns` is within `--since` and `--until`.
    pub fn in_window(&self, ts_ns: u64) -> bool {
        self.since_ns.is_none_or(|since| ts_ns >= since) && !self.past(ts_ns)
    }

    /// Whether kernel time `ts_ns` is after `--until`: not applied at all.
    pub fn past(&self, ts_ns: u64) -> bool {
        self.until_ns.is_some_and(|until| ts_ns > until)
    }

    /// Whether something about a process of `container` (none: not in one) passes
    /// `--container`.
    pub fn in_container(&self, timeline: &Timeline, container: Option<&Container>) -> bool {
        match &self.container {
            None => true,
            Some(what) => container.is_some_and(|c| timeline.container_matches(c, what)),
        }
    }
}
