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
        escape::escape,
        file::{self, OutputFile, PendingOutput},
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
                    nstrace::say!("nstrace: error: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(live(&cli.common, command.as_ref()))
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

/// The files asked for, made before tracing or replaying begins: a path that cannot be written
/// is said at once, not after the trace, and nothing is put in place until all are made (see
/// [`nstrace::output::file`]).
struct Outputs {
    record: Option<PendingOutput>,
    perfetto: Option<PendingOutput>,
    svg: Option<PendingOutput>,
}

impl Outputs {
    /// Checks that no two outputs, and no output and `input` (the record `report` reads), are
    /// one file; then makes each.
    fn create(common: &Common, record: bool, input: Option<&Path>) -> anyhow::Result<Self> {
        let mut named: Vec<(&str, &Path)> = Vec::new();
        if record && let Some(path) = &common.output {
            named.push(("the record file (-o)", path));
        }
        if let Some(path) = &common.perfetto {
            named.push(("the Perfetto trace (--perfetto)", path));
        }
        if let Some(path) = &common.svg {
            named.push(("the SVG picture (--svg)", path));
        }
        let ids: Vec<_> = named.iter().map(|(_, p)| file::identity(p)).collect();
        if let Some(input) = input.filter(|p| p.as_os_str() != "-") {
            let read = file::identity(input);
            if let Some(at) = ids.iter().position(|id| id.same(&read)) {
                bail!(
                    "{} {} is the record it is made from: name another file",
                    named[at].0,
                    named[at].1.display()
                );
            }
        }
        for (i, id) in ids.iter().enumerate() {
            if let Some(j) = ids[..i].iter().position(|other| other.same(id)) {
                bail!(
                    "{} and {} are one file, {}: name two",
                    named[j].0,
                    named[i].0,
                    named[i].1.display()
                );
            }
        }
        let make = |path: &Option<PathBuf>, what: &str| {
            path.as_deref()
                .map(|p| file::create(p).with_context(|| what.to_owned()))
                .transpose()
        };
        Ok(Self {
            record: if record {
                make(&common.output, "the record file (-o)")?
            } else {
                None
            },
            perfetto: make(&common.perfetto, "the Perfetto trace (--perfetto)")?,
            svg: make(&common.svg, "the SVG picture (--svg)")?,
        })
    }

    /// The record file, put in place (once tracing can start).
    fn record(&mut self) -> anyhow::Result<Option<OutputFile>> {
        self.record
            .take()
            .map(|pending| pending.commit().context("the record file (-o)"))
            .transpose()
    }

    /// The pictures asked for, written and put in place.
    fn pictures(&mut self, timeline: &Timeline, times: &Times) -> anyhow::Result<()> {
        if let Some(out) = self.perfetto.take() {
            let trace = nstrace::output::perfetto::trace(timeline);
            write_picture(out, &serde_json::to_vec(&trace)?, "the Perfetto trace")?;
        }
        if let Some(out) = self.svg.take() {
            let svg = nstrace::output::svg::render(timeline, times);
            write_picture(out, svg.as_bytes(), "the SVG picture")?;
        }
        Ok(())
    }
}

fn write_picture(out: PendingOutput, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    let path = out.path().display().to_string();
    let mut out = out.commit().with_context(|| format!("{what} {path}"))?;
    out.file
        .write_all(bytes)
        .with_context(|| format!("writing {what} {path}"))?;
    nstrace::say!("nstrace: wrote {path}");
    Ok(())
}

/// The summary on stdout, and the pictures asked for.
fn finish(
    common: &Common,
    outputs: &mut Outputs,
    timeline: &Timeline,
    clock: WallClock,
) -> anyhow::Result<()> {
    let times = Times {
        clock,
        utc: common.utc,
    };
    outputs.pictures(timeline, &times)?;
    match print_summary(common, timeline, &times) {
        // Nobody is reading any more (a closed pipe, a hung-up terminal): nothing to tell.
        Err(e) if nstrace::output::reader_gone(&e) => Ok(()),
        result => result.context("writing the summary"),
    }
}

fn print_summary(common: &Common, timeline: &Timeline, times: &Times) -> io::Result<()> {
    if common.no_summary {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    if common.json {
        serde_json::to_writer(&mut out, &summary::json(timeline, times))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", summary::text(timeline, times))?;
    }
    out.flush()
}

/// The record file's sink (0600, whole entries only), JSON Lines or binary.
fn record_sink(out: OutputFile, binary: bool) -> anyhow::Result<Box<dyn Sink>> {
    let path = out.path.display().to_string();
    let file = RecordFile::new(out);
    Ok(if binary {
        Box::new(BinSink::new(file).with_context(|| format!("writing the record file {path}"))?)
    } else {
        Box::new(JsonSink::new(file, WallClock::now(), true))
    })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A command `run` could not start: the exit status shells and env(1) give (127: not found,
/// 126: found but not executable).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
struct NotStarted {
    code: u8,
    what: String,
}

impl NotStarted {
    fn new(cmd: &std::ffi::OsStr, e: &io::Error) -> Self {
        let code = match e.kind() {
            io::ErrorKind::NotFound => 127,
            _ => 126,
        };
        let name = cmd.to_string_lossy();
        let what = if code == 127 {
            format!("{name}: command not found")
        } else {
            format!("{name}: cannot be run: {e}")
        };
        Self { code, what }
    }
}

/// Where `run`'s command would be found, as execvp finds it: refused before tracing begins
/// when it is missing or not executable.
fn check_command(cmd: &std::ffi::OsStr) -> Result<(), NotStarted> {
    use std::os::unix::fs::PermissionsExt as _;
    let candidates: Vec<PathBuf> = if cmd.as_encoded_bytes().contains(&b'/') {
        vec![PathBuf::from(cmd)]
    } else {
        // Without PATH, execvp searches its default path.
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
        std::env::split_paths(&path).map(|d| d.join(cmd)).collect()
    };
    let mut found = None;
    for path in &candidates {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(());
            }
            found.get_or_insert(io::Error::from(io::ErrorKind::PermissionDenied));
        }
    }
    Err(NotStarted::new(
        cmd,
        &found.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
    ))
}

/// Warns of `--pid`s that name no process: nothing is followed until one with that pid starts.
fn check_pids(pids: &[u32]) {
    for pid in pids {
        if !Path::new("/proc").join(pid.to_string()).exists() {
            nstrace::say!(
                "nstrace: warning: --pid {pid}: no such process; nothing is followed for it \
                 unless a process with that pid starts"
            );
        }
    }
}

/// Live tracing: the whole machine, `run`, or `record`.
async fn live(common: &Common, command: Option<&Command>) -> anyhow::Result<u8> {
    // First: a Ctrl-C, SIGTERM or SIGHUP from here on ends the trace cleanly, even one that
    // arrives while the programs load (a process started in the background by a script
    // inherits SIGINT ignored until a handler is installed).
    let mut signals = StopSignals::install();
    if matches!(command, Some(Command::Record)) && common.output.is_none() {
        bail!("`nstrace record` needs -o FILE, the file to write");
    }
    let run_cmd = match command {
        Some(Command::Run { cmd }) => {
            check_command(&cmd[0])?;
            Some(cmd.clone())
        }
        _ => None,
    };
    check_pids(&common.pid);
    let mut outputs = Outputs::create(common, true, None)?;
    let nested = in_nested_pid_namespace();
    let mut loaded = load::load()?;
    // Loaded: from here on the trace runs, and its record takes the name given.
    let mut archive = outputs
        .record()?
        .map(|out| record_sink(out, common.binary))
        .transpose()?;
    let options = Options {
        buffer_pages: common
            .buffer_pages
            .unwrap_or_else(nstrace::collect::machine_buffer_pages),
        // `run` goes on until its command ends, and `record` until it is stopped, whoever
        // reads their output; a plain trace ends with its reader (`nstrace | head`).
        stop_on_closed_output: command.is_none(),
        resync_from_proc: !nested,
        ..Options::default()
    };
    let clock = WallClock::now();
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
    let not_started = std::cell::RefCell::new(None);
    let ready = |cpus: usize, pipeline: &mut Pipeline<'_>| -> io::Result<()> {
        let at = monotonic_ns();
        let snapshot = proc::snapshot();
        begin(
            common,
            pipeline,
            &snapshot,
            at,
            &clock,
            following_cmd,
            nested,
        )?;
        nstrace::say!(
            "nstrace: tracing clone, clone3, unshare, setns, fork, exec and exit ({hooks} hooks, \
             {cpus} CPUs, {} tasks already running); Ctrl-C to stop",
            snapshot.len()
        );
        if let Some(cmd) = &run_cmd {
            let child = match start_command(cmd, pipeline) {
                Ok(child) => child,
                Err(e) => {
                    let error = NotStarted::new(&cmd[0], &e);
                    let message = error.what.clone();
                    *not_started.borrow_mut() = Some(error);
                    return Err(io::Error::new(e.kind(), message));
                }
            };
            let _ = child_tx.send(child);
        }
        Ok(())
    };
    let status = std::cell::Cell::new(None);
    let stop = async {
        if following_cmd {
            if let Ok(child) = child_rx.await {
                status.set(wait_for_command(child, &mut signals).await);
            }
        } else {
            signals.recv().await;
        }
    };
    let collected = collect::collect(&mut loaded, &options, &mut pipeline, stop, ready).await;
    if let Some(error) = not_started.into_inner() {
        return Err(error.into());
    }
    let summary: Summary = collected.context("tracing")?;
    let Pipeline { timeline, .. } = pipeline;
    drop(stdout);
    nstrace::say!("{}", summary.closing_line());
    finish(common, &mut outputs, &timeline, clock)?;
    Ok(exit_code(status.get()))
}

/// The start of a trace, once the buffers are open: the host's set, the record file's header
/// and snapshot, the snapshot into the timeline.
fn begin(
    common: &Common,
    pipeline: &mut Pipeline<'_>,
    snapshot: &[nstrace::timeline::ProcEntry],
    at: u64,
    clock: &WallClock,
    following_cmd: bool,
    nested: bool,
) -> io::Result<()> {
    let host = host_set(snapshot);
    if nested {
        nstrace::say!(
            "nstrace: note: nstrace runs in a nested pid namespace: it sees only that \
             namespace's processes in /proc, and `host` means this namespace's view"
        );
    }
    if let Some(archive) = pipeline.archive.as_mut() {
        let header = Header::new(
            kernel_release(),
            clock_offset(clock),
            at,
            host,
            nested,
            common.pid.clone(),
            following_cmd || !common.pid.is_empty(),
        );
        write_line(&mut **archive, &header)?;
        for entry in snapshot {
            write_line(&mut **archive, &ProcessLine::from(entry))?;
        }
    }
    pipeline.snapshot(snapshot, at)?;
    log::debug!(
        "snapshot of {} tasks taken (peak RSS {} KiB)",
        snapshot.len(),
        nstrace::load::peak_rss_kib()
    );
    Ok(())
}

/// Whether nstrace runs in a pid namespace other than the initial one: its /proc then shows that
/// namespace's processes, by that namespace's pids.
fn in_nested_pid_namespace() -> bool {
    let own = proc::ns_inode(Path::new("/proc/self/ns"), NsKind::Pid);
    own.is_some() && own != NsType::Pid.initial_inode()
}

/// The host's namespace set: pid 1's (or kthreadd's, where pid 1's links cannot be read).
fn host_set(snapshot: &[nstrace::timeline::ProcEntry]) -> BTreeMap<String, u32> {
    snapshot
        .iter()
        .filter(|e| (e.tid == 1 || e.tid == 2) && e.inodes[NsKind::Mnt.slot()].is_some())
        .min_by_key(|e| e.tid)
        .map(|init| {
            NsKind::ALL
                .into_iter()
                .filter_map(|k| init.inodes[k.slot()].map(|i| (k.name().to_owned(), i)))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `run`'s command (directly, not through a shell) and follows it from its birth.
fn start_command(
    cmd: &[OsString],
    pipeline: &mut Pipeline<'_>,
) -> io::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .kill_on_drop(false)
        .spawn()?;
    if let Some(pid) = child.id() {
        pipeline.timeline.follow(pid);
        if let Some(archive) = pipeline.archive.as_mut() {
            write_line(
                &mut **archive,
                &serde_json::json!({"type": "follow", "pid": pid}),
            )?;
        }
    }
    Ok(child)
}

/// Waits for `run`'s command to end. A first Ctrl-C, SIGTERM or SIGHUP is passed on to it as
/// SIGTERM (Ctrl-C in a terminal reaches it already); a second says what is still running; a
/// third kills it.
async fn wait_for_command(
    mut child: tokio::process::Child,
    signals: &mut StopSignals,
) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    let name = std::cell::OnceCell::new();
    let mut received = 0;
    loop {
        tokio::select! {
            result = child.wait() => return result.ok(),
            () = signals.recv() => {
                received += 1;
                let Some(pid) = pid else { continue };
                let name = name.get_or_init(|| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| nstrace::output::escape::escape(c.trim_end()).into_owned())
                        .unwrap_or_default()
                });
                match received {
                    1 => {
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    2 => nstrace::say!(
                        "nstrace: still waiting for the command ({name}, pid {pid}), which has \
                         not ended on SIGTERM; tracing goes on until it does. Ctrl-C once more \
                         kills it (SIGKILL)"
                    ),
                    _ => {
                        nstrace::say!("nstrace: killing the command ({name}, pid {pid})");
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            }
        }
    }
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

/// Offline: rebuild the timeline from a record (a file, a FIFO, or `-` for standard input),
/// read once.
fn report(common: &Common, file: &Path) -> anyhow::Result<()> {
    if common.output.is_some() || common.binary {
        nstrace::say!(
            "nstrace: warning: -o and --binary write a record while tracing; `report` reads one \
             and ignores them (--svg and --perfetto draw the replayed timeline)"
        );
    }
    let mut outputs = Outputs::create(common, false, Some(file))?;
    let source = record::Source::open(file)?;
    let name = escape(&source.name).into_owned();
    let header = source.header().clone();
    let mut stdout = stdout_sink(common, header.clock());
    let mut pipeline = Pipeline::new(Timeline::new(Scope::All), filter(common));
    pipeline.sinks.push(stdout.as_mut());
    pipeline.start()?;
    let (header, replayed) = record::rebuild(source, &common.pid, &mut pipeline)?;
    pipeline.flush()?;
    let Pipeline {
        timeline, shown, ..
    } = pipeline;
    drop(stdout);
    finish(common, &mut outputs, &timeline, header.clock())?;
    for pid in &common.pid {
        if !timeline.histories().any(|h| h.key.pid == *pid) {
            nstrace::say!("nstrace: warning: --pid {pid}: no such process in {name}");
        }
    }
    nstrace::say!(
        "nstrace: {shown} transitions shown, replayed from {name} (recorded on Linux {})",
        escape(&header.kernel)
    );
    let counts = &timeline.counts;
    if counts.lost_records > 0 {
        nstrace::say!(
            "nstrace: the recording lost {} records in {} gaps (see LOSSES in the summary): the \
             processes that lived through them are marked as possibly missing records",
            counts.lost_records,
            timeline.losses().len() as u64 + counts.losses_dropped
        );
    }
    if replayed.bad_count() > 0 {
        // A bad entry's error may quote it: the file's text, not nstrace's.
        for b in &replayed.bad {
            nstrace::say!("nstrace: {name}: {}", escape(&b.to_string()));
        }
        if replayed.more_bad > 0 {
            nstrace::say!("nstrace: {name}: ... and {} more", replayed.more_bad);
        }
        let unit = replayed.bad[0].unit;
        bail!(
            "{name} has {} bad {unit}s (listed above); every good {unit} was read",
            replayed.bad_count()
        );
    }
    Ok(())
}

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal or ssh session), listened for from the moment
/// they are installed.
struct StopSignals(Option<[tokio::signal::unix::Signal; 3]>);

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self(
            (|| {
                Ok::<_, io::Error>([
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                ])
            })()
            .ok(),
        )
    }

    /// The next Ctrl-C, SIGTERM or SIGHUP (one received since `install` counts).
    async fn recv(&mut self) {
        let Some([int, term, hup]) = &mut self.0 else {
            // Without signal handlers the default action still ends the process.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}
