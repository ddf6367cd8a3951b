//! Offline: the timeline rebuilt from a record.
use std::path::Path;

use anyhow::bail;
use nstrace::{
    output::escape::escape,
    pipeline::Pipeline,
    record,
    timeline::{Scope, Timeline},
};

use super::outputs::{Outputs, finish};
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
    let mut pipeline = Pipeline::new(Timeline::new(Scope::All), filter(common));
    pipeline.sinks.push(stdout.as_mut());
    pipeline.start()?;
    let (header, replayed) = record::rebuild(source, &common.pid, &mut pipeline)?;
    pipeline.flush()?;
    let Pipeline {
        timeline, shown, ..
    } = pipeline;
    drop(stdout);
    finish(
        common,
        &mut outputs,
        &timeline,
        header.clock(),
        origin.as_ref(),
    )?;
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
