//! Every map and load-time global of the programs.
use aya_ebpf::helpers::bpf_get_current_comm;
use aya_ebpf::{
    EbpfContext,
    macros::map,
    maps::{LruHashMap, PerCpuArray, PerfEventByteArray},
};
use nstrace_common::{Exec, KernelOffsets, Lifecycle, NsSet, Transition, stat};

/// Kernel structure offsets from the running kernel's BTF, set by the loader.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// The collector's own tgid: its own calls are not traced.
#[unsafe(no_mangle)]
pub static OWN_TGID: u32 = 0;

/// Every record (`nstrace_common::record`), one perf buffer per CPU.
#[map]
pub static EVENTS: PerfEventByteArray = PerfEventByteArray::new(0);

/// Syscalls between entry and exit, keyed by pid_tgid. LRU: a task that dies mid-syscall never
/// reaches the exit, and its entry must not stay forever.
#[map]
pub static PENDING: LruHashMap<u64, Transition> = LruHashMap::with_max_entries(8192, 0);

/// Tasks whose time_for_children differs from their time namespace, keyed by tid, with their set
/// at that moment: their next exec moves them, and exec is where the move is reported.
#[map]
pub static TIME_ARMED: LruHashMap<u32, NsSet> = LruHashMap::with_max_entries(4096, 0);

/// Where records are built: 456 bytes do not fit the verifier's stack budget comfortably, and
/// building on the stack makes verification orders of magnitude slower.
#[map]
pub static SCRATCH: PerCpuArray<Transition> = PerCpuArray::with_max_entries(1, 0);

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
    // SAFETY: wire records are plain integers and arrays with explicit padding: every byte is
    // initialised.
    let bytes = unsafe {
        core::slice::from_raw_parts((record as *const T).cast::<u8>(), core::mem::size_of::<T>())
    };
    EVENTS.output(ctx, bytes, 0);
}

/// This CPU's transition scratch, emptied and filled with the caller and the call.
#[inline(always)]
pub fn transition_slot(call: u32, pid_tgid: u64) -> Result<&'static mut Transition, ()> {
    let ev = SCRATCH
        .get_ptr_mut(0)
        .ok_or_else(|| count(stat::BUILD_FAILED))?;
    // SAFETY: the per-CPU slot is this program's alone while it runs.
    let ev = unsafe { &mut *ev };
    *ev = Transition::EMPTY;
    crate::task::fill_caller(ev, call, pid_tgid);
    Ok(ev)
}

/// This CPU's fork/exec/exit scratch, emptied, with its kind and the current comm set.
#[inline(always)]
pub fn lifecycle_slot(kind: u32) -> Result<&'static mut Exec, ()> {
    let rec = LIFE_SCRATCH
        .get_ptr_mut(0)
        .ok_or_else(|| count(stat::BUILD_FAILED))?;
    // SAFETY: the per-CPU slot is this program's alone while it runs.
    let rec = unsafe { &mut *rec };
    rec.life = Lifecycle::EMPTY;
    rec.life.header.kind = kind;
    rec.life.comm = bpf_get_current_comm().unwrap_or_default();
    Ok(rec)
}
