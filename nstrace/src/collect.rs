//! The live collector: transport → reorder → pipeline, until told to stop.
use std::{future::Future, io, time::Duration};

use aya::maps::PerCpuArray;
use aya_log::EbpfLogger;
use log::debug;
use nstrace_common::{EVENTS_MAP, FLUSH_PROGRAM, STAGED_MAP, STATS_MAP, stat};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    clock::monotonic_ns,
    load::Loaded,
    pipeline::Pipeline,
    transport::{Reorder, Rings, Staged},
};

#[derive(Debug, Clone)]
pub struct Options {
    /// Perf buffer size per CPU, in pages (a power of two).
    pub buffer_pages: usize,
    /// How long a record stamped before a drain may still be on its way into a buffer (an
    /// interrupt between a program's timestamp and its write; tracepoint programs run with
    /// preemption off, and staged records are waited for by their own timestamps): records wait
    /// that long. Under a storm, a millisecond of records is what the collector holds.
    pub reorder_window: Duration,
}

/// Each CPU's perf buffer by default, in pages: 64 MiB of kernel memory shared out over the
/// CPUs (not in nstrace's RSS), at least 4 MiB and at most 16 MiB each. On this 2-CPU bench
/// machine 16 MiB is about 50,000 setns records, 45 ms of the setns storm on that CPU: room for
/// the collector, or its whole virtual CPU, to be descheduled a while. A machine with many CPUs
/// has as many buffers for the collector's one thread to keep up with, and less storm per CPU.
pub fn default_buffer_pages(cpus: usize) -> usize {
    const TOTAL_PAGES: usize = (64 << 20) / 4096;
    let share = TOTAL_PAGES / cpus.max(1);
    // The largest power of two within the share.
    let pages = 1 << share.max(1).ilog2();
    pages.clamp(1024, 4096)
}

/// [`default_buffer_pages`] for this machine's online CPUs.
pub fn machine_buffer_pages() -> usize {
    default_buffer_pages(aya::util::online_cpus().map_or(1, |cpus| cpus.len()))
}

/// Read from the buffers in one pump at most: a storm that writes as fast as the collector
/// reads must not keep the loop from signals and timers.
const PUMP_BYTES: usize = 4 << 20;

/// Which pump: one of the trace's, or the last one, after the stop.
#[derive(Clone, Copy)]
enum Pump {
    /// Reads at most [`PUMP_BYTES`] of each buffer; staged records older than [`STAGE_AGE`]
    /// are sent.
    Running,
    /// Reads every buffer whole (what it held at the stop, at least), every staged record sent.
    Last { buffer_bytes: usize },
}

impl Default for Options {
    fn default() -> Self {
        Self {
            buffer_pages: machine_buffer_pages(),
            reorder_window: Duration::from_millis(1),
        }
    }
}

/// What a trace saw, for the closing line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Transitions shown (followed and passing the filter).
    pub transitions: u64,
    /// Records the kernel dropped because a perf buffer was full (the programs count every
    /// record of every batch the buffer had no room for).
    pub lost: u64,
    /// Records that did not decode.
    pub malformed: u64,
    /// Records that arrived after the reorder window had passed them (kept, out of order).
    pub late: u64,
    /// Kernel-side failures (see `nstrace_common::stat`).
    pub build_failed: u64,
    pub read_failed: u64,
    pub keep_failed: u64,
}

impl Summary {
    /// The closing line: every count that could mean something is missing is named.
    pub fn closing_line(&self) -> String {
        let mut line = format!(
            "nstrace: {} transitions shown, {} lost samples",
            self.transitions, self.lost
        );
        for (count, what) in [
            (self.malformed, "malformed samples"),
            (self.late, "records later than the reorder window"),
            (self.build_failed, "records the kernel could not build"),
            (self.read_failed, "namespace sets the kernel could not read"),
            (
                self.keep_failed,
                "task sets the kernel could not keep (those tasks' next `before` is inferred)",
            ),
        ] {
            if count > 0 {
                line.push_str(&format!(", {count} {what}"));
            }
        }
        line
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{0} is missing from the eBPF object")]
    Missing(&'static str),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The error names what was being written (stdout, the record file).
    #[error(transparent)]
    Output(#[from] io::Error),
}

/// Streams every record through `pipeline` until `stop` completes, then drains what is in
/// flight. `ready` is called once the buffers are open (from then on nothing is missed), before
/// any record is applied: the place to load the /proc snapshot and start a command.
pub async fn collect(
    loaded: &mut Loaded,
    options: &Options,
    pipeline: &mut Pipeline<'_>,
    stop: impl Future<Output = ()>,
    ready: impl FnOnce(usize, &mut Pipeline<'_>) -> io::Result<()>,
) -> Result<Summary, CollectError> {
    let map = loaded
        .ebpf
        .take_map(EVENTS_MAP)
        .ok_or(CollectError::Missing(EVENTS_MAP))?;
    let mut rings = Rings::open(map, options.buffer_pages)?;
    let mut staged = staged(loaded)?;
    let mut logger = match EbpfLogger::init(&mut loaded.ebpf) {
        // SAFETY: the logger owns its ring buffer's fd and is moved into the AsyncFd.
        Ok(logger) => unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }.ok(),
        Err(e) => {
            debug!("no eBPF logs: {e}");
            None
        }
    };
    ready(rings.cpus(), pipeline)?;
    pipeline.start()?;

    let window_ns = options.reorder_window.as_nanos() as u64;
    let mut reorder = Reorder::new(window_ns);
    let mut summary = Summary::default();
    let mut tick = tokio::time::interval(DRAIN_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut stopping_until: Option<u64> = None;

    loop {
        tokio::select! {
            () = rings.ready() => {
                pump(&mut rings, &mut staged, &mut reorder, &mut summary, pipeline, Pump::Running)?;
            }
            _ = tick.tick() => {
                let now = pump(
                    &mut rings,
                    &mut staged,
                    &mut reorder,
                    &mut summary,
                    pipeline,
                    Pump::Running,
                )?;
                pipeline.flush()?;
                if stopping_until.is_some_and(|until| now >= until) {
                    break;
                }
                if output_closed() {
                    pipeline.closed = true;
                    pipeline.sinks.clear();
                }
                if pipeline.closed && pipeline.sinks.is_empty() && stopping_until.is_none() {
                    eprintln!("nstrace: the output was closed; stopping");
                    stopping_until = Some(now + window_ns);
                }
            }
            () = &mut stop, if stopping_until.is_none() => {
                // One more window for programs still writing what they stamped before now.
                debug!("stopping: draining the buffers");
                stopping_until = Some(monotonic_ns() + window_ns);
            }
            guard = readable(&mut logger) => {
                if let Some(mut guard) = guard {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
    }
    debug!("stopped; releasing the last records");
    // Every CPU sends what it has staged, however new, and every buffer is read whole.
    pump(
        &mut rings,
        &mut staged,
        &mut reorder,
        &mut summary,
        pipeline,
        Pump::Last {
            buffer_bytes: options.buffer_pages * 4096,
        },
    )?;
    let mut result = Ok(());
    reorder.drain(|record| {
        if result.is_ok() {
            result = pipeline.feed(record, true);
        }
    });
    result?;
    pipeline.flush()?;
    summary.transitions = pipeline.shown;
    summary.late = reorder.late;
    drop(rings);
    kernel_stats(loaded, &mut summary);
    Ok(summary)
}

/// How often every buffer is drained when none passes its watermark: the latency of a quiet
/// system's records.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(10);

/// How much of each buffer a pump reads before feeding the pipeline what it made safe to order:
/// a full 4 MiB buffer is not held in memory all at once.
const DRAIN_CHUNK: usize = 256 * 1024;

/// How long a CPU's staged records may wait before the collector has it send them: the
/// latency a quiet CPU adds, and how far behind the newest records the ordering may be held.
const STAGE_AGE: u64 = 1_000_000;

/// The kernel's staged batches, and the program that sends one.
fn staged(loaded: &mut Loaded) -> Result<Staged, CollectError> {
    let map = loaded
        .ebpf
        .take_map(STAGED_MAP)
        .ok_or(CollectError::Missing(STAGED_MAP))?;
    let flush = loaded
        .ebpf
        .program(FLUSH_PROGRAM)
        .and_then(|p| p.fd().ok())
        .and_then(|fd| fd.try_clone().ok())
        .ok_or(CollectError::Missing(FLUSH_PROGRAM))?;
    Ok(Staged::new(map, flush)?)
}

/// Has every CPU send the records it staged more than `age` ns ago, then drains every buffer,
/// a chunk at a time, feeding the pipeline after each chunk every record that is safe to order.
/// Returns the drain's start time.
fn pump(
    rings: &mut Rings,
    staged: &mut Staged,
    reorder: &mut Reorder,
    summary: &mut Summary,
    pipeline: &mut Pipeline<'_>,
    which: Pump,
) -> Result<u64, CollectError> {
    let (age, bytes) = match which {
        Pump::Running => (STAGE_AGE, PUMP_BYTES),
        Pump::Last { buffer_bytes } => (0, buffer_bytes + DRAIN_CHUNK),
    };
    let mut now = 0;
    for _ in 0..bytes.div_ceil(DRAIN_CHUNK) {
        // Taken before each chunk: every record stamped earlier is in a buffer by now (see
        // transport), or still staged, no older than the oldest staged. Taken once a pump, a
        // pump that caught up with a storm would keep every record it read after that.
        now = monotonic_ns();
        let safe = staged
            .settle(now.saturating_sub(age))
            .map_or(now, |oldest| oldest.min(now));
        let frontier = drain_chunk(rings, reorder, summary);
        // A buffer left unfinished may still hold records as old as its last one read.
        release(reorder, frontier.map_or(safe, |f| f.min(safe)), pipeline)?;
        if frontier.is_none() {
            break;
        }
    }
    Ok(now)
}

/// One chunk of every buffer into `reorder`, reporting losses; returns the frontier of the
/// buffers left unfinished.
fn drain_chunk(rings: &mut Rings, reorder: &mut Reorder, summary: &mut Summary) -> Option<u64> {
    let drained = rings.drain(reorder, DRAIN_CHUNK);
    if drained.lost > 0 {
        summary.lost += drained.lost;
        eprintln!(
            "nstrace: lost {} batches of records on CPU {} (its perf buffer was full; \
             --buffer-pages makes it larger); the closing line counts the records",
            drained.lost, drained.lost_cpu
        );
    }
    if drained.malformed > 0 {
        summary.malformed += drained.malformed;
        eprintln!("nstrace: {} malformed samples", drained.malformed);
    }
    drained.frontier
}

async fn readable<T: std::os::fd::AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
) -> Option<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>> {
    match fd {
        Some(fd) => fd.readable_mut().await.ok(),
        None => std::future::pending().await,
    }
}

/// Whether stdout is a pipe or socket whose reader has gone (`nstrace | head`): noticed at
/// once, rather than at the next line written.
fn output_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout does not block.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

fn release(reorder: &mut Reorder, now: u64, pipeline: &mut Pipeline<'_>) -> io::Result<()> {
    let mut result = Ok(());
    reorder.release(now, |record| {
        if result.is_ok() {
            result = pipeline.feed(record, true);
        }
    });
    result
}

fn kernel_stats(loaded: &Loaded, summary: &mut Summary) {
    let Some(map) = loaded.ebpf.map(STATS_MAP) else {
        return;
    };
    let Ok(stats) = PerCpuArray::<_, u64>::try_from(map) else {
        return;
    };
    let sum = |index: u32| {
        stats
            .get(&index, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    };
    summary.build_failed = sum(stat::BUILD_FAILED);
    summary.read_failed = sum(stat::READ_FAILED);
    summary.keep_failed = sum(stat::KEEP_FAILED);
    // The perf buffer counts lost batches, the programs the records in them.
    summary.lost = summary.lost.max(sum(stat::LOST));
}

#[cfg(test)]
mod tests {
    use super::default_buffer_pages;

    #[test]
    fn buffers_share_out_64_mib_between_4_and_16_mib_a_cpu() {
        for (cpus, pages) in [
            (0, 4096),
            (1, 4096),
            (2, 4096),
            (4, 4096),
            (6, 2048),
            (8, 2048),
            (12, 1024),
            (16, 1024),
            (256, 1024),
        ] {
            assert_eq!(default_buffer_pages(cpus), pages, "{cpus} CPUs");
            assert!(pages.is_power_of_two());
        }
    }
}
