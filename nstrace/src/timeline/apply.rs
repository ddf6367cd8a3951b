//! Applying records: each transition, fork, exec and exit changes the tasks, the namespaces and
//! the histories as the kernel changed the machine.
use nstrace_common::{NS_SLOTS, flags::NS_MASK};

use super::{
    RECENT_EXITS, Timeline,
    findings::TRANSITION_RULES,
    history::{Cause, Change, Move, ProcessKey, push_move},
    namespaces::Membership,
    tasks::{Scope, Task},
};
use crate::{
    container,
    event::{Call, Exec, Exit, Fork, Record, Transition},
    ns::NsKind,
};

pub(super) fn membership(t: &Transition, cause: Cause, entered: bool) -> Membership {
    Membership {
        ts_ns: t.ts_ns,
        tid: t.tid,
        pid: t.pid,
        comm: t.comm.clone(),
        cause,
        entered,
    }
}

impl Timeline {
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

    pub(super) fn transition(&mut self, t: &Transition) -> bool {
        self.counts.transitions += 1;
        self.counts.by_call[t.call as usize] += 1;
        let ts = t.ts_ns;
        let (before, start_ns) =
            self.ensure_task(t.tid, t.pid, t.start_boottime_ns, &t.comm, &t.before, ts);
        if let Some(task) = self.tasks.get_mut(&t.tid) {
            task.ppid = t.ppid;
        }
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
        if let Some(errno) = t.errno().filter(|_| t.call != Call::Exec) {
            let attempt = match t.call {
                Call::Clone | Call::Clone3 => Cause::Clone {
                    call: t.call,
                    flags: t.flags,
                    parent: t.pid,
                },
                // A fork into a pid namespace whose init has exited (ENOMEM).
                Call::Fork => Cause::ForkInto,
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
        if !changed.is_empty() {
            self.moved_in_container(t.pid, ts);
        }
        in_scope
    }

    /// A child born by clone/clone3 with CLONE_NEW*, or by a fork into another pid/time
    /// namespace.
    pub(super) fn birth(
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
        let runtime = self.tasks.get(&t.tid).is_some_and(|task| task.runtime);
        let set = self.resolve_set(&child.ns, ts);
        let cause = match t.call {
            Call::Fork => Cause::BornInto { parent: t.pid },
            call => Cause::Clone {
                call,
                flags: t.flags,
                parent: t.pid,
            },
        };
        self.remove_task(child.tid, ts);
        let mut task = Task {
            ppid: if thread { t.ppid } else { t.pid },
            born_ns: Some(ts),
            last_ns: ts,
            ..self.new_task(pid, child.start_ns, t.comm.clone(), set, in_scope)
        };
        task.runtime |= runtime;
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
        // Put in only now: a namespace the clone made has no members yet above, which is how
        // `created` knows it is new.
        self.put_task(child.tid, task);
        if !thread {
            self.inherit_container(pid, t.pid);
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

    pub(super) fn fork(&mut self, f: &Fork) -> bool {
        self.counts.forks += 1;
        let ts = f.ts_ns;
        // A plain fork's child is in its parent's set exactly (a child born elsewhere is a
        // transition): it inherits the kernel set that resolves to it, too.
        let parent = self.tasks.get(&f.parent_tid).map(|p| (p.set, p.raw));
        let runtime = self.tasks.get(&f.parent_tid).is_some_and(|p| p.runtime);
        if parent.is_none() {
            self.counts.unknown_tasks += 1;
        }
        let (set, raw) = parent.unwrap_or(([None; NS_SLOTS], None));
        let in_scope = self.follows(f.pid, [f.parent_tid, f.parent_pid]);
        self.remove_task(f.tid, ts);
        let mut task = Task {
            ppid: f.parent_pid,
            raw,
            born_ns: Some(ts),
            last_ns: ts,
            ..self.new_task(f.pid, f.start_ns, f.comm.clone(), set, in_scope)
        };
        task.runtime |= runtime;
        self.put_task(f.tid, task);
        if f.tid == f.pid {
            self.inherit_container(f.pid, f.parent_pid);
        }
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

    pub(super) fn exec(&mut self, e: &Exec) -> bool {
        self.counts.execs += 1;
        if e.old_tid != e.tid
            && let Some(mut task) = self.tasks.remove(&e.old_tid)
        {
            // A non-leader thread exec'd: it takes over the leader's tid and, as the kernel
            // does (de_thread), its start time, so the process keeps its identity. The leader
            // may already have exited.
            if let Some(leader) = self.remove_task(e.tid, e.ts_ns) {
                task.start_ns = leader.start_ns;
                task.approx_start = leader.approx_start;
            } else {
                task.start_ns = e.start_ns;
                task.approx_start = false;
            }
            self.drop_task(e.old_tid, &task, e.ts_ns);
            self.put_task(e.tid, task);
        }
        let Some(task) = self.tasks.get_mut(&e.tid) else {
            self.counts.unknown_tasks += 1;
            return matches!(self.scope, Scope::All);
        };
        task.runtime = container::runtime_exec(task.runtime, &e.comm, &e.filename);
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

    pub(super) fn exit(&mut self, x: &Exit) -> bool {
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
                // Its name as last seen (a program may rename itself: busybox's applets); a
                // thread's name is its own.
                if x.tid == x.pid && h.comm != x.comm {
                    h.comm.clone_from(&x.comm);
                }
                self.fold_process(key, ts);
            }
        }
        in_scope
    }
}
