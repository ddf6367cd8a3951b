//! Fork, exec and exit: every task's birth and death, and the moves the syscalls prepared.
//!
//! - clone/clone3 with CLONE_NEW*: reported here, at the child's birth, with the child's set, so
//!   that nothing the child does can be stamped earlier than its own creation.
//! - A fork without CLONE_NEW* after unshare/setns of CLONE_NEWPID or CLONE_NEWTIME: the child is
//!   born into the parent's pid_for_children / time_for_children, a move of its own.
//! - Any other fork, every exec and every exit: a compact lifecycle record.
//! - exec after unshare/setns of CLONE_NEWTIME: the task enters time_for_children.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use nstrace_common::{Transition, call, record, slot, stat};

use crate::{
    maps::{
        SCRATCH, TIME_ARMED, copy_set, count, emit_exec, emit_life, emit_with_child,
        emit_without_child, flush_batch, forget, lifecycle_slot, own_tgid, remove_present,
        transition_slot,
    },
    syscalls::learn,
    task::{self, Current, Task},
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, in the parent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), ()> {
    let child: Task = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    // The collector's own new threads are noise; the commands it starts (`nstrace run`) are not.
    // SAFETY: a probe read of the new task.
    let child_tgid = unsafe { task::tgid(child) }?;
    if child_tgid == own_tgid() {
        return Ok(());
    }
    // The parent is the current task: its side is plain loads.
    let me = Current::get();
    let (call, flags) = match task::clone_call(me.task) {
        Some(clone) => clone,
        // SAFETY: probe reads of the new task.
        None => unsafe {
            let (child_time, child_time_for_children) = task::time_pair(child)?;
            // A CLONE_VM child (vfork, posix_spawn) keeps the parent's time namespace and
            // enters time_for_children at its exec.
            if child_time != child_time_for_children {
                let p = SCRATCH.get_ptr_mut(0).ok_or(())?;
                let ev = &mut (*p).ev;
                if task::read_ns_set(child, &mut ev.after).is_ok() {
                    let _ = TIME_ARMED.insert(task::tid(child)?, ev.after, 0);
                }
            }
            // A child born into another pid namespace than its parent's is a level deeper
            // (setns and unshare of CLONE_NEWPID only reach descendants), so levels compare as
            // the namespaces would.
            let born_elsewhere = task::pid_level(child)? != task::pid_level_direct(&me)
                || task::nsproxy_ns_direct::<{ slot::TIME }>(&me) != child_time;
            if !born_elsewhere {
                return emit_fork(ctx, me.task, child, child_tgid, pid_tgid);
            }
            (call::FORK, 0)
        },
    };
    // SAFETY: probe reads of the new task.
    unsafe { emit_fork_transition(ctx, &me, child, pid_tgid, call, flags) }
}

/// A child whose set is not its parent's: a clone/clone3 with CLONE_NEW* (`call` and `flags`),
/// or a plain fork whose child was born into the parent's pid_for_children or time_for_children
/// (`call::FORK`). The caller's own set does not change; the return value is the child's pid as
/// the caller sees it. `parent` is the current task.
#[inline(always)]
unsafe fn emit_fork_transition(
    ctx: &RawTracePointContext,
    parent: &Current,
    child: Task,
    pid_tgid: u64,
    call: u32,
    flags: u64,
) -> Result<(), ()> {
    let p = transition_slot(call, pid_tgid)?;
    p.ev.flags = flags;
    let read = task::read_current(parent, &mut p.ev, &mut p.ptrs).and_then(|()| {
        let Transition { before, after, .. } = &mut p.ev;
        copy_set(before, after);
        // The child's namespaces that are its parent's are not read again.
        // SAFETY: probe reads of the new task.
        unsafe { task::fill_child(child, &mut p.ev, Some(&p.ptrs)) }
    });
    if read.is_err() {
        count(stat::READ_FAILED);
    }
    let ev = &mut p.ev;
    // SAFETY: probe reads of the new task.
    ev.ret =
        unsafe { task::pid_nr_at(child, ev.pid_level) }.map_or(i64::from(ev.child_tid), i64::from);
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_with_child(ctx, ev);
    Ok(())
}

/// A fork that changed no namespace: who was born of whom. `parent` is [`task::current_btf`].
#[inline(always)]
unsafe fn emit_fork(
    ctx: &RawTracePointContext,
    parent: Task,
    child: Task,
    child_tgid: u32,
    pid_tgid: u64,
) -> Result<(), ()> {
    let life = &mut lifecycle_slot(record::FORK)?.life;
    life.parent_tid = pid_tgid as u32;
    life.parent_tgid = (pid_tgid >> 32) as u32;
    life.tgid = child_tgid;
    life.parent_start_boottime_ns = task::start_boottime_direct(parent);
    // SAFETY: probe reads of the new task.
    unsafe {
        life.tid = task::tid(child)?;
        life.start_boottime_ns = task::start_boottime(child)?;
        life.header.ts_ns = bpf_ktime_get_ns();
    }
    emit_life(ctx, &*life);
    Ok(())
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == own_tgid() {
        return Ok(());
    }
    // The tid before exec: a non-leader thread that execs takes over the leader's.
    let old_tid: i32 = ctx.arg(1);
    let old_tid = old_tid as u32;
    let bprm: *const u8 = ctx.arg(2);
    let me = Current::get();
    // A thread that took over its leader's tid leaves its own entry behind.
    if old_tid != pid_tgid as u32 {
        forget((pid_tgid & !0xffff_ffff) | u64::from(old_tid));
    }
    // The set as the task leaves exec, kept for its next call (it replaces what the programs
    // knew of the task: exec may move it, into time_for_children).
    let p = transition_slot(call::EXEC, pid_tgid)?;
    let known = learn(&me, pid_tgid, p).is_ok();
    if !known {
        forget(pid_tgid);
    }
    let rec = lifecycle_slot(record::EXEC)?;
    rec.life.tid = pid_tgid as u32;
    rec.life.tgid = (pid_tgid >> 32) as u32;
    rec.life.parent_tid = old_tid;
    rec.life.start_boottime_ns = task::start_boottime_direct(me.task);
    // SAFETY: probe reads of the binprm.
    unsafe {
        task::read_filename(bprm, &mut rec.filename);
        rec.life.header.ts_ns = bpf_ktime_get_ns();
    }
    emit_exec(ctx, &*rec);
    // The move into time_for_children that an earlier unshare/setns prepared: from the set
    // armed then to the one just read.
    // SAFETY: the map value is copied out before the entry is removed.
    let armed = unsafe { TIME_ARMED.get(old_tid) }.copied().ok_or(())?;
    let _ = TIME_ARMED.remove(old_tid);
    let ev = &mut p.ev;
    if !known || ev.after.inum[slot::TIME] == armed.inum[slot::TIME] {
        return Ok(());
    }
    ev.before = armed;
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_without_child(ctx, ev);
    Ok(())
}

/// `sched_process_exit(struct task_struct *p, bool group_dead)`, in the exiting task.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == own_tgid() {
        return Ok(());
    }
    let group_dead: u64 = ctx.arg(1);
    // Looked up first (see `forget`): most exiting tasks have no entry.
    let tid = pid_tgid as u32;
    remove_present!(TIME_ARMED, tid);
    forget(pid_tgid);
    let life = &mut lifecycle_slot(record::EXIT)?.life;
    life.tid = pid_tgid as u32;
    life.tgid = (pid_tgid >> 32) as u32;
    life.group_dead = u32::from(group_dead & 0xff != 0);
    // The exiting task is the current one: plain loads.
    let current = task::current_btf();
    life.start_boottime_ns = task::start_boottime_direct(current);
    life.code = task::exit_code_direct(current);
    life.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_life(ctx, &*life);
    Ok(())
}

/// Sends this CPU's staged batch. Attached nowhere: the collector runs it on a CPU whose batch
/// has waited too long (BPF_PROG_TEST_RUN on that CPU), and before it stops.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn flush(ctx: RawTracePointContext) -> i32 {
    flush_batch(&ctx);
    0
}
