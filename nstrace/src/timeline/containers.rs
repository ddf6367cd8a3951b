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
        let Some(task) = self.tasks.get(&pid) else {
            return;
        };
        let (set, in_scope, comm, ppid) = (task.set, task.in_scope, task.comm.clone(), task.ppid);
        let container = container::attribute(cgroup)
            .and_then(|a| a.container().cloned())
            .and_then(|c| self.with_runtime(c, &set));
        if let Some(container) = container
            && self.containers.get(&pid) != Some(&container)
        {
            self.attribute(pid, container, &set, in_scope, ppid, &comm);
        }
        if in_scope {
            let known = self.containers.get(&pid).cloned();
            let look = Look {
                pid,
                container: known.as_ref(),
                uid_map,
            };
            self.process_rules(None, &look, ts_ns, &comm);
        }
    }

    /// A container the cgroup names without its runtime (runc or crun without a cgroups path,
    /// a systemd-nspawn payload) gets the runtime that made its namespaces; when nothing known
    /// made them, it is not taken for a container.
    fn with_runtime(
        &self,
        mut container: Container,
        set: &[Option<NsIdx>; NS_SLOTS],
    ) -> Option<Container> {
        if !container.runtime.is_empty() {
            return Some(container);
        }
        let maker = [NsKind::Mnt, NsKind::Pid, NsKind::Uts, NsKind::Net]
            .into_iter()
            .filter_map(|k| set[k.slot()])
            .find_map(|idx| self.namespaces[idx].created.as_ref())?;
        container.runtime = container::runtime_of(&maker.comm)?;
        Some(container)
    }

    /// `pid` belongs to `container`: its history (made if need be) says so, and the container
    /// owns the namespaces it is first seen in that nothing owns yet.
    fn attribute(
        &mut self,
        pid: u32,
        container: Container,
        set: &[Option<NsIdx>; NS_SLOTS],
        in_scope: bool,
        ppid: u32,
        comm: &str,
    ) {
        self.containers.insert(pid, container.clone());
        let key = self.process_key(pid, 0);
        if let Some(h) = self.history(key, ppid, comm, in_scope) {
            h.container = Some(container.clone());
        }
        for idx in set.iter().flatten() {
            let ns = &mut self.namespaces[*idx];
            if !ns.host && ns.owner.is_none() {
                ns.owner = Some(container.clone());
            }
        }
        if !self.container_sets.contains_key(&container) {
            self.new_containers.push(container.clone());
            self.container_sets.insert(container, *set);
        }
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
        let look = Look {
            pid,
            container: Some(&container),
            uid_map: "",
        };
        self.process_rules(Some(When::Attributed), &look, ts_ns, &comm);
    }
}
