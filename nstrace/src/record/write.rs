//! Writing a record file: whole entries only, in either encoding.
use std::{cell::Cell, io, path::Path, rc::Rc};

use crate::output::file::{self, OutputFile};

/// A record file being written: every line reaches the file whole, or not at all. A write that
/// fails part-way (a full disk) is cut back to the last whole line, so the file always replays.
pub struct RecordFile {
    out: OutputFile,
    line: Vec<u8>,
    /// Bytes of whole lines in the file.
    committed: u64,
    /// What a whole entry is called in messages: "line", or "frame" in a binary file.
    pub(super) unit: &'static str,
    /// Where the bytes written so far are told (a rotating record reads them).
    size: Option<Rc<Cell<u64>>>,
}

impl RecordFile {
    /// Creates `path` as every output is created (see [`crate::output::file`]): a new file of
    /// the caller's, 0600, never through a link.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::new(file::create(path)?.commit()?))
    }

    pub fn new(out: OutputFile) -> Self {
        Self {
            out,
            line: Vec::with_capacity(1024),
            committed: 0,
            unit: "line",
            size: None,
        }
    }

    /// Tells `size` how many bytes the file holds, at each write.
    pub fn counted(mut self, size: Rc<Cell<u64>>) -> Self {
        size.set(0);
        self.size = Some(size);
        self
    }

    fn commit(&mut self) -> io::Result<()> {
        use std::io::Write as _;
        if self.line.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.out.file.write_all(&self.line) {
            let _ = self.out.file.set_len(self.committed);
            self.line.clear();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "writing the record file {}: {e}; it holds every whole {} written before",
                    self.out.path.display(),
                    self.unit
                ),
            ));
        }
        self.committed += self.line.len() as u64;
        if let Some(size) = &self.size {
            size.set(self.committed);
        }
        self.line.clear();
        Ok(())
    }

    /// Adds one whole binary frame. Frames are written in batches of about 64 KiB and at every
    /// flush (each drain of the kernel's buffers); a failed write is cut back to the last whole
    /// frame.
    pub fn frame(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.line.extend_from_slice(bytes);
        if self.line.len() >= 64 * 1024 {
            self.commit()?;
        }
        Ok(())
    }
}

/// Whatever happens to the rest (a panic, an error on the way out), every whole entry already
/// made reaches the file.
impl Drop for RecordFile {
    fn drop(&mut self) {
        // A JSON line still being written is not whole: only the lines before it go.
        if self.unit == "line" {
            let whole = self
                .line
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |at| at + 1);
            self.line.truncate(whole);
        }
        let _ = self.commit();
    }
}

impl io::Write for RecordFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        if buf.contains(&b'\n') {
            self.commit()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.commit()
    }
}
