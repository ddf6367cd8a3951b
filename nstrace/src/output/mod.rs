//! Where decoded records go: one module per sink, behind [`Sink`].
use std::io;

use serde::Serialize;

use crate::{
    event::{Loss, Record},
    timeline::{Heal, Timeline, findings::Finding},
};

pub mod escape;
pub mod file;
#[cfg(test)]
pub(crate) mod fixture;
pub mod json;
pub mod life;
pub mod perfetto;
pub mod state;
pub mod summary;
pub mod svg;
pub mod text;

/// Whether a write failed because nobody reads any more: a closed pipe (`nstrace | head`), or a
/// terminal that hung up (a dropped ssh session: its writes fail with EIO).
pub fn reader_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe || e.raw_os_error() == Some(libc::EIO)
}

/// A consumer of the ordered record stream.
pub trait Sink {
    /// Called before the first record.
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn record(&mut self, record: &Record) -> io::Result<()>;
    /// A record shown live or replayed, with its process's container as findings name it
    /// (`web (docker:0123456789ab)`), when it is in one: sinks that show it override this.
    fn record_in(&mut self, record: &Record, _container: Option<&str>) -> io::Result<()> {
        self.record(record)
    }
    /// A line that is not a record (a record file's header, snapshot and follow lines); sinks
    /// that print records only ignore it.
    fn note(&mut self, _line: &serde_json::Value) -> io::Result<()> {
        Ok(())
    }
    /// A finding, as it is made.
    fn finding(&mut self, _finding: &FindingView) -> io::Result<()> {
        Ok(())
    }
    /// Records the kernel could not deliver, where they were found missing.
    fn loss(&mut self, loss: &Loss) -> io::Result<()>;
    /// A followed task's namespaces as /proc showed them after lost records, where they
    /// differed from what the records said.
    fn heal(&mut self, _heal: &HealView) -> io::Result<()> {
        Ok(())
    }
    /// Called when the stream pauses: make what was written visible.
    fn flush(&mut self) -> io::Result<()>;
    /// A rotating record file: whether it has reached its size (see [`crate::record::rotate`]).
    fn rotation_due(&self) -> bool {
        false
    }
    /// Starts the next file with the state at `ts_ns`: `tasks`, every task alive then.
    fn rotate(&mut self, _tasks: &[crate::timeline::ProcEntry], _ts_ns: u64) -> io::Result<()> {
        Ok(())
    }
}

/// `line` (a header, process, follow, container or other line of a record) as a JSON value.
pub fn line_value(line: &impl serde::Serialize) -> io::Result<serde_json::Value> {
    serde_json::to_value(line).map_err(io::Error::other)
}

/// Hands `line` to `sink` as a note (see [`Sink::note`]).
pub fn note_line(sink: &mut dyn Sink, line: &impl serde::Serialize) -> io::Result<()> {
    sink.note(&line_value(line)?)
}

/// Several sinks as one archive (a record file and evidence): each is given everything, and
/// rotates when it is due.
pub struct Tee(pub Vec<Box<dyn Sink>>);

impl Tee {
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| f(s.as_mut()))
    }
}

impl Sink for Tee {
    fn start(&mut self) -> io::Result<()> {
        self.each(|s| s.start())
    }
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.each(|s| s.record(record))
    }
    fn note(&mut self, line: &serde_json::Value) -> io::Result<()> {
        self.each(|s| s.note(line))
    }
    fn finding(&mut self, finding: &FindingView) -> io::Result<()> {
        self.each(|s| s.finding(finding))
    }
    fn loss(&mut self, loss: &Loss) -> io::Result<()> {
        self.each(|s| s.loss(loss))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush())
    }
    fn rotation_due(&self) -> bool {
        self.0.iter().any(|s| s.rotation_due())
    }
    fn rotate(&mut self, tasks: &[crate::timeline::ProcEntry], ts_ns: u64) -> io::Result<()> {
        self.each(|s| {
            if s.rotation_due() {
                s.rotate(tasks, ts_ns)?;
            }
            Ok(())
        })
    }
}

/// A healing move with its namespaces named, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealView<'a> {
    pub heal: &'a Heal,
    /// (slot, inode before or None, inode after) per change.
    pub changes: Vec<(&'static str, Option<u32>, Option<u32>)>,
}

impl<'a> HealView<'a> {
    pub fn new(timeline: &Timeline, heal: &'a Heal) -> Self {
        let inode = |i: Option<usize>| i.map(|i| timeline.namespace(i).inum);
        Self {
            heal,
            changes: heal
                .changes
                .iter()
                .map(|c| (c.kind.name(), inode(c.from), inode(c.to)))
                .collect(),
        }
    }
}

/// A finding with its namespaces named, ready to print.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FindingView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'static str,
    pub severity: &'static str,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub container: Option<String>,
    pub namespaces: Vec<String>,
    pub message: String,
}

impl FindingView {
    pub fn new(timeline: &Timeline, f: &Finding) -> Self {
        Self {
            kind: "finding",
            id: f.id,
            severity: f.severity.name(),
            ts_ns: f.ts_ns,
            pid: f.pid,
            tid: f.tid,
            comm: f.comm.to_string(),
            container: f.container.as_ref().map(|c| timeline.container_label(c)),
            namespaces: f
                .namespaces
                .iter()
                .map(|&i| timeline.namespace(i).label())
                .collect(),
            message: f.message.clone(),
        }
    }

    /// One line for people: the process's names and the message (which may quote them) are
    /// escaped (see [`escape`]).
    pub fn line(&self) -> String {
        use escape::Escaped;
        let container = self
            .container
            .as_ref()
            .map(|c| format!(" [{}]", Escaped(c)))
            .unwrap_or_default();
        let namespaces = if self.namespaces.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.namespaces.join(", "))
        };
        format!(
            "!! {} {} {} {}{container}: {}{namespaces}",
            self.severity.to_uppercase(),
            self.id,
            self.pid,
            Escaped(&self.comm),
            Escaped(&self.message)
        )
    }
}
