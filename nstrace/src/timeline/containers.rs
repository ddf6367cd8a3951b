//! Containers: which one a process belongs to (from what userspace read of its cgroup), which
//! namespaces each owns, and what people call it (its [`Names`], from its engine).
use nstrace_common::NS_SLOTS;

use super::{
    NsIdx, Timeline,
    findings::{Look, When},
};
use crate::{
    container::{self, Container},
    names::{self, Names},
    ns::NsKind,
};

impl Timeline {
    /// A container's namespace set, as its first process was seen in it.
    pub fn container_set(&self, container: &Container) -> Option<&[Option<NsIdx>; NS_SLOTS]> {
        self.container_sets.get(container)
    }

    /// The container of a live process, when known.
    pub fn container_of(&self, pid: u32) -> Option<&Container> {
        self.containers.get(&pid)
    }

    /// What userspace read of a live process at `ts_ns` (after its exec, or at start): the text of
    /// `/proc/PID/cgroup` and of `/proc/PID/uid_map`. Attributes the process to its container,
    /// the container to the namespaces it is first seen in, and runs the process rules.
    pub fn observe(&mut self, pid: u32, ts_ns: u64, cgroup: &str, uid_map: &str) {
        self.observe_in(pid, ts_ns, cgroup, uid_map, None);
    }

    /// [`Timeline::observe`], knowing which runtime's state has the container that the cgroup
    /// names without its runtime (what made its namespaces, when seen, says it first).
    pub fn observe_in(
        &mut self,
        pid: u32,
        ts_ns: u64,
        cgroup: &str,
        uid_map: &str,
        runtime: Option<&'static str>,
    ) {
        let Some(task) = self.tasks.get(&pid) else {
            return;
        };
        let (set, in_scope, comm, ppid) = (task.set, task.in_scope, task.comm.clone(), task.ppid);
        let making = task.making();
        let container = container::attribute(cgroup)
            .and_then(|a| a.container().cloned())
            .and_then(|c| self.with_runtime(c, &set, runtime));
        if let Some(container) = container {
            self.attribute(pid, container, &set, in_scope, ppid, &comm, making);
        }
        if in_scope {
            let known = self.containers.get(&pid).cloned();
            let look = Look {
                pid,
                container: known.as_ref(),
                uid_map,
            };
            self.process_rules(None, &look, ts_ns, &comm, making);
        }
    }

    /// A container the cgroup names without its runtime (runc or crun without a cgroups path,
    /// a systemd-nspawn payload) gets the runtime that made its namespaces, or else the one
    /// whose state has it (`state`); when neither is known, it is not taken for a container.
    fn with_runtime(
        &self,
        mut container: Container,
        set: &[Option<NsIdx>; NS_SLOTS],
        state: Option<&'static str>,
    ) -> Option<Container> {
        if !container.runtime.is_empty() {
            return Some(container);
        }
        let maker = [NsKind::Mnt, NsKind::Pid, NsKind::Uts, NsKind::Net]
            .into_iter()
            .filter_map(|k| set[k.slot()])
            .find_map(|idx| self.namespaces[idx].created.as_ref());
        container.runtime = maker
            .and_then(|m| container::runtime_of(&m.comm))
            .or(state)?;
        Some(container)
    }

    /// `pid` belongs to `container`: its history (made if need be) says so. A process of the
    /// container's own (not its runtime `making` it: runc's init is in the container's cgroup
    /// from its exec on, in whatever namespaces its caller had) makes the container own the
    /// namespaces it is in that nothing owns yet, and the first such gives the container's set.
    #[expect(
        clippy::too_many_arguments,
        reason = "what was read of the process, and what the timeline knows of it"
    )]
    fn attribute(
        &mut self,
        pid: u32,
        container: Container,
        set: &[Option<NsIdx>; NS_SLOTS],
        in_scope: bool,
        ppid: u32,
        comm: &str,
        making: bool,
    ) {
        self.containers.insert(pid, container.clone());
        let key = self.process_key(pid, 0);
        if let Some(h) = self.history(key, ppid, comm, in_scope) {
            h.container = Some(container.clone());
        }
        if self.seen_containers.insert(container.clone()) {
            self.new_containers.push(container.clone());
        }
        if making {
            return;
        }
        for idx in set.iter().flatten() {
            let ns = &mut self.namespaces[*idx];
            if !ns.host && ns.owner.is_none() {
                ns.owner = Some(container.clone());
            }
        }
        self.container_sets.entry(container).or_insert(*set);
    }

    /// A process born of one in a container is in it too (its cgroup is its parent's), until
    /// its exec says otherwise.
    pub(super) fn inherit_container(&mut self, pid: u32, parent: u32) {
        if let Some(container) = self.containers.get(&parent).cloned() {
            self.containers.insert(pid, container);
        }
    }

    /// Containers first seen since the last call: whose names to ask for.
    pub fn take_new_containers(&mut self) -> Vec<Container> {
        std::mem::take(&mut self.new_containers)
    }

    /// What the container's engine calls it.
    pub fn name(&mut self, container: Container, names: Names) {
        self.names.insert(container, names);
    }

    pub fn names_of(&self, container: &Container) -> Option<&Names> {
        self.names.get(container)
    }

    /// How a container is shown: `web (docker:0123456789ab)` (see [`names::label`]).
    pub fn container_label(&self, container: &Container) -> String {
        names::label(container, self.names_of(container))
    }

    /// Whether a `--container` argument names this container (see [`names::matches`]).
    pub fn container_matches(&self, container: &Container, what: &str) -> bool {
        names::matches(container, self.names_of(container), what)
    }

    /// After a move of a process in a container: the rules about containers look again (a
    /// process attributed before it had its own mount namespace, say).
    pub(super) fn moved_in_container(&mut self, pid: u32, ts_ns: u64) {
        let (Some(container), Some(task)) = (self.containers.get(&pid), self.tasks.get(&pid))
        else {
            return;
        };
        if !task.in_scope {
            return;
        }
        let (container, comm) = (container.clone(), task.comm.clone());
        let making = task.making();
        let look = Look {
            pid,
            container: Some(&container),
            uid_map: "",
        };
        self.process_rules(Some(When::Attributed), &look, ts_ns, &comm, making);
    }
}
