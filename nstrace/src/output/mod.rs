//! Where decoded records go: one module per sink, behind [`Sink`].
use std::io;

use crate::event::Record;

pub mod json;
pub mod summary;
pub mod text;

/// A consumer of the ordered record stream.
pub trait Sink {
    /// Called before the first record.
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn record(&mut self, record: &Record) -> io::Result<()>;
    /// A line that is not a record (a record file's header, snapshot and follow lines); sinks
    /// that print records only ignore it.
    fn note(&mut self, _line: &serde_json::Value) -> io::Result<()> {
        Ok(())
    }
    /// Called when the stream pauses: make what was written visible.
    fn flush(&mut self) -> io::Result<()>;
}
