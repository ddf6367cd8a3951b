//! Offline: the timeline rebuilt from a record.
use std::path::Path;

use anyhow::{Context as _, bail};
use nstrace::{
    ns::NsType,
    output::{escape::escape, life, state, summary::Times},
    pipeline::Pipeline,
    record,
    timeline::{Scope, Timeline},
};

use super::outputs::{Answer, Outputs, evidence_dir, evidence_sink, finish, print_answer};
use crate::{Common, filter, stdout_sink};

/// Offline: rebuild the timeline from a record (a file, a FIFO, or `-` for standard input),
/// read once.
pub(crate) fn report(common: &Common, file: &Path) -> anyhow::Result<()> {
    if common.metrics.is_some() {
        nstrace::say!(
            "nstrace: warning: --metrics serves a live trace's health; `report` ignores it"
        );
    }
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
    let origin = header.origin();
    let mut stdout = stdout_sink(common, header.clock(), origin.as_ref());
    let mut filter = filter(common);
    let time = |what: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| when(t, &header, common.utc).with_context(|| format!("{what} {t:?}")))
            .transpose()
    };
    let at = time("--at", &common.at)?;
    filter.since_ns = time("--since", &common.since)?;
    filter.until_ns = at.or(time("--until", &common.until)?);
    let asked = common
        .namespace
        .as_deref()
        .map(|spec| namespace_spec(spec).with_context(|| format!("--ns {spec:?}")))
        .transpose()?;
    // --evidence: the time around each finding cut out of the recording, as live.
    let mut evidence = evidence_dir(common)?.map(|dir| evidence_sink(common, dir, header.clock()));
    let mut pipeline = Pipeline::new(Timeline::new(Scope::All), filter);
    if let Some(evidence) = evidence.as_mut() {
        pipeline.archive = Some(evidence);
    }
    if let Some((ty, key)) = asked {
        pipeline.timeline.pin(ty, key);
    }
    // --at and --ns print an answer, not the stream.
    if at.is_none() && asked.is_none() {
        pipeline.sinks.push(stdout.as_mut());
    }
    pipeline.start()?;
    // --at --pid: the whole machine rebuilt, those processes read.
    let scope: &[u32] = if at.is_some() { &[] } else { &common.pid };
    let (header, replayed) = record::rebuild(source, scope, &mut pipeline)?;
    pipeline.flush()?;
    let Pipeline {
        timeline, shown, ..
    } = pipeline;
    drop(stdout);
    if let Some(at) = at {
        print_state(common, &timeline, at, &header, origin.as_ref())?;
    } else if let Some((ty, key)) = asked {
        let found = timeline.find_namespaces(ty, key);
        if found.is_empty() {
            bail!(
                "{name} has no namespace {} (the namespaces of its processes, and those they \
                 made, entered or left)",
                common.namespace.as_deref().unwrap_or_default()
            );
        }
        print_lives(common, &timeline, &found, header.clock(), origin.as_ref())?;
    } else {
        finish(
            common,
            &mut outputs,
            &timeline,
            header.clock(),
            origin.as_ref(),
        )?;
    }
    let kernel = escape(&header.kernel);
    if at.is_some() {
        // The answer says which processes were alive then.
        nstrace::say!("nstrace: the state rebuilt from {name} (recorded on Linux {kernel})");
    } else if asked.is_some() {
        nstrace::say!(
            "nstrace: the namespace's life rebuilt from {name} (recorded on Linux {kernel})"
        );
    } else {
        for pid in &common.pid {
            if !timeline.histories().any(|h| h.key.pid == *pid) {
                nstrace::say!("nstrace: warning: --pid {pid}: no such process in {name}");
            }
        }
        nstrace::say!(
            "nstrace: {shown} transitions shown, replayed from {name} (recorded on Linux {kernel})"
        );
    }
    let times = Times {
        clock: header.clock(),
        utc: common.utc,
    };
    for e in &replayed.evidence {
        let secs = |ns: u64| ns as f64 / 1e9;
        nstrace::say!(
            "nstrace: {name} is the evidence of {} (pid {}) at {}: from {} ({:.1} s before{}) \
             until {:.1} s after",
            escape(&e.id),
            e.pid,
            times.at(e.ts_ns),
            times.at(e.from_ns),
            secs(e.ts_ns.saturating_sub(e.from_ns)),
            if e.cut {
                ", less than the window: the trace's start or the memory cap"
            } else {
                ""
            },
            secs(e.window_ns)
        );
    }
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

/// `--at`: the state at `at`, text or one JSON object.
fn print_state(
    common: &Common,
    timeline: &Timeline,
    at: u64,
    header: &record::Header,
    origin: Option<&nstrace::origin::Origin>,
) -> anyhow::Result<()> {
    let times = Times {
        clock: header.clock(),
        utc: common.utc,
    };
    let answer = if common.json {
        Answer::Json(vec![state::json(timeline, at, &common.pid, &times)])
    } else {
        Answer::Text(state::text(
            timeline,
            at,
            header.start_ts_ns,
            &common.pid,
            &times,
        ))
    };
    print_answer(answer, origin, "the state")
}

/// A time given to --at, --since or --until, as the recording's kernel time: RFC 3339, a time
/// of day on the recording's date (local unless `utc`), or `+SECONDS` from its start.
pub(crate) fn when(text: &str, header: &record::Header, utc: bool) -> anyhow::Result<u64> {
    let clock = header.clock();
    let start = header.start_ts_ns;
    let to_ts = |unix_ns: i128| -> anyhow::Result<u64> {
        let ts = unix_ns - clock.to_unix_ns(0);
        u64::try_from(ts).map_err(|_| anyhow::anyhow!("before the machine booted"))
    };
    let text = text.trim();
    if let Some(offset) = text.strip_prefix('+') {
        let seconds: f64 = offset
            .trim_end_matches('s')
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| anyhow::anyhow!("an offset is +SECONDS from the start (+12.5)"))?;
        return Ok(start.saturating_add((seconds * 1e9) as u64));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return to_ts(i128::from(t.timestamp_nanos_opt().unwrap_or(0)));
    }
    let Ok(of_day) = chrono::NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
        .or_else(|_| chrono::NaiveTime::parse_from_str(text, "%H:%M"))
    else {
        bail!(
            "a time is RFC 3339 (2026-12-06T14:03:05Z), a time of day on the recording's date \
             (14:03:05.25), or +SECONDS from its start (+12.5)"
        );
    };
    let began = clock.to_utc(start);
    let unix = if utc {
        began
            .date_naive()
            .and_time(of_day)
            .and_utc()
            .timestamp_nanos_opt()
    } else {
        use chrono::TimeZone as _;
        let local = began.with_timezone(&chrono::Local);
        chrono::Local
            .from_local_datetime(&local.date_naive().and_time(of_day))
            .earliest()
            .and_then(|t| t.timestamp_nanos_opt())
    };
    to_ts(i128::from(unix.ok_or_else(|| {
        anyhow::anyhow!("not a time this machine's clock can hold")
    })?))
}

/// `--ns`: the type (when given) and the inode or id asked for.
pub(crate) fn namespace_spec(spec: &str) -> anyhow::Result<(Option<NsType>, u64)> {
    let (ty, key) = match spec.split_once(':') {
        Some((ty, key)) => {
            let ty = NsType::from_name(ty.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown namespace type {ty:?} (one of mnt, uts, ipc, pid, net, user, \
                     cgroup, time)"
                )
            })?;
            (
                Some(ty),
                key.trim().trim_start_matches('[').trim_end_matches(']'),
            )
        }
        None => (None, spec.trim()),
    };
    let key = key
        .parse()
        .ok()
        .filter(|&key: &u64| key != 0)
        .ok_or_else(|| {
            anyhow::anyhow!("a namespace is TYPE:INODE (net:4026532176) or an inode or id alone")
        })?;
    Ok((ty, key))
}

/// `--ns`: each namespace found, text or a JSON object each.
pub(crate) fn print_lives(
    common: &Common,
    timeline: &Timeline,
    found: &[nstrace::timeline::NsIdx],
    clock: nstrace::clock::WallClock,
    origin: Option<&nstrace::origin::Origin>,
) -> anyhow::Result<()> {
    let times = Times {
        clock,
        utc: common.utc,
    };
    let answer = if common.json {
        Answer::Json(life::json(timeline, found, &times))
    } else {
        Answer::Text(life::text(timeline, found, &times))
    };
    print_answer(answer, origin, "the namespace's life")
}
