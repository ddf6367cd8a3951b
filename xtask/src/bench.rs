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

use crate::{
    run_cmd,
    stats::{Target, Verdict, bracketed, control_ratios, median, ratio_ci},
    step,
};

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

pub fn bench(opts: &Options) -> Result<()> {
    check(opts)?;
    let setup = build(opts.cpu)?;
    let storms = storms(&setup, opts)?;
    // The collector and the replay vary little from run to run: fewer repeats than storm rounds.
    let repeats = opts.rounds.min(5);
    let collector = collector(&setup.bin, repeats)?;
    let replay = replay(&setup, repeats)?;
    let report = report(opts, storms, &collector, &replay);
    println!("{}", report.table);
    println!("{}", report.summary);
    let out = setup.root.join("target/bench.json");
    std::fs::write(&out, report.json).with_context(|| format!("writing {}", out.display()))?;
    step(&format!("wrote {}", out.display()));
    Ok(())
}

/// Refuses options the runs cannot honour, before anything is built.
fn check(opts: &Options) -> Result<()> {
    if opts.rounds == 0 || opts.seconds <= 0.0 {
        bail!("--rounds and --seconds must be above zero");
    }
    if let Some(cpu) = opts.cpu {
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
    Ok(())
}

/// What the runs use: the release binaries, bpftrace when installed, and the storms' CPU.
struct Setup {
    root: PathBuf,
    /// target/release, where nsstorm is.
    bin: PathBuf,
    nstrace: PathBuf,
    bpftrace: Option<PathBuf>,
    cpu: Option<usize>,
}

/// Builds nstrace and nsstorm for release and finds bpftrace.
fn build(cpu: Option<usize>) -> Result<Setup> {
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
    Ok(Setup {
        root,
        bin,
        nstrace,
        bpftrace,
        cpu,
    })
}

impl Setup {
    /// One storm run of `seconds`: (operations, operations a second).
    fn storm(&self, kind: &str, seconds: &str) -> Result<(u64, f64)> {
        let text = nsstorm_on(&self.bin, &[kind, seconds], self.cpu)?;
        let number = |name| field(&text, name).unwrap_or(0.0);
        Ok((number("ops") as u64, number("rate")))
    }

    /// One storm run of `seconds` under a freshly started nstrace, stopped after it.
    /// `sample_memory`: sample nstrace's RSS during the storm. Each sample costs the bench a
    /// third of a millisecond of CPU, which the storm would share with it in nstrace's runs
    /// and not in the others: the timed rounds do not sample, the memory runs do.
    fn traced(&self, kind: &str, seconds: &str, sample_memory: bool) -> Result<TracedRun> {
        let tracer = start(
            Command::new(&self.nstrace).args(["--no-summary"]),
            "nstrace: tracing",
            Kind::Nstrace,
        )?;
        let startup = tracer.startup.as_secs_f64();
        let pid = tracer.child.id();
        let sampling = sample_memory.then(|| sample_rss(pid));
        let ticks = cpu_ticks(pid);
        let (ops, rate) = self.storm(kind, seconds)?;
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
    }
}

/// What the storms gave, storm after storm.
#[derive(Default)]
struct Storms {
    rows: Vec<Row>,
    /// bpftrace's, one a storm as `rows` (no ratios when it is not installed).
    peer_rows: Vec<Row>,
    /// Seconds from launch until attached, every traced run's.
    startups: Vec<f64>,
    peer_startups: Vec<f64>,
    /// nstrace's VmHWM, the largest of all its runs, and its largest RSS under a storm, in KiB.
    peak_rss: u64,
    storm_rss: u64,
}

/// Runs the chosen storms, in the order of [`STORMS`].
fn storms(setup: &Setup, opts: &Options) -> Result<Storms> {
    let mut storms = Storms::default();
    let chosen = STORMS
        .iter()
        .filter(|(kind, ..)| opts.storms.is_empty() || opts.storms.iter().any(|s| s == kind));
    for &(kind, target, per_op) in chosen {
        storms.run(setup, opts, kind, target, per_op)?;
    }
    Ok(storms)
}

impl Storms {
    /// One storm's rounds, then its memory run.
    fn run(
        &mut self,
        setup: &Setup,
        opts: &Options,
        kind: &str,
        target: Target,
        per_op: u64,
    ) -> Result<()> {
        let Options {
            rounds,
            seconds,
            cpu,
            ..
        } = *opts;
        let secs = seconds.to_string();
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
        let (_, mut before) = setup.storm(kind, &secs)?;
        row.untraced.push(before);
        for _ in 0..rounds {
            let run = setup.traced(kind, &secs, false)?;
            self.startups.push(run.startup);
            row.tracer_ticks += run.ticks;
            row.traced_seconds += seconds;
            self.peak_rss = self.peak_rss.max(run.hwm_kib);
            row.count(&run, per_op);
            let (_, after) = setup.storm(kind, &secs)?;
            row.ratios.push(bracketed(run.rate, before, after));
            row.untraced.push(after);
            before = after;
            if let Some(bpftrace) = &setup.bpftrace {
                let t = start(
                    Command::new(bpftrace).args(["-e", BPFTRACE]),
                    "attached",
                    Kind::Bpftrace,
                )?;
                self.peer_startups.push(t.startup.as_secs_f64());
                let (_, traced) = setup.storm(kind, &secs)?;
                stop(t)?;
                let (_, after) = setup.storm(kind, &secs)?;
                peer.ratios.push(bracketed(traced, before, after));
                row.untraced.push(after);
                before = after;
            }
        }
        // Memory under a storm needs a run long enough for a lagging collector to pile up
        // records: one traced run of at least 3 s.
        let run = setup.traced(kind, &seconds.max(3.0).to_string(), true)?;
        self.storm_rss = self.storm_rss.max(run.rss_kib);
        self.peak_rss = self.peak_rss.max(run.hwm_kib);
        row.count(&run, per_op);
        self.rows.push(row);
        self.peer_rows.push(peer);
        Ok(())
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

/// The collector's nanoseconds per record, over the repeats.
struct Collector {
    median: f64,
    min: f64,
}

/// Times the collector without the kernel: `nsstorm pipe`, `repeats` times.
fn collector(bin: &Path, repeats: usize) -> Result<Collector> {
    step("collector: 1M setns records through decode, reorder, timeline and text (nsstorm pipe)");
    let mut per_record = Vec::new();
    for _ in 0..repeats {
        let text = nsstorm(bin, &["pipe", "1000000"])?;
        if let Some(ns) = field(&text, "ns_per_record") {
            per_record.push(ns);
        }
    }
    let min = per_record.iter().copied().fold(f64::MAX, f64::min);
    Ok(Collector {
        median: median(&mut per_record),
        min,
    })
}

/// `nstrace report`'s records a second, medians of the repeats.
struct Replay {
    binary: f64,
    json: f64,
}

/// Times `nstrace report` on a synthetic recording of 1M records, binary then JSON Lines.
fn replay(setup: &Setup, repeats: usize) -> Result<Replay> {
    step("replay: a 1M-record file through `nstrace report`, binary and JSON Lines");
    // (records/s binary, records/s JSON Lines): medians of `repeats` runs each.
    let mut replay = [Vec::new(), Vec::new()];
    for (binary, rates) in [true, false].into_iter().zip(&mut replay) {
        let file = setup.root.join(if binary {
            "target/bench-replay.bin"
        } else {
            "target/bench-replay.jsonl"
        });
        let path = file.to_str().context("path")?;
        let mut args = vec!["synth", path, "1000000"];
        if binary {
            args.push("--binary");
        }
        run_cmd(Command::new(setup.bin.join("nsstorm")).args(&args))?;
        // Written back before timing: the flush of hundreds of MB would compete with the replay.
        run_cmd(&mut Command::new("sync"))?;
        for _ in 0..repeats {
            let began = Instant::now();
            let status = Command::new(&setup.nstrace)
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
    let [mut binary, mut json] = replay;
    Ok(Replay {
        binary: median(&mut binary),
        json: median(&mut json),
    })
}

/// The verdicts counted: targets met of targets; storms whose verdict is clear of the noise,
/// of storms.
#[derive(Default)]
struct Tally {
    met: usize,
    targets: usize,
    clear: usize,
    storms: usize,
}

impl Tally {
    /// Counts a verdict, a storm's when `storm`; its text for the table.
    fn count(&mut self, v: Verdict, storm: bool) -> &'static str {
        self.met += usize::from(v.met());
        self.targets += 1;
        if storm {
            self.clear += usize::from(v.clear());
            self.storms += 1;
        }
        v.text()
    }
}

/// What the bench says: the table and the line under it on stdout, and target/bench.json.
struct Report {
    table: String,
    summary: String,
    json: String,
}

/// The table, its summary and the JSON, from all that was measured.
fn report(opts: &Options, mut storms: Storms, collector: &Collector, replay: &Replay) -> Report {
    let Options {
        rounds,
        seconds,
        cpu,
        ..
    } = *opts;
    let mut tally = Tally::default();
    let mut table = String::new();
    table.push_str("| storm | untraced ops/s | traced/untraced: median (95% CI of the median; min-max) | bpftrace | control (untraced/untraced) | nstrace CPU | transitions seen / made | lost | target | met |\n");
    table.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let ticks_per_second = procfs::ticks_per_second() as f64;
    let mut storms_json = Vec::new();
    for (row, peer) in storms.rows.iter().zip(&storms.peer_rows) {
        let (line, json) = storm_line(row, peer, ticks_per_second, &mut tally);
        table.push_str(&line);
        storms_json.push(json);
    }
    let startup = median(&mut storms.startups);
    let peer_startup = if storms.peer_startups.is_empty() {
        "not installed".into()
    } else {
        format!("{:.3} s", median(&mut storms.peer_startups))
    };
    let (storm_rss, peak_rss) = (storms.storm_rss, storms.peak_rss);
    let (replay_bin, replay_json) = (replay.binary, replay.json);
    let (pipe, pipe_min) = (collector.median, collector.min);
    table.push_str(&format!(
        "| start-up until attached | {startup:.3} s | | {peer_startup} | | | | | ≤ 0.15 s | {} |\n",
        tally.count(Verdict::of(startup <= 0.15), false)
    ));
    let storm_mib = storm_rss as f64 / 1024.0;
    table.push_str(&format!(
        "| peak RSS under the storms | {storm_mib:.1} MiB | | | | | | | ≤ 16 MiB | {} |\n",
        tally.count(Verdict::of(storm_mib <= 16.0), false)
    ));
    table.push_str(&format!(
        "| peak RSS including start-up (VmHWM) | {:.1} MiB | | | | | | | | |\n",
        peak_rss as f64 / 1024.0
    ));
    table.push_str(&format!(
        "| `report` replay, binary record (`--binary`) | {replay_bin:.0} records/s | | | | | | | ≥ 1M/s | {} |\n",
        tally.count(Verdict::of(replay_bin >= 1e6), false)
    ));
    table.push_str(&format!(
        "| `report` replay, JSON Lines record | {replay_json:.0} records/s | | | | | | | | |\n"
    ));
    table.push_str(&format!(
        "| collector per setns record, no kernel (median, min) | {pipe:.0} ns ({pipe_min:.0} ns) | | | | | | | | |\n"
    ));
    let pinned = match cpu {
        Some(cpu) => format!("each storm pinned to CPU {cpu}, the tracers free"),
        None => "the storms not pinned".into(),
    };
    let summary = format!(
        "{rounds} rounds of {seconds} s, {pinned}; targets met: {} of {}; storms whose verdict is clear of the run's noise: {} of {}",
        tally.met, tally.targets, tally.clear, tally.storms
    );
    let json = format!(
        "{{\"rounds\":{rounds},\"seconds\":{seconds},\"cpu\":{},\"storms\":[{}],\"startup_s\":{startup:.4},\"storm_rss_kib\":{storm_rss},\"peak_rss_kib\":{peak_rss},\"replay_records_per_s\":{replay_bin:.0},\"replay_json_records_per_s\":{replay_json:.0},\"collector_ns_per_record\":{pipe:.1},\"targets_met\":{},\"targets\":{},\"storms_clear\":{},\"storms_judged\":{}}}\n",
        cpu.map_or_else(|| "null".into(), |c| c.to_string()),
        storms_json.join(","),
        tally.met,
        tally.targets,
        tally.clear,
        tally.storms,
    );
    Report {
        table,
        summary,
        json,
    }
}

/// A storm's line of the table and its object in the JSON, its verdict counted in `tally`.
fn storm_line(row: &Row, peer: &Row, ticks_per_second: f64, tally: &mut Tally) -> (String, String) {
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
    let line = format!(
        "| {} | {:.0} | {ratio_text} ({ci_text}{min:.2}-{max:.2}) | {peer_ratio} | {control_text} | {:.1}% | {} / {} | {} | {} | {} |\n",
        row.storm,
        // A copy: the control above reads the untraced runs in the order they ran.
        median(&mut row.untraced.clone()),
        tracer_cpu * 100.0,
        row.events,
        row.ops,
        row.lost,
        row.target.text(),
        tally.count(v, true),
    );
    let json = format!(
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
    );
    (line, json)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cpus_include_the_current_one() {
        // SAFETY: sched_getcpu has no preconditions.
        let now = unsafe { libc::sched_getcpu() };
        assert!(now >= 0);
        assert!(allowed_cpus().contains(&(now as usize)));
    }
}
