//! A record that rotates (`record -o FILE --rotate-size SIZE --rotate-keep N`), for nodes that
//! keep local history: past SIZE bytes, FILE becomes FILE.1 (FILE.1 becomes FILE.2, and so on,
//! the oldest past N going), and a new FILE starts.
//!
//! Each file replays on its own: a new one starts as a record does, with a header (its
//! snapshot's time the last record of the file before) and a `process` line for every task
//! alive then, as the timeline has it; then what [`Carried`] keeps, so that a replay of the
//! file alone attributes and names as the live run did.
use std::{cell::Cell, collections::BTreeMap, io, rc::Rc};

use serde_json::Value;

use super::{ProcessLine, RecordFile, binary::BinSink};
use crate::{
    event::{Loss, Record},
    output::{
        Sink,
        file::{OutputFile, Rotator},
        json::JsonSink,
    },
    timeline::ProcEntry,
};

/// When a record rotates, and how many old files it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub size: u64,
    pub keep: usize,
}

/// The record file's sink, JSON Lines or binary, counting its bytes.
pub fn file_sink(out: OutputFile, binary: bool, size: Rc<Cell<u64>>) -> io::Result<Box<dyn Sink>> {
    let clock = crate::clock::WallClock::now();
    let file = RecordFile::new(out).counted(size);
    Ok(if binary {
        Box::new(BinSink::new(file)?)
    } else {
        Box::new(JsonSink::new(file, clock, true))
    })
}

/// What a record file that starts mid-trace repeats so that it replays on its own: the trace's
/// header, its `follow` lines, every live process's latest `observation` (its cgroup, so its
/// container) and every `container` line (the names). Rotation and evidence (see
/// [`super::evidence`]) keep one.
#[derive(Debug, Default)]
pub struct Carried {
    header: Option<Value>,
    follows: Vec<Value>,
    /// The latest observation of each live process, by pid.
    observations: BTreeMap<u64, Value>,
    /// Containers' names, by runtime and id (the latest answer).
    containers: BTreeMap<(String, String), Value>,
}

impl Carried {
    pub fn record(&mut self, record: &Record) {
        if let Record::Exit(x) = record
            && x.group_dead
        {
            self.observations.remove(&u64::from(x.pid));
        }
    }

    pub fn note(&mut self, line: &Value) {
        match line["type"].as_str() {
            Some("header") if self.header.is_none() => self.header = Some(line.clone()),
            Some("follow") => self.follows.push(line.clone()),
            Some("observation") => {
                if let Some(pid) = line["pid"].as_u64() {
                    self.observations.insert(pid, line.clone());
                }
            }
            Some("container") => {
                let key = |k: &str| line[k].as_str().unwrap_or_default().to_owned();
                self.containers
                    .insert((key("runtime"), key("id")), line.clone());
            }
            _ => {}
        }
    }

    /// The start of a file with the state at `ts_ns` (`tasks`, every task alive then): the
    /// header (its snapshot's time `ts_ns`), a `process` line per task, then what is carried.
    pub fn start(&mut self, tasks: &[ProcEntry], ts_ns: u64) -> io::Result<Vec<Value>> {
        let mut lines = Vec::with_capacity(tasks.len() + 1);
        if let Some(mut header) = self.header.clone() {
            header["start_ts_ns"] = ts_ns.into();
            lines.push(header);
        }
        for task in tasks {
            lines.push(crate::output::line_value(&ProcessLine::from(task))?);
        }
        let live: std::collections::HashSet<u64> = tasks.iter().map(|t| u64::from(t.pid)).collect();
        self.observations.retain(|pid, _| live.contains(pid));
        lines.extend(
            self.follows
                .iter()
                .chain(self.observations.values())
                .chain(self.containers.values())
                .cloned(),
        );
        Ok(lines)
    }
}

pub struct RotatingSink {
    current: Box<dyn Sink>,
    size: Rc<Cell<u64>>,
    rotation: Rotation,
    rotator: Rotator,
    binary: bool,
    /// The bytes of the current file's start (its header and snapshot).
    start: u64,
    carried: Carried,
}

impl RotatingSink {
    pub fn new(
        out: OutputFile,
        rotator: Rotator,
        rotation: Rotation,
        binary: bool,
    ) -> io::Result<Self> {
        let size = Rc::new(Cell::new(0));
        Ok(Self {
            current: file_sink(out, binary, Rc::clone(&size))?,
            size,
            rotation,
            rotator,
            binary,
            start: 0,
            carried: Carried::default(),
        })
    }
}

impl Sink for RotatingSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.carried.record(record);
        self.current.record(record)
    }

    fn note(&mut self, line: &Value) -> io::Result<()> {
        self.carried.note(line);
        self.current.note(line)
    }

    fn loss(&mut self, loss: &Loss) -> io::Result<()> {
        self.current.loss(loss)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.flush()
    }

    /// Past the size, once the file holds at least as many bytes of records as of its start: a
    /// snapshot larger than the size (a busy node, a small size) does not rotate at every
    /// record.
    fn rotation_due(&self) -> bool {
        let size = self.size.get();
        size >= self.rotation.size && size - self.start >= self.start
    }

    fn rotate(&mut self, tasks: &[ProcEntry], ts_ns: u64) -> io::Result<()> {
        self.current.flush()?;
        let out = self.rotator.rotate(self.rotation.keep)?;
        // The old file's last whole entries reach it as its sink goes.
        self.current = file_sink(out, self.binary, Rc::clone(&self.size))?;
        for line in self.carried.start(tasks, ts_ns)? {
            self.current.note(&line)?;
        }
        self.current.flush()?;
        self.start = self.size.get();
        Ok(())
    }
}
