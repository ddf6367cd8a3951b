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
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

mod report;
mod tracer;

use report::report;
use tracer::{
    Kind, allowed_cpus, closing, cpu_ticks, field, nsstorm, nsstorm_on, sample_rss, start, status,
    stop,
};

use crate::{
    run_cmd,
    stats::{Target, bracketed, median},
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

/// A storm the bench runs.
#[derive(Clone, Copy)]
struct Storm {
    kind: &'static str,
    target: Target,
    /// Transitions each op should produce (a setns op is a round trip of two); 0: not counted.
    per_op: u64,
    /// The shortest run and the most rounds: a container start takes a third of a second, so
    /// its runs are longer and fewer.
    min_seconds: f64,
    max_rounds: usize,
}

const fn storm(kind: &'static str, ratio: f64, none_lost: bool, per_op: u64) -> Storm {
    Storm {
        kind,
        target: Target { ratio, none_lost },
        per_op,
        min_seconds: 0.0,
        max_rounds: usize::MAX,
    }
}

const STORMS: [Storm; 5] = [
    storm("unshare", 0.95, false, 1),
    storm("fork", 0.95, false, 0),
    storm("setns", 0.60, true, 2),
    storm("clone", 0.98, false, 1),
    // `docker run --rm`: the engine's whole start, traced from dockerd to runc's exit.
    Storm {
        min_seconds: 4.0,
        max_rounds: 10,
        ..storm("docker", 0.98, true, 0)
    },
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
        .find(|s| !STORMS.iter().any(|storm| storm.kind == s.as_str()))
    {
        let names: Vec<&str> = STORMS.iter().map(|storm| storm.kind).collect();
        bail!(
            "no storm named {unknown}: the storms are {}",
            names.join(", ")
        );
    }
    Ok(())
}

/// What the runs use: the release binaries, bpftrace when installed, and the storms' CPU.
pub(super) struct Setup {
    pub(super) root: PathBuf,
    /// target/release, where nsstorm is.
    pub(super) bin: PathBuf,
    pub(super) nstrace: PathBuf,
    pub(super) bpftrace: Option<PathBuf>,
    pub(super) cpu: Option<usize>,
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
pub(super) struct Storms {
    pub(super) rows: Vec<Row>,
    /// bpftrace's, one a storm as `rows` (no ratios when it is not installed).
    pub(super) peer_rows: Vec<Row>,
    /// Seconds from launch until attached, every traced run's.
    pub(super) startups: Vec<f64>,
    pub(super) peer_startups: Vec<f64>,
    /// nstrace's VmHWM, the largest of all its runs, and its largest RSS under a storm, in KiB.
    pub(super) peak_rss: u64,
    pub(super) storm_rss: u64,
}

/// Runs the chosen storms, in the order of [`STORMS`].
fn storms(setup: &Setup, opts: &Options) -> Result<Storms> {
    let mut storms = Storms::default();
    let chosen = STORMS
        .iter()
        .filter(|s| opts.storms.is_empty() || opts.storms.iter().any(|k| k == s.kind));
    for storm in chosen {
        storms.run(setup, opts, storm)?;
    }
    Ok(storms)
}

impl Storms {
    /// One storm's rounds, then its memory run.
    fn run(&mut self, setup: &Setup, opts: &Options, storm: &Storm) -> Result<()> {
        let Storm {
            kind,
            target,
            per_op,
            ..
        } = *storm;
        let rounds = opts.rounds.min(storm.max_rounds);
        let seconds = opts.seconds.max(storm.min_seconds);
        let cpu = opts.cpu;
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
pub(super) struct Row {
    pub(super) storm: String,
    pub(super) target: Target,
    pub(super) ratios: Vec<f64>,
    /// Every untraced run's rate, in the order run.
    pub(super) untraced: Vec<f64>,
    pub(super) events: u64,
    pub(super) ops: u64,
    pub(super) lost: u64,
    /// nstrace's CPU time during the traced runs, in clock ticks, and those runs' seconds.
    pub(super) tracer_ticks: u64,
    pub(super) traced_seconds: f64,
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
pub(super) struct TracedRun {
    pub(super) ops: u64,
    /// Operations a second.
    pub(super) rate: f64,
    /// Seconds from launch until nstrace said it was tracing.
    pub(super) startup: f64,
    /// nstrace's CPU time during the storm, in clock ticks.
    pub(super) ticks: u64,
    /// nstrace's largest resident memory during the storm (0 when not sampled), and its peak
    /// (VmHWM) after it.
    pub(super) rss_kib: u64,
    pub(super) hwm_kib: u64,
    /// Transitions shown and samples lost, from nstrace's closing line.
    pub(super) events: u64,
    pub(super) lost: u64,
}

/// The collector's nanoseconds per record, over the repeats.
pub(super) struct Collector {
    pub(super) median: f64,
    pub(super) min: f64,
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
pub(super) struct Replay {
    pub(super) binary: f64,
    pub(super) json: f64,
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
