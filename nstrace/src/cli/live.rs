//! Live tracing: the whole machine, `run`, or `record`.
use std::{collections::BTreeMap, io, path::Path};

use anyhow::{Context as _, bail};
use nstrace::{
    clock::{WallClock, monotonic_ns},
    collect::{self, Options, Summary},
    load,
    metrics::Metrics,
    names::{Resolver, Roots},
    ns::{NsKind, NsType},
    origin::Origin,
    output::{Sink, Tee, escape::escape, note_line, summary::Times},
    pipeline::Pipeline,
    proc,
    record::{Header, ProcessLine},
    timeline::{ProcEntry, Scope, Timeline},
};

use super::{
    command::{NotStarted, check_command, exit_code, start_command, wait_for_command},
    outputs::{Outputs, evidence_dir, evidence_sink, finish},
    report::{namespace_spec, print_lives},
    signals::StopSignals,
};
use crate::{Command, Common, filter, stdout_sink};

/// Live tracing: the whole machine, `run`, or `record`.
pub(crate) async fn live(common: &Common, command: Option<&Command>) -> anyhow::Result<u8> {
    // First: a Ctrl-C, SIGTERM or SIGHUP from here on ends the trace cleanly, even one that
    // arrives while the programs load (a process started in the background by a script
    // inherits SIGINT ignored until a handler is installed).
    let mut signals = StopSignals::install();
    if common.at.is_some() || common.since.is_some() || common.until.is_some() {
        bail!(
            "--at, --since and --until read a recording: record with -o FILE, then use them \
             with `nstrace report FILE`"
        );
    }
    let asked = common
        .namespace
        .as_deref()
        .map(|spec| namespace_spec(spec).with_context(|| format!("--ns {spec:?}")))
        .transpose()?;
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
    let origin = Origin::here(common.node.as_deref());
    // Listening before loading: an address that cannot be had is said at once.
    let metrics = match common.metrics {
        Some(addr) => {
            let metrics = Metrics::new(&kernel_release(), &origin.node);
            let bound = metrics.serve(addr)?;
            log::debug!("metrics on http://{bound}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let evidence = evidence_dir(common)?;
    let nested = in_nested_pid_namespace();
    let mut loaded = load::load()?;
    let clock = WallClock::now();
    // Loaded: from here on the trace runs, and its record takes the name given.
    let mut archive = outputs.record_sink(common)?;
    if let Some(dir) = evidence {
        let evidence: Box<dyn Sink> = Box::new(evidence_sink(common, dir, clock));
        archive = Some(match archive {
            Some(file) => Box::new(Tee(vec![file, evidence])),
            None => evidence,
        });
    }
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
    let following_cmd = run_cmd.is_some();
    let mut stdout = stdout_sink(common, clock, Some(&origin));
    // A command is followed from its birth: its pid joins the scope when it starts.
    let scope = if following_cmd || !common.pid.is_empty() {
        Scope::Descendants(common.pid.iter().copied().collect())
    } else {
        Scope::All
    };
    let mut filter = filter(common);
    filter.namespace = asked;
    let mut pipeline = Pipeline::new(Timeline::new(scope), filter);
    if let Some((ty, key)) = asked {
        pipeline.timeline.pin(ty, key);
        pipeline.timeline.pinned_log_limit = nstrace::timeline::PINNED_LOG_LIMIT;
    }
    pipeline.metrics = metrics.clone();
    pipeline.names = Some(Box::new(
        Resolver::spawn(Roots::default()).context("starting the container names' reader")?,
    ));
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
        let header = Header {
            node: origin.node.clone(),
            boot_id: origin.boot_id.clone(),
            own_mnt: proc::ns_inode(Path::new("/proc/self/ns"), NsKind::Mnt),
            ..Header::new(
                kernel_release(),
                clock_offset(&clock),
                at,
                BTreeMap::new(),
                nested,
                common.pid.clone(),
                following_cmd || !common.pid.is_empty(),
            )
        };
        begin(pipeline, &snapshot, header)?;
        warn_unreadable();
        if let Some(metrics) = &pipeline.metrics {
            metrics.set_ready(cpus);
        }
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
    match asked {
        // --ns: the namespace's life instead of the summary.
        Some((ty, key)) => {
            let times = Times {
                clock,
                utc: common.utc,
            };
            outputs.pictures(&timeline, &times)?;
            let found = timeline.find_namespaces(ty, key);
            let spec = common.namespace.as_deref().unwrap_or_default();
            if found.is_empty() {
                nstrace::say!(
                    "nstrace: --ns {}: no such namespace was made, entered or left while \
                     tracing, nor held by a process that acted",
                    escape(spec)
                );
            } else if !common.no_summary {
                print_lives(common, &timeline, &found, clock, Some(&origin))?;
            }
        }
        None => finish(common, &mut outputs, &timeline, clock, Some(&origin))?,
    }
    Ok(exit_code(status.get()))
}

/// The start of a trace, once the buffers are open: the host's set, the record file's header
/// (`header`, the host's set filled in here) and snapshot, the snapshot into the timeline.
pub(crate) fn begin(
    pipeline: &mut Pipeline<'_>,
    snapshot: &[nstrace::timeline::ProcEntry],
    mut header: Header,
) -> io::Result<()> {
    header.host = host_set(snapshot);
    if let Some(own) = header.own_mnt {
        pipeline.timeline.set_own_mnt(own);
    }
    let at = header.start_ts_ns;
    if header.nested {
        nstrace::say!(
            "nstrace: note: nstrace runs in a nested pid namespace: it sees only that \
             namespace's processes in /proc, and `host` means this namespace's view"
        );
    }
    if let Some(archive) = pipeline.archive.as_mut() {
        note_line(&mut **archive, &header)?;
        for entry in snapshot {
            note_line(&mut **archive, &ProcessLine::from(entry))?;
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

/// Without CAP_SYS_PTRACE (a container that was not given it), the namespaces of processes with
/// more privilege cannot be read: said, since nstrace then knows them only once they act.
fn warn_unreadable() {
    const CAP_SYS_PTRACE: u32 = 19;
    if load::has_capability(CAP_SYS_PTRACE) {
        return;
    }
    let unreadable = proc::unreadable_namespaces();
    if unreadable > 0 {
        nstrace::say!(
            "nstrace: warning: the namespaces of {unreadable} processes (/proc/PID/ns) cannot be \
             read without CAP_SYS_PTRACE: nstrace knows them only from their next namespace \
             change. Give it the capability (root on the host has it; docker or podman run \
             --cap-add SYS_PTRACE; Kubernetes securityContext.capabilities.add [SYS_PTRACE])"
        );
    }
}

/// Whether nstrace runs in a pid namespace other than the initial one: its /proc then shows that
/// namespace's processes, by that namespace's pids.
pub(crate) fn in_nested_pid_namespace() -> bool {
    let own = proc::ns_inode(Path::new("/proc/self/ns"), NsKind::Pid);
    own.is_some() && own != NsType::Pid.initial_inode()
}

/// The host's namespace set, by slot name (see [`ProcEntry::init_of`]).
pub(crate) fn host_set(snapshot: &[ProcEntry]) -> BTreeMap<String, u32> {
    ProcEntry::init_of(snapshot)
        .map(|init| {
            NsKind::ALL
                .into_iter()
                .filter_map(|k| init.inodes[k.slot()].map(|i| (k.name().to_owned(), i)))
                .collect()
        })
        .unwrap_or_default()
}

/// Warns of `--pid`s that name no process: nothing is followed until one with that pid starts.
pub(crate) fn check_pids(pids: &[u32]) {
    for pid in pids {
        if !Path::new("/proc").join(pid.to_string()).exists() {
            nstrace::say!(
                "nstrace: warning: --pid {pid}: no such process; nothing is followed for it \
                 unless a process with that pid starts"
            );
        }
    }
}

pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn clock_offset(clock: &WallClock) -> i64 {
    clock.to_utc(0).timestamp_nanos_opt().unwrap_or(0)
}
