//! `cargo xtask bench`: nstrace's cost, measured against the untraced workload.
//!
//! For each storm of `nsstorm`, untraced and traced runs alternate (this machine is noisy: only
//! ratios from one invocation are honest), several rounds; medians and min-max of the traced /
//! untraced ratio, events seen against operations done, lost samples, nstrace's start-up time
//! (launch until attached) and peak RSS; then the replay throughput of a recording through
//! `nstrace report`. bpftrace runs in the same harness on the same tracepoints when installed.
//! One table on stdout, the same as JSON in target/bench.json.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{run_cmd, step};

/// (storm, target, transitions each op should produce: a setns op is a round trip of two).
const STORMS: [(&str, &str, u64); 4] = [
    ("unshare", "≥ 0.95", 1),
    ("fork", "≥ 0.95", 0),
    ("setns", "≥ 0.60, 0 lost", 2),
    ("clone", "≥ 0.98", 1),
];

struct Tracer {
    child: Child,
    startup: Duration,
    /// The lines of the stream it says it is attached on.
    lines: std::sync::mpsc::Receiver<String>,
}

/// Where a tracer says it is attached: nstrace on stderr (its stdout is the trace, discarded
/// here), bpftrace on stdout (its printf).
#[derive(Clone, Copy, PartialEq)]
enum Says {
    OnStderr,
    OnStdout,
}

/// Starts a tracer and waits until it says it is attached.
fn start(cmd: &mut Command, ready: &str, says: Says) -> Result<Tracer> {
    let began = Instant::now();
    let (out, err) = match says {
        Says::OnStderr => (Stdio::null(), Stdio::piped()),
        Says::OnStdout => (Stdio::piped(), Stdio::null()),
    };
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stream: Box<dyn std::io::Read + Send> = match says {
        Says::OnStderr => Box::new(child.stderr.take().context("stderr")?),
        Says::OnStdout => Box::new(child.stdout.take().context("stdout")?),
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
    })
}

/// A memory figure of a live process from /proc/PID/status (VmHWM: peak; VmRSS: now), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's resident memory every 50 ms until told to stop; returns the largest.
fn sample_rss(pid: u32) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<u64>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut max = 0;
        loop {
            max = max.max(status_kib(pid, "VmRSS:"));
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return max;
            }
        }
    });
    (tx, handle)
}

/// Stops a tracer with SIGTERM; returns its stderr lines.
fn stop(mut t: Tracer) -> Vec<String> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGTERM) };
    let _ = t.child.wait();
    std::thread::sleep(Duration::from_millis(50));
    t.lines.try_iter().collect()
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
    let out = Command::new(bin.join("nsstorm"))
        .args(args)
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

fn storm(bin: &Path, kind: &str, seconds: f64) -> Result<(u64, f64)> {
    let text = nsstorm(bin, &[kind, &seconds.to_string()])?;
    let number = |name| field(&text, name).unwrap_or(0.0);
    Ok((number("ops") as u64, number("rate")))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

#[derive(Default)]
struct Row {
    storm: String,
    target: String,
    ratios: Vec<f64>,
    untraced: Vec<f64>,
    events: u64,
    ops: u64,
    lost: u64,
}

/// The bpftrace program: nstrace's hooks (its sched hooks as the sched tracepoints; setns at
/// its exit only, as nstrace), counting in the kernel (no record per event reaches userspace:
/// a floor for any tracer of these hooks, not a like-for-like tracer).
const BPFTRACE: &str = "tracepoint:syscalls:sys_enter_clone,tracepoint:syscalls:sys_enter_clone3,\
tracepoint:syscalls:sys_enter_unshare,\
tracepoint:syscalls:sys_exit_clone,tracepoint:syscalls:sys_exit_clone3,\
tracepoint:syscalls:sys_exit_unshare,tracepoint:syscalls:sys_exit_setns,\
tracepoint:sched:sched_process_fork,tracepoint:sched:sched_process_exec,\
tracepoint:sched:sched_process_exit { @[probe] = count(); } \
BEGIN { printf(\"attached\\n\"); }";

pub fn bench(rounds: usize, seconds: f64) -> Result<()> {
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

    let mut rows = Vec::new();
    let mut peer_rows = Vec::new();
    let mut startups = Vec::new();
    let mut peer_startups = Vec::new();
    let mut peak_rss = 0u64;
    let mut storm_rss = 0u64;
    for (kind, target, per_op) in STORMS {
        step(&format!(
            "storm {kind}: {rounds} rounds of {seconds} s, untraced and traced"
        ));
        let mut row = Row {
            storm: kind.into(),
            target: target.into(),
            ..Row::default()
        };
        let mut peer = Row {
            storm: kind.into(),
            ..Row::default()
        };
        for _ in 0..rounds {
            let (_, base) = storm(&bin, kind, seconds)?;
            let tracer = start(
                Command::new(&nstrace).args(["--no-summary"]),
                "nstrace: tracing",
                Says::OnStderr,
            )?;
            startups.push(tracer.startup.as_secs_f64());
            let (sampler, sampled) = sample_rss(tracer.child.id());
            let (ops, traced) = storm(&bin, kind, seconds)?;
            let _ = sampler.send(());
            storm_rss = storm_rss.max(sampled.join().unwrap_or(0));
            peak_rss = peak_rss.max(status_kib(tracer.child.id(), "VmHWM:"));
            let (events, lost) = closing(&stop(tracer));
            row.ratios.push(traced / base.max(1.0));
            row.untraced.push(base);
            row.events += events;
            row.ops += ops * per_op;
            row.lost += lost;
            if let Some(bpftrace) = &bpftrace {
                let (_, base) = storm(&bin, kind, seconds)?;
                let t = start(
                    Command::new(bpftrace).args(["-e", BPFTRACE]),
                    "attached",
                    Says::OnStdout,
                )?;
                peer_startups.push(t.startup.as_secs_f64());
                let (_, traced) = storm(&bin, kind, seconds)?;
                stop(t);
                peer.ratios.push(traced / base.max(1.0));
            }
        }
        rows.push(row);
        peer_rows.push(peer);
    }

    step("collector: 1M setns records through decode, reorder, timeline and text (nsstorm pipe)");
    let mut per_record = Vec::new();
    for _ in 0..rounds {
        let text = nsstorm(&bin, &["pipe", "1000000"])?;
        if let Some(ns) = field(&text, "ns_per_record") {
            per_record.push(ns);
        }
    }
    let pipe_min = per_record.iter().copied().fold(f64::MAX, f64::min);
    let pipe = median(&mut per_record);

    step("replay: a 1M-record file through `nstrace report`, binary and JSON Lines");
    // (records/s binary, records/s JSON Lines): medians of `rounds` runs each.
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
        for _ in 0..rounds {
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

    let mut table = String::new();
    table.push_str("| storm | untraced ops/s | traced/untraced (median, min-max) | bpftrace | transitions seen / made | lost | target |\n");
    table.push_str("|---|---|---|---|---|---|---|\n");
    for (row, peer) in rows.iter_mut().zip(&mut peer_rows) {
        let min = row.ratios.iter().copied().fold(f64::MAX, f64::min);
        let max = row.ratios.iter().copied().fold(0.0, f64::max);
        let peer_ratio = if peer.ratios.is_empty() {
            "not installed".into()
        } else {
            format!("{:.2}", median(&mut peer.ratios))
        };
        table.push_str(&format!(
            "| {} | {:.0} | {:.2} ({min:.2}-{max:.2}) | {peer_ratio} | {} / {} | {} | {} |\n",
            row.storm,
            median(&mut row.untraced),
            median(&mut row.ratios),
            row.events,
            row.ops,
            row.lost,
            row.target
        ));
    }
    let startup = median(&mut startups);
    let peer_startup = if peer_startups.is_empty() {
        "not installed".into()
    } else {
        format!("{:.3} s", median(&mut peer_startups))
    };
    table.push_str(&format!(
        "| start-up until attached | {startup:.3} s | | {peer_startup} | | | ≤ 0.15 s |\n"
    ));
    table.push_str(&format!(
        "| peak RSS under the storms | {:.1} MiB | | | | | ≤ 16 MiB |\n",
        storm_rss as f64 / 1024.0
    ));
    table.push_str(&format!(
        "| peak RSS including start-up (VmHWM) | {:.1} MiB | | | | | |\n",
        peak_rss as f64 / 1024.0
    ));
    table.push_str(&format!(
        "| `report` replay, binary record (`--binary`) | {replay_bin:.0} records/s | | | | | ≥ 1M/s |\n"
    ));
    table.push_str(&format!(
        "| `report` replay, JSON Lines record | {replay_json:.0} records/s | | | | | |\n"
    ));
    table.push_str(&format!(
        "| collector per setns record, no kernel (median, min) | {pipe:.0} ns ({pipe_min:.0} ns) | | | | | |\n"
    ));
    println!("{table}");

    let json = format!(
        "{{\"rounds\":{rounds},\"seconds\":{seconds},\"storms\":[{}],\"startup_s\":{startup:.4},\"storm_rss_kib\":{storm_rss},\"peak_rss_kib\":{peak_rss},\"replay_records_per_s\":{replay_bin:.0},\"replay_json_records_per_s\":{replay_json:.0},\"collector_ns_per_record\":{pipe:.1}}}\n",
        rows.iter()
            .map(|r| format!(
                "{{\"storm\":\"{}\",\"ratio_median\":{:.4},\"ratios\":{:?},\"events\":{},\"ops\":{},\"lost\":{}}}",
                r.storm,
                median(&mut r.ratios.clone()),
                r.ratios,
                r.events,
                r.ops,
                r.lost
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let out = root.join("target/bench.json");
    std::fs::write(&out, json).with_context(|| format!("writing {}", out.display()))?;
    step(&format!("wrote {}", out.display()));
    Ok(())
}
