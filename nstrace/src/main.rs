//! The `nstrace` command: argument parsing and dispatch.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use nstrace::{
    clock::{WallClock, monotonic_ns},
    collect::{self, Options, Summary},
    load,
    ns::{NsKind, NsType},
    output::{
        Sink,
        json::JsonSink,
        summary::{self, Times},
        text::TextSink,
    },
    pipeline::{Filter, Pipeline},
    proc,
    record::{self, BinSink, Header, ProcessLine, RecordFile},
    timeline::{Scope, Timeline},
};

const EXAMPLES: &str = "\
EXAMPLES:
    nstrace                              every namespace transition on this machine
    nstrace --json | jq 'select(.comm == \"runc\")'
    nstrace run -- unshare -p -f --mount-proc true
                                         one command and all it starts, then a summary
    nstrace run -o start.jsonl -- runc run demo
    nstrace record -o host.jsonl         record the whole machine until Ctrl-C
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
    /// At the end, write a Chrome/Perfetto trace (JSON) of the timeline to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    perfetto: Option<PathBuf>,
    /// At the end, write an SVG picture of the timeline to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    svg: Option<PathBuf>,
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
        Some(Command::Report { file }) => report(&cli.common, file).map(|()| 0),
        command => {
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
            runtime.block_on(live(&cli.common, command.as_ref()))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nstrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn filter(common: &Common) -> Filter {
    Filter {
        comm: common.comm.clone(),
        types: (!common.types.is_empty()).then(|| common.types.clone()),
        findings_only: common.findings,
    }
}

/// stdout's sink for transitions, text or JSON.
fn stdout_sink(common: &Common, clock: WallClock) -> Box<dyn Sink> {
    let stdout = io::BufWriter::with_capacity(64 * 1024, io::stdout());
    if common.json {
        Box::new(JsonSink::new(stdout, clock, false))
    } else {
        Box::new(TextSink::new(stdout, clock, common.utc))
    }
}

/// The summary on stdout, and the pictures asked for.
fn finish(common: &Common, timeline: &Timeline, clock: WallClock) -> anyhow::Result<()> {
    let times = Times {
        clock,
        utc: common.utc,
    };
    if let Some(path) = &common.perfetto {
        let trace = nstrace::output::perfetto::trace(timeline);
        std::fs::write(path, serde_json::to_vec(&trace)?)
            .with_context(|| format!("writing the Perfetto trace {}", path.display()))?;
        eprintln!(
            "nstrace: wrote {} (open it in ui.perfetto.dev)",
            path.display()
        );
    }
    if let Some(path) = &common.svg {
        std::fs::write(path, nstrace::output::svg::render(timeline, &times))
            .with_context(|| format!("writing the SVG timeline {}", path.display()))?;
        eprintln!("nstrace: wrote {}", path.display());
    }
    print_summary(common, timeline, &times).context("writing the summary")
}

fn print_summary(common: &Common, timeline: &Timeline, times: &Times) -> io::Result<()> {
    if common.no_summary {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    if common.json {
        serde_json::to_writer(&mut out, &summary::json(timeline, times))?;
        writeln!(out)
    } else {
        write!(out, "{}", summary::text(timeline, times))
    }
}

/// A new record file (0600, whole entries only), JSON Lines or binary.
fn create_record(path: &Path, binary: bool) -> anyhow::Result<Box<dyn Sink>> {
    let context = || format!("creating the record file {}", path.display());
    let file = RecordFile::create(path).with_context(context)?;
    Ok(if binary {
        Box::new(BinSink::new(file).with_context(context)?)
    } else {
        Box::new(JsonSink::new(file, WallClock::now(), true))
    })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Live tracing: the whole machine, `run`, or `record`.
async fn live(common: &Common, command: Option<&Command>) -> anyhow::Result<u8> {
    // First: a Ctrl-C or SIGTERM from here on ends the trace cleanly, even one that arrives
    // while the programs load (a process started in the background by a script inherits
    // SIGINT ignored until a handler is installed).
    let mut signals = StopSignals::install();
    let record_path = common.output.clone();
    if matches!(command, Some(Command::Record)) && record_path.is_none() {
        bail!("`nstrace record` needs -o FILE, the file to write");
    }
    let mut archive = record_path
        .as_deref()
        .map(|path| create_record(path, common.binary))
        .transpose()?;
    let mut loaded = load::load()?;
    let options = Options {
        buffer_pages: common
            .buffer_pages
            .unwrap_or_else(nstrace::collect::machine_buffer_pages),
        ..Options::default()
    };
    let clock = WallClock::now();
    let run_cmd = match command {
        Some(Command::Run { cmd }) => Some(cmd.clone()),
        _ => None,
    };
    let following_cmd = run_cmd.is_some();
    let mut stdout = stdout_sink(common, clock);
    // A command is followed from its birth: its pid joins the scope when it starts.
    let scope = if following_cmd || !common.pid.is_empty() {
        Scope::Descendants(common.pid.iter().copied().collect())
    } else {
        Scope::All
    };
    let mut pipeline = Pipeline::new(Timeline::new(scope), filter(common));
    pipeline.sinks.push(stdout.as_mut());
    if let Some(archive) = archive.as_mut() {
        pipeline.archive = Some(archive.as_mut());
    }

    let (child_tx, child_rx) = tokio::sync::oneshot::channel::<tokio::process::Child>();
    let hooks = loaded.hooks.len();
    let ready = |cpus: usize, pipeline: &mut Pipeline<'_>| -> io::Result<()> {
        let at = monotonic_ns();
        let snapshot = proc::snapshot();
        let host = snapshot
            .iter()
            .filter(|e| (e.tid == 1 || e.tid == 2) && e.inodes[NsKind::Mnt.slot()].is_some())
            .min_by_key(|e| e.tid)
            .map(|init| {
                NsKind::ALL
                    .into_iter()
                    .filter_map(|k| init.inodes[k.slot()].map(|i| (k.name().to_owned(), i)))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        let own_pid_ns = proc::ns_inode(std::path::Path::new("/proc/self/ns"), NsKind::Pid);
        let nested = own_pid_ns.is_some() && own_pid_ns != NsType::Pid.initial_inode();
        if nested {
            eprintln!(
                "nstrace: note: nstrace runs in a nested pid namespace: it sees only that \
                 namespace's processes in /proc, and `host` means this namespace's view"
            );
        }
        if let Some(archive) = pipeline.archive.as_mut() {
            let header = Header::new(
                kernel_release(),
                clock_offset(&clock),
                at,
                host,
                nested,
                common.pid.clone(),
                following_cmd || !common.pid.is_empty(),
            );
            write_line(&mut **archive, &header)?;
            for entry in &snapshot {
                write_line(&mut **archive, &ProcessLine::from(entry))?;
            }
        }
        pipeline.snapshot(&snapshot, at)?;
        log::debug!(
            "snapshot of {} tasks taken (peak RSS {} KiB)",
            snapshot.len(),
            nstrace::load::peak_rss_kib()
        );
        eprintln!(
            "nstrace: tracing clone, clone3, unshare, setns, fork, exec and exit ({hooks} hooks, \
             {cpus} CPUs, {} tasks already running); Ctrl-C to stop",
            snapshot.len()
        );
        if let Some(cmd) = &run_cmd {
            let child = tokio::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .kill_on_drop(false)
                .spawn()
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("starting {}: {e}", cmd[0].to_string_lossy()),
                    )
                })?;
            if let Some(pid) = child.id() {
                pipeline.timeline.follow(pid);
                if let Some(archive) = pipeline.archive.as_mut() {
                    write_line(
                        &mut **archive,
                        &serde_json::json!({"type": "follow", "pid": pid}),
                    )?;
                }
            }
            let _ = child_tx.send(child);
        }
        Ok(())
    };
    let status = std::cell::Cell::new(None);
    let stop = async {
        if following_cmd {
            if let Ok(mut child) = child_rx.await {
                tokio::select! {
                    result = child.wait() => status.set(result.ok()),
                    () = signals.recv() => {
                        // Pass the stop on (Ctrl-C in a terminal reaches it already), then
                        // wait for the command to end.
                        if let Some(pid) = child.id() {
                            // SAFETY: signalling our own child.
                            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                        }
                        status.set(child.wait().await.ok());
                    }
                }
            }
        } else {
            signals.recv().await;
        }
    };
    let summary: Summary = collect::collect(&mut loaded, &options, &mut pipeline, stop, ready)
        .await
        .context("tracing")?;
    let Pipeline {
        timeline, closed, ..
    } = pipeline;
    drop(stdout);
    eprintln!("{}", summary.closing_line());
    if !closed {
        finish(common, &timeline, clock)?;
    }
    Ok(exit_code(status.get()))
}

/// The exit status of `run`: the command's, or 128 + the signal that ended it.
fn exit_code(status: Option<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        None => 0,
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(signal)) => 128u8.saturating_add(signal as u8),
            (None, None) => 1,
        },
    }
}

fn clock_offset(clock: &WallClock) -> i64 {
    clock.to_utc(0).timestamp_nanos_opt().unwrap_or(0)
}

/// Writes a header, snapshot or follow line into a record file.
fn write_line(sink: &mut dyn Sink, value: &impl serde::Serialize) -> io::Result<()> {
    sink.note(&serde_json::to_value(value).map_err(io::Error::other)?)
}

/// Offline: rebuild the timeline from a record file.
fn report(common: &Common, file: &Path) -> anyhow::Result<()> {
    let header = record::read_header(file)?;
    let mut stdout = stdout_sink(common, header.clock());
    let mut pipeline = Pipeline::new(Timeline::new(Scope::All), filter(common));
    pipeline.sinks.push(stdout.as_mut());
    pipeline.start()?;
    let (header, bad) = record::rebuild(file, &common.pid, &mut pipeline)?;
    pipeline.flush()?;
    let Pipeline {
        timeline, shown, ..
    } = pipeline;
    drop(stdout);
    finish(common, &timeline, header.clock())?;
    eprintln!(
        "nstrace: {shown} transitions shown, replayed from {} (recorded on Linux {})",
        file.display(),
        header.kernel
    );
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("nstrace: {}: {b}", file.display());
        }
        let unit = bad[0].unit;
        bail!(
            "{} has {} bad {unit}s (listed above); every good {unit} was read",
            file.display(),
            bad.len()
        );
    }
    Ok(())
}

/// Ctrl-C and SIGTERM, listened for from the moment they are installed.
struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self(
            signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok(),
        )
    }

    /// The next Ctrl-C or SIGTERM (one received since `install` counts).
    async fn recv(&mut self) {
        let Some((int, term)) = &mut self.0 else {
            // Without signal handlers the default action still ends the process.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
