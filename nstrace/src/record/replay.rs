//! Replaying a record: every entry after the header handed over in order, parsed on a thread
//! of its own, and the timeline rebuilt from them as it ran live.
use std::{
    io,
    sync::mpsc::{Receiver, SyncSender},
};

use super::{
    BadLine, Entry, Header,
    read::{Entries, ReplayError, Source},
};
use crate::{
    event::{Record, Spare},
    pipeline::Pipeline,
    timeline::{ProcEntry, Scope, Timeline},
};

/// Bad entries listed; later ones are only counted.
pub const MAX_BAD: usize = 1000;

/// Tasks one snapshot of /proc may hold: as many as pids can name (PID_MAX_LIMIT).
const MAX_TASKS: usize = 1 << 22;

/// Bytes of entries the parser hands over at once, at most (besides the count of entries).
const BATCH_BYTES: usize = 4 << 20;

/// What a replay found besides the good entries.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The first [`MAX_BAD`] entries that did not parse.
    pub bad: Vec<BadLine>,
    /// Bad entries past those.
    pub more_bad: u64,
    /// The findings the record is the evidence of (see [`super::evidence`]).
    pub evidence: Vec<super::evidence::EvidenceLine>,
}

impl Replayed {
    pub fn bad_count(&self) -> u64 {
        self.bad.len() as u64 + self.more_bad
    }
}

/// Hands `each` every good entry after the header, in order; returns the bad ones.
pub fn replay(
    source: Source,
    mut each: impl FnMut(&Entry) -> io::Result<()>,
) -> Result<Replayed, ReplayError> {
    let Source {
        mut entries, name, ..
    } = source;
    let unit = entries.unit();
    let read_error = |line, source| ReplayError::Read {
        path: name.clone(),
        unit,
        line,
        source,
    };
    // Parsing is much of the work: one thread parses while this one applies, batch by batch.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Parsed>>(8);
    // Transitions' allocations go back to the parser to be filled again: neither thread then
    // allocates or frees one per record.
    let (spent_tx, returned) = std::sync::mpsc::sync_channel::<Spare>(4);
    let parser = std::thread::spawn(move || parse_entries(&mut entries, &tx, &returned));
    let mut spent = Spare::with_capacity(BATCH);
    let mut out = Replayed::default();
    for batch in rx {
        for parsed in batch {
            let (number, result) = match parsed {
                Parsed::Entry(number, result) => (number, result),
                Parsed::Failed(line, source) => return Err(read_error(line, source)),
            };
            match result {
                Ok(Entry::Header(_)) => out.push_bad(number, "a second header".into(), unit),
                Ok(entry) => {
                    each(&entry).map_err(|source| read_error(number, source))?;
                    if let Entry::Record(Record::Transition(t)) = entry {
                        spent.push(t);
                        if spent.len() == BATCH {
                            // A full return channel: these are freed here instead.
                            let _ = spent_tx.try_send(std::mem::take(&mut spent));
                        }
                    }
                }
                Err(error) => out.push_bad(number, error, unit),
            }
        }
    }
    // The parser ends with the stream (or at an error already returned above); a panic there
    // is a bug in nstrace, raised here as it was.
    if let Err(panic) = parser.join() {
        std::panic::resume_unwind(panic);
    }
    Ok(out)
}

/// How much of a bad entry's error is kept: it may quote the entry, and the entry is the
/// file's, not nstrace's.
const BAD_TEXT: usize = 200;

impl Replayed {
    fn push_bad(&mut self, line: usize, mut error: String, unit: &'static str) {
        if self.bad.len() >= MAX_BAD {
            self.more_bad += 1;
            return;
        }
        if error.len() > BAD_TEXT {
            let mut end = BAD_TEXT;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
            error.push_str("...");
        }
        self.bad.push(BadLine { line, error, unit });
    }
}

/// One entry as the parser thread hands it over.
enum Parsed {
    Entry(usize, Result<Entry, String>),
    /// Reading the stream failed at this entry.
    Failed(usize, io::Error),
}

const BATCH: usize = 1024;

/// The parser thread of [`replay`]: every entry, in batches; stops early when the receiver is
/// gone.
fn parse_entries(entries: &mut Entries, tx: &SyncSender<Vec<Parsed>>, returned: &Receiver<Spare>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut bytes = 0;
    while let Some(read) = entries.next_entry(Some(returned)) {
        batch.push(match read {
            Ok((number, result)) => Parsed::Entry(number, result),
            Err((number, e)) => Parsed::Failed(number, e),
        });
        // What an entry may hold is bounded by its size in the file: a batch of long entries
        // goes out sooner.
        bytes += entries.last_len();
        if (batch.len() == BATCH || bytes >= BATCH_BYTES)
            && tx
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .is_err()
        {
            return;
        }
        if batch.is_empty() {
            bytes = 0;
        }
    }
    let _ = tx.send(batch);
}

/// Replays a record through `pipeline`, as it ran live: the snapshot, the followed pids (the
/// header's and `follow` lines, unless `pids` overrides them), the observations, the losses
/// and the re-readings of /proc after them, then every record in order. Returns the header
/// and what did not parse; every other entry was applied.
pub fn rebuild(
    source: Source,
    pids: &[u32],
    pipeline: &mut Pipeline<'_>,
) -> Result<(Header, Replayed), ReplayError> {
    let header = source.header().clone();
    let name = source.name.clone();
    let scope = |pids: &[u32], scoped: bool| {
        if scoped {
            Scope::Descendants(pids.iter().copied().collect())
        } else {
            Scope::All
        }
    };
    let pins = pipeline.timeline.pins().to_vec();
    pipeline.timeline = if pids.is_empty() {
        Timeline::new(scope(&header.pids, header.scoped))
    } else {
        Timeline::new(scope(pids, true))
    };
    if let Some(own) = header.own_mnt {
        pipeline.timeline.set_own_mnt(own);
    }
    for (ty, key) in pins {
        pipeline.timeline.pin(ty, key);
    }
    let start_ts = header.start_ts_ns;
    // An archive (evidence cut from the recording) starts as the recording did.
    to_archive(pipeline, &header).map_err(|source| ReplayError::Read {
        path: name.clone(),
        unit: "entry",
        line: 0,
        source,
    })?;
    // The processes of the snapshot, until the first other entry; then of each resync.
    let mut snapshot = Vec::new();
    let mut started = false;
    let mut resync: Option<(u64, u64, Vec<ProcEntry>)> = None;
    let mut evidence = Vec::new();
    // Applies what the process lines read so far belong to.
    let settle = |pipeline: &mut Pipeline<'_>,
                  snapshot: &mut Vec<ProcEntry>,
                  started: &mut bool,
                  resync: &mut Option<(u64, u64, Vec<ProcEntry>)>|
     -> io::Result<()> {
        if !*started {
            *started = true;
            for task in snapshot.iter() {
                to_archive(pipeline, &super::ProcessLine::from(task))?;
            }
            pipeline.timeline.snapshot(snapshot, start_ts);
            snapshot.clear();
        }
        if let Some((read_from, ts, entries)) = resync.take() {
            pipeline.resynced(read_from, ts, &entries)?;
        }
        Ok(())
    };
    let mut replayed = replay(source, |entry| {
        if let Entry::Process(p) = entry {
            // Process lines belong to the snapshot, or to the resync line before them; a stray
            // one is not kept, and no machine has more tasks than a pid can name.
            match &mut resync {
                Some((_, _, entries)) if entries.len() < MAX_TASKS => entries.push(p.clone()),
                None if !started && snapshot.len() < MAX_TASKS => snapshot.push(p.clone()),
                _ => {}
            }
            return Ok(());
        }
        settle(pipeline, &mut snapshot, &mut started, &mut resync)?;
        match entry {
            Entry::Header(_) | Entry::Process(_) => {}
            Entry::Follow(pid) => {
                if pids.is_empty() {
                    pipeline.timeline.follow(*pid);
                }
                to_archive(pipeline, &serde_json::json!({"type": "follow", "pid": pid}))?;
            }
            Entry::Observation(pid, ts, cgroup, uid_map, runtime) => {
                pipeline.observed(*pid, *ts, cgroup, uid_map, *runtime)?;
            }
            Entry::Container(container, names) => {
                pipeline.named(container.clone(), names.clone())?;
            }
            Entry::Loss(loss) => pipeline.lost(loss)?,
            Entry::Resync { read_from, ts } => resync = Some((*read_from, *ts, Vec::new())),
            Entry::Record(r) => pipeline.feed(r, false)?,
            Entry::Evidence(e) => {
                if evidence.len() < MAX_BAD {
                    evidence.push(e.clone());
                }
            }
        }
        Ok(())
    })?;
    replayed.evidence = evidence;
    settle(pipeline, &mut snapshot, &mut started, &mut resync)
        .and_then(|()| pipeline.finish_names(std::time::Duration::ZERO))
        .map_err(|source| ReplayError::Read {
            path: name,
            unit: "entry",
            line: 0,
            source,
        })?;
    Ok((header, replayed))
}

/// Hands a header, process or follow line to the pipeline's archive, when it has one.
fn to_archive(pipeline: &mut Pipeline<'_>, line: &impl serde::Serialize) -> io::Result<()> {
    match pipeline.archive.as_mut() {
        Some(archive) => crate::output::note_line(&mut **archive, line),
        None => Ok(()),
    }
}
