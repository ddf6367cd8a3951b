//! The binary encoding of a record file: [`BIN_MAGIC`], then one frame per entry, a 4-byte
//! little-endian length and a postcard-encoded entry. Records are their decoded form; every
//! other entry is its JSON line. Smaller than JSON Lines and faster to replay (docs/bench.md
//! has the figures).
use std::io;

use serde::{Deserialize, Serialize};

use super::{Entry, parse_line, write::RecordFile};
use crate::event::{Exec, Exit, Fork, Record, Spare, Transition};

/// The first bytes of a binary record file (the high byte keeps it from passing for text; the
/// last is the version).
pub const BIN_MAGIC: [u8; 8] = *b"\x89nsrec\n\x02";

/// One entry of a binary record file, as written (read back as `read::Frame`).
#[derive(Serialize)]
enum FrameRef<'a> {
    Json(&'a str),
    Transition(&'a Transition),
    Fork(&'a Fork),
    Exec(&'a Exec),
    Exit(&'a Exit),
}

/// One entry of a binary record file, as read (the same encoding as [`FrameRef`]).
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
pub(super) fn parse_frame(bytes: &[u8], spare: &mut Spare) -> Result<Entry, String> {
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

/// A record file in the binary encoding: the same entries as the JSON Lines [`JsonSink`]
/// writes to a record file, a frame each.
///
/// [`JsonSink`]: crate::output::json::JsonSink
pub struct BinSink {
    file: RecordFile,
    frame: Vec<u8>,
}

impl BinSink {
    pub fn new(mut file: RecordFile) -> io::Result<Self> {
        file.unit = "frame";
        file.frame(&BIN_MAGIC)?;
        Ok(Self {
            file,
            frame: Vec::with_capacity(512),
        })
    }

    fn put(&mut self, entry: &FrameRef<'_>) -> io::Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        frame.extend_from_slice(&[0; 4]);
        let mut frame = postcard::to_extend(entry, frame).map_err(io::Error::other)?;
        let len = u32::try_from(frame.len() - 4).map_err(io::Error::other)?;
        frame[..4].copy_from_slice(&len.to_le_bytes());
        let written = self.file.frame(&frame);
        self.frame = frame;
        written
    }
}

impl crate::output::Sink for BinSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.put(&match record {
            Record::Transition(t) => FrameRef::Transition(t),
            Record::Fork(f) => FrameRef::Fork(f),
            Record::Exec(e) => FrameRef::Exec(e),
            Record::Exit(x) => FrameRef::Exit(x),
        })
    }

    fn note(&mut self, line: &serde_json::Value) -> io::Result<()> {
        self.put(&FrameRef::Json(&line.to_string()))
    }

    fn loss(&mut self, loss: &crate::event::Loss) -> io::Result<()> {
        let line = crate::lines::LossLine::new(loss, None);
        crate::output::note_line(self, &line)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(&mut self.file)
    }
}
