//! Every map and load-time global of the programs.
use aya_ebpf::{
    EbpfContext,
    macros::map,
    maps::{LruHashMap, PerCpuArray, PerfEventByteArray},
};
use nstrace_common::{
    Exec, KernelOffsets, NS_SLOTS, NsSet, TRANSITION_SHORT, Transition, call, stat,
};

/// Kernel structure offsets from the running kernel's BTF, set by the loader.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// The collector's own tgid: its own calls are not traced.
#[unsafe(no_mangle)]
pub static OWN_TGID: u32 = 0;

/// Every record (`nstrace_common::record`), one perf buffer per CPU.
#[map]
pub static EVENTS: PerfEventByteArray = PerfEventByteArray::new(0);

/// What the programs keep of a task that made a clone/clone3/unshare/setns call: the call in
/// flight, and between calls the set it left the task in (`ev.after`) with the pointers behind
/// that set. A task's namespaces change only through these calls (whose exits keep the entry
/// current) and exec (which drops it), so the next call starts from the entry without reading
/// the set again, and its exit reads only the namespaces whose pointer changed.
#[repr(C)]
pub struct TaskState {
    pub ev: Transition,
    /// The pointers behind `ev.before` while a call is in flight from a cold entry, behind
    /// `ev.after` otherwise.
    pub ptrs: [u64; NS_SLOTS],
    /// One of [`state`].
    pub state: u32,
    pub _pad: u32,
}

pub mod state {
    /// No call in flight; `ev.after` and `ptrs` are the task's current set.
    pub const IDLE: u32 = 0;
    /// A call in flight whose `before` is the entry's `ev.after`.
    pub const WARM_CALL: u32 = 1;
    /// A call in flight whose `before` was read at entry.
    pub const COLD_CALL: u32 = 2;
    /// Nothing in the entry may be trusted (a read failed).
    pub const STALE: u32 = 3;
}

/// Every task that made one of the calls, keyed by pid_tgid; removed at exec and exit. LRU: a
/// task whose exit was missed must not keep its entry forever.
#[map]
pub static TASKS: LruHashMap<u64, TaskState> = LruHashMap::with_max_entries(10240, 0);

/// Tasks whose time_for_children differs from their time namespace, keyed by tid, with their set
/// at that moment: their next exec moves them, and exec is where the move is reported.
#[map]
pub static TIME_ARMED: LruHashMap<u32, NsSet> = LruHashMap::with_max_entries(4096, 0);

/// Where records are built: 456 bytes do not fit the verifier's stack budget comfortably, and
/// building on the stack makes verification orders of magnitude slower.
#[map]
pub static SCRATCH: PerCpuArray<TaskState> = PerCpuArray::with_max_entries(1, 0);

/// Where fork, exec and exit records are built.
#[map]
pub static LIFE_SCRATCH: PerCpuArray<Exec> = PerCpuArray::with_max_entries(1, 0);

/// Kernel-side counters (see `nstrace_common::stat`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
pub fn own_tgid() -> u32 {
    // SAFETY: a plain read of a global the loader sets; volatile so it is not folded to 0.
    unsafe { core::ptr::read_volatile(&raw const OWN_TGID) }
}

#[inline(always)]
pub fn count(stat: u32) {
    if let Some(slot) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *slot += 1 }
    }
}

/// Sends one wire record (a `#[repr(C)]` struct of `nstrace_common`) to this CPU's buffer.
#[inline(always)]
pub fn emit<C: EbpfContext, T>(ctx: &C, record: &T) {
    emit_prefix(ctx, record, core::mem::size_of::<T>());
}

/// Sends a transition: without its child part when the call has no child.
#[inline(always)]
pub fn emit_transition<C: EbpfContext>(ctx: &C, ev: &Transition) {
    let len = match ev.call {
        call::CLONE | call::CLONE3 | call::FORK => core::mem::size_of::<Transition>(),
        _ => TRANSITION_SHORT,
    };
    emit_prefix(ctx, ev, len);
}

#[inline(always)]
fn emit_prefix<C: EbpfContext, T>(ctx: &C, record: &T, len: usize) {
    // SAFETY: `len` is at most the record's size; wire records are plain integers and arrays
    // with explicit padding: every byte is initialised.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (record as *const T).cast::<u8>(),
            len.min(core::mem::size_of::<T>()),
        )
    };
    EVENTS.output(ctx, bytes, 0);
}

/// Copies a namespace set word by word (a plain copy compiles to the byte-wise `memcpy`).
#[inline(always)]
pub fn copy_set(dst: &mut NsSet, src: &NsSet) {
    let (d, s) = (
        (dst as *mut NsSet).cast::<u64>(),
        (src as *const NsSet).cast::<u64>(),
    );
    for i in 0..size_of::<NsSet>() / 8 {
        // SAFETY: both are NsSets, 8-byte aligned, 15 words long.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}

/// Zeroes a wire record word by word. A plain assignment compiles to a call of the byte-wise
/// `memset` the linker provides, several times slower on the hot path.
#[inline(always)]
fn zero<T>(record: &mut T) {
    const { assert!(size_of::<T>() % 8 == 0) };
    let words = (record as *mut T).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: inside the record; wire records are 8-byte aligned plain integers.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// This CPU's transition scratch, emptied and filled with the caller and the call.
#[inline(always)]
pub fn transition_slot(call: u32, pid_tgid: u64) -> Result<&'static mut TaskState, ()> {
    let p = SCRATCH
        .get_ptr_mut(0)
        .ok_or_else(|| count(stat::BUILD_FAILED))?;
    // SAFETY: the per-CPU slot is this program's alone while it runs.
    let p = unsafe { &mut *p };
    zero(&mut p.ev);
    p.ev.header.kind = nstrace_common::record::TRANSITION;
    p.ev.fd = -1;
    crate::task::fill_caller(&mut p.ev, call, pid_tgid);
    Ok(p)
}

/// This CPU's fork/exec/exit scratch, emptied, with its kind and the current comm set.
#[inline(always)]
pub fn lifecycle_slot(kind: u32) -> Result<&'static mut Exec, ()> {
    let rec = LIFE_SCRATCH
        .get_ptr_mut(0)
        .ok_or_else(|| count(stat::BUILD_FAILED))?;
    // SAFETY: the per-CPU slot is this program's alone while it runs.
    let rec = unsafe { &mut *rec };
    zero(&mut rec.life);
    rec.life.header.kind = kind;
    crate::task::comm(&mut rec.life.comm);
    Ok(rec)
}
