//! Where decoded events go: one module per sink, behind [`Sink`].
use std::io;

use crate::event::Transition;

pub mod json;
pub mod text;

/// A consumer of the ordered event stream.
pub trait Sink {
    /// Called before the first event.
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()>;
    /// Called when the stream pauses: make what was written visible.
    fn flush(&mut self) -> io::Result<()>;
}
