//! Reading a record file: once, as a stream, with bounded memory whatever the bytes.
//!
//! A record may come from a file, a FIFO, a pipe or standard input (`-`), so it is read once from
//! its start: the first bytes tell the encoding, the first entry must be the header, and the rest
//! follows on a parser thread. No entry may be longer than [`MAX_ENTRY`]: a longer JSON line is
//! skipped to its end (reported with its number) and a longer frame ends the reading (its length
//! is the only way to the next one), as does a run of [`MAX_GAP`] bytes with no line end in it
//! (`/dev/zero`). A line that is not UTF-8 is reported and skipped like any other bad line.
use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::Path,
    sync::mpsc::{Receiver, SyncSender},
};

use serde::Deserialize;

use super::{BIN_MAGIC, BadLine, Entry, Header, parse_line};
use crate::{
    event::{Exec, Exit, Fork, Record, Spare, Transition},
    pipeline::Pipeline,
    timeline::{ProcEntry, Scope, Timeline},
};

/// The longest entry a reader takes: a line or frame a thousand times longer than any nstrace
/// writes.
pub const MAX_ENTRY: usize = 1 << 20;

/// The longest run of bytes without a line end a reader crosses while skipping an over-long
/// line; past it the file is taken as corrupt from there on.
pub const MAX_GAP: u64 = 64 << 20;

/// Bad entries listed; later ones are only counted.
pub const MAX_BAD: usize = 1000;

/// Tasks one snapshot of /proc may hold: as many as pids can name (PID_MAX_LIMIT).
const MAX_TASKS: usize = 1 << 22;

/// Bytes of entries the parser hands over at once, at most (besides the count of entries).
const BATCH_BYTES: usize = 4 << 20;

/// One entry of a binary record file, as read (the same encoding as `write::FrameRef`).
#[derive(Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "read on the parser's stack, then moved into a recycled allocation"
)]
enum Frame {
    /// A header, process, follow, observation, loss or resync line.
    Json(String),
    Transition(Transition),
    Fork(Fork),
    Exec(Box<Exec>),
    Exit(Exit),
}

/// Parses one binary frame, putting a transition in one of the `spare` allocations when there is
/// one.
fn parse_frame(bytes: &[u8], spare: &mut Spare) -> Result<Entry, String> {
    let (frame, rest) =
        postcard::take_from_bytes::<Frame>(bytes).map_err(|e| format!("undecodable frame: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the frame's entry", rest.len()));
    }
    Ok(match frame {
        Frame::Json(line) => parse_line(&line)?,
        Frame::Transition(t) => Entry::Record(Record::Transition(match spare.pop() {
            Some(mut slot) => {
                *slot = t;
                slot
            }
            None => Box::new(t),
        })),
        Frame::Fork(f) => Entry::Record(Record::Fork(f)),
        Frame::Exec(e) => Entry::Record(Record::Exec(e)),
        Frame::Exit(x) => Entry::Record(Record::Exit(x)),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("opening {path}")]
    Open { path: String, source: io::Error },
    #[error("reading {path}, {unit} {line}")]
    Read {
        path: String,
        unit: &'static str,
        line: usize,
        source: io::Error,
    },
    #[error(
        "{0} is not an nstrace record: its first line is not a header (record one with `nstrace record -o FILE`)"
    )]
    NoHeader(String),
    #[error(
        "{path} is a binary nstrace record of version {found}, and this nstrace reads version \
         {reads}: replay it with the nstrace that recorded it, or record it again"
    )]
    BinaryVersion { path: String, found: u8, reads: u8 },
}

/// A byte stream a record is read from.
pub type Stream = Box<dyn Read + Send>;

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What one read of an entry gave.
pub type Read1 = (usize, Result<Entry, String>);

/// The entries of a record, one at a time, in either encoding.
pub struct Entries {
    reader: BufReader<io::Chain<io::Cursor<Vec<u8>>, Stream>>,
    binary: bool,
    /// The number the next entry gets (lines count from 1, frames from 1 after the magic).
    number: usize,
    /// Nothing more can be read (the end, or corruption that hides what follows).
    done: bool,
    buf: Vec<u8>,
    spare: Spare,
}

impl Entries {
    /// Starts reading `stream`: its first bytes say the encoding. A binary record of another
    /// version is refused by its version byte.
    pub fn new(mut stream: Stream) -> Result<Self, EntriesError> {
        let mut head = [0u8; BIN_MAGIC.len()];
        let got = read_full(&mut stream, &mut head).map_err(EntriesError::Io)?;
        let head = &head[..got];
        let binary = head == BIN_MAGIC;
        if let (Some((ours, prefix)), Some((&found, start))) =
            (BIN_MAGIC.split_last(), head.split_last())
            && got == BIN_MAGIC.len()
            && start == prefix
            && found != *ours
        {
            return Err(EntriesError::Version(found));
        }
        let kept = if binary { Vec::new() } else { head.to_vec() };
        Ok(Self {
            reader: BufReader::with_capacity(
                1 << 20,
                io::Read::chain(io::Cursor::new(kept), stream),
            ),
            binary,
            number: 1,
            done: false,
            buf: Vec::new(),
            spare: Spare::new(),
        })
    }

    /// "line" or "frame".
    pub fn unit(&self) -> &'static str {
        if self.binary { "frame" } else { "line" }
    }

    /// The size in the file of the last entry read.
    pub fn last_len(&self) -> usize {
        self.buf.len()
    }

    /// The next entry, with its number; None at the end. An error of the stream itself (not of
    /// its content) ends the reading with the number it happened at.
    pub fn next_entry(
        &mut self,
        returned: Option<&Receiver<Spare>>,
    ) -> Option<Result<Read1, (usize, io::Error)>> {
        if self.done {
            return None;
        }
        if self.spare.is_empty()
            && let Some(more) = returned.and_then(|r| r.try_recv().ok())
        {
            self.spare = more;
        }
        let read = if self.binary {
            self.next_frame()
        } else {
            self.next_line()
        };
        match read {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err((self.number.saturating_sub(1).max(1), e)))
            }
        }
    }

    fn next_frame(&mut self) -> io::Result<Option<Read1>> {
        let number = self.number;
        self.number += 1;
        let mut len = [0u8; 4];
        match read_full(&mut self.reader, &mut len)? {
            0 => return Ok(None),
            4 => {}
            _ => {
                self.done = true;
                return Ok(Some((
                    number,
                    Err("truncated (a cut-off frame length)".into()),
                )));
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_ENTRY {
            // Every frame written holds an entry of a few hundred bytes: this is not a length.
            self.done = true;
            return Ok(Some((
                number,
                Err(format!(
                    "a frame of {len} bytes: the file is corrupt from here on, and nothing after \
                     this point can be read"
                )),
            )));
        }
        self.buf.resize(len, 0);
        let got = read_full(&mut self.reader, &mut self.buf)?;
        if got < len {
            self.done = true;
            return Ok(Some((
                number,
                Err(format!("truncated ({got} of its {len} bytes)")),
            )));
        }
        Ok(Some((number, parse_frame(&self.buf, &mut self.spare))))
    }

    fn next_line(&mut self) -> io::Result<Option<Read1>> {
        loop {
            let number = self.number;
            self.number += 1;
            self.buf.clear();
            let ended = match read_line(&mut self.reader, &mut self.buf, MAX_ENTRY)? {
                Line::End => return Ok(None),
                Line::TooLong => {
                    let error = if skip_line(&mut self.reader, MAX_GAP)? {
                        format!(
                            "longer than {} MiB, which no entry is: skipped",
                            MAX_ENTRY >> 20
                        )
                    } else {
                        self.done = true;
                        format!(
                            "more than {} MiB without a line end: the file is corrupt from here \
                             on, and nothing after this point can be read",
                            MAX_GAP >> 20
                        )
                    };
                    return Ok(Some((number, Err(error))));
                }
                Line::Read { ended } => ended,
            };
            let mut line = &self.buf[..];
            while let [rest @ .., b'\n' | b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                continue;
            }
            let result = match std::str::from_utf8(line) {
                Ok(text) => parse_line(text),
                Err(e) => Err(format!(
                    "not UTF-8 (a bad byte at {}): skipped",
                    e.valid_up_to() + 1
                )),
            };
            let result = result.map_err(|error| {
                if ended {
                    error
                } else {
                    format!("truncated ({error})")
                }
            });
            return Ok(Some((number, result)));
        }
    }
}

/// Why a record cannot be read at all.
#[derive(Debug)]
pub enum EntriesError {
    Io(io::Error),
    /// A binary record of this version.
    Version(u8),
}

/// What [`read_line`] found.
enum Line {
    End,
    /// A line, with or without its end (the last line of a cut file).
    Read {
        ended: bool,
    },
    /// More than the limit before a line end: what was read is dropped.
    TooLong,
}

/// What the reader holds next (empty at the end), read again when a signal interrupted it.
fn fill(reader: &mut impl BufRead) -> io::Result<&[u8]> {
    // Asked again once it answers: the borrow checker cannot see that an interrupted read
    // holds no borrow.
    while let Err(e) = reader.fill_buf() {
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    reader.fill_buf()
}

/// Reads one line into `buf` (its end included), at most `max` bytes of it.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    loop {
        let available = fill(reader)?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::End
            } else {
                Line::Read { ended: false }
            });
        }
        let (take, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max + 1 {
            buf.clear();
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if ended {
            return Ok(Line::Read { ended: true });
        }
    }
}

/// Skips to just past the next line end (or the end of the stream), crossing at most `max`
/// bytes; false when it gave up.
fn skip_line(reader: &mut impl BufRead, max: u64) -> io::Result<bool> {
    let mut skipped = 0u64;
    loop {
        let available = fill(reader)?;
        if available.is_empty() {
            return Ok(true);
        }
        if let Some(at) = available.iter().position(|&b| b == b'\n') {
            reader.consume(at + 1);
            return Ok(true);
        }
        let n = available.len();
        reader.consume(n);
        skipped += n as u64;
        if skipped >= max {
            return Ok(false);
        }
    }
}

/// A record opened for reading, its header read: what `report` replays.
pub struct Source {
    entries: Entries,
    header: Header,
    /// The file's name for messages ("standard input" for `-`).
    pub name: String,
}

impl Source {
    /// Opens `path` (`-`: standard input) and reads its header.
    pub fn open(path: &Path) -> Result<Self, ReplayError> {
        if path.as_os_str() == "-" {
            return Self::from_stream(Box::new(io::stdin()), "standard input");
        }
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| ReplayError::Open {
            path: name.clone(),
            source,
        })?;
        Self::from_stream(Box::new(file), &name)
    }

    /// Reads the header from any stream.
    pub fn from_stream(stream: Stream, name: &str) -> Result<Self, ReplayError> {
        let read_error = |unit, line, source| ReplayError::Read {
            path: name.to_owned(),
            unit,
            line,
            source,
        };
        let mut entries = Entries::new(stream).map_err(|e| match e {
            EntriesError::Io(source) => read_error("line", 1, source),
            EntriesError::Version(found) => ReplayError::BinaryVersion {
                path: name.to_owned(),
                found,
                reads: BIN_MAGIC[BIN_MAGIC.len() - 1],
            },
        })?;
        match entries.next_entry(None) {
            Some(Ok((1, Ok(Entry::Header(header))))) => Ok(Self {
                entries,
                header,
                name: name.to_owned(),
            }),
            Some(Err((line, source))) => Err(read_error(entries.unit(), line, source)),
            _ => Err(ReplayError::NoHeader(name.to_owned())),
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// "line" or "frame".
    pub fn unit(&self) -> &'static str {
        self.entries.unit()
    }
}

/// What a replay found besides the good entries.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The first [`MAX_BAD`] entries that did not parse.
    pub bad: Vec<BadLine>,
    /// Bad entries past those.
    pub more_bad: u64,
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

/// Every entry of a record in either encoding, header included, handed to `each` with its
/// number until it returns false: for tests and the fuzz target, which read records the
/// replay would refuse. Errs with the entry number where reading the stream failed.
pub fn read_entries(
    stream: Stream,
    each: &mut dyn FnMut(usize, Result<Entry, String>) -> bool,
) -> Result<(), (usize, io::Error)> {
    let mut entries = match Entries::new(stream) {
        Ok(entries) => entries,
        Err(EntriesError::Io(e)) => return Err((1, e)),
        Err(EntriesError::Version(v)) => {
            each(1, Err(format!("a binary record of version {v}")));
            return Ok(());
        }
    };
    while let Some(read) = entries.next_entry(None) {
        let (number, result) = read?;
        if !each(number, result) {
            break;
        }
    }
    Ok(())
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
    pipeline.timeline = if pids.is_empty() {
        Timeline::new(scope(&header.pids, header.scoped))
    } else {
        Timeline::new(scope(pids, true))
    };
    let start_ts = header.start_ts_ns;
    // The processes of the snapshot, until the first other entry; then of each resync.
    let mut snapshot = Vec::new();
    let mut started = false;
    let mut resync: Option<(u64, u64, Vec<ProcEntry>)> = None;
    // Applies what the process lines read so far belong to.
    let settle = |pipeline: &mut Pipeline<'_>,
                  snapshot: &mut Vec<ProcEntry>,
                  started: &mut bool,
                  resync: &mut Option<(u64, u64, Vec<ProcEntry>)>|
     -> io::Result<()> {
        if !*started {
            *started = true;
            pipeline.timeline.snapshot(snapshot, start_ts);
            snapshot.clear();
        }
        if let Some((read_from, ts, entries)) = resync.take() {
            pipeline.resynced(read_from, ts, &entries)?;
        }
        Ok(())
    };
    let replayed = replay(source, |entry| {
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
            }
            Entry::Observation(pid, ts, cgroup, uid_map) => {
                pipeline.observed(*pid, *ts, cgroup, uid_map)?;
            }
            Entry::Loss(loss) => pipeline.lost(loss)?,
            Entry::Resync { read_from, ts } => resync = Some((*read_from, *ts, Vec::new())),
            Entry::Record(r) => pipeline.feed(r, false)?,
        }
        Ok(())
    })?;
    settle(pipeline, &mut snapshot, &mut started, &mut resync).map_err(|source| {
        ReplayError::Read {
            path: name,
            unit: "entry",
            line: 0,
            source,
        }
    })?;
    Ok((header, replayed))
}
