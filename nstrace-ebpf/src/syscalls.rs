//! clone, clone3, unshare and setns, each at its exit only.
//!
//! There are no entry programs. A call's arguments are read at its exit from the user registers
//! saved at its entry, and its `before` is the set the caller's last call, exec or birth left it
//! in: the programs keep that set (`TASKS`) for every task born or exec'd since tracing began,
//! and for every task from its first call on. Each call thus costs one program (what an entry
//! program would add to a setns is in docs/bench.md). A clone that makes its child is reported at the
//! child's birth (see `lifecycle`), where the caller's set, which a clone never changes, is read.
//!
//! A task the programs do not know (it existed before tracing began and has neither exec'd nor
//! called since) gets its `after` only, with `before` all zero: the collector fills that in from
//! its own view of the task (the /proc snapshot and every record since) and marks it so. A
//! failed call changes nothing, so its `before` is its `after`, known or not.
//!
//! The `ret` offset mirrors the tracefs format files
//! (`/sys/kernel/tracing/events/syscalls/sys_exit_*/format`, from
//! include/trace/events/syscalls.h): every exit's `ret` is at offset 16.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use nstrace_common::{Transition, call, errno, flags::NS_MASK, slot, stat};

use crate::{
    maps::{
        TASKS, TIME_ARMED, TaskState, copy_set, count, emit_move, emit_with_child,
        emit_without_child, own_tgid, state, transition_slot,
    },
    task::{self, Current},
};

const RET: usize = 16;

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: the offset is inside the tracepoint's record (see the module docs); a direct
    // context load, which the verifier bounds-checks, costs less than a probe read.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(RET).cast::<i64>()) }
}

/// sys_exit of unshare and setns: one program attached twice, told apart by the syscall
/// number. setns is the call made in storms (a setns loop, `ip netns exec`, container
/// runtimes).
#[tracepoint]
pub fn ns_exit(ctx: TracePointContext) -> u32 {
    let _ = try_ns_exit(&ctx);
    0
}

fn try_ns_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == own_tgid() {
        return Ok(());
    }
    let cur = Current::get();
    let (nr, arg0, arg1) = task::syscall(cur.task);
    let (call, flags, fd) = if nr == task::nr_setns() {
        // setns(int fd, int nstype): keep the low 32 bits of each.
        (call::SETNS, u64::from(arg1 as u32), arg0 as u32 as i32)
    } else if arg0 & NS_MASK != 0 {
        (call::UNSHARE, arg0, -1)
    } else {
        return Ok(());
    };
    // One way on from here for both calls: the verifier walks it once.
    exit(ctx, &cur, pid_tgid, call, flags, fd)
}

/// Reports an unshare or setns at its exit. A task the programs know has its call completed in
/// its own entry, which then holds the set the call left it in; any other is read whole and kept
/// from then on.
#[inline(always)]
fn exit(
    ctx: &TracePointContext,
    cur: &Current,
    pid_tgid: u64,
    call: u32,
    flags: u64,
    fd: i32,
) -> Result<(), ()> {
    if let Some(t) = TASKS.get_ptr_mut(pid_tgid) {
        // SAFETY: the entry is this task's own: only the task itself touches it.
        let t = unsafe { &mut *t };
        // A pid reused by a task whose predecessor's exit was missed is not that task.
        if t.state == state::IDLE && task::start_boottime_direct(cur.task) == t.ev.start_boottime_ns
        {
            t.ev.call = call;
            t.ev.flags = flags;
            t.ev.fd = fd;
            return complete(ctx, cur, t);
        }
    }
    let p = transition_slot(call, pid_tgid)?;
    p.ev.flags = flags;
    p.ev.fd = fd;
    p.ev.ret = ret(ctx);
    if learn(cur, pid_tgid, p).is_ok() {
        if p.ev.ret < 0 {
            copy_set(&mut p.ev.before, &p.ev.after);
        } else {
            arm_time(&p.ev);
        }
    }
    p.ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_without_child(ctx, &p.ev);
    Ok(())
}

/// sys_exit of clone and clone3, and of fork and vfork where they exist (x86_64): one program
/// attached to each. It fires in the new child too (ret 0), before the child runs a line of its
/// own: the child learns its set there, so its first call starts from it. A clone that made its
/// child was reported at the child's birth; one that failed is reported here, with the caller's
/// set before and after, when it would have made namespaces or entered its pid namespace for
/// children.
#[tracepoint]
pub fn clone_exit(ctx: TracePointContext) -> u32 {
    let _ = try_clone_exit(&ctx);
    0
}

fn try_clone_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == own_tgid() {
        return Ok(());
    }
    let ret = ret(ctx);
    // A clone interrupted by a signal is restarted (-ERESTARTNOINTR and kin, never seen by the
    // caller) and reported when it makes its child.
    if ret > 0 || (-errno::ERESTART_RESTARTBLOCK..=-errno::ERESTARTSYS).contains(&ret) {
        return Ok(());
    }
    let cur = Current::get();
    // A refused call: its CLONE_NEW* flags, when it has some. The child: learns its set.
    let refused = (ret < 0).then(|| task::clone_call(cur.task));
    let p = transition_slot(call::FORK, pid_tgid)?;
    let learnt = learn(&cur, pid_tgid, p);
    let (call, flags) = match refused {
        None => {
            // A CLONE_VM child keeps its parent's time namespace until its exec.
            if learnt.is_ok() {
                arm_time(&p.ev);
            }
            return Ok(());
        }
        Some(Some(made)) => made,
        // A plain fork refused while the caller's children go to another pid namespace: its
        // init has exited (ENOMEM), and this was a failed entry into it.
        Some(None)
            if ret == -errno::ENOMEM
                && learnt.is_ok()
                && p.ev.after.inum[slot::PID] != p.ev.after.inum[slot::PID_FOR_CHILDREN] =>
        {
            (call::FORK, 0)
        }
        Some(None) => return Ok(()),
    };
    let ev = &mut p.ev;
    ev.call = call;
    ev.flags = flags;
    ev.ret = ret;
    copy_set(&mut ev.before, &ev.after);
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_with_child(ctx, ev);
    Ok(())
}

/// Reads the current task's identity and whole set into `p` (its `after`, with the pointers
/// behind it) and keeps `p` in `TASKS`, idle: the entry the task's next call starts from. Errs,
/// keeping nothing and counting the failure, when the set cannot be read.
#[inline(always)]
pub fn learn(cur: &Current, pid_tgid: u64, p: &mut TaskState) -> Result<(), ()> {
    task::read_current(cur, &mut p.ev, &mut p.ptrs).map_err(|()| count(stat::READ_FAILED))?;
    p.state = state::IDLE;
    if TASKS.insert(pid_tgid, &*p, 0).is_err() {
        count(stat::KEEP_FAILED);
    }
    Ok(())
}

/// Completes the call in `t`, the task's own entry, and sends it. The entry's set, the one before
/// the call, becomes `before`; only the namespaces whose pointer changed are read again. When the
/// set cannot be read the entry is marked stale: the task's next call reads its set whole.
#[inline(always)]
fn complete(ctx: &TracePointContext, cur: &Current, t: &mut TaskState) -> Result<(), ()> {
    let ev = &mut t.ev;
    copy_set(&mut ev.before, &ev.after);
    ev.ret = ret(ctx);
    // A task's pid namespace never changes.
    // SAFETY: BTF-checked loads from the current task.
    let read = unsafe { task::reread_set(cur, &mut t.ptrs, &mut ev.after) }
        .and_then(|changed| task::fill_exit_identity(cur, ev).map(|()| changed));
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
    if ev.ret == 0 {
        arm_time(ev);
    }
    // Sent last: the verifier walks what follows a send once per way through it.
    ev.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_move(ctx, ev, changed);
    Ok(())
}

/// The task's own time namespace follows time_for_children at its next exec, where the move is
/// reported: a task whose set (just read, in `ev`) has the two apart is armed for it.
#[inline(always)]
fn arm_time(ev: &Transition) {
    if ev.after.inum[slot::TIME] != ev.after.inum[slot::TIME_FOR_CHILDREN] {
        let _ = TIME_ARMED.insert(ev.tid, ev.after, 0);
    }
}
