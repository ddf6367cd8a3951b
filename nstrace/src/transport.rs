//! Per-CPU perf buffers to one time-ordered stream.
//!
//! One tokio task per CPU drains its buffer every few milliseconds, decodes every sample in one
//! pass and sends the batch on. Polling on a timer instead of waiting for readiness matters:
//! aya opens each buffer with a wakeup per sample, and under a storm of 100k+ samples a second
//! a reader woken for each one spends its time switching context while the buffer overflows. The collector merges the batches by kernel time in a
//! [`Reorder`] window. Lost samples (the kernel's PERF_RECORD_LOST) and undecodable ones travel
//! in the same batches, so they are counted where they happened.
use std::{cmp::Reverse, collections::BinaryHeap, os::fd::AsRawFd};

use std::time::Duration;

use aya::maps::{
    MapData, PerfEventArray,
    perf::{PerfEvent, PerfEventArrayBuffer},
};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::event::{Record, decode};

/// What one CPU's buffer held at one wake-up.
#[derive(Debug, Default)]
pub struct Batch {
    pub cpu: u32,
    pub records: Vec<Record>,
    /// Samples the kernel dropped because this CPU's buffer was full.
    pub lost: u64,
    /// Samples that did not decode.
    pub malformed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("listing the online CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("the events map is missing from the eBPF object: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("opening the perf buffer of CPU {cpu}: {source}")]
    Open {
        cpu: u32,
        source: aya::maps::perf::PerfBufferError,
    },
}

/// The per-CPU readers. The perf array stays alive here: without it nothing arrives.
pub struct Readers {
    _array: PerfEventArray<MapData>,
    pub tasks: Vec<JoinHandle<()>>,
    pub cpus: usize,
}

/// Opens one buffer of `pages` pages per online CPU and starts its reader.
pub fn spawn_readers(
    map: aya::maps::Map,
    pages: usize,
    tx: mpsc::Sender<Batch>,
) -> Result<Readers, TransportError> {
    let mut array = PerfEventArray::try_from(map)?;
    let cpus = aya::util::online_cpus().map_err(|(_, e)| TransportError::Cpus(e))?;
    let mut tasks = Vec::with_capacity(cpus.len());
    for &cpu in &cpus {
        let buf = array
            .open(cpu, Some(pages))
            .map_err(|source| TransportError::Open { cpu, source })?;
        let tx = tx.clone();
        log::debug!("CPU {cpu}: perf buffer fd {}", buf.as_raw_fd());
        tasks.push(tokio::spawn(read_cpu(cpu, buf, tx)));
    }
    Ok(Readers {
        _array: array,
        tasks,
        cpus: cpus.len(),
    })
}

/// How often each CPU's buffer is drained. A buffer of the default 256 pages holds some 2,000
/// transitions: 5 ms of the heaviest storm measured here.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(2);

async fn read_cpu(cpu: u32, mut buf: PerfEventArrayBuffer<MapData>, tx: mpsc::Sender<Batch>) {
    let mut wrapped = Vec::new();
    let mut tick = tokio::time::interval(DRAIN_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !buf.readable() {
            continue;
        }
        let mut batch = Batch {
            cpu,
            ..Batch::default()
        };
        buf.for_each(|event| match event {
            PerfEvent::Sample { head, tail } => {
                let decoded = if tail.is_empty() {
                    decode(head)
                } else {
                    // The sample wraps around the end of the ring.
                    wrapped.clear();
                    wrapped.extend_from_slice(head);
                    wrapped.extend_from_slice(tail);
                    decode(&wrapped)
                };
                match decoded {
                    Ok(record) => batch.records.push(record),
                    Err(_) => batch.malformed += 1,
                }
            }
            PerfEvent::Lost { count } => batch.lost += count,
        });
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}

/// Merges records from several CPUs into kernel-time order.
///
/// The guarantee: records are released in timestamp order once they are older than the window;
/// a record that arrives after a newer one was released (its CPU's reader lagged by more than the
/// window) is still released, never dropped, and counted in `late`.
#[derive(Debug)]
pub struct Reorder {
    window_ns: u64,
    heap: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    released_ts: u64,
    pub late: u64,
}

/// A record waiting in the window, ordered by (time, arrival).
#[derive(Debug)]
struct Queued {
    ts: u64,
    seq: u64,
    record: Record,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(other.ts, other.seq))
    }
}

impl Reorder {
    pub fn new(window_ns: u64) -> Self {
        Self {
            window_ns,
            heap: BinaryHeap::new(),
            seq: 0,
            released_ts: 0,
            late: 0,
        }
    }

    pub fn push(&mut self, record: Record) {
        let ts = record.ts_ns();
        if ts < self.released_ts {
            self.late += 1;
        }
        self.seq += 1;
        self.heap.push(Reverse(Queued {
            ts,
            seq: self.seq,
            record,
        }));
    }

    /// Releases, in order, every record older than `now_ns - window`.
    pub fn release(&mut self, now_ns: u64, mut out: impl FnMut(Record)) {
        let horizon = now_ns.saturating_sub(self.window_ns);
        while self.heap.peek().is_some_and(|q| q.0.ts <= horizon) {
            if let Some(Reverse(q)) = self.heap.pop() {
                self.released_ts = self.released_ts.max(q.ts);
                out(q.record);
            }
        }
    }

    /// Releases everything, in order.
    pub fn drain(&mut self, out: impl FnMut(Record)) {
        self.release(u64::MAX, out);
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
            r.push(at(ts));
        }
        for ts in [20, 40, 60] {
            r.push(at(ts));
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
        r.push(at(100));
        assert_eq!(released(&mut r, 200), [100]);
        r.push(at(50));
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
        r.push(decode(&encode(&a)).unwrap());
        r.push(decode(&encode(&b)).unwrap());
        let mut tids = Vec::new();
        r.drain(|rec| tids.push(rec.tid()));
        assert_eq!(tids, [1, 2]);
    }
}
