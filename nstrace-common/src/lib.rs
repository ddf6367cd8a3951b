//! Wire records shared by nstrace's kernel programs and its collector.
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each is `#[repr(C)]`, built
//! from fixed-width integers and arrays only, laid out by descending alignment with explicit
//! padding, and pinned by a size assertion: the two sides cannot drift apart.
#![no_std]

use core::mem::size_of;

/// How many namespace slots a task has, as listed by `ls /proc/PID/ns`.
pub const NS_SLOTS: usize = 10;

/// Slot indexes into [`NsSet`], one per entry of `/proc/PID/ns`.
pub mod slot {
    pub const MNT: usize = 0;
    pub const UTS: usize = 1;
    pub const IPC: usize = 2;
    /// The task's own pid namespace: fixed for its whole life.
    pub const PID: usize = 3;
    /// Where the task's future children will be born (`unshare`/`setns` of CLONE_NEWPID).
    pub const PID_FOR_CHILDREN: usize = 4;
    pub const NET: usize = 5;
    pub const USER: usize = 6;
    pub const CGROUP: usize = 7;
    /// The task's own time namespace: changes only at exec or at birth.
    pub const TIME: usize = 8;
    /// Where the task's next exec or non-CLONE_VM child goes (`unshare`/`setns` of CLONE_NEWTIME).
    pub const TIME_FOR_CHILDREN: usize = 9;
}

/// A task's whole namespace set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsSet {
    /// `ns_common.ns_id`: never reused while the system runs; 0 on kernels before 6.18.
    pub id: [u64; NS_SLOTS],
    /// `ns_common.inum`: the inode `ls -l /proc/PID/ns` shows; reused once a namespace is freed.
    pub inum: [u32; NS_SLOTS],
}
const _: () = assert!(size_of::<NsSet>() == 120);

impl NsSet {
    pub const EMPTY: Self = Self {
        id: [0; NS_SLOTS],
        inum: [0; NS_SLOTS],
    };
}

/// Record kinds: the `kind` of every [`Header`].
pub mod record {
    /// A [`super::Transition`].
    pub const TRANSITION: u32 = 1;
    /// A [`super::Lifecycle`]: a new task that inherited its parent's namespaces.
    pub const FORK: u32 = 2;
    /// An [`super::Exec`].
    pub const EXEC: u32 = 3;
    /// A [`super::Lifecycle`]: a task ended.
    pub const EXIT: u32 = 4;
    /// A transition without a child whose `before` the programs knew: a
    /// [`super::Transition`]'s first [`super::TRANSITION_HEAD`] bytes, then only the slots of
    /// `after` that differ from `before` (see [`super::MOVE_SLOT_BYTES`]). A setns that changes
    /// one namespace is 232 bytes instead of 328.
    pub const MOVE: u32 = 5;
}

/// Errors a syscall exit returns, by number (the kernel's, not libc's: the programs have no
/// libc).
pub mod errno {
    /// What a fork into a pid namespace whose init has exited returns (alloc_pid), as well as
    /// what a short memory does.
    pub const ENOMEM: i64 = 12;
    // What a call a signal interrupted returns, which the kernel restarts or turns into EINTR:
    // never seen by userspace (include/linux/errno.h).
    pub const ERESTARTSYS: i64 = 512;
    pub const ERESTARTNOINTR: i64 = 513;
    pub const ERESTARTNOHAND: i64 = 514;
    pub const ERESTART_RESTARTBLOCK: i64 = 516;
}

/// Which call a [`Transition`] reports: its `call` field.
pub mod call {
    pub const CLONE: u32 = 1;
    pub const CLONE3: u32 = 2;
    pub const UNSHARE: u32 = 3;
    pub const SETNS: u32 = 4;
    /// A fork/clone without CLONE_NEW* whose child is still born elsewhere: into the parent's
    /// pid_for_children or time_for_children.
    pub const FORK: u32 = 5;
    /// An exec that moved the task into its time_for_children namespace.
    pub const EXEC: u32 = 6;
}

/// The first bytes of every record on the perf buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the transition completed.
    pub ts_ns: u64,
    /// One of [`record`].
    pub kind: u32,
    /// The record's length in bytes, a multiple of 8: set as the record is staged.
    pub len: u32,
}
const _: () = assert!(size_of::<Header>() == 16);

/// One namespace transition: a clone/clone3/unshare/setns that returned (successfully or not), a
/// fork whose child was born into another pid or time namespace, or an exec that entered a time
/// namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub header: Header,
    /// `task_struct.start_boottime` of the caller, in ns since boot: with `tid` it names the task
    /// safely across pid reuse.
    pub start_boottime_ns: u64,
    /// clone/clone3/unshare flags, or setns's nstype argument.
    pub flags: u64,
    /// The syscall's return value: a child pid, 0, or -errno.
    pub ret: i64,
    /// The caller's set at syscall entry.
    pub before: NsSet,
    /// Global thread id of the caller.
    pub tid: u32,
    /// Global thread-group (process) id of the caller.
    pub tgid: u32,
    /// Global tgid of the caller's parent.
    pub ppid: u32,
    pub uid: u32,
    /// The caller's thread id as seen in its own pid namespace.
    pub ns_tid: u32,
    /// Depth of the caller's pid namespace (0: the initial one).
    pub pid_level: u32,
    /// setns's fd argument; -1 for other calls.
    pub fd: i32,
    /// One of [`call`].
    pub call: u32,
    pub comm: [u8; 16],
    // A [`record::MOVE`] sends the bytes up to here: see [`TRANSITION_HEAD`].
    /// The caller's set at syscall exit.
    pub after: NsSet,
    // Calls without a child (unshare, setns, exec) end here: see [`TRANSITION_SHORT`].
    /// The child's `start_boottime` (clone, clone3, fork); 0 otherwise.
    pub child_start_boottime_ns: u64,
    /// Global tid of the child (clone, clone3, fork); 0 otherwise.
    pub child_tid: u32,
    /// The child's tid in its own pid namespace (1: it is that namespace's init).
    pub child_ns_tid: u32,
    /// The child's set (clone, clone3, fork); all zero otherwise.
    pub child: NsSet,
}
const _: () = assert!(size_of::<Transition>() == 464);

/// The bytes of a [`Transition`] sent for a call without a child: everything before
/// `child_start_boottime_ns`. The rest reads as zero.
pub const TRANSITION_SHORT: usize = core::mem::offset_of!(Transition, child_start_boottime_ns);
const _: () = assert!(TRANSITION_SHORT == 328);

/// The bytes of a [`Transition`] a [`record::MOVE`] starts with: everything before `after`.
pub const TRANSITION_HEAD: usize = core::mem::offset_of!(Transition, after);
const _: () = assert!(TRANSITION_HEAD == 208);

/// A [`record::MOVE`]'s bytes after the head: the changed slots' mask (one 8-byte word), then
/// per changed slot, lowest first, its namespace as two words (the inode, the id).
pub const MOVE_SLOT_BYTES: usize = 16;
/// The largest [`record::MOVE`]: every slot changed.
pub const MOVE_MAX: usize = TRANSITION_HEAD + 8 + NS_SLOTS * MOVE_SLOT_BYTES;

impl Transition {
    pub const EMPTY: Self = Self {
        header: Header {
            ts_ns: 0,
            kind: record::TRANSITION,
            len: 0,
        },
        start_boottime_ns: 0,
        child_start_boottime_ns: 0,
        flags: 0,
        ret: 0,
        before: NsSet::EMPTY,
        after: NsSet::EMPTY,
        child: NsSet::EMPTY,
        tid: 0,
        tgid: 0,
        ppid: 0,
        uid: 0,
        ns_tid: 0,
        pid_level: 0,
        child_tid: 0,
        child_ns_tid: 0,
        fd: -1,
        call: 0,
        comm: [0; 16],
    };
}

/// A fork or exit: the most frequent records, kept compact. A fork whose child lands in other
/// namespaces than its parent's is a [`Transition`] instead (call clone, clone3 or fork).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub header: Header,
    /// `start_boottime` of the task (the child, for a fork).
    pub start_boottime_ns: u64,
    /// Fork: the parent thread's `start_boottime`.
    pub parent_start_boottime_ns: u64,
    /// The task (the child, for a fork).
    pub tid: u32,
    pub tgid: u32,
    /// Fork: the thread that forked. Exec: the tid before exec (a non-leader thread that execs
    /// takes over its leader's).
    pub parent_tid: u32,
    pub parent_tgid: u32,
    /// Exit: the task's exit code (as wait(2) encodes it).
    pub code: i32,
    /// Exit: 1 when this was the last thread of its process.
    pub group_dead: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<Lifecycle>() == 72);

/// Length of the exec'd file name kept (longer names are cut).
pub const FILENAME_LEN: usize = 128;

/// An exec: the task's new comm and file name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exec {
    pub life: Lifecycle,
    pub filename: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<Exec>() == 200);

impl Lifecycle {
    pub const EMPTY: Self = Self {
        header: Header {
            ts_ns: 0,
            kind: 0,
            len: 0,
        },
        start_boottime_ns: 0,
        parent_start_boottime_ns: 0,
        tid: 0,
        tgid: 0,
        parent_tid: 0,
        parent_tgid: 0,
        code: 0,
        group_dead: 0,
        comm: [0; 16],
    };
}

/// Kernel structure offsets, computed from the running kernel's BTF at start-up and handed to the
/// programs as the read-only global [`OFFSETS_GLOBAL`] (Rust eBPF has no CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_nsproxy: u32,
    pub task_real_cred: u32,
    pub task_thread_pid: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_start_boottime: u32,
    pub task_exit_code: u32,
    pub cred_user_ns: u32,
    /// `cred.uid` (a `kuid_t`: its value is the uid in the initial user namespace).
    pub cred_uid: u32,
    /// `task_struct.comm`, TASK_COMM_LEN bytes.
    pub task_comm: u32,
    /// Where `struct pt_regs` keeps a syscall's first two arguments at its exit (x86_64: di and
    /// si; arm64: orig_x0 and regs[1]).
    pub regs_arg0: u32,
    pub regs_arg1: u32,
    /// Where `struct pt_regs` keeps the number of the syscall in progress (x86_64: orig_ax;
    /// arm64: syscallno).
    pub regs_nr: u32,
    /// This architecture's numbers of clone and clone3 (a fork's caller is read at the fork), and
    /// of setns (one program serves the exits of unshare and setns).
    pub nr_clone: u32,
    pub nr_clone3: u32,
    pub nr_setns: u32,
    pub binprm_filename: u32,
    /// Offset within `struct nsproxy` of each slot's namespace pointer (u32::MAX: not in nsproxy).
    pub nsproxy: [u32; NS_SLOTS],
    /// Offset of `struct ns_common ns` within each slot's namespace struct.
    pub ns_common: [u32; NS_SLOTS],
    /// `sizeof(struct nsproxy)`: the programs read it whole, in one probe read.
    pub nsproxy_size: u32,
    /// Offset within `ns_common` of a 16-byte window read in one probe read, and the 4-byte
    /// words of that window holding `inum` and (low half first) `ns_id`.
    pub ns_common_window: u32,
    pub inum_word: u32,
    pub ns_id_word: u32,
    /// 1 when `ns_common.ns_id` exists (Linux 6.18+) and lies in the window.
    pub has_ns_id: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    /// The 4-byte words of `struct upid` (read whole) holding `nr` and `ns`.
    pub upid_nr_word: u32,
    pub upid_ns_word: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 192);

/// Bytes of `ns_common` and of `struct upid` the programs read in one probe read.
pub const WINDOW: usize = 16;
/// The largest `struct nsproxy` the programs read (it is 72 bytes on 6.18).
pub const NSPROXY_MAX: usize = 128;

impl KernelOffsets {
    pub const ZERO: Self = Self {
        task_nsproxy: 0,
        task_real_cred: 0,
        task_thread_pid: 0,
        task_real_parent: 0,
        task_tgid: 0,
        task_pid: 0,
        task_start_boottime: 0,
        task_exit_code: 0,
        cred_user_ns: 0,
        cred_uid: 0,
        task_comm: 0,
        regs_arg0: 0,
        regs_arg1: 0,
        regs_nr: 0,
        nr_clone: 0,
        nr_clone3: 0,
        nr_setns: 0,
        binprm_filename: 0,
        nsproxy: [0; NS_SLOTS],
        ns_common: [0; NS_SLOTS],
        nsproxy_size: 0,
        ns_common_window: 0,
        inum_word: 0,
        ns_id_word: 0,
        has_ns_id: 0,
        pid_level: 0,
        pid_numbers: 0,
        upid_size: 0,
        upid_nr_word: 0,
        upid_ns_word: 0,
    };
}

/// Kernel-side counters, one per-CPU slot each, in the [`STATS_MAP`] map.
pub mod stat {
    /// A record could not be built (no scratch slot).
    pub const BUILD_FAILED: u32 = 0;
    /// A task's namespace set could not be read.
    pub const READ_FAILED: u32 = 1;
    /// A task's set could not be kept for its next call (`TASKS` refused the entry).
    pub const KEEP_FAILED: u32 = 2;
    /// Records in batches the perf buffer had no room for.
    pub const LOST: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Load-time globals.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
pub const OWN_TGID_GLOBAL: &str = "OWN_TGID";

/// Map names.
pub const EVENTS_MAP: &str = "EVENTS";
pub const STATS_MAP: &str = "STATS";
/// Per CPU: the timestamp of the oldest record staged in that CPU's batch, 0 when none is.
pub const STAGED_MAP: &str = "STAGED";
/// The program that sends a CPU's staged batch, run on that CPU on the collector's demand.
pub const FLUSH_PROGRAM: &str = "flush";

/// Records are staged per CPU and sent in batches of at most this many bytes: one perf sample
/// carries several records, each starting with its [`Header`], whose `len` is its length.
pub const BATCH_BYTES: usize = 4096;

/// CLONE_NEW* flags (include/uapi/linux/sched.h).
pub mod flags {
    pub const CLONE_NEWTIME: u64 = 0x0000_0080;
    pub const CLONE_NEWNS: u64 = 0x0002_0000;
    pub const CLONE_NEWCGROUP: u64 = 0x0200_0000;
    pub const CLONE_NEWUTS: u64 = 0x0400_0000;
    pub const CLONE_NEWIPC: u64 = 0x0800_0000;
    pub const CLONE_NEWUSER: u64 = 0x1000_0000;
    pub const CLONE_NEWPID: u64 = 0x2000_0000;
    pub const CLONE_NEWNET: u64 = 0x4000_0000;
    /// Every namespace flag that clone() takes. CLONE_NEWTIME is not among them: its bit is
    /// part of clone()'s exit-signal byte, so only clone3() and unshare() can ask for it.
    pub const CLONE_NS_MASK: u64 = CLONE_NEWNS
        | CLONE_NEWCGROUP
        | CLONE_NEWUTS
        | CLONE_NEWIPC
        | CLONE_NEWUSER
        | CLONE_NEWPID
        | CLONE_NEWNET;
    /// Every namespace flag clone3() and unshare() take.
    pub const NS_MASK: u64 = CLONE_NS_MASK | CLONE_NEWTIME;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] structs of integers with explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::Transition {}
    unsafe impl aya::Pod for super::Lifecycle {}
    unsafe impl aya::Pod for super::Exec {}
}
