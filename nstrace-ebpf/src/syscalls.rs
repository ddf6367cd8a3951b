//! clone, clone3, unshare and setns: stash at entry, complete at exit.
//!
//! Argument offsets mirror the tracefs format files
//! (`/sys/kernel/tracing/events/syscalls/sys_{enter,exit}_*/format`, from
//! include/trace/events/syscalls.h): every syscall argument is an 8-byte slot from offset 16, and
//! every exit's `ret` is at offset 16.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use nstrace_common::{
    call,
    flags::{CLONE_NS_MASK, NS_MASK},
    slot, stat,
};

use crate::{
    maps::{PENDING, TIME_ARMED, count, emit, own_tgid, transition_slot},
    task::{self, current},
};

const ARG0: usize = 16;
const ARG1: usize = 24;
const RET: usize = 16;

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> Result<u64, ()> {
    // SAFETY: the offset is inside the tracepoint's record (see the module docs).
    unsafe { ctx.read_at::<u64>(offset) }.map_err(|_| ())
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
    stash(call::CLONE, flags, -1)
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
    stash(call::CLONE3, flags, -1)
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
    stash(call::UNSHARE, flags, -1)
}

#[tracepoint]
pub fn setns_enter(ctx: TracePointContext) -> u32 {
    let _ = try_setns_enter(&ctx);
    0
}

fn try_setns_enter(ctx: &TracePointContext) -> Result<(), ()> {
    // Both are ints widened to 8-byte slots: keep the low 32 bits.
    let fd = arg(ctx, ARG0)? as u32 as i32;
    let nstype = u64::from(arg(ctx, ARG1)? as u32);
    stash(call::SETNS, nstype, fd)
}

/// Records the caller and its namespace set at entry, keyed by pid_tgid until the exit.
#[inline(always)]
fn stash(call: u32, flags: u64, fd: i32) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == own_tgid() {
        return Ok(());
    }
    let ev = transition_slot(call, pid_tgid)?;
    ev.flags = flags;
    ev.fd = fd;
    let task = current();
    // SAFETY: `task` is the current task; every read is a probe read.
    if unsafe {
        task::fill_identity(task, ev).and_then(|()| task::read_ns_set(task, &mut ev.before))
    }
    .is_err()
    {
        count(stat::READ_FAILED);
    }
    PENDING
        .insert(pid_tgid, &*ev, 0)
        .map_err(|_| count(stat::STASH_FAILED))
}

/// sys_exit of clone, clone3, unshare and setns: one program attached four times. The clone
/// exits also fire in the new child (ret 0), which has no pending entry and is skipped, as are
/// the calls `stash` filtered out. A clone that created its child was already reported at
/// sched_process_fork (see `lifecycle`); one that reaches here failed.
#[tracepoint]
pub fn ns_exit(ctx: TracePointContext) -> u32 {
    let _ = complete(&ctx);
    0
}

#[inline(always)]
fn complete(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ev = PENDING.get_ptr_mut(pid_tgid).ok_or(())?;
    // SAFETY: the entry is this task's own and lives until removed below.
    let ev = unsafe { &mut *ev };
    ev.ret = arg(ctx, RET)? as i64;
    // SAFETY: probe reads of the current task.
    if unsafe { task::read_ns_set(current(), &mut ev.after) }.is_err() {
        count(stat::READ_FAILED);
    }
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit(ctx, &*ev);
    // The task's own time namespace follows time_for_children at its next exec.
    if ev.ret == 0
        && ev.after.inum[slot::TIME] != ev.after.inum[slot::TIME_FOR_CHILDREN]
        && (ev.call == call::UNSHARE || ev.call == call::SETNS)
    {
        let _ = TIME_ARMED.insert(ev.tid, ev.after, 0);
    }
    let _ = PENDING.remove(pid_tgid);
    Ok(())
}
