//! Decoding wire records into typed events.
//!
//! The bytes come from the kernel through a perf buffer and may carry trailing alignment padding.
//! A short record or an unknown kind or call is an error for the caller to count, never a panic.
use std::mem::{offset_of, size_of};

use nstrace_common::{self as wire, NS_SLOTS, call, record};

use serde::{Deserialize, Serialize};

use crate::ns::{NsKind, errno_name, flag_names};

/// A task's command name: at most 15 bytes from the kernel, kept inline (no allocation).
pub type Comm = compact_str::CompactString;

/// One namespace by both of its names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsRef {
    /// The inode `ls -l /proc/PID/ns` shows.
    pub inum: u32,
    /// The kernel's never-reused namespace id (0 on kernels before 6.18).
    pub id: u64,
}

/// A task's whole namespace set.
#[derive(Clone, Copy, Debug, Eq, Default, Serialize, Deserialize)]
pub struct NsSet {
    pub inum: [u32; NS_SLOTS],
    pub id: [u64; NS_SLOTS],
}

/// Compared lane by lane: every record is compared several times, and the derived comparison
/// calls `memcmp` for each array.
impl PartialEq for NsSet {
    fn eq(&self, other: &Self) -> bool {
        let mut differ = 0;
        for slot in 0..NS_SLOTS {
            differ |=
                (self.id[slot] ^ other.id[slot]) | u64::from(self.inum[slot] ^ other.inum[slot]);
        }
        differ == 0
    }
}

impl NsSet {
    pub fn get(&self, kind: NsKind) -> NsRef {
        NsRef {
            inum: self.inum[kind.slot()],
            id: self.id[kind.slot()],
        }
    }

    /// The kinds in which `other` differs from `self`.
    pub fn differences(&self, other: &NsSet) -> KindSet {
        let mut mask = 0u16;
        for slot in 0..NS_SLOTS {
            let differs = (self.inum[slot] != other.inum[slot]) | (self.id[slot] != other.id[slot]);
            mask |= u16::from(differs) << slot;
        }
        KindSet(mask)
    }

    /// True when no slot is known: the kernel could not tell (see
    /// [`Transition::before_inferred`]).
    pub fn is_unknown(&self) -> bool {
        self.inum.iter().all(|&i| i == 0)
    }

    /// True when the kernel reported ns_ids (Linux 6.18+).
    pub fn has_ids(&self) -> bool {
        self.id.iter().any(|&id| id != 0)
    }
}

/// Some of the ten kinds, iterated in `/proc/PID/ns` order: a bit per slot.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSet(u16);

impl KindSet {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn contains(self, kind: NsKind) -> bool {
        self.0 & (1 << kind.slot()) != 0
    }

    pub fn iter(self) -> KindIter {
        KindIter(self.0)
    }
}

/// The kinds of a [`KindSet`], lowest slot first.
#[derive(Clone, Copy, Debug)]
pub struct KindIter(u16);

impl Iterator for KindIter {
    type Item = NsKind;

    fn next(&mut self) -> Option<NsKind> {
        if self.0 == 0 {
            return None;
        }
        let slot = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(NsKind::ALL[slot])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for KindIter {}

impl IntoIterator for KindSet {
    type Item = NsKind;
    type IntoIter = KindIter;

    fn into_iter(self) -> KindIter {
        self.iter()
    }
}

impl std::fmt::Debug for KindSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<const N: usize> PartialEq<[NsKind; N]> for KindSet {
    fn eq(&self, other: &[NsKind; N]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

impl From<&wire::NsSet> for NsSet {
    fn from(set: &wire::NsSet) -> Self {
        Self {
            inum: set.inum,
            id: set.id,
        }
    }
}

/// What kind of call a transition reports.
/// In JSON by its name (`clone3`); in the binary record by its place here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Call {
    Clone,
    Clone3,
    Unshare,
    Setns,
    /// A fork or clone without CLONE_NEW* whose child is still born into another pid or time
    /// namespace (the parent's pid_for_children or time_for_children).
    Fork,
    /// An exec that moved the task into its time_for_children namespace.
    Exec,
}

impl Call {
    /// Every call, in the order of the enum (`call as usize` indexes it).
    pub const ALL: [Call; 6] = [
        Call::Clone,
        Call::Clone3,
        Call::Unshare,
        Call::Setns,
        Call::Fork,
        Call::Exec,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Call::Clone => "clone",
            Call::Clone3 => "clone3",
            Call::Unshare => "unshare",
            Call::Setns => "setns",
            Call::Fork => "fork",
            Call::Exec => "exec",
        }
    }

    /// Whether this call creates a child.
    pub const fn has_child(self) -> bool {
        matches!(self, Call::Clone | Call::Clone3 | Call::Fork)
    }
}

impl TryFrom<u32> for Call {
    type Error = DecodeError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Ok(match value {
            call::CLONE => Call::Clone,
            call::CLONE3 => Call::Clone3,
            call::UNSHARE => Call::Unshare,
            call::SETNS => Call::Setns,
            call::FORK => Call::Fork,
            call::EXEC => Call::Exec,
            other => return Err(DecodeError::UnknownCall(other)),
        })
    }
}

/// The child of a clone, clone3 or fork.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    /// Global tid.
    pub tid: u32,
    /// `start_boottime`, ns since boot.
    pub start_ns: u64,
    /// Tid in the child's own pid namespace (1: that namespace's init).
    pub ns_tid: u32,
    pub ns: NsSet,
}

/// One namespace transition, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Kernel CLOCK_MONOTONIC time of completion, in ns.
    pub ts_ns: u64,
    pub call: Call,
    /// clone/clone3/unshare flags, or setns's nstype.
    pub flags: u64,
    pub ret: i64,
    /// setns's fd argument.
    pub fd: Option<i32>,
    pub tid: u32,
    /// The process (thread group) id.
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The caller's tid as seen from its own pid namespace.
    pub ns_tid: u32,
    pub pid_level: u32,
    pub start_boottime_ns: u64,
    pub comm: Comm,
    pub before: NsSet,
    pub after: NsSet,
    /// Boxed: most transitions have none, and a record is smaller for it.
    pub child: Option<Box<Child>>,
    /// `before` is not the kernel's: the call was an unshare or setns by a task the kernel
    /// programs did not know yet (see the programs' `ns_exit`), and the collector filled it in
    /// from what it knew of the task (the /proc snapshot and every record since).
    #[serde(default)]
    pub before_inferred: bool,
}

impl Transition {
    /// Makes this transition a copy of `other` in place, field by field: no allocation (but a
    /// child's) and no temporary, for allocations that are filled again (see [`Spare`]).
    pub fn copy_from(&mut self, other: &Transition) {
        let Transition {
            ts_ns,
            call,
            flags,
            ret,
            fd,
            tid,
            pid,
            ppid,
            uid,
            ns_tid,
            pid_level,
            start_boottime_ns,
            comm,
            before,
            after,
            child,
            before_inferred,
        } = other;
        self.ts_ns = *ts_ns;
        self.call = *call;
        self.flags = *flags;
        self.ret = *ret;
        self.fd = *fd;
        self.tid = *tid;
        self.pid = *pid;
        self.ppid = *ppid;
        self.uid = *uid;
        self.ns_tid = *ns_tid;
        self.pid_level = *pid_level;
        self.start_boottime_ns = *start_boottime_ns;
        self.comm.clone_from(comm);
        self.before = *before;
        self.after = *after;
        self.child.clone_from(child);
        self.before_inferred = *before_inferred;
    }

    /// Takes `known` (what the collector knew of the task) as the `before` the kernel could not
    /// tell. A namespace known by inode only (from /proc) that the task is still in gets the id
    /// the kernel reports for it now: the same inode cannot name another namespace meanwhile.
    pub fn infer_before(&mut self, known: NsSet) {
        self.before = known;
        for slot in 0..NS_SLOTS {
            if self.before.inum[slot] == self.after.inum[slot] && self.before.id[slot] == 0 {
                self.before.id[slot] = self.after.id[slot];
            }
        }
        self.before_inferred = true;
    }

    /// The errno of a failed call.
    pub fn errno(&self) -> Option<i32> {
        // A corrupt record may carry any value: no overflow on i64::MIN.
        (self.ret < 0).then(|| self.ret.unsigned_abs().min(i32::MAX as u64) as i32)
    }

    pub fn errno_name(&self) -> Option<String> {
        self.errno().map(errno_name)
    }

    /// The namespaces the caller left for new ones (its own set's changes).
    pub fn changed(&self) -> KindSet {
        self.before.differences(&self.after)
    }

    /// The namespaces in which the child was born elsewhere than where its parent is.
    pub fn child_moved(&self) -> KindSet {
        match &self.child {
            Some(child) => self.after.differences(&child.ns),
            None => KindSet::default(),
        }
    }

    /// The flags word by name. clone()'s low byte is its exit signal; setns's 0 means "any type".
    pub fn flag_names(&self) -> Vec<String> {
        flag_names(self.flags, self.call == Call::Clone)
    }
}

/// A task born without changing namespaces: it starts in its parent's set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    pub ts_ns: u64,
    pub tid: u32,
    pub pid: u32,
    pub start_ns: u64,
    pub parent_tid: u32,
    pub parent_pid: u32,
    pub parent_start_ns: u64,
    pub comm: Comm,
}

/// A task ran a new program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub ts_ns: u64,
    pub tid: u32,
    pub pid: u32,
    /// The tid before exec (differs when a non-leader thread exec'd).
    pub old_tid: u32,
    pub start_ns: u64,
    pub comm: Comm,
    pub filename: String,
}

/// A task ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub ts_ns: u64,
    pub tid: u32,
    pub pid: u32,
    pub start_ns: u64,
    /// As wait(2) encodes it.
    pub code: i32,
    /// The last thread of its process.
    pub group_dead: bool,
    pub comm: Comm,
}

/// Records the kernel could not deliver: a CPU's perf buffer had no room for them. Not a record
/// of the kernel's but the collector's account of a gap in one CPU's stream, kept in the stream
/// where it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    /// Kernel time of the last record read from that CPU before the gap (the records lost came
    /// after it), or when the collector found the gap if the CPU had sent nothing before.
    pub ts_ns: u64,
    /// When the collector found the gap (kernel time).
    pub noticed_ns: u64,
    pub cpu: u32,
    /// Records lost: the programs count every record of every batch that found no room, at once,
    /// while perf tells the gap at its next write; so this is what they counted on that CPU
    /// since the loss before there, and may be 0 when that one told them all. Summed over the
    /// losses, it is exact.
    pub records: u64,
    /// Batches (perf samples) the buffer reported lost; each held one or more records.
    pub batches: u64,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Transition(Box<Transition>),
    Fork(Fork),
    Exec(Box<Exec>),
    Exit(Exit),
}

impl Record {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Record::Transition(t) => t.ts_ns,
            Record::Fork(f) => f.ts_ns,
            Record::Exec(e) => e.ts_ns,
            Record::Exit(e) => e.ts_ns,
        }
    }

    /// The thread the record is about (the child, for a fork).
    pub fn tid(&self) -> u32 {
        match self {
            Record::Transition(t) => t.tid,
            Record::Fork(f) => f.tid,
            Record::Exec(e) => e.tid,
            Record::Exit(e) => e.tid,
        }
    }

    /// The process the record is about (the child, for a fork).
    pub fn pid(&self) -> u32 {
        match self {
            Record::Transition(t) => t.pid,
            Record::Fork(f) => f.pid,
            Record::Exec(e) => e.pid,
            Record::Exit(e) => e.pid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} its kind needs")]
    Short { len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown call {0}")]
    UnknownCall(u32),
    #[error("a move names slots {0:#x}: there are {NS_SLOTS}")]
    BadSlots(u64),
    #[error("a record claims {len} bytes where {left} are left in its sample")]
    BadLength { len: usize, left: usize },
}

/// The records of one perf sample: a batch of records back to back, each led by a header whose
/// `len` is its length. Bytes too few for a header are the buffer's alignment padding. A record
/// whose length cannot be right ends the sample with an error: what follows it cannot be found.
pub fn records(sample: &[u8]) -> Records<'_> {
    Records { rest: sample }
}

pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let header: wire::Header = read(self.rest).ok()?;
        let len = header.len as usize;
        let left = self.rest.len();
        if len < size_of::<wire::Header>() || !len.is_multiple_of(8) || len > left {
            self.rest = &[];
            return Some(Err(DecodeError::BadLength { len, left }));
        }
        let (record, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Ok(record))
    }
}

/// Copies a `T` out of the front of `bytes`, which need not be aligned.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: the length is checked above, and the wire types are plain integers and arrays,
    // valid for every bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one record from a perf sample.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    decode_reusing(bytes, &mut Vec::new())
}

/// A field of a wire transition at `offset` (from `offset_of!`), from a sample already checked
/// to hold it.
fn field<T: Copy>(bytes: &[u8], offset: usize) -> T {
    debug_assert!(offset + size_of::<T>() <= bytes.len());
    // SAFETY: the caller checked the length; the wire fields are plain integers and arrays,
    // valid for every bit pattern, read unaligned.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(offset).cast::<T>()) }
}

/// Released transitions' allocations, to be filled again (the boxes are what is kept).
pub type Spare = Vec<Box<Transition>>;

/// [`decode`], building a transition in one of the `spare` allocations when there is one (the
/// collector hands every released transition back: no allocation per record in a storm).
pub fn decode_reusing(bytes: &[u8], spare: &mut Spare) -> Result<Record, DecodeError> {
    let header: wire::Header = read(bytes)?;
    match header.kind {
        record::TRANSITION => {
            // Calls without a child come without the child part (see wire::TRANSITION_SHORT).
            if bytes.len() < wire::TRANSITION_SHORT {
                return Err(DecodeError::Short {
                    len: bytes.len(),
                    need: wire::TRANSITION_SHORT,
                });
            }
            let call = Call::try_from(field::<u32>(bytes, offset_of!(wire::Transition, call)))?;
            let full = size_of::<wire::Transition>();
            if call.has_child() && bytes.len() < full {
                return Err(DecodeError::Short {
                    len: bytes.len(),
                    need: full,
                });
            }
            let mut t = spare.pop().unwrap_or_else(|| Box::new(Transition::blank()));
            fill_transition(bytes, call, &mut t);
            Ok(Record::Transition(t))
        }
        record::MOVE => {
            let head = wire::TRANSITION_HEAD + 8;
            if bytes.len() < head {
                return Err(DecodeError::Short {
                    len: bytes.len(),
                    need: head,
                });
            }
            let call = Call::try_from(field::<u32>(bytes, offset_of!(wire::Transition, call)))?;
            let changed = field::<u64>(bytes, wire::TRANSITION_HEAD);
            if changed >> NS_SLOTS != 0 {
                return Err(DecodeError::BadSlots(changed));
            }
            let need = head + changed.count_ones() as usize * wire::MOVE_SLOT_BYTES;
            if bytes.len() < need {
                return Err(DecodeError::Short {
                    len: bytes.len(),
                    need,
                });
            }
            let mut t = spare.pop().unwrap_or_else(|| Box::new(Transition::blank()));
            fill_head(bytes, call, &mut t);
            t.child = None;
            t.after = t.before;
            let mut at = head;
            for slot in (0..NS_SLOTS).filter(|s| changed & (1 << s) != 0) {
                t.after.inum[slot] = field(bytes, at);
                t.after.id[slot] = field(bytes, at + 8);
                at += wire::MOVE_SLOT_BYTES;
            }
            Ok(Record::Transition(t))
        }
        record::FORK => {
            let raw: wire::Lifecycle = read(bytes)?;
            Ok(Record::Fork(Fork {
                ts_ns: raw.header.ts_ns,
                tid: raw.tid,
                pid: raw.tgid,
                start_ns: raw.start_boottime_ns,
                parent_tid: raw.parent_tid,
                parent_pid: raw.parent_tgid,
                parent_start_ns: raw.parent_start_boottime_ns,
                comm: comm(&raw.comm),
            }))
        }
        record::EXEC => {
            let raw: wire::Exec = read(bytes)?;
            Ok(Record::Exec(Box::new(Exec {
                ts_ns: raw.life.header.ts_ns,
                tid: raw.life.tid,
                pid: raw.life.tgid,
                old_tid: raw.life.parent_tid,
                start_ns: raw.life.start_boottime_ns,
                comm: comm(&raw.life.comm),
                filename: text(&raw.filename),
            })))
        }
        record::EXIT => {
            let raw: wire::Lifecycle = read(bytes)?;
            Ok(Record::Exit(Exit {
                ts_ns: raw.header.ts_ns,
                tid: raw.tid,
                pid: raw.tgid,
                start_ns: raw.start_boottime_ns,
                code: raw.code,
                group_dead: raw.group_dead != 0,
                comm: comm(&raw.comm),
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// A kernel string's bytes: up to its NUL, or all of them when it fills its buffer.
fn until_nul(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())]
}

/// A comm from the kernel: NUL-terminated or full.
fn comm(bytes: &[u8]) -> Comm {
    let bytes = until_nul(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Comm::new(text),
        Err(_) => Comm::from_utf8_lossy(bytes),
    }
}

/// A NUL-terminated (or full) byte string from the kernel.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(bytes)).into_owned()
}

/// The wire set at `offset` of a sample checked to hold it.
fn set_at(bytes: &[u8], offset: usize) -> NsSet {
    NsSet {
        inum: field(bytes, offset + offset_of!(wire::NsSet, inum)),
        id: field(bytes, offset + offset_of!(wire::NsSet, id)),
    }
}

/// Fills `t` from a sample holding at least its short part, and its child part when `call` has
/// a child: field by field, in place (a transition is about 500 bytes).
fn fill_transition(bytes: &[u8], call: Call, t: &mut Transition) {
    type W = wire::Transition;
    let set = |offset: usize| set_at(bytes, offset);
    fill_head(bytes, call, t);
    t.after = set(offset_of!(W, after));
    let child_tid: u32 = if call.has_child() {
        field(bytes, offset_of!(W, child_tid))
    } else {
        0
    };
    t.child = (child_tid != 0).then(|| {
        Box::new(Child {
            tid: child_tid,
            start_ns: field(bytes, offset_of!(W, child_start_boottime_ns)),
            ns_tid: field(bytes, offset_of!(W, child_ns_tid)),
            ns: set(offset_of!(W, child)),
        })
    });
}

/// Fills every field of `t` but `after` and `child` from a sample holding at least a
/// transition's head (see wire::TRANSITION_HEAD).
fn fill_head(bytes: &[u8], call: Call, t: &mut Transition) {
    type W = wire::Transition;
    t.ts_ns = field(
        bytes,
        offset_of!(W, header) + offset_of!(wire::Header, ts_ns),
    );
    t.call = call;
    t.flags = field(bytes, offset_of!(W, flags));
    t.ret = field(bytes, offset_of!(W, ret));
    t.fd = (call == Call::Setns).then(|| field(bytes, offset_of!(W, fd)));
    t.tid = field(bytes, offset_of!(W, tid));
    t.pid = field(bytes, offset_of!(W, tgid));
    t.ppid = field(bytes, offset_of!(W, ppid));
    t.uid = field(bytes, offset_of!(W, uid));
    t.ns_tid = field(bytes, offset_of!(W, ns_tid));
    t.pid_level = field(bytes, offset_of!(W, pid_level));
    t.start_boottime_ns = field(bytes, offset_of!(W, start_boottime_ns));
    let name = field::<[u8; 16]>(bytes, offset_of!(W, comm));
    if t.comm.as_bytes() != until_nul(&name) {
        t.comm = comm(&name);
    }
    t.before = set_at(bytes, offset_of!(W, before));
    t.before_inferred = false;
}

impl Transition {
    /// A transition with nothing in it, to be filled.
    pub(crate) fn blank() -> Self {
        Self {
            ts_ns: 0,
            call: Call::Setns,
            flags: 0,
            ret: 0,
            fd: None,
            tid: 0,
            pid: 0,
            ppid: 0,
            uid: 0,
            ns_tid: 0,
            pid_level: 0,
            start_boottime_ns: 0,
            comm: Comm::const_new(""),
            before: NsSet::default(),
            after: NsSet::default(),
            child: None,
            before_inferred: false,
        }
    }
}

/// The bytes of a wire record, for tests and benchmarks.
pub fn encode<T: aya::Pod>(raw: &T) -> Vec<u8> {
    // SAFETY: wire records are #[repr(C)] structs of integers with explicit padding: every byte
    // is initialised.
    let bytes =
        unsafe { std::slice::from_raw_parts((raw as *const T).cast::<u8>(), size_of::<T>()) };
    bytes.to_vec()
}

/// The bytes of a transition as the programs send a call whose `before` they knew (a
/// [`record::MOVE`]): its head, then the slots of `after` that differ from `before`. For tests
/// and benchmarks.
pub fn encode_move(raw: &wire::Transition) -> Vec<u8> {
    let (mut changed, mut slots) = (0u64, Vec::new());
    for slot in 0..NS_SLOTS {
        let (before, after) = (&raw.before, &raw.after);
        if (before.inum[slot], before.id[slot]) != (after.inum[slot], after.id[slot]) {
            changed |= 1 << slot;
            slots.extend_from_slice(&u64::from(after.inum[slot]).to_ne_bytes());
            slots.extend_from_slice(&after.id[slot].to_ne_bytes());
        }
    }
    let mut out = encode(raw);
    out.truncate(wire::TRANSITION_HEAD);
    out.extend_from_slice(&changed.to_ne_bytes());
    out.extend_from_slice(&slots);
    let len = out.len() as u32;
    out[8..12].copy_from_slice(&record::MOVE.to_ne_bytes());
    out[12..16].copy_from_slice(&len.to_ne_bytes());
    out
}

/// A perf sample of these records as the programs send it: back to back, each with its length
/// in its header, then the buffer's alignment padding. For tests and benchmarks.
pub fn encode_batch(records: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let at = out.len();
        out.extend_from_slice(record);
        out[at + 12..at + 16].copy_from_slice(&(record.len() as u32).to_ne_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    out
}

#[cfg(test)]
pub(crate) mod tests;
