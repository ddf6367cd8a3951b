//! clone, clone3 and unshare: stash at entry, complete at exit; setns: all at exit.
//!
//! Argument offsets mirror the tracefs format files
//! (`/sys/kernel/tracing/events/syscalls/sys_{enter,exit}_*/format`, from
//! include/trace/events/syscalls.h): every syscall argument is an 8-byte slot from offset 16, and
//! every exit's `ret` is at offset 16.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use nstrace_common::{
    NS_SLOTS, Transition, call,
    flags::{CLONE_NS_MASK, NS_MASK},
    slot, stat,
};

use crate::{
    maps::{
        INFLIGHT, TASKS, TIME_ARMED, TaskState, copy_set, copy_words, count, emit_move,
        emit_with_child, emit_without_child, forget, own_tgid, scratch, state, transition_slot,
    },
    task::{self, Task, current},
};

const ARG0: usize = 16;
const RET: usize = 16;

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> Result<u64, ()> {
    // SAFETY: the offset is inside the tracepoint's record (see the module docs); a direct
    // context load, which the verifier bounds-checks, costs less than a probe read.
    Ok(unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<u64>()) })
}

#[tracepoint]
pub fn clone_enter(ctx: TracePointContext) -> u32 {
    let _ = try_clone_enter(&ctx);
    0
}

fn try_clone_enter(ctx: &TracePointContext) -> Result<(), ()> {
    let flags = arg(ctx, ARG0)?;
    if flags & CLONE_NS_MASK == 0 {
        return Ok(());
    }
    stash(call::CLONE, flags)
}

#[tracepoint]
pub fn clone3_enter(ctx: TracePointContext) -> u32 {
    let _ = try_clone3_enter(&ctx);
    0
}

fn try_clone3_enter(ctx: &TracePointContext) -> Result<(), ()> {
    // `struct clone_args` lives in user memory; its first field is the u64 flags.
    let uargs = arg(ctx, ARG0)? as *const u64;
    // SAFETY: probe_read_user validates the address.
    let flags = unsafe { bpf_probe_read_user(uargs) }.map_err(|_| ())?;
    if flags & NS_MASK == 0 {
        return Ok(());
    }
    stash(call::CLONE3, flags)
}

#[tracepoint]
pub fn unshare_enter(ctx: TracePointContext) -> u32 {
    let _ = try_unshare_enter(&ctx);
    0
}

fn try_unshare_enter(ctx: &TracePointContext) -> Result<(), ()> {
    let flags = arg(ctx, ARG0)?;
    if flags & NS_MASK == 0 {
        return Ok(());
    }
    stash(call::UNSHARE, flags)
}

/// setns has no entry program: it is the call made in storms (a setns loop, `ip netns exec`,
/// container runtimes), and an entry program costs a sixth of it. Its arguments are read at exit
/// from the registers saved at entry, and its `before` is the set the task's last call left it
/// in, which the programs keep (`TASKS`) for every task from its exec or first call on. A task
/// they do not know yet (it has not exec'd or called since tracing began) gets its `after` only,
/// with `before` all zero: the collector fills that in from its own view of the task (the /proc
/// snapshot and every record since) and marks it so.
#[tracepoint]
pub fn setns_exit(ctx: TracePointContext) -> u32 {
    let _ = try_setns_exit(&ctx);
    0
}

fn try_setns_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == own_tgid() {
        return Ok(());
    }
    let task = task::current_btf();
    let (fd, nstype) = task::syscall_args(task);
    // Both are ints: keep the low 32 bits.
    let (fd, nstype) = (fd as u32 as i32, u64::from(nstype as u32));
    if let Some(t) = TASKS.get_ptr_mut(pid_tgid) {
        // SAFETY: the entry is this task's own: only the task itself touches it.
        let t = unsafe { &mut *t };
        // A pid reused by a task whose predecessor's exit was missed is not that task.
        if t.state == state::IDLE && task::start_boottime_direct(task) == t.ev.start_boottime_ns {
            t.ev.call = call::SETNS;
            t.ev.flags = nstype;
            t.ev.fd = fd;
            t.state = state::CALL;
            return complete(ctx, task, t, false);
        }
    }
    let p = transition_slot(call::SETNS, pid_tgid)?;
    p.ev.flags = nstype;
    p.ev.fd = fd;
    p.ev.ret = arg(ctx, RET)? as i64;
    if learn(current(), pid_tgid, p).is_err() {
        count(stat::READ_FAILED);
    }
    p.ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_without_child(ctx, &p.ev);
    Ok(())
}

/// Reads the current task's identity and whole set into `p` (its `after`, with the pointers
/// behind it) and keeps `p` in `TASKS`, idle: the entry the task's next call starts from. Errs,
/// keeping nothing, when the set cannot be read.
#[inline(always)]
pub fn learn(task: Task, pid_tgid: u64, p: &mut TaskState) -> Result<(), ()> {
    read_whole(task, p)?;
    p.state = state::IDLE;
    if TASKS.insert(pid_tgid, &*p, 0).is_err() {
        count(stat::STASH_FAILED);
    }
    Ok(())
}

/// Reads the current task's identity and whole set into `p` (its `after`, with the pointers
/// behind it).
#[inline(always)]
fn read_whole(task: Task, p: &mut TaskState) -> Result<(), ()> {
    // SAFETY: `task` is the current task; every read is a probe read.
    unsafe {
        let pid_ns = task::fill_identity(task, &mut p.ev)?;
        task::read_ns_ptrs(task, Some(pid_ns), &mut p.ptrs)?;
        task::resolve_set(&p.ptrs, &mut p.ev.after, None)
    }
}

/// Records the call at entry, in `INFLIGHT`. A task the programs already know (an IDLE entry of
/// the same task in `TASKS`) starts from that entry and needs no reads beyond its start time;
/// otherwise the caller and its whole set are read.
#[inline(always)]
fn stash(call: u32, flags: u64) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == own_tgid() {
        return Ok(());
    }
    // A pid reused by a task whose predecessor's exit was missed is not that task.
    let known = TASKS.get_ptr(pid_tgid).filter(|&t| {
        // SAFETY: the entry is this task's own: only the task itself changes it.
        let t = unsafe { &*t };
        t.state == state::IDLE
            && task::start_boottime_direct(task::current_btf()) == t.ev.start_boottime_ns
    });
    let p = if let Some(t) = known {
        let p = scratch()?;
        // SAFETY: as above.
        copy_words(p, unsafe { &*t });
        p.ev.call = call;
        p.ev.fd = -1;
        // Volatile: three adjacent stores would otherwise become a call of the byte-wise
        // memset. The entry may hold the child of the task's last clone.
        // SAFETY: plain stores to fields of the scratch.
        unsafe {
            core::ptr::write_volatile(&raw mut p.ev.child_tid, 0);
            core::ptr::write_volatile(&raw mut p.ev.child_ns_tid, 0);
            core::ptr::write_volatile(&raw mut p.ev.child_start_boottime_ns, 0);
        }
        p
    } else {
        let p = transition_slot(call, pid_tgid)?;
        if read_whole(current(), p).is_err() {
            count(stat::READ_FAILED);
            // No pointer may vouch for a slot that was not read.
            p.ptrs = [0; NS_SLOTS];
        }
        p
    };
    p.ev.flags = flags;
    p.state = state::CALL;
    INFLIGHT
        .insert(&pid_tgid, &*p, 0)
        .map_err(|_| count(stat::STASH_FAILED))
}

/// sys_exit of clone, clone3 and unshare: one program attached three times. The clone
/// exits also fire in the new child (ret 0), which has no call in flight and is skipped, as are
/// the calls `stash` filtered out. A clone that created its child was already reported at
/// sched_process_fork (see `lifecycle`); one that reaches here failed.
#[tracepoint]
pub fn ns_exit(ctx: TracePointContext) -> u32 {
    let _ = try_ns_exit(&ctx);
    0
}

fn try_ns_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let t = INFLIGHT.get_ptr_mut(pid_tgid).ok_or(())?;
    // SAFETY: the entry is this task's own: only the task itself touches it.
    let t = unsafe { &mut *t };
    let done = complete(ctx, task::current_btf(), t, true);
    settle(pid_tgid, t);
    done
}

/// Ends a call in flight: the set it left the task in becomes the task's entry in `TASKS`.
/// When that set could not be read, the task's entry is dropped: the set before the call no
/// longer holds, and the next call reads the whole set again.
#[inline(always)]
pub fn settle(pid_tgid: u64, t: &TaskState) {
    if t.state == state::IDLE {
        let _ = TASKS.insert(pid_tgid, t, 0);
    } else {
        forget(pid_tgid);
    }
    let _ = INFLIGHT.remove(&pid_tgid);
}

/// Completes the call in flight in `t` (its own entry) and sends it; `task` is
/// [`task::current_btf`]. A setns has no child: `may_have_child` false leaves the clone-sized
/// send out of its program.
#[inline(always)]
fn complete(
    ctx: &TracePointContext,
    task: Task,
    t: &mut TaskState,
    may_have_child: bool,
) -> Result<(), ()> {
    begin(t)?;
    let ev = &mut t.ev;
    ev.ret = arg(ctx, RET)? as i64;
    // Only the namespaces whose pointer changed are read; a task's pid namespace never changes.
    // SAFETY: BTF-checked loads from the current task.
    let read = unsafe { task::reread_set(task, &mut t.ptrs, &mut ev.after) }
        .and_then(|changed| task::fill_exit_identity(task, ev).map(|()| changed));
    if read.is_err() {
        count(stat::READ_FAILED);
    }
    // What is sent of `after`: the slots that changed, or every slot when that is not known.
    let changed = read.unwrap_or(u32::MAX);
    t.state = if read.is_ok() {
        state::IDLE
    } else {
        state::STALE
    };
    // The task's own time namespace follows time_for_children at its next exec.
    if ev.ret == 0
        && ev.after.inum[slot::TIME] != ev.after.inum[slot::TIME_FOR_CHILDREN]
        && (ev.call == call::UNSHARE || ev.call == call::SETNS)
    {
        let _ = TIME_ARMED.insert(ev.tid, ev.after, 0);
    }
    // Sent last: the verifier walks what follows a send once per way through it.
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    if may_have_child && (ev.call == call::CLONE || ev.call == call::CLONE3) {
        emit_with_child(ctx, ev);
    } else {
        emit_move(ctx, ev, changed);
    }
    Ok(())
}

/// Takes the call in flight in `t`: its `before` is `after`, the set before the call (the exit
/// then rewrites only the namespaces that changed). Errs when no call is in flight.
#[inline(always)]
pub fn begin(t: &mut TaskState) -> Result<(), ()> {
    if t.state != state::CALL {
        return Err(());
    }
    let Transition { before, after, .. } = &mut t.ev;
    copy_set(before, after);
    Ok(())
}
