//! nstrace's workflows: `cargo xtask build | run | test | image`.
//!
//! Each command first makes sure the machine can build eBPF (nightly's rust-src, a bpf-linker
//! built against nightly's LLVM) and installs what is missing, saying what it does. When all is
//! there, that check takes well under a second.
mod bench;
mod bootstrap;
mod engines;
mod image;
mod stats;

use std::{
    ffi::OsString,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "nstrace's build, run and test workflows")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what building needs, then build nstrace (kernel programs included).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run nstrace as root (directly when root, through sudo otherwise).
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for nstrace, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Measure nstrace against the untraced workload (as root): storms, start-up, memory,
    /// replay; prints a table and writes target/bench.json.
    Bench {
        /// Rounds of each storm: a traced run each, between untraced runs.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// Seconds of each storm run.
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
        /// Pin every storm run to this CPU (the tracers stay free); by default the scheduler
        /// places them.
        #[arg(long)]
        cpu: Option<usize>,
        /// Run only this storm (unshare, fork, setns, setns-json, setns-metrics, setns-evidence,
        /// clone, docker);
        /// repeatable.
        #[arg(long = "storm")]
        storms: Vec<String>,
    },
    /// Fuzz the record decoder and the record-file reader (cargo fuzz, nightly), keeping the
    /// corpus in nstrace/fuzz/corpus.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// Build the container image: a static nstrace alone, imported as nstrace:VERSION and
    /// nstrace:latest into the local Docker and Podman stores (no registry).
    Image,
    /// Install what testing needs, then check formatting, run clippy, validate the Kubernetes
    /// manifests, build the image, run the unit tests and the root integration tests.
    Test {
        /// Arguments for the test binaries, after `--` (a test name filters).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Build { release } => {
            bootstrap::toolchain()?;
            cargo(&["build", "--package", "nstrace"], release)
        }
        Cmd::Run { release, args } => {
            bootstrap::toolchain()?;
            cargo(&["build", "--package", "nstrace"], release)?;
            let bin = workspace_root()?
                .join("target")
                .join(if release { "release" } else { "debug" })
                .join("nstrace");
            let mut cmd = as_root(&bin);
            cmd.args(&args);
            step(&format!("running {}", bin.display()));
            // nstrace handles Ctrl-C itself and prints its counts; its exit status is ours.
            let status = cmd.status().context("starting nstrace")?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
            Ok(())
        }
        Cmd::Bench {
            rounds,
            seconds,
            cpu,
            storms,
        } => {
            bootstrap::toolchain()?;
            if !is_root() {
                bail!("the benchmark loads eBPF and makes namespaces: run it as root");
            }
            bootstrap::bench_peer();
            // The container storm needs a Docker daemon: one this run started is stopped at the
            // end.
            let _dockerd = engines::start()?;
            bench::bench(&bench::Options {
                rounds,
                seconds,
                cpu,
                storms,
            })
        }
        Cmd::Fuzz { seconds } => {
            bootstrap::toolchain()?;
            fuzz(seconds, true)
        }
        Cmd::Image => {
            bootstrap::toolchain()?;
            bootstrap::musl_target()?;
            let _dockerd = engines::start()?;
            image::build()
        }
        Cmd::Test { args } => {
            bootstrap::toolchain()?;
            bootstrap::test_tools()?;
            bootstrap::musl_target()?;
            bootstrap::manifest_validator()?;
            // Held until the tests are done: a daemon this run started is stopped then.
            let _dockerd = engines::start()?;
            step("checking formatting (cargo fmt --check)");
            run_cmd(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
            step("running clippy (warnings are errors)");
            run_cmd(Command::new("cargo").args([
                "clippy",
                "--workspace",
                "--exclude",
                "nstrace-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            step("building the binaries the integration tests run (nstrace, nshelper)");
            run_cmd(Command::new("cargo").args([
                "build",
                "--workspace",
                "--exclude",
                "nstrace-ebpf",
                "--bins",
            ]))?;
            // Briefly: `cargo xtask fuzz` runs them for minutes.
            fuzz(15, false)?;
            image::validate_manifests()?;
            // The image tests (tests/tests/image.rs) run it as the DaemonSet does.
            image::build()?;
            step("running the unit and root integration tests");
            // The integration tests share kernel state (attached programs, namespaces):
            // one at a time. The root tests are `#[ignore]`d so that a plain `cargo test`
            // leaves them out rather than passing them untested: here they run.
            let mut cmd = Command::new("cargo");
            cmd.args(["test", "--workspace", "--exclude", "nstrace-ebpf", "--"])
                .args(["--test-threads=1", "--include-ignored"])
                .args(&args);
            if !is_root() {
                cmd.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
            }
            run_tests(&mut cmd)
        }
    }
}

/// Fuzz targets, each a function of nstrace that takes untrusted bytes.
const FUZZ_TARGETS: [&str; 2] = ["decode", "record_file"];

/// Runs each fuzz target for `seconds`; a crash fails with its reproducer named by cargo fuzz.
/// `keep`: new inputs go into the kept corpus; otherwise into a scratch directory, so that a
/// test run leaves the tree as it was.
fn fuzz(seconds: u64, keep: bool) -> Result<()> {
    bootstrap::cargo_fuzz()?;
    let root = workspace_root()?;
    let dir = root.join("nstrace");
    for target in FUZZ_TARGETS {
        step(&format!("fuzzing {target} for {seconds} s"));
        let corpus = format!("fuzz/corpus/{target}");
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&dir)
            .args(["+nightly", "fuzz", "run", target]);
        if !keep {
            let scratch = root.join("target/fuzz-scratch").join(target);
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("creating {}", scratch.display()))?;
            cmd.arg(scratch);
        }
        run_cmd(
            cmd.arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={seconds}")),
        )?;
    }
    Ok(())
}

/// Runs cargo test, passing its output through, and closes with one line that totals every
/// test binary's result. Run with `--include-ignored`, no test should be ignored: any that is
/// was not run, and the closing line says so.
fn run_tests(cmd: &mut Command) -> Result<()> {
    use std::io::BufRead as _;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |what: &str| {
                result
                    .split(';')
                    .find_map(|part| part.trim().strip_suffix(what))
                    .and_then(|n| {
                        n.trim()
                            .trim_start_matches("ok.")
                            .trim_start_matches("FAILED.")
                            .trim()
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
            ignored += count(" ignored");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if ignored == 0 {
        println!("tests: {passed} passed, {failed} failed, 0 ignored");
    } else {
        println!("tests: {passed} passed, {failed} failed, {ignored} ignored (NOT run)");
    }
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Prints what the next step does.
pub fn step(what: &str) {
    eprintln!("xtask: {what}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command for `program` that runs as root: directly when we are root, through sudo otherwise.
fn as_root(program: &std::path::Path) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("-E").arg(program);
        cmd
    }
}

fn cargo(args: &[&str], release: bool) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(args);
    if release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn workspace_root() -> Result<std::path::PathBuf> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("xtask has no parent directory")
}
