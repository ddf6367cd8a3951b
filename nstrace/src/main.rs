//! The `nstrace` command: argument parsing and dispatch.
//!
//! The work itself is in [`cli`]: live tracing, replay, the files written, `run`'s command and
//! the signals that stop a trace.
mod cli;

use std::{ffi::OsString, io, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use nstrace::{
    clock::WallClock,
    ns::NsType,
    origin::Origin,
    output::{Sink, json::JsonSink, text::TextSink},
    pipeline::Filter,
};

use cli::command::NotStarted;

const EXAMPLES: &str = "\
EXAMPLES:
    nstrace                              every namespace transition on this machine
    nstrace --json | jq 'select(.comm == \"runc\")'
    nstrace run -- unshare -p -f --mount-proc true
                                         one command and all it starts, then a summary
    nstrace run -o start.jsonl -- runc run demo
    nstrace record -o host.jsonl         record the whole machine until Ctrl-C
    nstrace --container web              only what happens in the container named web
    nstrace report host.jsonl --pid 4242 the same timeline, offline, for one process tree
";

/// Trace which process entered which Linux namespace, when, and how.
///
/// Watches clone, clone3, unshare and setns (and the forks, execs and exits around them) and
/// prints each namespace transition with the caller's namespace set before and after, by the
/// inode numbers `ls -l /proc/PID/ns` shows; at the end, a summary of the namespaces made, entered
/// and left, and of who moved where.
#[derive(Debug, Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trace CMD and everything it starts (run directly, not through a shell); exit with its
    /// status.
    Run {
        /// The command and its arguments, after `--`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<OsString>,
    },
    /// Record every record to a file (-o; JSON Lines, or binary with --binary) until Ctrl-C,
    /// for `nstrace report`.
    Record,
    /// Rebuild the timeline from a record file, as it was live.
    Report {
        /// A file written by `nstrace record -o` or `nstrace run -o`.
        file: PathBuf,
    },
    /// Print a completion script for SHELL to standard output: for bash into
    /// /etc/bash_completion.d/nstrace, for zsh as _nstrace in a directory of $fpath, for fish
    /// into ~/.config/fish/completions/nstrace.fish.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print nstrace's manual page (roff) to standard output: `nstrace man > nstrace.1`, or
    /// `nstrace man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
struct Common {
    /// Print JSON Lines (one object per transition, then a summary object) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Follow only this process and its descendants (repeatable).
    #[arg(long, global = true, value_name = "PID")]
    pid: Vec<u32>,
    /// Show only records of processes with this command name.
    #[arg(long, global = true, value_name = "NAME")]
    comm: Option<String>,
    /// Show only what happens in this container: its name (docker, podman; for Kubernetes the
    /// container, its pod, or namespace/pod), its id or the start of it, or runtime:id.
    #[arg(long, global = true, value_name = "NAME|ID")]
    container: Option<String>,
    /// Show only transitions of these namespace types (comma-separated: mnt,uts,ipc,pid,net,
    /// user,cgroup,time).
    #[arg(long = "type", global = true, value_name = "TYPES", value_delimiter = ',', value_parser = ns_type)]
    types: Vec<NsType>,
    /// Also write every record to FILE (created 0600), for `nstrace report` (live and run).
    #[arg(short, long, global = true, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write the record file (-o) in nstrace's binary encoding instead of JSON Lines: about a
    /// fifth of the size, and `report` replays it several times faster.
    #[arg(long, global = true, requires = "output")]
    binary: bool,
    /// Rotate the record file (-o) past SIZE bytes (K, M, G: KiB, MiB, GiB): FILE becomes
    /// FILE.1, FILE.1 FILE.2, and so on; each file starts with a snapshot and replays on its
    /// own (a file holds at least as much of records as of snapshot).
    #[arg(long, global = true, value_name = "SIZE", requires = "output", value_parser = byte_size)]
    rotate_size: Option<u64>,
    /// With --rotate-size: how many rotated files to keep besides FILE (the oldest go).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 5,
        requires = "rotate_size"
    )]
    rotate_keep: usize,
    /// Keep evidence of every finding in DIR (made 0700 when missing): a record file of the
    /// time around it (--evidence-window before and after) that `nstrace report` replays, so a
    /// node keeps what led to a finding without recording everything (report: cut out of the
    /// recording).
    #[arg(long, global = true, value_name = "DIR")]
    evidence: Option<PathBuf>,
    /// With --evidence: the seconds kept before and after each finding.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value = "10",
        value_parser = seconds,
        requires = "evidence"
    )]
    evidence_window: u64,
    /// With --evidence: the files kept at most; later findings are counted, not kept (a flood
    /// of findings cannot push out the first evidence).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 100,
        requires = "evidence"
    )]
    evidence_keep: usize,
    /// At the end, write a Chrome/Perfetto trace (JSON) of the timeline to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    perfetto: Option<PathBuf>,
    /// At the end, write an SVG picture of the timeline to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// report: the state at TIME instead of the timeline: every namespace alive then (with
    /// --pid, each process's whole set). TIME: RFC 3339, a time of day on the recording's date
    /// (14:03:05.25, local unless --utc), or +SECONDS from its start (+12.5).
    #[arg(long, global = true, value_name = "TIME", conflicts_with_all = ["since", "until"])]
    at: Option<String>,
    /// The life of one namespace: who made it, every member's entry and exit with its cause,
    /// when it emptied, the findings that name it (report: instead of the timeline; live: at
    /// the end, instead of the summary, the stream showing only the transitions that touch it,
    /// besides findings and losses). TYPE:INODE
    /// (net:4026532176, or net:[4026532176] as `ls -l /proc/PID/ns` shows it), or an inode or
    /// the kernel's namespace id alone.
    #[arg(
        long = "ns",
        global = true,
        value_name = "TYPE:INODE|ID",
        conflicts_with = "at"
    )]
    namespace: Option<String>,
    /// report: only what happened from TIME on (as --at); the state before it is rebuilt
    /// first.
    #[arg(long, global = true, value_name = "TIME")]
    since: Option<String>,
    /// report: only what happened until TIME (as --at); nothing later is applied.
    #[arg(long, global = true, value_name = "TIME")]
    until: Option<String>,
    /// Show only findings (and the summary).
    #[arg(long, global = true)]
    findings: bool,
    /// Print no summary at the end.
    #[arg(long, global = true)]
    no_summary: bool,
    /// Print times in UTC rather than local time (text output).
    #[arg(long, global = true)]
    utc: bool,
    /// Size of each CPU's perf buffer, in pages (a power of two) [default: 64 MiB shared out over
    /// the CPUs, 1024 to 4096 pages each]
    #[arg(long, global = true, value_parser = power_of_two)]
    buffer_pages: Option<usize>,
    /// Serve metrics in the Prometheus text format on ADDR:PORT (/metrics), with /readyz and
    /// /healthz for probes (live and run; e.g. 127.0.0.1:9464).
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// The node's name in every JSON object and in the record's header (with the boot's id), for
    /// pipelines that merge many nodes [default: the hostname].
    #[arg(long, global = true, value_name = "NAME", env = "NSTRACE_NODE")]
    node: Option<String>,
    /// Explain what the loader does (-v), and more (-vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
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

/// Seconds (`10`, `2.5`) as nanoseconds: a millisecond at least, a day at most.
fn seconds(s: &str) -> Result<u64, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: a number of seconds (10, 2.5)"))?;
    if !(0.001..=86_400.0).contains(&secs) {
        return Err(format!(
            "{s:?}: from a millisecond (0.001) to a day (86400) of seconds"
        ));
    }
    Ok((secs * 1e9) as u64)
}

/// `64K`, `100M`, `1G` or bytes; at least 4 KiB (a header and a snapshot must fit).
fn byte_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.trim().char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => s.trim().split_at(at),
        None => (s.trim(), ""),
    };
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?}: a size is a number with K, M or G after it (64M)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: a size is a number (64M)"))?;
    let bytes = n.checked_mul(scale).ok_or(format!("{s:?} is too large"))?;
    if bytes < 4096 {
        return Err(format!(
            "{s:?}: at least 4K (a file starts with a header and a snapshot)"
        ));
    }
    Ok(bytes)
}

fn ns_type(name: &str) -> Result<NsType, String> {
    NsType::from_name(name.trim()).ok_or_else(|| {
        format!(
            "unknown namespace type {name:?} (one of mnt, uts, ipc, pid, net, user, cgroup, time)"
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.common.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match &cli.command {
        Some(Command::Report { file }) => cli::report::report(&cli.common, file).map(|()| 0),
        Some(Command::Completions { shell }) => {
            // Made in memory first: the generator panics on a failed write.
            let mut script = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "nstrace", &mut script);
            print_all(&script, "the completion script")
        }
        Some(Command::Man) => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)
            {
                Ok(()) => print_all(&page, "the manual page"),
                Err(e) => Err(anyhow::anyhow!("making the manual page: {e}")),
            }
        }
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    nstrace::say!("nstrace: error: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(cli::live::live(&cli.common, command.as_ref()))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            nstrace::say!("nstrace: error: {e:#}");
            // A command that could not be started: as shells and env(1) say it.
            match e.downcast_ref::<NotStarted>() {
                Some(NotStarted { code, .. }) => ExitCode::from(*code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Whether text goes out in colour: to a terminal, unless NO_COLOR is set (https://no-color.org).
pub(crate) fn colour() -> bool {
    use std::io::IsTerminal as _;
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes `bytes` to standard output; a reader that went away (`| head`) is no error.
fn print_all(bytes: &[u8], what: &str) -> anyhow::Result<u8> {
    use io::Write as _;
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if !nstrace::output::reader_gone(&e) => Err(anyhow::anyhow!("writing {what}: {e}")),
        _ => Ok(0),
    }
}

fn filter(common: &Common) -> Filter {
    Filter {
        comm: common.comm.clone(),
        types: (!common.types.is_empty()).then(|| common.types.clone()),
        findings_only: common.findings,
        container: common.container.clone(),
        since_ns: None,
        until_ns: None,
        namespace: None,
    }
}

/// stdout's sink for transitions, text or JSON.
/// `origin`: the node and boot every JSON object names (live: this one; replayed: the record's).
fn stdout_sink(common: &Common, clock: WallClock, origin: Option<&Origin>) -> Box<dyn Sink> {
    let stdout = io::BufWriter::with_capacity(64 * 1024, io::stdout());
    if common.json {
        let sink = JsonSink::new(stdout, clock, false);
        Box::new(match origin {
            Some(origin) => sink.with_origin(origin),
            None => sink,
        })
    } else {
        Box::new(TextSink::new(stdout, clock, common.utc).with_colour(colour()))
    }
}
