//! Per-CPU perf buffers to one time-ordered stream.
//!
//! The collector drains every CPU's buffer (see [`crate::ring`]) together, when one of them is a
//! quarter full or every few milliseconds, whichever comes first, and decodes each sample
//! straight into a [`Reorder`]. A drain that began at time T has read every record stamped
//! before T, except one whose program was preempted between taking its timestamp and writing it:
//! so records up to T less a small window leave in order at once, and only that window's worth
//! waits in memory. Lost samples (the kernel's PERF_RECORD_LOST) and undecodable ones are counted
//! per drain.
use std::{
    collections::VecDeque,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    sync::Arc,
};

use aya::{
    maps::{Map, MapData, PerCpuArray, PerCpuValues},
    programs::ProgramFd,
};
use aya_obj::generated::{BPF_F_TEST_RUN_ON_CPU, bpf_attr, bpf_cmd};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::Notify,
    task::JoinHandle,
};

use crate::{
    event::{DecodeError, Record, Spare, decode_reusing, records},
    ring::{Item, OpenError, PerfRing, bpf, page_size},
};

/// RLIMIT_MEMLOCK as `ulimit -l` says it: KiB, or unlimited.
fn memlock_limit() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return "unknown".into();
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("ulimit -l {} KiB", limit.rlim_cur / 1024)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("listing the online CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("the events map of the eBPF object is not a perf event array")]
    Map,
    #[error(
        "opening the perf buffer of CPU {cpu} (a smaller --buffer-pages, or a higher \
         `ulimit -l`, may help)"
    )]
    Open { cpu: u32, source: std::io::Error },
    #[error(
        "the kernel would not lock CPU {cpu}'s perf buffer ({kib} KiB) in memory: past the \
         memlock limit ({limit}) without CAP_IPC_LOCK. Give nstrace CAP_IPC_LOCK (root has it; \
         a container cannot raise its own limit: docker or podman run --cap-add IPC_LOCK, \
         Kubernetes securityContext.capabilities.add [IPC_LOCK]), raise `ulimit -l`, or ask \
         for smaller buffers (--buffer-pages)"
    )]
    Lock {
        cpu: u32,
        kib: usize,
        limit: String,
        source: std::io::Error,
    },
    #[error("the staged-records map of the eBPF object is not a per-CPU array")]
    StagedMap,
    #[error("handing CPU {cpu}'s perf buffer to the kernel programs")]
    Attach { cpu: u32, source: std::io::Error },
}

/// A gap in one CPU's stream: the kernel dropped samples there because its buffer was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub cpu: u32,
    /// Samples (batches of records) dropped.
    pub batches: u64,
    /// Kernel time of the last record read from that CPU before the gap (0: none yet).
    pub after_ts: u64,
}

/// What one drain of every buffer found besides records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Gaps, in the order found.
    pub gaps: Vec<Gap>,
    /// Samples that did not decode.
    pub malformed: u64,
    /// When a buffer was left unfinished (the drain's budget ran out): the oldest of those
    /// buffers' last records read. Nothing older can still be waiting there.
    pub frontier: Option<u64>,
}

/// Every CPU's perf buffer. The perf array stays alive here: without it nothing arrives.
pub struct Rings {
    _array: MapData,
    rings: Vec<(u32, PerfRing)>,
    /// Per ring: the kernel time of the last record read from it.
    last_ts: Vec<u64>,
    /// Wakes `ready` when a buffer passes its watermark.
    notify: Arc<Notify>,
    watchers: Vec<JoinHandle<()>>,
}

/// The reader is woken when a quarter of a buffer, or 256 KiB, is waiting, whichever is less:
/// under a storm, a few thousand wake-ups a second, each taking hundreds of records, with room
/// for many times as many again while the reader gets going. Waking more often than a quarter
/// of a large buffer keeps fewer records waiting in the collector's memory.
fn watermark(pages: usize) -> u32 {
    (pages * page_size() / 4).min(256 * 1024) as u32
}

/// A ring's fd, watched for readiness while the ring itself stays with [`Rings`].
struct Watched(RawFd);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Rings {
    /// Opens one buffer of `pages` pages per online CPU and hands them to the programs.
    pub fn open(map: Map, pages: usize) -> Result<Self, TransportError> {
        let Map::PerfEventArray(array) = map else {
            return Err(TransportError::Map);
        };
        let cpus = aya::util::online_cpus().map_err(|(_, e)| TransportError::Cpus(e))?;
        log::debug!(
            "perf buffers: {pages} pages ({} KiB) on each of {} CPUs",
            pages * 4,
            cpus.len()
        );
        let notify = Arc::new(Notify::new());
        let mut rings = Vec::with_capacity(cpus.len());
        let mut watchers = Vec::with_capacity(cpus.len());
        for &cpu in &cpus {
            let ring = PerfRing::open(cpu, pages, watermark(pages)).map_err(|e| match e {
                OpenError::Event(source) => TransportError::Open { cpu, source },
                OpenError::Lock(source) => TransportError::Lock {
                    cpu,
                    kib: (pages + 1) * page_size() / 1024,
                    limit: memlock_limit(),
                    source,
                },
            })?;
            ring.attach(array.fd().as_fd(), cpu)
                .map_err(|source| TransportError::Attach { cpu, source })?;
            log::debug!("CPU {cpu}: perf buffer fd {}", ring.as_raw_fd());
            // SAFETY: the fd stays open while the watcher runs: `Drop` aborts the watchers
            // before the rings close.
            match unsafe {
                AsyncFd::register_with_interest(Watched(ring.as_raw_fd()), Interest::READABLE)
            } {
                Ok(fd) => {
                    let notify = Arc::clone(&notify);
                    watchers.push(tokio::spawn(async move {
                        while let Ok(mut guard) = fd.readable().await {
                            guard.clear_ready();
                            notify.notify_one();
                        }
                    }));
                }
                // Readiness cannot be watched: the caller's timer alone drains the ring.
                Err(e) => {
                    let e: std::io::Error = e.into();
                    log::debug!("CPU {cpu}: no watermark wake-ups: {e}");
                }
            }
            rings.push((cpu, ring));
        }
        Ok(Self {
            _array: array,
            last_ts: vec![0; rings.len()],
            rings,
            notify,
            watchers,
        })
    }

    pub fn cpus(&self) -> usize {
        self.rings.len()
    }

    /// The kernel time of the last record read from `cpu`'s buffer (0: none).
    pub fn last_read(&self, cpu: u32) -> u64 {
        self.rings
            .iter()
            .zip(&self.last_ts)
            .find(|((c, _), _)| *c == cpu)
            .map_or(0, |(_, &ts)| ts)
    }

    /// Completes when a buffer passed its watermark.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Reads up to `budget` bytes of every buffer, decoding each sample into `reorder`.
    pub fn drain(&mut self, reorder: &mut Reorder, budget: usize) -> Drained {
        let mut d = Drained::default();
        for ((cpu, ring), last) in self.rings.iter_mut().zip(&mut self.last_ts) {
            let left = ring.drain_some(budget, |item| match item {
                Item::Sample(bytes) => {
                    for record in records(bytes) {
                        match record.and_then(|bytes| reorder.decode(bytes)) {
                            Ok(record) => {
                                *last = record.ts_ns();
                                reorder.push(*cpu, record);
                            }
                            Err(_) => d.malformed += 1,
                        }
                    }
                }
                Item::Lost(count) => d.gaps.push(Gap {
                    cpu: *cpu,
                    batches: count,
                    after_ts: *last,
                }),
            });
            let last = *last;
            if left {
                d.frontier = Some(d.frontier.map_or(last, |f| f.min(last)));
            }
        }
        d
    }
}

/// The records each CPU has staged but not yet sent (the programs send a batch at a time):
/// when the oldest of them was stamped, and the program that sends a CPU's batch on demand.
pub struct Staged {
    map: PerCpuArray<MapData, u64>,
    flush: ProgramFd,
    /// The kernel refused to run the flush program: staged records then wait for their batch
    /// to fill, and ordering no longer waits for them (they may arrive late, and are counted).
    refused: bool,
}

impl Staged {
    pub fn new(map: Map, flush: ProgramFd) -> Result<Self, TransportError> {
        let map = PerCpuArray::try_from(map).map_err(|_| TransportError::StagedMap)?;
        Ok(Self {
            map,
            flush,
            refused: false,
        })
    }

    /// Has every CPU whose oldest staged record was stamped at or before `due` send its batch,
    /// and returns the oldest timestamp still staged: no CPU can deliver an older record later.
    pub fn settle(&mut self, due: u64) -> Option<u64> {
        if self.refused {
            return None;
        }
        let staged = self.read()?;
        let mut sent = false;
        let mut offline = Vec::new();
        for (cpu, &ts) in staged.iter().enumerate() {
            if ts != 0 && ts <= due {
                match self.flush_on(cpu as u32) {
                    Ok(()) => sent = true,
                    // A CPU taken offline since: its batch stays until it comes back, and
                    // ordering does not wait for it.
                    Err(e) if e.raw_os_error() == Some(libc::ENXIO) => offline.push(cpu),
                    Err(e) => {
                        crate::say!(
                            "nstrace: warning: the kernel would not run the program that sends a \
                             CPU's staged records ({e}): records from a quiet CPU may now arrive \
                             late (counted in the closing line)"
                        );
                        self.refused = true;
                        return None;
                    }
                }
            }
        }
        // A batch the kernel was staging into when asked is still there.
        let staged = if sent { self.read()? } else { staged };
        staged
            .iter()
            .enumerate()
            .filter(|&(cpu, &ts)| ts != 0 && !offline.contains(&cpu))
            .map(|(_, &ts)| ts)
            .min()
    }

    /// Each CPU's oldest staged timestamp; None when the map cannot be read.
    fn read(&self) -> Option<PerCpuValues<u64>> {
        self.map.get(&0, 0).ok()
    }

    /// Runs the flush program on `cpu` (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU: in an
    /// interrupt there, returning once it ran).
    fn flush_on(&self, cpu: u32) -> std::io::Result<()> {
        // SAFETY: all-zero is the kernel's default for every field of the union.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.test.prog_fd = self.flush.as_fd().as_raw_fd() as u32;
        attr.test.flags = BPF_F_TEST_RUN_ON_CPU;
        attr.test.cpu = cpu;
        // SAFETY: the test-run part of the attr, with no pointers.
        unsafe { bpf(bpf_cmd::BPF_PROG_TEST_RUN, &attr) }
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        for w in &self.watchers {
            w.abort();
        }
    }
}

/// Merges records from several CPUs into kernel-time order.
///
/// Each CPU's records arrive nearly sorted (a CPU's buffer is written in order, apart from a
/// program preempted between taking its timestamp and writing): they wait in one queue per CPU,
/// kept sorted, and leave by a merge of the queues' heads. Pushing and releasing cost O(CPUs),
/// not O(log of everything waiting).
///
/// The guarantee: records are released in timestamp order once they are older than the window;
/// a record that arrives after a newer one was released (its CPU's reader lagged by more than the
/// window) is still released, never dropped, and counted in `late`.
#[derive(Debug)]
pub struct Reorder {
    window_ns: u64,
    queues: Vec<VecDeque<Record>>,
    len: usize,
    released_ts: u64,
    pub late: u64,
    /// Released transitions' allocations, for the next ones decoded: the boxes themselves are
    /// what is kept.
    spare: Spare,
}

/// How many released transitions' allocations are kept for reuse (a drain's worth).
const SPARE: usize = 1024;

impl Reorder {
    pub fn new(window_ns: u64) -> Self {
        Self {
            window_ns,
            queues: Vec::new(),
            len: 0,
            released_ts: 0,
            late: 0,
            spare: Vec::new(),
        }
    }

    /// Decodes a sample, reusing a released transition's allocation.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Record, DecodeError> {
        decode_reusing(bytes, &mut self.spare)
    }

    pub fn push(&mut self, cpu: u32, record: Record) {
        let ts = record.ts_ns();
        if ts < self.released_ts {
            self.late += 1;
        }
        let cpu = cpu as usize;
        if self.queues.len() <= cpu {
            self.queues.resize_with(cpu + 1, VecDeque::new);
        }
        let queue = &mut self.queues[cpu];
        if queue.back().is_none_or(|last| last.ts_ns() <= ts) {
            queue.push_back(record);
        } else {
            // Behind its CPU's newest: after every record of its time already waiting.
            let at = queue.partition_point(|r| r.ts_ns() <= ts);
            queue.insert(at, record);
        }
        self.len += 1;
    }

    /// The queue whose head is the oldest record (the lowest CPU among equals).
    fn oldest(&self) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (cpu, queue) in self.queues.iter().enumerate() {
            if let Some(head) = queue.front() {
                let ts = head.ts_ns();
                if best.is_none_or(|(_, b)| ts < b) {
                    best = Some((cpu, ts));
                }
            }
        }
        best
    }

    /// Releases, in order, every record older than `now_ns - window`.
    pub fn release(&mut self, now_ns: u64, mut out: impl FnMut(&Record)) {
        let horizon = now_ns.saturating_sub(self.window_ns);
        while let Some((cpu, ts)) = self.oldest() {
            if ts > horizon {
                break;
            }
            if let Some(record) = self.queues[cpu].pop_front() {
                self.len -= 1;
                self.released_ts = self.released_ts.max(ts);
                out(&record);
                if let Record::Transition(t) = record
                    && self.spare.len() < SPARE
                {
                    self.spare.push(t);
                }
            }
        }
    }

    /// Releases everything, in order.
    pub fn drain(&mut self, out: impl FnMut(&Record)) {
        self.release(u64::MAX, out);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// How long a record waits for older ones from other CPUs.
    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, encode, tests::setns_record};

    fn at(ts: u64) -> Record {
        let mut raw = setns_record();
        raw.header.ts_ns = ts;
        decode(&encode(&raw)).unwrap()
    }

    fn released(r: &mut Reorder, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        r.release(now, |rec| out.push(rec.ts_ns()));
        out
    }

    #[test]
    fn two_cpus_interleave_by_time() {
        let mut r = Reorder::new(100);
        for ts in [10, 30, 50] {
            r.push(0, at(ts));
        }
        for ts in [20, 40, 60] {
            r.push(1, at(ts));
        }
        assert_eq!(released(&mut r, 145), [10, 20, 30, 40]);
        assert_eq!(r.len(), 2);
        let mut rest = Vec::new();
        r.drain(|rec| rest.push(rec.ts_ns()));
        assert_eq!(rest, [50, 60]);
        assert_eq!(r.late, 0);
        assert!(r.is_empty());
    }

    #[test]
    fn a_record_later_than_the_window_is_kept_and_counted() {
        let mut r = Reorder::new(10);
        r.push(0, at(100));
        assert_eq!(released(&mut r, 200), [100]);
        r.push(1, at(50));
        assert_eq!(r.late, 1);
        assert_eq!(released(&mut r, 200), [50]);
    }

    #[test]
    fn equal_timestamps_keep_arrival_order() {
        let mut r = Reorder::new(0);
        let mut a = setns_record();
        a.tid = 1;
        let mut b = setns_record();
        b.tid = 2;
        r.push(0, decode(&encode(&a)).unwrap());
        r.push(0, decode(&encode(&b)).unwrap());
        let mut tids = Vec::new();
        r.drain(|rec| tids.push(rec.tid()));
        assert_eq!(tids, [1, 2]);
    }

    #[test]
    fn a_cpu_out_of_its_own_order_is_sorted_in() {
        // A program preempted between its timestamp and its write: CPU 0 delivers 30 before 20.
        let mut r = Reorder::new(0);
        for ts in [10, 30, 20, 30, 25] {
            r.push(0, at(ts));
        }
        r.push(1, at(15));
        let mut rest = Vec::new();
        r.drain(|rec| rest.push(rec.ts_ns()));
        assert_eq!(rest, [10, 15, 20, 25, 30, 30]);
        assert_eq!(r.late, 0);
    }
}
