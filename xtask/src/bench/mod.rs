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

/// What nstrace writes during a storm.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// Text, to /dev/null.
    Text,
    /// `--json` to a file, as a node's log stream: its lines are counted, and how long after
    /// the storm the file stops growing.
    JsonFile,
    /// Text to /dev/null, with `--metrics` served and scraped every second.
    Metrics,
    /// Text to /dev/null, keeping `--evidence` (no finding comes: the cost is keeping the
    /// window in memory and its snapshots).
    Evidence,
}

/// A storm the bench runs.
#[derive(Clone, Copy)]
struct Storm {
    kind: &'static str,
    /// nsstorm's storm.
    workload: &'static str,
    output: Output,
    /// bpftrace runs beside it (its own row for the workload is enough).
    peer: bool,
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
        workload: kind,
        output: Output::Text,
        peer: true,
        target: Target { ratio, none_lost },
        per_op,
        min_seconds: 0.0,
        max_rounds: usize::MAX,
    }
}

const STORMS: [Storm; 8] = [
    storm("unshare", 0.95, false, 1),
    storm("fork", 0.95, false, 0),
    storm("setns", 0.60, true, 2),
    // The setns storm again with the stream a node ships: `--json` to a file.
    // Sustained: runs of at least 2 s (over 700,000 round trips, 1.4M transitions).
    Storm {
        workload: "setns",
        output: Output::JsonFile,
        peer: false,
        min_seconds: 2.0,
        max_rounds: 10,
        ..storm("setns-json", 0.70, true, 2)
    },
    // And with `--metrics` scraped every second: its cost is the difference from setns's.
    Storm {
        workload: "setns",
        output: Output::Metrics,
        peer: false,
        ..storm("setns-metrics", 0.60, true, 2)
    },
    // And keeping evidence: every record held for the window (capped), a snapshot a window.
    Storm {
        workload: "setns",
        output: Output::Evidence,
        peer: false,
        ..storm("setns-evidence", 0.60, true, 2)
    },
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
    fn traced(&self, storm: &Storm, seconds: &str, sample_memory: bool) -> Result<TracedRun> {
        let kind = storm.workload;
        let mut cmd = Command::new(&self.nstrace);
        cmd.arg("--no-summary");
        let stream = self.root.join("target/bench-stream.jsonl");
        let stdout = match storm.output {
            Output::Text => Stdio::null(),
            Output::Metrics => {
                cmd.args(["--metrics", METRICS_ADDR]);
                Stdio::null()
            }
            Output::Evidence => {
                let dir = self.root.join("target/bench-evidence");
                let _ = std::fs::remove_dir_all(&dir);
                cmd.arg("--evidence").arg(&dir);
                Stdio::null()
            }
            Output::JsonFile => {
                cmd.arg("--json");
                Stdio::from(
                    std::fs::File::create(&stream)
                        .with_context(|| format!("creating {}", stream.display()))?,
                )
            }
        };
        let tracer = start(cmd.stdout(stdout), "nstrace: tracing", Kind::Nstrace)?;
        let scraper = (storm.output == Output::Metrics).then(scrape_every_second);
        let startup = tracer.startup.as_secs_f64();
        let pid = tracer.child.id();
        let sampling = sample_memory.then(|| sample_rss(pid));
        let ticks = cpu_ticks(pid);
        let (ops, rate) = self.storm(kind, seconds)?;
        let caught_up = (storm.output == Output::JsonFile).then(|| settled(&stream));
        if let Some((stop, scraped)) = scraper {
            let _ = stop.send(());
            if scraped.join().unwrap_or(0) == 0 {
                bail!("--metrics {METRICS_ADDR} answered no scrape");
            }
        }
        let ticks = cpu_ticks(pid).saturating_sub(ticks);
        let rss_kib = sampling.map_or(0, |(sampler, sampled)| {
            let _ = sampler.send(());
            sampled.join().unwrap_or(0)
        });
        let hwm_kib = status(pid).and_then(|s| s.vmhwm).unwrap_or(0);
        let (events, lost) = closing(&stop(tracer)?);
        if storm.output == Output::JsonFile {
            // Every transition shown is a line of the stream.
            let lines = std::fs::read(&stream).map_or(0, |b| bytecount(&b));
            // Findings and losses are lines too.
            if lines < events {
                bail!("the --json stream has {lines} lines, nstrace showed {events} transitions");
            }
            let _ = std::fs::remove_file(&stream);
        }
        Ok(TracedRun {
            caught_up,
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
    /// The RSS under the evidence storm (`--evidence` holds its window of entries).
    pub(super) evidence_rss: u64,
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
        let workload = storm.workload;
        let (_, mut before) = setup.storm(workload, &secs)?;
        row.untraced.push(before);
        for _ in 0..rounds {
            let run = setup.traced(storm, &secs, false)?;
            row.caught_up.extend(run.caught_up);
            self.startups.push(run.startup);
            row.tracer_ticks += run.ticks;
            row.traced_seconds += seconds;
            if storm.output != Output::Evidence {
                self.peak_rss = self.peak_rss.max(run.hwm_kib);
            }
            row.count(&run, per_op);
            let (_, after) = setup.storm(workload, &secs)?;
            row.ratios.push(bracketed(run.rate, before, after));
            row.untraced.push(after);
            before = after;
            if let Some(bpftrace) = setup.bpftrace.as_ref().filter(|_| storm.peer) {
                let t = start(
                    Command::new(bpftrace).args(["-e", BPFTRACE]),
                    "attached",
                    Kind::Bpftrace,
                )?;
                self.peer_startups.push(t.startup.as_secs_f64());
                let (_, traced) = setup.storm(workload, &secs)?;
                stop(t)?;
                let (_, after) = setup.storm(workload, &secs)?;
                peer.ratios.push(bracketed(traced, before, after));
                row.untraced.push(after);
                before = after;
            }
        }
        // Memory under a storm needs a run long enough for a lagging collector to pile up
        // records: one traced run of at least 3 s.
        let run = setup.traced(storm, &seconds.max(3.0).to_string(), true)?;
        // Evidence holds up to its cap of entries on purpose: its own row.
        if storm.output == Output::Evidence {
            self.evidence_rss = self.evidence_rss.max(run.rss_kib);
        } else {
            self.storm_rss = self.storm_rss.max(run.rss_kib);
            self.peak_rss = self.peak_rss.max(run.hwm_kib);
        }
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
    /// `--json` to a file: each run's seconds to catch up after the storm.
    pub(super) caught_up: Vec<f64>,
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

/// Where `--metrics` listens during the bench's metrics storm.
const METRICS_ADDR: &str = "127.0.0.1:19464";

/// A scraper of METRICS_ADDR every second, as a Prometheus with a 1 s interval; told to stop,
/// it returns how many scrapes were answered.
fn scrape_every_second() -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<u64>) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let mut answered = 0;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(METRICS_ADDR) {
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut body = String::new();
                if s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").is_ok()
                    && s.read_to_string(&mut body).is_ok()
                    && body.starts_with("HTTP/1.1 200")
                {
                    answered += 1;
                }
            }
            if rx.recv_timeout(std::time::Duration::from_secs(1)).is_ok() {
                return answered;
            }
        }
    });
    (tx, handle)
}

/// Seconds from now until `file` stops growing (no growth for 200 ms): how long the stream
/// took to catch up with a storm that has just ended.
fn settled(file: &Path) -> f64 {
    let began = Instant::now();
    let size = || std::fs::metadata(file).map_or(0, |m| m.len());
    let (mut last, mut grew) = (size(), began.elapsed());
    while began.elapsed() - grew < std::time::Duration::from_millis(200)
        && began.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let now = size();
        if now != last {
            (last, grew) = (now, began.elapsed());
        }
    }
    grew.as_secs_f64()
}

fn bytecount(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// What one storm run under nstrace gave.
pub(super) struct TracedRun {
    /// `--json` to a file: seconds after the storm until the stream stopped growing.
    pub(super) caught_up: Option<f64>,
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

/// The collector's nanoseconds per record, over the repeats, with text and with `--json`; and
/// the JSON serialiser's transitions a second alone.
pub(super) struct Collector {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) json_median: f64,
    pub(super) json_min: f64,
    /// Text, keeping `--evidence` besides (the machine's tasks in the timeline).
    pub(super) evidence_median: f64,
    pub(super) serialise: f64,
}

/// Times the collector without the kernel: `nsstorm pipe` (text, then JSON) and the serialiser
/// (`nsstorm json`), `repeats` times each.
fn collector(bin: &Path, repeats: usize) -> Result<Collector> {
    step(
        "collector: 1M setns records through decode, reorder, timeline and text, then JSON, \
         then text keeping --evidence (nsstorm pipe); the JSON serialiser alone (nsstorm json)",
    );
    let runs = |args: &[&str], name: &str| -> Result<Vec<f64>> {
        let mut values = Vec::new();
        for _ in 0..repeats {
            if let Some(v) = field(&nsstorm(bin, args)?, name) {
                values.push(v);
            }
        }
        Ok(values)
    };
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let (mut text, mut json) = (
        runs(&["pipe", "1000000"], "ns_per_record")?,
        runs(&["pipe", "1000000", "json"], "ns_per_record")?,
    );
    let evidence_dir = bin.join("bench-pipe-evidence");
    let _ = std::fs::remove_dir_all(&evidence_dir);
    let mut evidence = runs(
        &[
            "pipe",
            "1000000",
            "evidence",
            &evidence_dir.display().to_string(),
        ],
        "ns_per_record",
    )?;
    let _ = std::fs::remove_dir_all(&evidence_dir);
    let mut serialise = runs(&["json", "1000000"], "rate")?;
    Ok(Collector {
        evidence_median: median(&mut evidence),
        min: min(&text),
        json_min: min(&json),
        median: median(&mut text),
        json_median: median(&mut json),
        serialise: median(&mut serialise),
    })
}

/// `nstrace report`'s records a second, medians of the repeats: reading a binary and a JSON
/// Lines record (findings only shown), and the binary one printed as text and as `--json` (to
/// /dev/null).
pub(super) struct Replay {
    pub(super) binary: f64,
    pub(super) json: f64,
    pub(super) to_text: f64,
    pub(super) to_json: f64,
}

/// Times `nstrace report` on a synthetic recording of 1M records, binary then JSON Lines.
fn replay(setup: &Setup, repeats: usize) -> Result<Replay> {
    step("replay: a 1M-record file through `nstrace report`, binary and JSON Lines");
    // (records/s binary, records/s JSON Lines): medians of `repeats` runs each.
    let mut replay = [Vec::new(), Vec::new()];
    let mut printed = [Vec::new(), Vec::new()];
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
        let time = |output: &[&str]| -> Result<f64> {
            let began = Instant::now();
            let status = Command::new(&setup.nstrace)
                .args(["report", "--no-summary"])
                .args(output)
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("nstrace report failed on the synthetic recording {path}");
            }
            Ok(1_000_000.0 / began.elapsed().as_secs_f64())
        };
        for _ in 0..repeats {
            rates.push(time(&["--findings"])?);
            if binary {
                printed[0].push(time(&[])?);
                printed[1].push(time(&["--json"])?);
            }
        }
        let _ = std::fs::remove_file(&file);
    }
    let [mut binary, mut json] = replay;
    let [mut to_text, mut to_json] = printed;
    Ok(Replay {
        binary: median(&mut binary),
        json: median(&mut json),
        to_text: median(&mut to_text),
        to_json: median(&mut to_json),
    })
}
