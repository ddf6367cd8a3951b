//! Reading a task's identity and namespace set from kernel memory.
//!
//! Offsets come from the `OFFSETS` global (the running kernel's BTF); every read goes through
//! `bpf_probe_read_kernel`, so a torn or exiting task yields an error, never a fault.
use aya_ebpf::helpers::{
    bpf_get_current_uid_gid, bpf_probe_read_kernel, bpf_probe_read_user, generated,
};
use nstrace_common::{
    NS_SLOTS, NSPROXY_MAX, NsSet, Transition, call,
    flags::{CLONE_NS_MASK, NS_MASK},
    slot,
};

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

/// The current task as a BTF pointer: the verifier knows its type, so fields reached from it
/// through [`load`] at load-time-constant offsets are plain loads (which the kernel guards
/// against faults) instead of helper calls. The syscall programs' hot path reads this way.
/// Scalar fields are read from it directly; the pointers the programs follow from it come from
/// [`Current`].
#[inline(always)]
pub fn current_btf() -> Task {
    // SAFETY: the helper has no preconditions.
    unsafe { generated::bpf_get_current_task_btf() as Task }
}

/// The current task ([`current_btf`]) and the four pointers the programs follow from it, each
/// loaded once, where a program starts.
///
/// Why once: for every load of a pointer field from a trusted task pointer, the verifier looks up
/// as many as four type names (`task_struct__safe_trusted` and kin) in the kernel's BTF, each a
/// walk over its ~150k types, and it does so on every path it explores through that load. A
/// profile of nstrace's start-up had two thirds of the programs' verification in that walk.
/// Loaded before a program's first branch, each pointer is checked once. The pointers a task
/// holds do not change while one of its own programs runs.
#[derive(Clone, Copy)]
pub struct Current {
    pub task: Task,
    /// `struct nsproxy *`: null once the task's namespaces are released at its exit.
    nsproxy: *const u8,
    /// `const struct cred *`.
    real_cred: *const u8,
    /// `struct task_struct *`.
    real_parent: *const u8,
    /// `struct pid *`.
    thread_pid: *const u8,
}

impl Current {
    #[inline(always)]
    pub fn get() -> Self {
        let task = current_btf();
        // SAFETY: BTF-checked loads of the current task's pointer fields.
        unsafe {
            Self {
                task,
                nsproxy: load(task, off(&raw const OFFSETS.task_nsproxy)),
                real_cred: load(task, off(&raw const OFFSETS.task_real_cred)),
                real_parent: load(task, off(&raw const OFFSETS.task_real_parent)),
                thread_pid: load(task, off(&raw const OFFSETS.task_thread_pid)),
            }
        }
    }
}

/// A field of a BTF-typed kernel object: `base` must come from [`current_btf`] or an earlier
/// `load` of a pointer field, and `offset` must be a load-time constant (an `OFFSETS` field, or
/// a sum of them) naming a real field of the type, or the verifier rejects the program. A
/// faulting load yields zero.
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, offset: usize) -> T {
    // SAFETY: the verifier checks the access against the kernel's BTF and turns it into a
    // fault-guarded load.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset).cast::<T>()) }
}

/// Word `i` (masked to the window) of a 16-byte window read in one probe read.
#[inline(always)]
fn word(w: &[u32; 4], i: usize) -> u32 {
    match i & 3 {
        0 => w[0],
        1 => w[1],
        2 => w[2],
        _ => w[3],
    }
}

/// The 8-byte value whose low half is word `i` of the window.
#[inline(always)]
fn dword(w: &[u32; 4], i: usize) -> u64 {
    u64::from(word(w, i)) | u64::from(word(w, i + 1)) << 32
}

/// Reads `ns_common` of one namespace into slot `S` of `out`: inum and ns_id in one read.
#[inline(always)]
unsafe fn read_common<const S: usize>(ns: *const u8, out: &mut NsSet) -> Result<(), ()> {
    if ns.is_null() {
        return Err(());
    }
    let window = off(&raw const OFFSETS.ns_common[S]) + off(&raw const OFFSETS.ns_common_window);
    let w = unsafe { read::<[u32; 4]>(ns, window) }?;
    out.inum[S] = word(&w, off(&raw const OFFSETS.inum_word));
    if off(&raw const OFFSETS.has_ns_id) != 0 {
        out.id[S] = dword(&w, off(&raw const OFFSETS.ns_id_word));
    }
    Ok(())
}

/// Slot `S` of a set from the namespace pointers in `ptrs`. When the slot's pointer is the one
/// in `prev`, the namespace is the one `prev` already resolved: no read. (Within one syscall the
/// old namespace is still referenced when the new one is allocated, so an equal pointer cannot
/// be a reused address.)
#[inline(always)]
unsafe fn resolve<const S: usize>(
    ptrs: &[u64; NS_SLOTS],
    out: &mut NsSet,
    prev: Option<(&[u64; NS_SLOTS], &NsSet)>,
) -> Result<(), ()> {
    if let Some((prev_ptrs, prev_set)) = prev
        && prev_ptrs[S] == ptrs[S]
    {
        out.inum[S] = prev_set.inum[S];
        out.id[S] = prev_set.id[S];
        return Ok(());
    }
    unsafe { read_common::<S>(ptrs[S] as *const u8, out) }
}

/// A whole set from its namespace pointers (see [`read_ns_ptrs`]).
#[inline(always)]
pub unsafe fn resolve_set(
    ptrs: &[u64; NS_SLOTS],
    out: &mut NsSet,
    prev: Option<(&[u64; NS_SLOTS], &NsSet)>,
) -> Result<(), ()> {
    unsafe {
        resolve::<{ slot::MNT }>(ptrs, out, prev)?;
        resolve::<{ slot::UTS }>(ptrs, out, prev)?;
        resolve::<{ slot::IPC }>(ptrs, out, prev)?;
        resolve::<{ slot::PID }>(ptrs, out, prev)?;
        resolve::<{ slot::PID_FOR_CHILDREN }>(ptrs, out, prev)?;
        resolve::<{ slot::NET }>(ptrs, out, prev)?;
        resolve::<{ slot::USER }>(ptrs, out, prev)?;
        resolve::<{ slot::CGROUP }>(ptrs, out, prev)?;
        resolve::<{ slot::TIME }>(ptrs, out, prev)?;
        resolve::<{ slot::TIME_FOR_CHILDREN }>(ptrs, out, prev)
    }
}

/// One nsproxy slot's pointer, from nsproxy read whole.
#[inline(always)]
fn nsproxy_slot<const S: usize>(body: &[u64; NSPROXY_MAX / 8], ptrs: &mut [u64; NS_SLOTS]) {
    let index = off(&raw const OFFSETS.nsproxy[S]) / 8;
    // SAFETY: masked to the array; userspace checked every offset lies inside nsproxy.
    ptrs[S] = unsafe { *body.get_unchecked(index & (NSPROXY_MAX / 8 - 1)) };
}

/// The pointers behind a task's namespace set, slot by slot: nsproxy read whole, the user
/// namespace of its credentials and, unless the caller knows it (`pid_ns_ptr`, fixed for a task's
/// life), its active pid namespace. Nothing is dereferenced beyond them.
#[inline(always)]
pub unsafe fn read_ns_ptrs(
    task: Task,
    pid_ns_ptr: Option<u64>,
    ptrs: &mut [u64; NS_SLOTS],
) -> Result<(), ()> {
    let nsproxy = unsafe { read::<*const u8>(task, off(&raw const OFFSETS.task_nsproxy)) }?;
    if nsproxy.is_null() {
        // The task is exiting: exit_task_namespaces() has already run.
        return Err(());
    }
    // Not zeroed first: that compiles to a byte-wise memset. Only the bytes the read fills are
    // used (userspace checked every slot offset lies inside nsproxy).
    let mut body = core::mem::MaybeUninit::<[u64; NSPROXY_MAX / 8]>::uninit();
    let size = off(&raw const OFFSETS.nsproxy_size) & (NSPROXY_MAX - 1);
    // SAFETY: the size is bounded by the buffer; probe_read validates the source.
    if unsafe {
        generated::bpf_probe_read_kernel(body.as_mut_ptr().cast(), size as u32, nsproxy.cast())
    } != 0
    {
        return Err(());
    }
    // SAFETY: filled up to `size`, and only slots inside it are read.
    let body = unsafe { body.assume_init_ref() };
    nsproxy_slot::<{ slot::MNT }>(body, ptrs);
    nsproxy_slot::<{ slot::UTS }>(body, ptrs);
    nsproxy_slot::<{ slot::IPC }>(body, ptrs);
    nsproxy_slot::<{ slot::PID_FOR_CHILDREN }>(body, ptrs);
    nsproxy_slot::<{ slot::NET }>(body, ptrs);
    nsproxy_slot::<{ slot::CGROUP }>(body, ptrs);
    nsproxy_slot::<{ slot::TIME }>(body, ptrs);
    nsproxy_slot::<{ slot::TIME_FOR_CHILDREN }>(body, ptrs);
    unsafe {
        let cred = read::<*const u8>(task, off(&raw const OFFSETS.task_real_cred))?;
        ptrs[slot::USER] = read::<u64>(cred, off(&raw const OFFSETS.cred_user_ns))?;
        ptrs[slot::PID] = match pid_ns_ptr {
            Some(ns) => ns,
            None => pid_ns(task)?.0 as u64,
        };
    }
    Ok(())
}

/// The task's `struct upid` at `level` of its `struct pid`, read whole: (namespace, nr).
#[inline(always)]
unsafe fn upid(pid: *const u8, level: u32) -> Result<(*const u8, u32), ()> {
    // Bounded so the verifier sees a finite offset: pid namespaces nest at most 32 deep.
    let at = off(&raw const OFFSETS.pid_numbers)
        + (level & 63) as usize * off(&raw const OFFSETS.upid_size);
    let w = unsafe { read::<[u32; 4]>(pid, at) }?;
    Ok((
        dword(&w, off(&raw const OFFSETS.upid_ns_word)) as *const u8,
        word(&w, off(&raw const OFFSETS.upid_nr_word)),
    ))
}

/// The task's active pid namespace and its tid there: `thread_pid->numbers[thread_pid->level]`.
#[inline(always)]
pub unsafe fn pid_ns(task: Task) -> Result<(*const u8, u32, u32), ()> {
    let pid = unsafe { read::<*const u8>(task, off(&raw const OFFSETS.task_thread_pid)) }?;
    if pid.is_null() {
        return Err(());
    }
    let level = unsafe { read::<u32>(pid, off(&raw const OFFSETS.pid_level)) }?;
    let (ns, nr) = unsafe { upid(pid, level) }?;
    Ok((ns, nr, level))
}

/// Slot `S` of a set from the BTF-typed namespace pointer `now` (the exit's fast path): when it
/// is the one in `ptrs`, `out` already holds that namespace (the set before the call);
/// any other is read with two plain loads, and its pointer kept in `ptrs`. Returns the slot's
/// bit when it changed.
#[inline(always)]
unsafe fn resolve_direct<const S: usize>(
    now: u64,
    ptrs: &mut [u64; NS_SLOTS],
    out: &mut NsSet,
) -> Result<u32, ()> {
    if ptrs[S] == now {
        return Ok(0);
    }
    ptrs[S] = now;
    let ns = now as *const u8;
    if ns.is_null() {
        return Err(());
    }
    let window = off(&raw const OFFSETS.ns_common[S]) + off(&raw const OFFSETS.ns_common_window);
    out.inum[S] = unsafe { load::<u32>(ns, window + 4 * off(&raw const OFFSETS.inum_word)) };
    if off(&raw const OFFSETS.has_ns_id) != 0 {
        out.id[S] = unsafe { load::<u64>(ns, window + 4 * off(&raw const OFFSETS.ns_id_word)) };
    }
    Ok(1 << S)
}

/// What the current task's set is after a call: `after` holds the set before it (the task's
/// entry the call started from) and `ptrs` the pointers behind that set; both are brought up to
/// date, every slot but the pid namespace (fixed for a task's life) through [`resolve_direct`].
/// Returns the slots whose namespace changed, a bit each. On an error both are partly updated:
/// the caller marks the entry stale.
#[inline(always)]
pub unsafe fn reread_set(
    cur: &Current,
    ptrs: &mut [u64; NS_SLOTS],
    after: &mut NsSet,
) -> Result<u32, ()> {
    let nsproxy = cur.nsproxy;
    if nsproxy.is_null() {
        // The task is exiting: exit_task_namespaces() has already run.
        return Err(());
    }
    let mut changed = 0;
    macro_rules! slots {
        ($($s:ident),*) => {$(
            let now = unsafe { load::<u64>(nsproxy, off(&raw const OFFSETS.nsproxy[slot::$s])) };
            changed |= unsafe { resolve_direct::<{ slot::$s }>(now, ptrs, after) }?;
        )*};
    }
    slots!(
        MNT,
        UTS,
        IPC,
        PID_FOR_CHILDREN,
        NET,
        CGROUP,
        TIME,
        TIME_FOR_CHILDREN
    );
    let cred = cur.real_cred;
    if cred.is_null() {
        return Err(());
    }
    let user = unsafe { load::<u64>(cred, off(&raw const OFFSETS.cred_user_ns)) };
    Ok(changed | unsafe { resolve_direct::<{ slot::USER }>(user, ptrs, after) }?)
}

/// The syscall [`current_btf`] is in, from the user registers saved at its entry: its number
/// (the low 32 bits: arm64 keeps it in an s32, syscallno; x86_64 in a long) and its first two
/// arguments.
#[inline(always)]
pub fn syscall(task: Task) -> (u32, u64, u64) {
    // SAFETY: the helper returns the task's saved user registers as a BTF pointer (never null);
    // the loads are BTF-checked.
    unsafe {
        let regs = generated::bpf_task_pt_regs(task.cast_mut().cast()) as *const u8;
        (
            load::<u32>(regs, off(&raw const OFFSETS.regs_nr)),
            load::<u64>(regs, off(&raw const OFFSETS.regs_arg0)),
            load::<u64>(regs, off(&raw const OFFSETS.regs_arg1)),
        )
    }
}

/// This architecture's number of setns.
#[inline(always)]
pub fn nr_setns() -> u32 {
    off(&raw const OFFSETS.nr_setns) as u32
}

/// The call [`current_btf`] is in, when it is a clone or clone3 with CLONE_NEW* flags: the call
/// and its flags, from the syscall number and first argument in its saved user registers.
#[inline(always)]
pub fn clone_call(task: Task) -> Option<(u32, u64)> {
    let (nr, arg0, _) = syscall(task);
    if nr == off(&raw const OFFSETS.nr_clone) as u32 {
        // clone's low byte is the exit signal: CLONE_NEWTIME's bit is not a flag there.
        (arg0 & CLONE_NS_MASK != 0).then_some((call::CLONE, arg0))
    } else if nr == off(&raw const OFFSETS.nr_clone3) as u32 {
        // `struct clone_args` lives in user memory, its u64 flags first; the kernel has just
        // copied it, so it is paged in.
        // SAFETY: probe_read_user validates the address.
        let flags = unsafe { bpf_probe_read_user(arg0 as *const u64) }.ok()?;
        (flags & NS_MASK != 0).then_some((call::CLONE3, flags))
    } else {
        None
    }
}

/// `start_boottime` of [`current_btf`].
#[inline(always)]
pub fn start_boottime_direct(task: Task) -> u64 {
    // SAFETY: a BTF-checked load of the current task.
    unsafe { load::<u64>(task, off(&raw const OFFSETS.task_start_boottime)) }
}

/// The level of the current task's active pid namespace (0: the initial one).
#[inline(always)]
pub fn pid_level_direct(cur: &Current) -> u32 {
    // SAFETY: a BTF-checked load: thread_pid is a `struct pid *`.
    unsafe { load::<u32>(cur.thread_pid, off(&raw const OFFSETS.pid_level)) }
}

/// The level of a task's active pid namespace.
#[inline(always)]
pub unsafe fn pid_level(task: Task) -> Result<u32, ()> {
    unsafe {
        let pid = read::<*const u8>(task, off(&raw const OFFSETS.task_thread_pid))?;
        if pid.is_null() {
            return Err(());
        }
        read::<u32>(pid, off(&raw const OFFSETS.pid_level))
    }
}

/// The namespace struct behind one nsproxy slot of the current task.
#[inline(always)]
pub fn nsproxy_ns_direct<const S: usize>(cur: &Current) -> u64 {
    // SAFETY: a BTF-checked load: nsproxy is a `struct nsproxy *`.
    unsafe { load::<u64>(cur.nsproxy, off(&raw const OFFSETS.nsproxy[S])) }
}

/// A task's time namespace and time namespace for children, nsproxy read once.
#[inline(always)]
pub unsafe fn time_pair(task: Task) -> Result<(u64, u64), ()> {
    unsafe {
        let nsproxy = read::<*const u8>(task, off(&raw const OFFSETS.task_nsproxy))?;
        if nsproxy.is_null() {
            return Err(());
        }
        Ok((
            read::<u64>(nsproxy, off(&raw const OFFSETS.nsproxy[slot::TIME]))?,
            read::<u64>(
                nsproxy,
                off(&raw const OFFSETS.nsproxy[slot::TIME_FOR_CHILDREN]),
            )?,
        ))
    }
}

/// `exit_code` of [`current_btf`], as wait(2) encodes it.
#[inline(always)]
pub fn exit_code_direct(task: Task) -> i32 {
    // SAFETY: a BTF-checked load of the current task.
    unsafe { load::<i32>(task, off(&raw const OFFSETS.task_exit_code)) }
}

/// `comm` of [`current_btf`] (TASK_COMM_LEN bytes), read as two words: the helper costs more
/// than the rest of a lifecycle program's reads together.
#[inline(always)]
pub fn comm_direct(task: Task, out: &mut [u8; 16]) {
    let comm = off(&raw const OFFSETS.task_comm);
    let out = out.as_mut_ptr().cast::<u64>();
    // SAFETY: BTF-checked loads of the current task; `out` is 16 bytes.
    unsafe {
        core::ptr::write_unaligned(out, load::<u64>(task, comm));
        core::ptr::write_unaligned(out.add(1), load::<u64>(task, comm + 8));
    }
}

/// What can change between a known task's calls, filled at their exit: its parent (re-parenting),
/// its uid and its comm. Plain loads.
#[inline(always)]
pub fn fill_exit_identity(cur: &Current, ev: &mut Transition) -> Result<(), ()> {
    // SAFETY: BTF-checked loads (the helpers for uid and comm cost more than the rest of this
    // function together); a kuid's value is what bpf_get_current_uid_gid() reports.
    unsafe {
        let cred = cur.real_cred;
        if cred.is_null() {
            return Err(());
        }
        ev.uid = load::<u32>(cred, off(&raw const OFFSETS.cred_uid));
    }
    comm_direct(cur.task, &mut ev.comm);
    // real_parent is never null for a live task.
    let parent = cur.real_parent;
    if parent.is_null() {
        return Err(());
    }
    ev.ppid = unsafe { load::<i32>(parent, off(&raw const OFFSETS.task_tgid)) } as u32;
    Ok(())
}

/// Reads the task's whole namespace set, as `/proc/PID/ns` shows it; its pointers go to `ptrs`.
#[inline(always)]
pub unsafe fn read_ns_set(task: Task, out: &mut NsSet) -> Result<(), ()> {
    let mut ptrs = [0u64; NS_SLOTS];
    unsafe {
        read_ns_ptrs(task, None, &mut ptrs)?;
        resolve_set(&ptrs, out, None)
    }
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
    unsafe { upid(pid, level) }.map(|(_, nr)| nr)
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

/// The current task's identity (ppid, start time, pid level and tid there) and whole set into
/// `ev.after`, with the pointers behind it into `ptrs`, by plain loads: only its active pid
/// namespace, at a level known only at run time, takes probe reads.
#[inline(always)]
pub fn read_current(
    cur: &Current,
    ev: &mut Transition,
    ptrs: &mut [u64; NS_SLOTS],
) -> Result<(), ()> {
    // SAFETY: BTF-checked loads of the current task and what it points to; probe reads of its
    // upid and pid namespace.
    unsafe {
        let parent = cur.real_parent;
        if parent.is_null() {
            return Err(());
        }
        ev.ppid = load::<i32>(parent, off(&raw const OFFSETS.task_tgid)) as u32;
        ev.start_boottime_ns = start_boottime_direct(cur.task);
        let pid = cur.thread_pid;
        if pid.is_null() {
            return Err(());
        }
        let level = load::<u32>(pid, off(&raw const OFFSETS.pid_level));
        let (ns, nr) = upid(pid, level)?;
        ev.ns_tid = nr;
        ev.pid_level = level;
        // Zeroed pointers differ from every namespace: each slot is read.
        for i in 0..NS_SLOTS {
            core::ptr::write_volatile(&raw mut ptrs[i], 0);
        }
        reread_set(cur, ptrs, &mut ev.after)?;
        ptrs[slot::PID] = ns as u64;
        read_common::<{ slot::PID }>(ns, &mut ev.after)
    }
}

/// Fills the child fields of a clone/fork record from the new task.
#[inline(always)]
pub unsafe fn fill_child(
    child: Task,
    ev: &mut Transition,
    parent_ptrs: Option<&[u64; NS_SLOTS]>,
) -> Result<(), ()> {
    // The parent's namespaces, resolved in `before`, are not read again for the child.
    let Transition {
        before,
        child: child_set,
        ..
    } = ev;
    unsafe {
        let mut ptrs = [0u64; NS_SLOTS];
        let (ns, nr, _) = pid_ns(child)?;
        read_ns_ptrs(child, Some(ns as u64), &mut ptrs)?;
        resolve_set(&ptrs, child_set, parent_ptrs.map(|p| (p, &*before)))?;
        ev.child_tid = tid(child)?;
        ev.child_start_boottime_ns = start_boottime(child)?;
        ev.child_ns_tid = nr;
        Ok(())
    }
}

/// The current task's comm, written in place (the record was zeroed: a failure leaves it empty).
#[inline(always)]
pub fn comm(out: &mut [u8; 16]) {
    // SAFETY: the buffer is 16 bytes, TASK_COMM_LEN.
    unsafe { generated::bpf_get_current_comm(out.as_mut_ptr().cast(), 16) };
}

/// Fills the fields of a record that describe the current task and the call.
#[inline(always)]
pub fn fill_caller(ev: &mut Transition, call: u32, pid_tgid: u64) {
    ev.call = call;
    ev.tid = pid_tgid as u32;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.uid = bpf_get_current_uid_gid() as u32;
    comm(&mut ev.comm);
}
