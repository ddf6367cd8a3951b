//! The files asked for (the record, the pictures) and the summary at the end.
use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nstrace::{
    clock::WallClock,
    origin::Origin,
    output::{
        Sink,
        file::{self, Directory, OutputFile, PendingOutput},
        summary::{self, Times},
    },
    record::{
        evidence::{Evidence, Window},
        rotate::{RotatingSink, Rotation, file_sink},
    },
    timeline::Timeline,
};

use crate::Common;

/// The files asked for, made before tracing or replaying begins: a path that cannot be written
/// is said at once, not after the trace, and nothing is put in place until all are made (see
/// [`nstrace::output::file`]).
pub(crate) struct Outputs {
    record: Option<PendingOutput>,
    perfetto: Option<PendingOutput>,
    svg: Option<PendingOutput>,
}

impl Outputs {
    /// Checks that no two outputs, and no output and `input` (the record `report` reads), are
    /// one file; then makes each.
    pub(crate) fn create(
        common: &Common,
        record: bool,
        input: Option<&Path>,
    ) -> anyhow::Result<Self> {
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

    /// The record file put in place (once tracing can start), and its sink (0600, whole
    /// entries only): JSON Lines or binary, rotating when asked.
    pub(crate) fn record_sink(&mut self, common: &Common) -> anyhow::Result<Option<Box<dyn Sink>>> {
        let Some(pending) = self.record.take() else {
            return Ok(None);
        };
        let path = pending.path().display().to_string();
        let sink: Box<dyn Sink> = match common.rotate_size {
            Some(size) => {
                let (out, rotator) = pending
                    .commit_rotating()
                    .context("the record file (-o) with --rotate-size")?;
                let rotation = Rotation {
                    size,
                    keep: common.rotate_keep,
                };
                Box::new(
                    RotatingSink::new(out, rotator, rotation, common.binary)
                        .with_context(|| format!("writing the record file {path}"))?,
                )
            }
            None => record_sink(
                pending.commit().context("the record file (-o)")?,
                common.binary,
            )?,
        };
        Ok(Some(sink))
    }

    /// The pictures asked for, written and put in place.
    pub(crate) fn pictures(&mut self, timeline: &Timeline, times: &Times) -> anyhow::Result<()> {
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

/// `--evidence DIR` opened (made when missing), before tracing or replaying begins.
pub(crate) fn evidence_dir(common: &Common) -> anyhow::Result<Option<Directory>> {
    common
        .evidence
        .as_deref()
        .map(Directory::open)
        .transpose()
        .context("--evidence")
}

/// The evidence archive in `dir`, as `--evidence-window` and `--evidence-keep` ask, its file
/// names by `clock`.
pub(crate) fn evidence_sink(common: &Common, dir: Directory, clock: WallClock) -> Evidence {
    let window = Window {
        window_ns: common.evidence_window,
        keep: common.evidence_keep,
    };
    Evidence::new(dir, window, clock)
}

pub(crate) fn write_picture(out: PendingOutput, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    let path = out.path().display().to_string();
    let mut out = out.commit().with_context(|| format!("{what} {path}"))?;
    out.file
        .write_all(bytes)
        .with_context(|| format!("writing {what} {path}"))?;
    nstrace::say!("nstrace: wrote {path}");
    Ok(())
}

/// The summary on stdout, and the pictures asked for.
pub(crate) fn finish(
    common: &Common,
    outputs: &mut Outputs,
    timeline: &Timeline,
    clock: WallClock,
    origin: Option<&Origin>,
) -> anyhow::Result<()> {
    let times = Times {
        clock,
        utc: common.utc,
    };
    outputs.pictures(timeline, &times)?;
    if common.no_summary {
        return Ok(());
    }
    let only = common.container.as_deref();
    let answer = if common.json {
        Answer::Json(vec![summary::json(timeline, &times, only)])
    } else {
        Answer::Text(summary::text_in(timeline, &times, only, crate::colour()))
    };
    print_answer(answer, origin, "the summary")
}

/// What is printed at the end, or instead of the timeline (`report --at`, `--ns`).
pub(crate) enum Answer {
    /// Objects, a line each.
    Json(Vec<serde_json::Value>),
    Text(String),
}

/// Writes `answer` on stdout, each JSON object opened with `origin`'s fields (see
/// [`nstrace::origin`]). A reader that went away (a closed pipe, a hung-up terminal) is no
/// error: nobody is left to tell.
pub(crate) fn print_answer(
    answer: Answer,
    origin: Option<&Origin>,
    what: &str,
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let written = match answer {
        Answer::Json(objects) => {
            let fields = origin.map(Origin::fields).unwrap_or_default();
            objects.iter().try_for_each(|object| -> io::Result<()> {
                let mut line = serde_json::to_vec(object)?;
                nstrace::output::json::open_with(&mut line, &fields);
                line.push(b'\n');
                out.write_all(&line)
            })
        }
        Answer::Text(text) => out.write_all(text.as_bytes()),
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if nstrace::output::reader_gone(&e) => Ok(()),
        result => result.with_context(|| format!("writing {what}")),
    }
}

/// The record file's sink (0600, whole entries only), JSON Lines or binary.
fn record_sink(out: OutputFile, binary: bool) -> anyhow::Result<Box<dyn Sink>> {
    let path = out.path.display().to_string();
    file_sink(out, binary, Default::default())
        .with_context(|| format!("writing the record file {path}"))
}
