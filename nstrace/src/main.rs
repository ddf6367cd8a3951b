//! The `nstrace` command: argument parsing and dispatch.
use std::{io, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use nstrace::{
    clock::WallClock,
    collect::{self, Options, Summary},
    load,
    output::{Sink, json::JsonSink, text::TextSink},
};

const EXAMPLES: &str = "\
EXAMPLES:
    nstrace                 # every namespace transition on this machine, one line each
    nstrace --json          # the same as JSON Lines, every field (see the README)
    nstrace --json | jq 'select(.comm == \"runc\")'
";

/// Trace which process entered which Linux namespace, when, and how.
///
/// Watches clone, clone3, unshare and setns (and the forks and execs they prepare) on the whole
/// machine and prints each namespace transition with the caller's namespace set before and after,
/// by the inode numbers `ls -l /proc/PID/ns` shows.
#[derive(Debug, Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    /// Print JSON Lines (one object per transition) instead of text.
    #[arg(long)]
    json: bool,
    /// Print times in UTC rather than local time (text output).
    #[arg(long)]
    utc: bool,
    /// Size of each CPU's perf buffer, in pages (a power of two).
    #[arg(long, default_value_t = 256, value_parser = power_of_two)]
    buffer_pages: usize,
    /// Explain what the loader does (-v), and more (-vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn power_of_two(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n.is_power_of_two() {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a power of two (try {})",
            n.next_power_of_two()
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nstrace: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(trace(&cli)) {
        Ok(summary) => {
            eprintln!("{}", summary.closing_line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nstrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn trace(cli: &Cli) -> anyhow::Result<Summary> {
    let mut loaded = load::load()?;
    let options = Options {
        buffer_pages: cli.buffer_pages,
        ..Options::default()
    };
    let clock = WallClock::now();
    let stdout = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut sink: Box<dyn Sink> = if cli.json {
        Box::new(JsonSink::new(stdout, clock))
    } else {
        Box::new(TextSink::new(stdout, clock, cli.utc))
    };
    let hooks = loaded.hooks.len();
    collect::collect(
        &mut loaded,
        &options,
        sink.as_mut(),
        stop_signal(),
        |cpus| {
            eprintln!(
                "nstrace: tracing clone, clone3, unshare, setns, fork and exec ({hooks} hooks, \
                 {cpus} CPUs); Ctrl-C to stop"
            );
        },
    )
    .await
    .context("tracing")
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the default action still ends the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
