//! `cargo xtask bench`: nstrace's cost, measured against the untraced workload.
//!
//! For each storm of `nsstorm`, untraced and traced runs alternate, several rounds: untraced,
//! nstrace, untraced, bpftrace (when installed, on the same hooks), untraced, ... Each traced
//! run is compared with the mean of the untraced runs either side of it (this machine is noisy:
//! only ratios from one invocation, taken close together, are honest). Per storm: the median
//! ratio with a 95% confidence interval and the range, a no-tracer control from the untraced
//! runs alone, nstrace's own CPU use, events seen against operations done and lost samples;
//! then nstrace's start-up time (launch until attached) and peak RSS, and the replay
//! throughput of a recording through `nstrace report`. One table on stdout, saying which
//! targets are met, and the same as JSON in target/bench.json.
use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{run_cmd, step};

struct Tracer {
    child: Child,
    startup: Duration,
    /// The lines of the stream it says it is attached on.
    lines: std::sync::mpsc::Receiver<String>,
    kind: Kind,
}

/// Which tracer runs: each says it is attached on its own stream (nstrace on stderr, its stdout
/// being the trace, discarded here; bpftrace on stdout, its printf) and stops its own way.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Nstrace,
    Bpftrace,
}

/// Starts a tracer and waits until it says it is attached.
fn start(cmd: &mut Command, ready: &str, kind: Kind) -> Result<Tracer> {
    let began = Instant::now();
    let (out, err) = match kind {
        Kind::Nstrace => (Stdio::null(), Stdio::piped()),
        Kind::Bpftrace => (Stdio::piped(), Stdio::null()),
    };
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stream: Box<dyn std::io::Read + Send> = match kind {
        Kind::Nstrace => Box::new(child.stderr.take().context("stderr")?),
        Kind::Bpftrace => Box::new(child.stdout.take().context("stdout")?),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(&ready) {
                let _ = ready_tx.send(());
            }
            let _ = tx.send(line);
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        bail!("{cmd:?} did not attach within 60 s");
    }
    Ok(Tracer {
        child,
        startup: began.elapsed(),
        lines: rx,
        kind,
    })
}

/// A live process's /proc/PID/status (VmHWM: peak memory; VmRSS: now, in KiB).
fn status(pid: u32) -> Option<procfs::process::Status> {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .ok()
}

/// Samples a process's resident memory every 50 ms until told to stop; returns the largest.
fn sample_rss(pid: u32) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<u64>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut max = 0;
        loop {
            max = max.max(status(pid).and_then(|s| s.vmrss).unwrap_or(0));
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return max;
            }
        }
    });
    (tx, handle)
}

/// Stops a tracer with SIGTERM; returns the lines of the stream it was read on. nstrace must
/// end within 30 s. bpftrace 0.17 can miss a SIGTERM that lands while it attaches, so it is
/// sent one every second (SIGKILL after 30 s).
fn stop(mut t: Tracer) -> Result<Vec<String>> {
    let kind = t.kind;
    let pid = t.child.id() as i32;
    let began = Instant::now();
    let mut sent = None::<Instant>;
    loop {
        if t.child.try_wait()?.is_some() {
            break;
        }
        if began.elapsed() > Duration::from_secs(30) {
            let _ = t.child.kill();
            let _ = t.child.wait();
            if kind == Kind::Nstrace {
                bail!("nstrace did not stop within 30 s of SIGTERM");
            }
            break;
        }
        let resend =
            kind == Kind::Bpftrace && sent.is_some_and(|s| s.elapsed() >= Duration::from_secs(1));
        if sent.is_none() || resend {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            sent = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    Ok(t.lines.try_iter().collect())
}

/// nstrace's closing line: (transitions shown, lost samples).
fn closing(lines: &[String]) -> (u64, u64) {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains(" transitions shown, "))
        .cloned()
        .unwrap_or_default();
    let num = |after: &str| -> u64 {
        line.split(after)
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num(" transitions shown"), num(" lost samples"))
}

/// Runs `nsstorm ARGS`; its one line of JSON on stdout.
fn nsstorm(bin: &Path, args: &[&str]) -> Result<String> {
    nsstorm_on(bin, args, None)
}

/// Runs `nsstorm ARGS`, on CPU `cpu` only when given; its one line of JSON on stdout.
fn nsstorm_on(bin: &Path, args: &[&str], cpu: Option<usize>) -> Result<String> {
    let mut cmd = Command::new(bin.join("nsstorm"));
    cmd.args(args);
    if let Some(cpu) = cpu {
        // SAFETY: between fork and exec this only calls sched_setaffinity on the child itself.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
    let out = cmd
        .output()
        .with_context(|| format!("running nsstorm {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "nsstorm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A number field of nsstorm's JSON line.
fn field(text: &str, name: &str) -> Option<f64> {
    text.split(&format!("\"{name}\":"))
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size is that of the set passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads within the set.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The CPU time a process (all its threads) has used, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map_or(0, |s| s.utime + s.stime)
}

/// The middle of the values (the mean of the middle two of an even count); 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A run's rate as a ratio to the mean of the untraced runs either side of it.
fn bracketed(rate: f64, before: f64, after: f64) -> f64 {
    rate / ((before + after) / 2.0).max(1.0)
}

/// The harness's own noise: each untraced run between two others, as a ratio to their mean,
/// as though it had been a traced run. A tracer that cost nothing would score these.
fn control_ratios(untraced: &[f64]) -> Vec<f64> {
    untraced
        .windows(3)
        .map(|w| bracketed(w[1], w[0], w[2]))
        .collect()
}

/// A distribution-free 95% confidence interval for the median of sorted values: the order
/// statistics j and n-j+1 for the largest j with 2·P(Bin(n, 1/2) ≤ j-1) ≤ 0.05. `None` below
/// six values, where no such j exists.
fn median_ci(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    let mut below = 0.0; // P(X ≤ i-1)
    let mut p = 0.5f64.powi(n as i32); // P(X = i)
    let mut j = 0;
    for i in 0..n {
        if 2.0 * (below + p) > 0.05 {
            break;
        }
        below += p;
        j = i + 1;
        p *= (n - i) as f64 / (i + 1) as f64;
    }
    (j >= 1).then(|| (sorted[j - 1], sorted[n - j]))
}

/// Resamples drawn by [`median_ci_drift`]: enough for its 2.5% and 97.5% points to settle.
const RESAMPLES: usize = 4000;

/// A 95% confidence interval for the median of rounds run one after another, from a
/// moving-block bootstrap (Künsch 1989): each resample strings together runs of ⌈n^⅓⌉
/// consecutive rounds, so it keeps the correlation between rounds a few apart (this machine's
/// speed carries over from one round to the next). The binomial interval ([`median_ci`]) takes
/// the rounds as independent and comes out too narrow when they are not. A drift over the whole
/// run is beyond any interval from the run itself. The seed is fixed: the same rounds give the
/// same interval. `None` below six rounds.
fn median_ci_drift(in_order: &[f64]) -> Option<(f64, f64)> {
    let n = in_order.len();
    if n < 6 {
        return None;
    }
    let block = block_len(n);
    let mut rng = fastrand::Rng::with_seed(0x6e73_7472_6163_6521);
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut sample = Vec::with_capacity(n + block);
    for _ in 0..RESAMPLES {
        sample.clear();
        while sample.len() < n {
            let start = rng.usize(..=n - block);
            sample.extend_from_slice(&in_order[start..start + block]);
        }
        sample.truncate(n);
        medians.push(median(&mut sample));
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((RESAMPLES - 1) as f64 * q).round() as usize];
    Some((at(0.025), at(0.975)))
}

/// The block length of [`median_ci_drift`] for `n` rounds: ⌈n^⅓⌉, in integers (the float cube
/// root of 27 is a hair above 3).
fn block_len(n: usize) -> usize {
    (1..=n).find(|b| b * b * b >= n).unwrap_or(n)
}

/// The interval the table shows for a median of rounds in run order: the wider of the
/// binomial one and the block bootstrap's at each end. The bootstrap keeps the correlation
/// between nearby rounds; over few rounds it runs narrow, and there the binomial one holds.
fn ratio_ci(in_order: &[f64]) -> Option<(f64, f64)> {
    let mut sorted = in_order.to_vec();
    sorted.sort_by(f64::total_cmp);
    match (median_ci(&sorted), median_ci_drift(in_order)) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        (one, other) => one.or(other),
    }
}

#[derive(Default)]
struct Row {
    storm: String,
    target: Target,
    ratios: Vec<f64>,
    /// Every untraced run's rate, in the order run.
    untraced: Vec<f64>,
    events: u64,
    ops: u64,
    lost: u64,
    /// nstrace's CPU time during the traced runs, in clock ticks, and those runs' seconds.
    tracer_ticks: u64,
    traced_seconds: f64,
}

impl Row {
    /// Adds a traced run's transitions seen, made (`per_op` an operation) and lost.
    fn count(&mut self, run: &TracedRun, per_op: u64) {
        self.events += run.events;
        self.ops += run.ops * per_op;
        self.lost += run.lost;
    }
}

/// What one storm run under nstrace gave.
struct TracedRun {
    ops: u64,
    /// Operations a second.
    rate: f64,
    /// Seconds from launch until nstrace said it was tracing.
    startup: f64,
    /// nstrace's CPU time during the storm, in clock ticks.
    ticks: u64,
    /// nstrace's largest resident memory during the storm (0 when not sampled), and its peak
    /// (VmHWM) after it.
    rss_kib: u64,
    hwm_kib: u64,
    /// Transitions shown and samples lost, from nstrace's closing line.
    events: u64,
    lost: u64,
}

/// A storm's target: the least median ratio, and whether a lost sample fails it.
#[derive(Default, Clone, Copy)]
struct Target {
    ratio: f64,
    none_lost: bool,
}

impl Target {
    fn text(self) -> String {
        let lost = if self.none_lost { ", 0 lost" } else { "" };
        format!("≥ {:.2}{lost}", self.ratio)
    }

    fn met(self, median: f64, lost: u64) -> bool {
        median >= self.ratio && (!self.none_lost || lost == 0)
    }

    /// Whether the median meets the target, and whether its interval (`ci`) clears the
    /// target or straddles it: a run can only say "met" as surely as its noise allows. No
    /// interval (under six rounds) is no certainty.
    fn verdict(self, median: f64, ci: Option<(f64, f64)>, lost: u64) -> Verdict {
        if self.none_lost && lost > 0 {
            return Verdict::Missed;
        }
        let (lo, hi) = ci.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        match (self.met(median, lost), lo >= self.ratio, hi < self.ratio) {
            (true, true, _) => Verdict::Met,
            (true, false, _) => Verdict::MetWithinNoise,
            (false, _, true) => Verdict::Missed,
            (false, _, false) => Verdict::MissedWithinNoise,
        }
    }
}

/// A storm's target against its median ratio and that median's interval.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    /// The whole interval is at or above the target.
    Met,
    /// The median meets the target; the interval reaches below it.
    MetWithinNoise,
    /// The median misses the target; the interval reaches it.
    MissedWithinNoise,
    /// The whole interval is below the target, or a sample was lost where none may be.
    Missed,
}

impl Verdict {
    /// A measurement with no interval: met or missed.
    fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn met(self) -> bool {
        matches!(self, Self::Met | Self::MetWithinNoise)
    }

    fn clear(self) -> bool {
        matches!(self, Self::Met | Self::Missed)
    }

    fn text(self) -> &'static str {
        match self {
            Self::Met => "yes",
            Self::MetWithinNoise => "yes, within the noise",
            Self::MissedWithinNoise => "no, within the noise",
            Self::Missed => "no",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::MetWithinNoise => "met_within_noise",
            Self::MissedWithinNoise => "missed_within_noise",
            Self::Missed => "missed",
        }
    }
}

/// (storm, target, transitions each op should produce: a setns op is a round trip of two).
const STORMS: [(&str, Target, u64); 4] = [
    (
        "unshare",
        Target {
            ratio: 0.95,
            none_lost: false,
        },
        1,
    ),
    (
        "fork",
        Target {
            ratio: 0.95,
            none_lost: false,
        },
        0,
    ),
    (
        "setns",
        Target {
            ratio: 0.60,
            none_lost: true,
        },
        2,
    ),
    (
        "clone",
        Target {
            ratio: 0.98,
            none_lost: false,
        },
        1,
    ),
];

/// The bpftrace program: nstrace's hooks (the four syscalls' exits; its sched hooks as the sched
/// tracepoints), counting in the kernel (no record per event reaches userspace: a floor for any
/// tracer of these hooks, not a like-for-like tracer).
const BPFTRACE: &str = "tracepoint:syscalls:sys_exit_clone,tracepoint:syscalls:sys_exit_clone3,\
tracepoint:syscalls:sys_exit_unshare,tracepoint:syscalls:sys_exit_setns,\
tracepoint:sched:sched_process_fork,tracepoint:sched:sched_process_exec,\
tracepoint:sched:sched_process_exit { @[probe] = count(); } \
BEGIN { printf(\"attached\\n\"); }";

/// How the storms are run.
pub struct Options {
    pub rounds: usize,
    pub seconds: f64,
    /// The CPU every storm run is pinned to (the tracers are not pinned); `None` lets the
    /// scheduler place the storm, the default.
    pub cpu: Option<usize>,
    /// The storms to run; empty for all.
    pub storms: Vec<String>,
}

pub fn bench(opts: &Options) -> Result<()> {
    let Options {
        rounds,
        seconds,
        cpu,
        ..
    } = *opts;
    if rounds == 0 || seconds <= 0.0 {
        bail!("--rounds and --seconds must be above zero");
    }
    if let Some(cpu) = cpu {
        let allowed = allowed_cpus();
        if !allowed.contains(&cpu) {
            bail!("--cpu {cpu}: this process may run only on CPUs {allowed:?}; pick one of those");
        }
    }
    if let Some(unknown) = opts
        .storms
        .iter()
        .find(|s| !STORMS.iter().any(|(k, ..)| k == s))
    {
        let names: Vec<&str> = STORMS.iter().map(|(k, ..)| *k).collect();
        bail!(
            "no storm named {unknown}: the storms are {}",
            names.join(", ")
        );
    }
    step("building release binaries (nstrace, nsstorm)");
    run_cmd(Command::new("cargo").args([
        "build",
        "--release",
        "--package",
        "nstrace",
        "--package",
        "nstrace-tests",
        "--bins",
    ]))?;
    let root = crate::workspace_root()?;
    let bin = root.join("target/release");
    let nstrace = bin.join("nstrace");
    let bpftrace = Command::new("sh")
        .args(["-c", "command -v bpftrace"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));

    let secs = seconds.to_string();
    // One storm run of `seconds`: (operations, operations a second).
    let storm_for = |kind: &str, seconds: &str| -> Result<(u64, f64)> {
        let text = nsstorm_on(&bin, &[kind, seconds], cpu)?;
        let number = |name| field(&text, name).unwrap_or(0.0);
        Ok((number("ops") as u64, number("rate")))
    };
    let storm = |kind: &str| storm_for(kind, &secs);
    // One storm run of `seconds` under a freshly started nstrace, stopped after it.
    // `sample_memory`: sample nstrace's RSS during the storm. Each sample costs the bench a
    // third of a millisecond of CPU, which the storm would share with it in nstrace's runs
    // and not in the others: the timed rounds do not sample, the memory runs do.
    let traced = |kind: &str, seconds: &str, sample_memory: bool| -> Result<TracedRun> {
        let tracer = start(
            Command::new(&nstrace).args(["--no-summary"]),
            "nstrace: tracing",
            Kind::Nstrace,
        )?;
        let startup = tracer.startup.as_secs_f64();
        let pid = tracer.child.id();
        let sampling = sample_memory.then(|| sample_rss(pid));
        let ticks = cpu_ticks(pid);
        let (ops, rate) = storm_for(kind, seconds)?;
        let ticks = cpu_ticks(pid).saturating_sub(ticks);
        let rss_kib = sampling.map_or(0, |(sampler, sampled)| {
            let _ = sampler.send(());
            sampled.join().unwrap_or(0)
        });
        let hwm_kib = status(pid).and_then(|s| s.vmhwm).unwrap_or(0);
        let (events, lost) = closing(&stop(tracer)?);
        Ok(TracedRun {
            ops,
            rate,
            startup,
            ticks,
            rss_kib,
            hwm_kib,
            events,
            lost,
        })
    };

    let mut rows = Vec::new();
    let mut peer_rows = Vec::new();
    let mut startups = Vec::new();
    let mut peer_startups = Vec::new();
    let mut peak_rss = 0u64;
    let mut storm_rss = 0u64;
    let chosen = STORMS
        .iter()
        .filter(|(kind, ..)| opts.storms.is_empty() || opts.storms.iter().any(|s| s == kind));
    for &(kind, target, per_op) in chosen {
        step(&format!(
            "storm {kind}: {rounds} rounds of {seconds} s, each traced run between two untraced{}",
            match cpu {
                Some(cpu) => format!(", the storm on CPU {cpu}"),
                None => String::new(),
            }
        ));
        let mut row = Row {
            storm: kind.into(),
            target,
            ..Row::default()
        };
        let mut peer = Row {
            storm: kind.into(),
            ..Row::default()
        };
        // Untraced, then per round: nstrace, untraced, bpftrace, untraced. A traced run's
        // ratio is to the mean of the untraced runs either side of it, so a drift of the
        // machine's speed over the round cancels.
        let (_, mut before) = storm(kind)?;
        row.untraced.push(before);
        for _ in 0..rounds {
            let run = traced(kind, &secs, false)?;
            startups.push(run.startup);
            row.tracer_ticks += run.ticks;
            row.traced_seconds += seconds;
            peak_rss = peak_rss.max(run.hwm_kib);
            row.count(&run, per_op);
            let (_, after) = storm(kind)?;
            row.ratios.push(bracketed(run.rate, before, after));
            row.untraced.push(after);
            before = after;
            if let Some(bpftrace) = &bpftrace {
                let t = start(
                    Command::new(bpftrace).args(["-e", BPFTRACE]),
                    "attached",
                    Kind::Bpftrace,
                )?;
                peer_startups.push(t.startup.as_secs_f64());
                let (_, traced) = storm(kind)?;
                stop(t)?;
                let (_, after) = storm(kind)?;
                peer.ratios.push(bracketed(traced, before, after));
                row.untraced.push(after);
                before = after;
            }
        }
        // Memory under a storm needs a run long enough for a lagging collector to pile up
        // records: one traced run of at least 3 s.
        let run = traced(kind, &seconds.max(3.0).to_string(), true)?;
        storm_rss = storm_rss.max(run.rss_kib);
        peak_rss = peak_rss.max(run.hwm_kib);
        row.count(&run, per_op);
        rows.push(row);
        peer_rows.push(peer);
    }

    step("collector: 1M setns records through decode, reorder, timeline and text (nsstorm pipe)");
    // The collector and the replay vary little from run to run: fewer repeats than storm rounds.
    let repeats = rounds.min(5);
    let mut per_record = Vec::new();
    for _ in 0..repeats {
        let text = nsstorm(&bin, &["pipe", "1000000"])?;
        if let Some(ns) = field(&text, "ns_per_record") {
            per_record.push(ns);
        }
    }
    let pipe_min = per_record.iter().copied().fold(f64::MAX, f64::min);
    let pipe = median(&mut per_record);

    step("replay: a 1M-record file through `nstrace report`, binary and JSON Lines");
    // (records/s binary, records/s JSON Lines): medians of `repeats` runs each.
    let mut replay = [Vec::new(), Vec::new()];
    for (binary, rates) in [true, false].into_iter().zip(&mut replay) {
        let file = root.join(if binary {
            "target/bench-replay.bin"
        } else {
            "target/bench-replay.jsonl"
        });
        let path = file.to_str().context("path")?;
        let mut args = vec!["synth", path, "1000000"];
        if binary {
            args.push("--binary");
        }
        run_cmd(Command::new(bin.join("nsstorm")).args(&args))?;
        // Written back before timing: the flush of hundreds of MB would compete with the replay.
        run_cmd(&mut Command::new("sync"))?;
        for _ in 0..repeats {
            let began = Instant::now();
            let status = Command::new(&nstrace)
                .args(["report", "--no-summary", "--findings"])
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            rates.push(1_000_000.0 / began.elapsed().as_secs_f64());
            if !status.success() {
                bail!("nstrace report failed on the synthetic recording {path}");
            }
        }
        let _ = std::fs::remove_file(&file);
    }
    let [mut replay_bin, mut replay_json] = replay;
    let (replay_bin, replay_json) = (median(&mut replay_bin), median(&mut replay_json));

    let ticks_per_second = procfs::ticks_per_second() as f64;
    let mut table = String::new();
    // (targets met, targets; storms whose verdict is clear of the noise, storms)
    let mut met = (0, 0, 0, 0);
    let mut tally = |v: Verdict, storm: bool| {
        met.0 += usize::from(v.met());
        met.1 += 1;
        if storm {
            met.2 += usize::from(v.clear());
            met.3 += 1;
        }
        v.text()
    };
    table.push_str("| storm | untraced ops/s | traced/untraced: median (95% CI of the median; min-max) | bpftrace | control (untraced/untraced) | nstrace CPU | transitions seen / made | lost | target | met |\n");
    table.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let mut storms_json = Vec::new();
    for (row, peer) in rows.iter().zip(&peer_rows) {
        // From a copy: the interval reads the ratios in the order they ran.
        let mut sorted = row.ratios.clone();
        let ratio = median(&mut sorted);
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let ci = ratio_ci(&row.ratios);
        let ci_text = ci.map_or_else(String::new, |(lo, hi)| format!("{lo:.2}-{hi:.2}; "));
        let peer_ratio = if peer.ratios.is_empty() {
            "not installed".into()
        } else {
            format!("{:.2}", median(&mut peer.ratios.clone()))
        };
        // The share of one CPU nstrace (collector and all its threads) used while traced.
        let tracer_cpu = row.tracer_ticks as f64 / ticks_per_second / row.traced_seconds;
        let control = control_ratios(&row.untraced);
        let control_ratio = median(&mut control.clone());
        let control_text = match ratio_ci(&control) {
            Some((lo, hi)) => format!("{control_ratio:.2} ({lo:.2}-{hi:.2})"),
            None if control.is_empty() => "-".into(),
            None => format!("{control_ratio:.2}"),
        };
        let v = row.target.verdict(ratio, ci, row.lost);
        // Within half a hundredth of the target, two places would hide which side it is on.
        let ratio_text = if (ratio - row.target.ratio).abs() < 0.005 {
            format!("{ratio:.3}")
        } else {
            format!("{ratio:.2}")
        };
        table.push_str(&format!(
            "| {} | {:.0} | {ratio_text} ({ci_text}{min:.2}-{max:.2}) | {peer_ratio} | {control_text} | {:.1}% | {} / {} | {} | {} | {} |\n",
            row.storm,
            // A copy: the control above reads the untraced runs in the order they ran.
            median(&mut row.untraced.clone()),
            tracer_cpu * 100.0,
            row.events,
            row.ops,
            row.lost,
            row.target.text(),
            tally(v, true),
        ));
        storms_json.push(format!(
            "{{\"storm\":\"{}\",\"ratio_median\":{ratio:.4},\"ratio_ci95\":{},\"ratios\":{:?},\"bpftrace_ratios\":{:?},\"control_ratios\":{:?},\"tracer_cpu\":{tracer_cpu:.4},\"events\":{},\"ops\":{},\"lost\":{},\"met\":{},\"verdict\":\"{}\"}}",
            row.storm,
            ci.map_or_else(|| "null".into(), |(lo, hi)| format!("[{lo:.4},{hi:.4}]")),
            row.ratios,
            peer.ratios,
            control,
            row.events,
            row.ops,
            row.lost,
            v.met(),
            v.key(),
        ));
    }
    let startup = median(&mut startups);
    let peer_startup = if peer_startups.is_empty() {
        "not installed".into()
    } else {
        format!("{:.3} s", median(&mut peer_startups))
    };
    table.push_str(&format!(
        "| start-up until attached | {startup:.3} s | | {peer_startup} | | | | | ≤ 0.15 s | {} |\n",
        tally(Verdict::of(startup <= 0.15), false)
    ));
    let storm_mib = storm_rss as f64 / 1024.0;
    table.push_str(&format!(
        "| peak RSS under the storms | {storm_mib:.1} MiB | | | | | | | ≤ 16 MiB | {} |\n",
        tally(Verdict::of(storm_mib <= 16.0), false)
    ));
    table.push_str(&format!(
        "| peak RSS including start-up (VmHWM) | {:.1} MiB | | | | | | | | |\n",
        peak_rss as f64 / 1024.0
    ));
    table.push_str(&format!(
        "| `report` replay, binary record (`--binary`) | {replay_bin:.0} records/s | | | | | | | ≥ 1M/s | {} |\n",
        tally(Verdict::of(replay_bin >= 1e6), false)
    ));
    table.push_str(&format!(
        "| `report` replay, JSON Lines record | {replay_json:.0} records/s | | | | | | | | |\n"
    ));
    table.push_str(&format!(
        "| collector per setns record, no kernel (median, min) | {pipe:.0} ns ({pipe_min:.0} ns) | | | | | | | | |\n"
    ));
    println!("{table}");
    let pinned = match cpu {
        Some(cpu) => format!("each storm pinned to CPU {cpu}, the tracers free"),
        None => "the storms not pinned".into(),
    };
    println!(
        "{rounds} rounds of {seconds} s, {pinned}; targets met: {} of {}; storms whose verdict is clear of the run's noise: {} of {}",
        met.0, met.1, met.2, met.3
    );

    let json = format!(
        "{{\"rounds\":{rounds},\"seconds\":{seconds},\"cpu\":{},\"storms\":[{}],\"startup_s\":{startup:.4},\"storm_rss_kib\":{storm_rss},\"peak_rss_kib\":{peak_rss},\"replay_records_per_s\":{replay_bin:.0},\"replay_json_records_per_s\":{replay_json:.0},\"collector_ns_per_record\":{pipe:.1},\"targets_met\":{},\"targets\":{},\"storms_clear\":{},\"storms_judged\":{}}}\n",
        cpu.map_or_else(|| "null".into(), |c| c.to_string()),
        storms_json.join(","),
        met.0,
        met.1,
        met.2,
        met.3,
    );
    let out = root.join("target/bench.json");
    std::fs::write(&out, json).with_context(|| format!("writing {}", out.display()))?;
    step(&format!("wrote {}", out.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn control_ratios_bracket_each_inner_run() {
        assert_eq!(control_ratios(&[1.0, 2.0]), Vec::<f64>::new());
        assert_eq!(control_ratios(&[1.0, 2.0, 3.0, 1.0]), vec![1.0, 2.0]);
    }

    #[test]
    fn median_ci_takes_the_binomial_order_statistics() {
        let values: Vec<f64> = (1..=30).map(f64::from).collect();
        // P(Bin(30, 1/2) ≤ 9) = 0.0214 and P(≤ 10) = 0.0494: the 10th and 21st values.
        assert_eq!(median_ci(&values), Some((10.0, 21.0)));
        // P(Bin(6, 1/2) ≤ 0) = 1/64: the extremes, the smallest count with an interval.
        let six: Vec<f64> = (1..=6).map(f64::from).collect();
        assert_eq!(median_ci(&six), Some((1.0, 6.0)));
        // 2·P(Bin(5, 1/2) = 0) = 1/16 > 0.05: no 95% interval from five values.
        assert_eq!(median_ci(&six[..5]), None);
        assert_eq!(median_ci(&[]), None);
    }

    #[test]
    fn the_block_bootstrap_widens_the_interval_of_drifting_rounds() {
        let constant = [0.97; 30];
        assert_eq!(median_ci_drift(&constant), Some((0.97, 0.97)));
        assert_eq!(median_ci_drift(&constant[..5]), None);
        // The same thirty values: rising round after round (a drift), and interleaved low and
        // high (none). Blocks of consecutive rounds carry the drift into every resample.
        let drifting: Vec<f64> = (1..=30).map(f64::from).collect();
        let interleaved: Vec<f64> = (1..=15)
            .flat_map(|i| [f64::from(i), f64::from(31 - i)])
            .collect();
        let width = |v: &[f64]| {
            let (lo, hi) = median_ci_drift(v).unwrap();
            assert!(lo <= 15.5 && 15.5 <= hi, "{lo}-{hi} holds the median");
            hi - lo
        };
        assert!(
            width(&drifting) > 1.5 * width(&interleaved),
            "{} vs {}",
            width(&drifting),
            width(&interleaved)
        );
        // A fixed seed: the same rounds, the same interval.
        assert_eq!(median_ci_drift(&drifting), median_ci_drift(&drifting));
        // Blocks of ⌈n^⅓⌉ rounds, exactly at the cubes.
        let blocks: Vec<usize> = [6, 8, 9, 27, 28, 30, 90, 125].map(block_len).into();
        assert_eq!(blocks, [2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn the_table_interval_is_the_wider_of_the_two_at_each_end() {
        let drifting: Vec<f64> = (1..=30).map(f64::from).collect();
        let (lo, hi) = ratio_ci(&drifting).unwrap();
        let (blo, bhi) = median_ci(&drifting).unwrap();
        let (dlo, dhi) = median_ci_drift(&drifting).unwrap();
        assert_eq!((lo, hi), (blo.min(dlo), bhi.max(dhi)));
        assert_eq!(ratio_ci(&drifting[..5]), None);
    }

    #[test]
    fn a_verdict_says_whether_the_interval_clears_the_target() {
        let fork = Target {
            ratio: 0.95,
            none_lost: false,
        };
        assert_eq!(fork.verdict(0.97, Some((0.96, 0.99)), 0), Verdict::Met);
        assert_eq!(
            fork.verdict(0.97, Some((0.93, 0.99)), 0),
            Verdict::MetWithinNoise
        );
        assert_eq!(
            fork.verdict(0.94, Some((0.91, 0.96)), 0),
            Verdict::MissedWithinNoise
        );
        assert_eq!(fork.verdict(0.90, Some((0.88, 0.94)), 0), Verdict::Missed);
        assert_eq!(fork.verdict(0.97, None, 0), Verdict::MetWithinNoise);
        // An interval that touches the target from above clears it; from below it does not.
        assert_eq!(fork.verdict(0.96, Some((0.95, 0.99)), 0), Verdict::Met);
        assert_eq!(
            fork.verdict(0.93, Some((0.90, 0.95)), 0),
            Verdict::MissedWithinNoise
        );
        let setns = Target {
            ratio: 0.60,
            none_lost: true,
        };
        assert_eq!(setns.verdict(0.70, Some((0.65, 0.75)), 1), Verdict::Missed);
        assert!(Verdict::MetWithinNoise.met() && !Verdict::MetWithinNoise.clear());
        assert!(!Verdict::Missed.met() && Verdict::Missed.clear());
    }

    #[test]
    fn allowed_cpus_include_the_current_one() {
        // SAFETY: sched_getcpu has no preconditions.
        let now = unsafe { libc::sched_getcpu() };
        assert!(now >= 0);
        assert!(allowed_cpus().contains(&(now as usize)));
    }

    #[test]
    fn a_target_needs_the_ratio_and_for_setns_no_loss() {
        let setns = Target {
            ratio: 0.60,
            none_lost: true,
        };
        assert!(setns.met(0.61, 0));
        assert!(!setns.met(0.61, 1));
        assert!(!setns.met(0.59, 0));
        let fork = Target {
            ratio: 0.95,
            none_lost: false,
        };
        assert!(fork.met(0.95, 3));
        assert_eq!(setns.text(), "≥ 0.60, 0 lost");
    }
}
