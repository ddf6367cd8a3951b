//! The live collector: transport → reorder → pipeline, until told to stop.
use std::{collections::VecDeque, future::Future, io, time::Duration};

use aya::maps::{MapData, PerCpuArray};
use aya_log::EbpfLogger;
use log::debug;
use nstrace_common::{EVENTS_MAP, FLUSH_PROGRAM, STAGED_MAP, STATS_MAP, stat};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    clock::monotonic_ns,
    event::Loss,
    load::Loaded,
    pipeline::Pipeline,
    proc,
    timeline::ProcEntry,
    transport::{Gap, Reorder, Rings, Staged},
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
    /// Read /proc again after lost records, to heal the timeline. Not when nstrace runs in a
    /// nested pid namespace: its /proc names tasks by other pids than the records.
    pub resync_from_proc: bool,
    /// Stop when standard output's reader goes away (`nstrace | head`). `run` and `record` go
    /// on to their end: their command's, or a signal.
    pub stop_on_closed_output: bool,
}

/// Each CPU's perf buffer by default, in pages: 64 MiB of kernel memory shared out over the
/// CPUs (not in nstrace's RSS), at least 4 MiB and at most 16 MiB each. 16 MiB holds tens of
/// milliseconds of a setns storm on one CPU (docs/bench.md): room for the collector, or its
/// whole virtual CPU, to be descheduled a while. A machine with many CPUs has as many buffers
/// for the collector's one thread to keep up with, and less storm per CPU.
pub fn default_buffer_pages(cpus: usize) -> usize {
    let page = crate::ring::page_size();
    let share = (64 << 20) / page / cpus.max(1);
    // The largest power of two within the share.
    let pages = 1 << share.max(1).ilog2();
    pages.clamp((4 << 20) / page, (16 << 20) / page)
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
            resync_from_proc: true,
            stop_on_closed_output: true,
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
    let rings = Rings::open(map, options.buffer_pages)?;
    let staged = staged(loaded)?;
    let mut logger = match EbpfLogger::init(&mut loaded.ebpf) {
        // SAFETY: the logger owns its ring buffer's fd and is moved into the AsyncFd.
        Ok(logger) => unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }.ok(),
        Err(e) => {
            debug!("no eBPF logs: {e}");
            None
        }
    };
    // Every buffer is open: what the programs failed to send before now (a CPU whose buffer
    // was not open yet) was never part of the trace, which starts with the snapshot below.
    let lost = LostCounter::new(loaded);
    ready(rings.cpus(), pipeline)?;
    pipeline.start()?;

    let window_ns = options.reorder_window.as_nanos() as u64;
    let mut c = Collector {
        rings,
        staged,
        reorder: Reorder::new(window_ns),
        summary: Summary::default(),
        lost,
        pending: VecDeque::new(),
        resync_queued: false,
        reading: None,
        last_resync: None,
        resync_from_proc: options.resync_from_proc,
    };
    let mut tick = tokio::time::interval(DRAIN_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut stopping_until: Option<u64> = None;

    loop {
        tokio::select! {
            () = c.rings.ready() => {
                c.pump(pipeline, Pump::Running)?;
            }
            _ = tick.tick() => {
                let now = c.pump(pipeline, Pump::Running)?;
                c.schedule_resync(pipeline, false);
                // Only what the reordering has let through is that old.
                pipeline.tick(now.saturating_sub(window_ns))?;
                pipeline.flush()?;
                if stopping_until.is_some_and(|until| now >= until) {
                    break;
                }
                if output_closed() {
                    pipeline.closed = true;
                    pipeline.sinks.clear();
                }
                if pipeline.closed
                    && pipeline.sinks.is_empty()
                    && options.stop_on_closed_output
                    && stopping_until.is_none()
                {
                    crate::say!("nstrace: the output was closed; stopping");
                    stopping_until = Some(now + window_ns);
                }
            }
            () = &mut stop, if stopping_until.is_none() => {
                // One more window for programs still writing what they stamped before now.
                debug!("stopping: draining the buffers");
                stopping_until = Some(monotonic_ns() + window_ns);
            }
            reading = read_done(&mut c.reading) => {
                c.reading = None;
                match reading {
                    Ok(reading) if !reading.entries.is_empty() => c.queue(Pending::Resync(reading)),
                    // /proc could not be read: tried again at the next drain.
                    _ => c.resync_queued = false,
                }
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
    c.pump(
        pipeline,
        Pump::Last {
            buffer_bytes: options.buffer_pages * crate::ring::page_size(),
        },
    )?;
    c.finish(pipeline)?;
    let mut summary = c.summary;
    summary.transitions = pipeline.shown;
    summary.late = c.reorder.late;
    drop(c.rings);
    drop(c.lost);
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

/// /proc is read again at most this often after losses: a lossy storm loses something every
/// drain, and a reading of /proc costs milliseconds.
const RESYNC_PERIOD: Duration = Duration::from_secs(1);

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

/// What waits to enter the pipeline at its place in kernel time, beside the records.
enum Pending {
    /// A gap in a CPU's stream, after the last record read from it before the gap.
    Loss(Loss),
    /// /proc as read again after lost records (see [`Reading`]).
    Resync(Reading),
}

/// /proc as read again after lost records: from `read_from` until `ts` (kernel times).
struct Reading {
    read_from: u64,
    ts: u64,
    entries: Vec<ProcEntry>,
}

impl Reading {
    /// Reads /proc (milliseconds to tens of them: off the collector's thread when live).
    fn now() -> Self {
        let read_from = monotonic_ns();
        let entries = proc::snapshot();
        debug!(
            "read /proc again after lost records: {} tasks",
            entries.len()
        );
        Self {
            read_from,
            ts: monotonic_ns(),
            entries,
        }
    }
}

impl Pending {
    fn ts_ns(&self) -> u64 {
        match self {
            Pending::Loss(loss) => loss.ts_ns,
            Pending::Resync(r) => r.ts,
        }
    }

    fn apply(self, pipeline: &mut Pipeline<'_>) -> io::Result<()> {
        match self {
            Pending::Loss(loss) => pipeline.lost(&loss),
            Pending::Resync(r) => pipeline.resynced(r.read_from, r.ts, &r.entries),
        }
    }
}

/// The programs' count of records they could not send, per CPU, and how much of it has been
/// reported: each gap is told with the records lost on its CPU since the last one.
struct LostCounter<'a> {
    map: Option<PerCpuArray<&'a MapData, u64>>,
    reported: Vec<u64>,
}

impl<'a> LostCounter<'a> {
    /// Starts counting from now.
    fn new(loaded: &'a Loaded) -> Self {
        let map = loaded
            .ebpf
            .map(STATS_MAP)
            .and_then(|map| PerCpuArray::try_from(map).ok());
        let mut counter = Self {
            map,
            reported: Vec::new(),
        };
        counter.reported = counter.read();
        counter
    }

    /// Each CPU's count now (empty when the map cannot be read).
    fn read(&self) -> Vec<u64> {
        self.map
            .as_ref()
            .and_then(|m| m.get(&stat::LOST, 0).ok())
            .map(|values| values.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Per CPU, the records lost and not yet reported.
    fn take(&mut self) -> Vec<(u32, u64)> {
        let now = self.read();
        let mut out = Vec::new();
        for (cpu, &count) in now.iter().enumerate() {
            let before = self.reported.get(cpu).copied().unwrap_or(0);
            if count > before {
                out.push((cpu as u32, count - before));
            }
        }
        if !now.is_empty() {
            self.reported = now;
        }
        out
    }
}

/// The losses one drain's gaps make: one per CPU, its gaps together, placed after the first. Each
/// has the records the programs counted lost on that CPU since the last loss reported there
/// (`counted`): 0 when they were all told with that one, since the programs count a batch the
/// moment it finds no room while perf reports the gap only at its next write, so the sum is
/// exact. Without the programs' count, each batch counts one record.
fn losses_of(gaps: &[Gap], counted: Option<&[(u32, u64)]>, now: u64) -> Vec<Loss> {
    let mut out: Vec<Loss> = Vec::new();
    for gap in gaps {
        if let Some(loss) = out.iter_mut().find(|l| l.cpu == gap.cpu) {
            loss.batches += gap.batches;
            continue;
        }
        out.push(Loss {
            ts_ns: if gap.after_ts == 0 { now } else { gap.after_ts },
            noticed_ns: now,
            cpu: gap.cpu,
            records: 0,
            batches: gap.batches,
        });
    }
    for loss in &mut out {
        loss.records = match counted {
            Some(counted) => counted
                .iter()
                .find(|(cpu, _)| *cpu == loss.cpu)
                .map_or(0, |&(_, n)| n),
            None => loss.batches,
        };
    }
    out
}

/// The live loop's state between pumps.
struct Collector<'a> {
    rings: Rings,
    staged: Staged,
    reorder: Reorder,
    summary: Summary,
    lost: LostCounter<'a>,
    /// Losses and re-readings of /proc, in kernel-time order, waiting for the records before
    /// them to be released.
    pending: VecDeque<Pending>,
    /// A re-reading of /proc is under way or among `pending`.
    resync_queued: bool,
    /// The one under way, on tokio's blocking threads.
    reading: Option<tokio::task::JoinHandle<Reading>>,
    last_resync: Option<std::time::Instant>,
    resync_from_proc: bool,
}

impl Collector<'_> {
    /// Has every CPU send the records it staged more than `age` ns ago, then drains every
    /// buffer, a chunk at a time, feeding the pipeline after each chunk every record that is
    /// safe to order. Returns the drain's start time.
    fn pump(&mut self, pipeline: &mut Pipeline<'_>, which: Pump) -> Result<u64, CollectError> {
        let (age, bytes) = match which {
            Pump::Running => (STAGE_AGE, PUMP_BYTES),
            Pump::Last { buffer_bytes } => (0, buffer_bytes + DRAIN_CHUNK),
        };
        let mut now = 0;
        for _ in 0..bytes.div_ceil(DRAIN_CHUNK) {
            // Taken before each chunk: every record stamped earlier is in a buffer by now (see
            // transport), or still staged, no older than the oldest staged. Taken once a pump,
            // a pump that caught up with a storm would keep every record it read after that.
            now = monotonic_ns();
            let safe = self
                .staged
                .settle(now.saturating_sub(age))
                .map_or(now, |oldest| oldest.min(now));
            let frontier = self.drain_chunk(now);
            // A buffer left unfinished may still hold records as old as its last one read.
            self.release(frontier.map_or(safe, |f| f.min(safe)), pipeline)?;
            if frontier.is_none() {
                break;
            }
        }
        Ok(now)
    }

    /// One chunk of every buffer into the reorder, its gaps among the pending; returns the
    /// frontier of the buffers left unfinished.
    fn drain_chunk(&mut self, now: u64) -> Option<u64> {
        let drained = self.rings.drain(&mut self.reorder, DRAIN_CHUNK);
        if !drained.gaps.is_empty() {
            let counted = self.lost.take();
            let readable = self.lost.map.is_some();
            for loss in losses_of(&drained.gaps, readable.then_some(&counted[..]), now) {
                self.lose(loss);
            }
            // Counted on a CPU whose gap is not reported yet: told with its next one, or at
            // the end.
            for (cpu, n) in counted {
                if !drained.gaps.iter().any(|g| g.cpu == cpu) {
                    self.lost.reported[cpu as usize] -= n;
                }
            }
        }
        if drained.malformed > 0 {
            self.summary.malformed += drained.malformed;
            crate::say!("nstrace: {} malformed samples", drained.malformed);
        }
        drained.frontier
    }

    /// A gap becomes a loss: said on stderr at once, and queued for its place in the stream.
    fn lose(&mut self, loss: Loss) {
        self.summary.lost += loss.records;
        crate::say!(
            "nstrace: {}; the output and the record say where",
            crate::output::text::loss_line(&loss)
                .trim_start_matches("!! ")
                .replacen("LOST", "lost", 1)
        );
        self.queue(Pending::Loss(loss));
    }

    fn queue(&mut self, pending: Pending) {
        let ts = pending.ts_ns();
        let at = self.pending.partition_point(|p| p.ts_ns() <= ts);
        self.pending.insert(at, pending);
    }

    /// Feeds the pipeline every record older than `now` less the window, in order, with what
    /// is pending at its place.
    fn release(&mut self, now: u64, pipeline: &mut Pipeline<'_>) -> io::Result<()> {
        let Self {
            reorder,
            pending,
            resync_queued,
            ..
        } = self;
        let mut result = Ok(());
        let mut oldest = None;
        let mut feed_pending = |pipeline: &mut Pipeline<'_>, before: u64| -> io::Result<()> {
            while pending.front().is_some_and(|p| p.ts_ns() < before) {
                if let Some(p) = pending.pop_front() {
                    if matches!(p, Pending::Resync(..)) {
                        *resync_queued = false;
                    }
                    p.apply(pipeline)?;
                }
            }
            Ok(())
        };
        reorder.release(now, |record| {
            oldest.get_or_insert(record.ts_ns());
            if result.is_ok() {
                result = feed_pending(pipeline, record.ts_ns())
                    .and_then(|()| pipeline.feed(record, true));
            }
        });
        result?;
        if let Some(oldest) = oldest {
            pipeline.reached_outputs(monotonic_ns().saturating_sub(oldest));
        }
        feed_pending(
            pipeline,
            now.saturating_sub(reorder.window_ns()).saturating_add(1),
        )
    }

    /// After lost records, reads /proc again (at most every [`RESYNC_PERIOD`]) on a blocking
    /// thread; what it showed is queued at its place in time when it is done. At the stop
    /// (`now`), read here and queued at once.
    fn schedule_resync(&mut self, pipeline: &Pipeline<'_>, now: bool) {
        if !self.resync_from_proc || !pipeline.resync_due {
            return;
        }
        if now {
            let reading = Reading::now();
            if !reading.entries.is_empty() {
                self.queue(Pending::Resync(reading));
            }
            return;
        }
        if self.resync_queued
            || self
                .last_resync
                .is_some_and(|at| at.elapsed() < RESYNC_PERIOD)
        {
            return;
        }
        self.last_resync = Some(std::time::Instant::now());
        self.resync_queued = true;
        self.reading = Some(tokio::task::spawn_blocking(Reading::now));
    }

    /// At the stop: every record and pending entry in order, the losses the programs counted
    /// that no gap reported yet, and a last reading of /proc if records were lost since the
    /// last one.
    fn finish(&mut self, pipeline: &mut Pipeline<'_>) -> io::Result<()> {
        let now = monotonic_ns();
        for (cpu, records) in self.lost.take() {
            let last = self.rings.last_read(cpu);
            self.lose(Loss {
                ts_ns: if last == 0 { now } else { last },
                noticed_ns: now,
                cpu,
                records,
                batches: 0,
            });
        }
        self.release(u64::MAX, pipeline)?;
        self.schedule_resync(pipeline, true);
        self.release(u64::MAX, pipeline)?;
        pipeline.finish_names(crate::pipeline::NAME_WAIT)?;
        pipeline.flush()
    }
}
/// The reading of /proc under way, when it is done.
async fn read_done(
    reading: &mut Option<tokio::task::JoinHandle<Reading>>,
) -> Result<Reading, tokio::task::JoinError> {
    match reading {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
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
}

#[cfg(test)]
mod tests {
    use super::{Gap, default_buffer_pages, losses_of};

    #[test]
    fn two_gaps_on_one_cpu_in_a_drain_are_one_loss_with_its_count_once() {
        let gap = |cpu, batches, after_ts| Gap {
            cpu,
            batches,
            after_ts,
        };
        let losses = losses_of(
            &[gap(0, 3, 100), gap(1, 1, 0), gap(0, 2, 150)],
            Some(&[(0, 40), (1, 5), (2, 9)]),
            500,
        );
        let got: Vec<_> = losses
            .iter()
            .map(|l| (l.cpu, l.ts_ns, l.records, l.batches, l.noticed_ns))
            .collect();
        assert_eq!(got, [(0, 100, 40, 5, 500), (1, 500, 5, 1, 500)]);
        // Records already told with an earlier loss: 0 here, so that the sum stays exact.
        let later = losses_of(&[gap(0, 2, 200)], Some(&[]), 600);
        assert_eq!((later[0].records, later[0].batches), (0, 2));
        // No count from the programs: a batch is at least a record.
        let blind = losses_of(&[gap(0, 2, 200)], None, 600);
        assert_eq!(blind[0].records, 2);
    }

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
