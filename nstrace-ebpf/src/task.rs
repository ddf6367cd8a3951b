//! Reading a task's identity and namespace set from kernel memory.
//!
//! Offsets come from the `OFFSETS` global (the running kernel's BTF); every read goes through
//! `bpf_probe_read_kernel`, so a torn or exiting task yields an error, never a fault.
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_task, bpf_get_current_uid_gid, bpf_probe_read_kernel,
};
use nstrace_common::{NsSet, Transition, slot};

use crate::maps::OFFSETS;

/// A `struct task_struct *`.
pub type Task = *const u8;

/// Reads one offset of the global. Volatile: the compiler would otherwise fold the global's
/// build-time value (zero) into the code.
#[inline(always)]
fn off(field: *const u32) -> usize {
    // SAFETY: `field` points into the OFFSETS global.
    unsafe { core::ptr::read_volatile(field) as usize }
}

#[inline(always)]
unsafe fn read<T>(base: *const u8, offset: usize) -> Result<T, ()> {
    // SAFETY: probe_read_kernel validates the address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }.map_err(|_| ())
}

#[inline(always)]
pub fn current() -> Task {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_current_task() as Task }
}

/// Reads `ns_common` of one namespace into slot `S` of `out`.
#[inline(always)]
unsafe fn read_common<const S: usize>(ns: *const u8, out: &mut NsSet) -> Result<(), ()> {
    if ns.is_null() {
        return Err(());
    }
    let common = ns.wrapping_add(off(&raw const OFFSETS.ns_common[S]));
    out.inum[S] = unsafe { read::<u32>(common, off(&raw const OFFSETS.ns_common_inum)) }?;
    if off(&raw const OFFSETS.has_ns_id) != 0 {
        out.id[S] = unsafe { read::<u64>(common, off(&raw const OFFSETS.ns_common_ns_id)) }?;
    }
    Ok(())
}

#[inline(always)]
unsafe fn read_nsproxy_slot<const S: usize>(nsproxy: *const u8, out: &mut NsSet) -> Result<(), ()> {
    let ns = unsafe { read::<*const u8>(nsproxy, off(&raw const OFFSETS.nsproxy[S])) }?;
    unsafe { read_common::<S>(ns, out) }
}

/// The task's active pid namespace and its tid there: `thread_pid->numbers[thread_pid->level]`.
#[inline(always)]
pub unsafe fn pid_ns(task: Task) -> Result<(*const u8, u32, u32), ()> {
    let pid = unsafe { read::<*const u8>(task, off(&raw const OFFSETS.task_thread_pid)) }?;
    if pid.is_null() {
        return Err(());
    }
    let level = unsafe { read::<u32>(pid, off(&raw const OFFSETS.pid_level)) }?;
    // Bounded so the verifier sees a finite offset: pid namespaces nest at most 32 deep.
    let upid = pid.wrapping_add(
        off(&raw const OFFSETS.pid_numbers)
            + (level & 63) as usize * off(&raw const OFFSETS.upid_size),
    );
    let ns = unsafe { read::<*const u8>(upid, off(&raw const OFFSETS.upid_ns)) }?;
    let nr = unsafe { read::<i32>(upid, off(&raw const OFFSETS.upid_nr)) }?;
    Ok((ns, nr as u32, level))
}

/// The namespace struct behind one nsproxy slot, for quick pointer comparisons.
#[inline(always)]
pub unsafe fn nsproxy_ns<const S: usize>(task: Task) -> Result<*const u8, ()> {
    let nsproxy = unsafe { read::<*const u8>(task, off(&raw const OFFSETS.task_nsproxy)) }?;
    if nsproxy.is_null() {
        return Err(());
    }
    unsafe { read::<*const u8>(nsproxy, off(&raw const OFFSETS.nsproxy[S])) }
}

/// Reads the task's whole namespace set, as `/proc/PID/ns` shows it.
#[inline(always)]
pub unsafe fn read_ns_set(task: Task, out: &mut NsSet) -> Result<(), ()> {
    let nsproxy = unsafe { read::<*const u8>(task, off(&raw const OFFSETS.task_nsproxy)) }?;
    if nsproxy.is_null() {
        // The task is exiting: exit_task_namespaces() has already run.
        return Err(());
    }
    unsafe {
        read_nsproxy_slot::<{ slot::MNT }>(nsproxy, out)?;
        read_nsproxy_slot::<{ slot::UTS }>(nsproxy, out)?;
        read_nsproxy_slot::<{ slot::IPC }>(nsproxy, out)?;
        read_nsproxy_slot::<{ slot::PID_FOR_CHILDREN }>(nsproxy, out)?;
        read_nsproxy_slot::<{ slot::NET }>(nsproxy, out)?;
        read_nsproxy_slot::<{ slot::CGROUP }>(nsproxy, out)?;
        read_nsproxy_slot::<{ slot::TIME }>(nsproxy, out)?;
        read_nsproxy_slot::<{ slot::TIME_FOR_CHILDREN }>(nsproxy, out)?;

        let cred = read::<*const u8>(task, off(&raw const OFFSETS.task_real_cred))?;
        let user_ns = read::<*const u8>(cred, off(&raw const OFFSETS.cred_user_ns))?;
        read_common::<{ slot::USER }>(user_ns, out)?;

        let (pid_ns, _, _) = pid_ns(task)?;
        read_common::<{ slot::PID }>(pid_ns, out)?;
    }
    Ok(())
}

/// The task's pid number in the pid namespace at `level` (its `upid` there), as a process of
/// that namespace sees it.
#[inline(always)]
pub unsafe fn pid_nr_at(task: Task, level: u32) -> Result<u32, ()> {
    let pid = unsafe { read::<*const u8>(task, off(&raw const OFFSETS.task_thread_pid)) }?;
    if pid.is_null() {
        return Err(());
    }
    let own = unsafe { read::<u32>(pid, off(&raw const OFFSETS.pid_level)) }?;
    if level > own {
        return Err(());
    }
    let upid = pid.wrapping_add(
        off(&raw const OFFSETS.pid_numbers)
            + (level & 63) as usize * off(&raw const OFFSETS.upid_size),
    );
    unsafe { read::<i32>(upid, off(&raw const OFFSETS.upid_nr)) }.map(|nr| nr as u32)
}

/// Global tgid of a task.
#[inline(always)]
pub unsafe fn tgid(task: Task) -> Result<u32, ()> {
    unsafe { read::<i32>(task, off(&raw const OFFSETS.task_tgid)) }.map(|t| t as u32)
}

/// `task_struct.start_boottime`, ns since boot.
#[inline(always)]
pub unsafe fn start_boottime(task: Task) -> Result<u64, ()> {
    unsafe { read::<u64>(task, off(&raw const OFFSETS.task_start_boottime)) }
}

/// `task_struct.exit_code`, as wait(2) encodes it.
#[inline(always)]
pub unsafe fn exit_code(task: Task) -> Result<i32, ()> {
    unsafe { read::<i32>(task, off(&raw const OFFSETS.task_exit_code)) }
}

/// Copies `bprm->filename` (NUL-terminated, cut to the buffer).
#[inline(always)]
pub unsafe fn read_filename(bprm: *const u8, out: &mut [u8; nstrace_common::FILENAME_LEN]) {
    if let Ok(name) = unsafe { read::<*const u8>(bprm, off(&raw const OFFSETS.binprm_filename)) } {
        let _ = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name, out) };
    }
}

/// Global tid of a task.
#[inline(always)]
pub unsafe fn tid(task: Task) -> Result<u32, ()> {
    unsafe { read::<i32>(task, off(&raw const OFFSETS.task_pid)) }.map(|t| t as u32)
}

/// Fills the caller's identity fields of a record: ppid, ns_tid, pid level, start time.
#[inline(always)]
pub unsafe fn fill_identity(task: Task, ev: &mut Transition) -> Result<(), ()> {
    unsafe {
        let parent = read::<*const u8>(task, off(&raw const OFFSETS.task_real_parent))?;
        ev.ppid = read::<i32>(parent, off(&raw const OFFSETS.task_tgid))? as u32;
        ev.start_boottime_ns = read::<u64>(task, off(&raw const OFFSETS.task_start_boottime))?;
        let (_, nr, level) = pid_ns(task)?;
        ev.ns_tid = nr;
        ev.pid_level = level;
    }
    Ok(())
}

/// Fills the child fields of a clone/fork record from the new task.
#[inline(always)]
pub unsafe fn fill_child(child: Task, ev: &mut Transition) -> Result<(), ()> {
    unsafe {
        ev.child_tid = tid(child)?;
        ev.child_start_boottime_ns = start_boottime(child)?;
        let (_, nr, _) = pid_ns(child)?;
        ev.child_ns_tid = nr;
        read_ns_set(child, &mut ev.child)
    }
}

/// Fills the fields of a record that describe the current task and the call.
#[inline(always)]
pub fn fill_caller(ev: &mut Transition, call: u32, pid_tgid: u64) {
    ev.call = call;
    ev.tid = pid_tgid as u32;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev.comm = bpf_get_current_comm().unwrap_or_default();
}
