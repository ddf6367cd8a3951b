//! Every map and load-time global of the programs.
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_CURRENT_CPU,
    helpers::generated::bpf_perf_event_output,
    macros::map,
    maps::{LruHashMap, PerCpuArray, PerfEventByteArray},
};
use nstrace_common::{
    BATCH_BYTES, Exec, KernelOffsets, Lifecycle, MOVE_MAX, NS_SLOTS, NsSet, TRANSITION_HEAD,
    TRANSITION_SHORT, Transition, record, stat,
};

/// Kernel structure offsets from the running kernel's BTF, set by the loader.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// The collector's own tgid: its own calls are not traced.
#[unsafe(no_mangle)]
pub static OWN_TGID: u32 = 0;

/// Every record (`nstrace_common::record`), one perf buffer per CPU, in batches.
#[map]
pub static EVENTS: PerfEventByteArray = PerfEventByteArray::new(0);

const BATCH_WORDS: usize = BATCH_BYTES / 8;
/// The largest record, in words: a batch with less room left is sent.
const MAX_RECORD_WORDS: usize = size_of::<Transition>() / 8;
const _: () = assert!(BATCH_WORDS.is_power_of_two() && BATCH_WORDS >= 2 * MAX_RECORD_WORDS);

/// A CPU's records not yet sent, back to back, each with its length in its header. A perf
/// output costs the same for one record as for several, and under a storm most of a call's
/// tracing cost was that one helper: records are staged and sent a batch at a time.
#[repr(C)]
pub struct Batch {
    /// Words staged (in words, not bytes: the verifier then follows the bound checked on it to
    /// the staging address).
    pub len: u32,
    /// Records staged: what is counted lost if the buffer has no room for the batch.
    pub records: u32,
    /// Set while a program stages or sends: the flush the collector asks for runs in an
    /// interrupt on this CPU and may land in the middle of either, and then leaves the batch be.
    pub busy: u32,
    pub _pad: u32,
    pub words: [u64; BATCH_WORDS],
}

#[map]
pub static BATCH: PerCpuArray<Batch> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, the timestamp of the oldest staged record (0: none). The collector orders records
/// only up to the oldest of these, and has a CPU whose batch waits too long send it (`flush`).
#[map]
pub static STAGED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What the programs keep of a task (see `TASKS`): the set its last call, its exec or its birth
/// left it in (`ev.after`, with the rest of `ev` as that call's record), and the pointers behind
/// that set. A task's namespaces change only through these calls (whose exits keep the entry
/// current) and exec (which reads it again), so a call's exit starts from the entry without
/// reading the set again, and reads only the namespaces whose pointer changed.
#[repr(C)]
pub struct TaskState {
    pub ev: Transition,
    /// The pointers behind `ev.after`.
    pub ptrs: [u64; NS_SLOTS],
    /// One of [`state`].
    pub state: u32,
    pub _pad: u32,
}

pub mod state {
    /// `ev.after` and `ptrs` are the task's current set.
    pub const IDLE: u32 = 0;
    /// Nothing in the entry may be trusted (a read failed): the next call reads the set whole.
    pub const STALE: u32 = 2;
}

/// What the programs know of each task, keyed by pid_tgid: kept from its birth (its first return
/// from fork, vfork, clone or clone3), its exec or its first call on, and removed at its exit.
/// LRU: a task whose exit was missed must not keep its entry forever, and an evicted entry only
/// costs the task's next call a `before` the collector fills in and marks.
#[map]
pub static TASKS: LruHashMap<u64, TaskState> = LruHashMap::with_max_entries(10240, 0);

/// Tasks whose time_for_children differs from their time namespace, keyed by tid, with their set
/// at that moment: their next exec moves them, and exec is where the move is reported.
#[map]
pub static TIME_ARMED: LruHashMap<u32, NsSet> = LruHashMap::with_max_entries(4096, 0);

/// Where records are built: a transition and the pointers behind its set do not fit the
/// verifier's 512-byte stack budget comfortably, and building on the stack makes verification
/// orders of magnitude slower.
#[map]
pub static SCRATCH: PerCpuArray<TaskState> = PerCpuArray::with_max_entries(1, 0);

/// Where fork, exec and exit records are built.
#[map]
pub static LIFE_SCRATCH: PerCpuArray<Exec> = PerCpuArray::with_max_entries(1, 0);

/// Kernel-side counters (see `nstrace_common::stat`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Removes `$key` from the hash map `$map` if it is there. Looked up first: a delete takes the
/// bucket's lock even for a key that is not there.
macro_rules! remove_present {
    ($map:expr, $key:expr) => {
        if $map.get_ptr($key).is_some() {
            let _ = $map.remove(&$key);
        }
    };
}
pub(crate) use remove_present;

/// Drops a task's entry in `TASKS`, if it has one.
#[inline(always)]
pub fn forget(pid_tgid: u64) {
    remove_present!(TASKS, pid_tgid);
}

#[inline(always)]
pub fn own_tgid() -> u32 {
    // SAFETY: a plain read of a global the loader sets; volatile so it is not folded to 0.
    unsafe { core::ptr::read_volatile(&raw const OWN_TGID) }
}

#[inline(always)]
pub fn count(stat: u32) {
    count_n(stat, 1);
}

#[inline(always)]
fn count_n(stat: u32, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *slot += n }
    }
}
/// Sends a fork or exit record.
#[inline(always)]
pub fn emit_life<C: EbpfContext>(ctx: &C, record: &Lifecycle) {
    stage::<C, { size_of::<Lifecycle>() / 8 }>(ctx, (record as *const Lifecycle).cast());
}

/// Sends an exec record.
#[inline(always)]
pub fn emit_exec<C: EbpfContext>(ctx: &C, record: &Exec) {
    stage::<C, { size_of::<Exec>() / 8 }>(ctx, (record as *const Exec).cast());
}

/// Sends a transition of a call with a child (clone, clone3, fork), whole.
#[inline(always)]
pub fn emit_with_child<C: EbpfContext>(ctx: &C, ev: &Transition) {
    stage::<C, { size_of::<Transition>() / 8 }>(ctx, (ev as *const Transition).cast());
}

/// Sends a transition of a call without a child (unshare, setns, exec): its first
/// [`TRANSITION_SHORT`] bytes.
#[inline(always)]
pub fn emit_without_child<C: EbpfContext>(ctx: &C, ev: &Transition) {
    stage::<C, { TRANSITION_SHORT / 8 }>(ctx, (ev as *const Transition).cast());
}

/// Stages the `WORDS` words of a record at `src` in this CPU's batch (see [`stage_with`]). The
/// length is a constant: a straight copy, quick to run and to verify.
#[inline(always)]
fn stage<C: EbpfContext, const WORDS: usize>(ctx: &C, src: *const u64) {
    const { assert!(WORDS >= 2 && WORDS <= MAX_RECORD_WORDS) };
    stage_with(ctx, |dst| {
        // SAFETY: `dst` has room for the largest record; `src` is a whole wire record.
        unsafe {
            copy_prefix::<WORDS>(dst, src);
            // The header's second word: the kind, then the length the collector splits by.
            let second = dst.add(1);
            core::ptr::write_volatile(second, (*second & 0xffff_ffff) | ((WORDS as u64 * 8) << 32));
        }
        WORDS
    });
}

/// Sends a transition without a child whose `before` is the programs' own as a
/// [`record::MOVE`]: its head, then only the slots of `after` in `changed` (a bit per slot).
#[inline(always)]
pub fn emit_move<C: EbpfContext>(ctx: &C, ev: &Transition, changed: u32) {
    const HEAD_WORDS: usize = TRANSITION_HEAD / 8;
    const { assert!(MOVE_MAX / 8 <= MAX_RECORD_WORDS) };
    let changed = changed & ((1 << NS_SLOTS) - 1);
    stage_with(ctx, |dst| {
        let src = (ev as *const Transition).cast::<u64>();
        // SAFETY: `dst` has room for the largest record; `src` is a whole wire record.
        unsafe {
            copy_prefix::<HEAD_WORDS>(dst, src);
            let mask = dst.add(HEAD_WORDS);
            core::ptr::write_volatile(mask, u64::from(changed));
            let mut words = HEAD_WORDS + 1;
            // Each test reads the mask back from the batch: a test of the register would teach
            // the verifier that register's bits, and it would then walk every combination of
            // slots apart (seconds of start-up).
            macro_rules! slots {
                ($($s:expr),*) => {$(
                    if core::ptr::read_volatile(mask) & (1 << $s) != 0 {
                        core::ptr::write_volatile(dst.add(words), u64::from(ev.after.inum[$s]));
                        core::ptr::write_volatile(dst.add(words + 1), ev.after.id[$s]);
                        words += 2;
                    }
                )*};
            }
            slots!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
            core::ptr::write_volatile(
                dst.add(1),
                u64::from(record::MOVE) | ((words as u64 * 8) << 32),
            );
            words
        }
    });
}

/// Copies the first `WORDS` words of a record at `src` to `dst`, one load and one store each.
///
/// # Safety
/// Both must hold `WORDS` words.
#[inline(always)]
unsafe fn copy_prefix<const WORDS: usize>(dst: *mut u64, src: *const u64) {
    for i in 0..WORDS {
        // SAFETY: inside both, as the caller promised.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
}

/// Stages a record in this CPU's batch: `write` writes it at the address it is given (room for
/// the largest record) and returns its length in words. The batch is sent when the largest
/// record would no longer fit. Every record goes this way, so a CPU's records reach its buffer
/// in the order they were staged.
#[inline(always)]
fn stage_with<C: EbpfContext>(ctx: &C, write: impl FnOnce(*mut u64) -> usize) {
    let Some(b) = BATCH.get_ptr_mut(0) else {
        count(stat::BUILD_FAILED);
        return;
    };
    // SAFETY: this CPU's batch; `busy` keeps an interrupting flush away from it.
    let b = unsafe { &mut *b };
    // SAFETY: plain loads and stores to the map value.
    unsafe {
        if core::ptr::read_volatile(&raw const b.busy) != 0 {
            // Only an interrupt lands here, and none of the programs runs in one.
            count(stat::BUILD_FAILED);
            return;
        }
        core::ptr::write_volatile(&raw mut b.busy, 1);
        let mut at = core::ptr::read_volatile(&raw const b.len) as usize;
        // Never true (a batch with less room than the largest record is sent at once), but the
        // verifier needs to see the bound. One send site per record keeps programs quick to
        // verify.
        if at > BATCH_WORDS - MAX_RECORD_WORDS {
            count_n(stat::LOST, u64::from(b.records));
            b.records = 0;
            at = 0;
        }
        // One bounded base and constant offsets from it: a word costs a load and a store.
        let dst = b.words.as_mut_ptr().add(at);
        let words = write(dst);
        if at == 0 {
            set_staged(core::ptr::read_volatile(dst));
        }
        let end = at + words;
        core::ptr::write_volatile(&raw mut b.len, end as u32);
        core::ptr::write_volatile(&raw mut b.records, b.records + 1);
        if BATCH_WORDS - end < MAX_RECORD_WORDS {
            send(ctx, b);
        }
        core::ptr::write_volatile(&raw mut b.busy, 0);
    }
}

#[inline(always)]
fn set_staged(ts: u64) {
    if let Some(staged) = STAGED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { core::ptr::write_volatile(staged, ts) };
    }
}

/// Sends the batch (the caller holds `busy`); its records are counted lost if the buffer has no
/// room.
#[inline(always)]
fn send<C: EbpfContext>(ctx: &C, b: &mut Batch) {
    // SAFETY: plain loads and stores to the map value.
    let words = unsafe { core::ptr::read_volatile(&raw const b.len) } as u64;
    if words > 0 {
        // The mask bounds the length for the verifier: staged records never pass the batch.
        let len = (((words - 1) & (BATCH_WORDS as u64 - 1)) + 1) * 8;
        // SAFETY: `len` bytes of the batch are staged records.
        let rc = unsafe {
            bpf_perf_event_output(
                ctx.as_ptr(),
                (&raw const EVENTS).cast_mut().cast(),
                u64::from(BPF_F_CURRENT_CPU),
                b.words.as_mut_ptr().cast(),
                len,
            )
        };
        if rc != 0 {
            count_n(stat::LOST, u64::from(b.records));
        }
    }
    b.len = 0;
    b.records = 0;
    set_staged(0);
}

/// Sends this CPU's batch unless a program is staging into it (the collector asks again).
#[inline(always)]
pub fn flush_batch<C: EbpfContext>(ctx: &C) {
    let Some(b) = BATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's batch, claimed through `busy`.
    unsafe {
        let b = &mut *b;
        if core::ptr::read_volatile(&raw const b.busy) != 0
            || core::ptr::read_volatile(&raw const b.len) == 0
        {
            return;
        }
        core::ptr::write_volatile(&raw mut b.busy, 1);
        send(ctx, b);
        core::ptr::write_volatile(&raw mut b.busy, 0);
    }
}

/// Copies a namespace set word by word (a plain copy compiles to the byte-wise `memcpy`).
#[inline(always)]
pub fn copy_set(dst: &mut NsSet, src: &NsSet) {
    copy_words(dst, src);
}

/// Copies a record or map value word by word (a plain copy compiles to the byte-wise `memcpy`).
#[inline(always)]
pub fn copy_words<T>(dst: &mut T, src: &T) {
    const { assert!(size_of::<T>() % 8 == 0) };
    let (d, s) = (
        (dst as *mut T).cast::<u64>(),
        (src as *const T).cast::<u64>(),
    );
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: both are 8-byte aligned values of the same type, a whole number of words.
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

/// This CPU's transition scratch, as the last program left it.
#[inline(always)]
pub fn scratch() -> Result<&'static mut TaskState, ()> {
    let p = SCRATCH
        .get_ptr_mut(0)
        .ok_or_else(|| count(stat::BUILD_FAILED))?;
    // SAFETY: the per-CPU slot is this program's alone while it runs.
    Ok(unsafe { &mut *p })
}

/// This CPU's transition scratch, emptied and filled with the caller and the call.
#[inline(always)]
pub fn transition_slot(call: u32, pid_tgid: u64) -> Result<&'static mut TaskState, ()> {
    let p = scratch()?;
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
    crate::task::comm_direct(crate::task::current_btf(), &mut rec.life.comm);
    Ok(rec)
}
