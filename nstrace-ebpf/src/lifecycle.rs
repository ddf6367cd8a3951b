//! Fork and exec: where a task is born into, or moves to, the namespaces a syscall prepared.
//!
//! - clone/clone3 with CLONE_NEW*: the child's set is read here, while the parent's syscall is
//!   still pending, and reported with it.
//! - A fork without CLONE_NEW* after unshare/setns of CLONE_NEWPID or CLONE_NEWTIME: the child is
//!   born into the parent's pid_for_children / time_for_children, a move of its own.
//! - exec after unshare/setns of CLONE_NEWTIME: the task enters time_for_children.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use nstrace_common::{Transition, call, slot, stat};

use crate::{
    maps::{EVENTS, PENDING, SCRATCH, TIME_ARMED, count, own_tgid},
    task::{self, Task},
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, in the parent.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let parent: Task = ctx.arg(0);
    let child: Task = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(ev) = PENDING.get_ptr_mut(pid_tgid) {
        // SAFETY: the entry is this task's own pending clone.
        let ev = unsafe { &mut *ev };
        if ev.call == call::CLONE || ev.call == call::CLONE3 {
            // SAFETY: probe reads of the new task.
            if unsafe { task::fill_child(child, ev) }.is_err() {
                count(stat::READ_FAILED);
            }
        }
        return Ok(());
    }
    if (pid_tgid >> 32) as u32 == own_tgid() {
        return Ok(());
    }
    // SAFETY: probe reads of both tasks.
    unsafe {
        let born_elsewhere = task::pid_ns(parent)?.0 != task::pid_ns(child)?.0
            || task::nsproxy_ns::<{ slot::TIME }>(parent)?
                != task::nsproxy_ns::<{ slot::TIME }>(child)?;
        if born_elsewhere {
            emit_fork(ctx, parent, child, pid_tgid)?;
        }
        // A CLONE_VM child (vfork, posix_spawn) keeps the parent's time namespace and enters
        // time_for_children at its exec.
        if task::nsproxy_ns::<{ slot::TIME }>(child)?
            != task::nsproxy_ns::<{ slot::TIME_FOR_CHILDREN }>(child)?
        {
            let ev = SCRATCH.get_ptr_mut(0).ok_or(())?;
            let ev = &mut *ev;
            if task::read_ns_set(child, &mut ev.after).is_ok() {
                let _ = TIME_ARMED.insert(task::tid(child)?, ev.after, 0);
            }
        }
    }
    Ok(())
}

#[inline(always)]
unsafe fn emit_fork(
    ctx: &BtfTracePointContext,
    parent: Task,
    child: Task,
    pid_tgid: u64,
) -> Result<(), ()> {
    let ev = SCRATCH
        .get_ptr_mut(0)
        .ok_or_else(|| count(stat::BUILD_FAILED))?;
    // SAFETY: the per-CPU slot is this program's alone while it runs.
    let ev = unsafe { &mut *ev };
    *ev = Transition::EMPTY;
    task::fill_caller(ev, call::FORK, pid_tgid);
    // SAFETY: probe reads of both tasks.
    let read = unsafe {
        task::fill_identity(parent, ev)
            .and_then(|()| task::read_ns_set(parent, &mut ev.before))
            .and_then(|()| task::fill_child(child, ev))
    };
    if read.is_err() {
        count(stat::READ_FAILED);
    }
    ev.after = ev.before;
    ev.ret = i64::from(ev.child_tid);
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    EVENTS.output(ctx, &*ev, 0);
    Ok(())
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_exec(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // The tid before exec: a non-leader thread that execs takes over the leader's.
    let old_tid: i32 = ctx.arg(1);
    let old_tid = old_tid as u32;
    // SAFETY: the map value is copied out before the entry is removed.
    let armed = unsafe { TIME_ARMED.get(old_tid) }.copied().ok_or(())?;
    let _ = TIME_ARMED.remove(old_tid);
    let pid_tgid = bpf_get_current_pid_tgid();
    let ev = SCRATCH
        .get_ptr_mut(0)
        .ok_or_else(|| count(stat::BUILD_FAILED))?;
    // SAFETY: the per-CPU slot is this program's alone while it runs.
    let ev = unsafe { &mut *ev };
    *ev = Transition::EMPTY;
    task::fill_caller(ev, call::EXEC, pid_tgid);
    ev.before = armed;
    let task: Task = ctx.arg(0);
    // SAFETY: probe reads of the current task.
    if unsafe {
        task::fill_identity(task, ev).and_then(|()| task::read_ns_set(task, &mut ev.after))
    }
    .is_err()
    {
        count(stat::READ_FAILED);
        return Err(());
    }
    if ev.after.inum[slot::TIME] == ev.before.inum[slot::TIME] {
        return Ok(());
    }
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    EVENTS.output(ctx, &*ev, 0);
    Ok(())
}
