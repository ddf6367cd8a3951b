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
    sync::mpsc::Receiver,
};

use super::{BIN_MAGIC, Entry, Header, binary::parse_frame, parse_line};
use crate::event::Spare;

/// The longest entry a reader takes: a line or frame a thousand times longer than any nstrace
/// writes.
pub const MAX_ENTRY: usize = 1 << 20;

/// The longest run of bytes without a line end a reader crosses while skipping an over-long
/// line; past it the file is taken as corrupt from there on.
pub const MAX_GAP: u64 = 64 << 20;

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
    pub(super) entries: Entries,
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
