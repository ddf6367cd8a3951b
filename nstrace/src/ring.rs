//! One CPU's perf buffer, opened with a byte watermark.
//!
//! aya 0.14 opens perf buffers with `wakeup_events = 1`: every sample then raises an irq_work
//! in the traced task's context, a self-IPI that costs more than the rest of the probe put
//! together (docs/bench.md has the measurement). Here the buffer is opened the same
//! way except that the reader is woken only when `watermark` bytes are waiting, and the reader
//! drains the ring itself, many samples at a time.
//!
//! The ring layout is the kernel's (include/uapi/linux/perf_event.h): a control page whose
//! `data_head` the kernel advances and whose `data_tail` the reader advances, then a power of
//! two of data pages holding `perf_event_header`-framed records.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{Ordering, fence},
};

use aya_obj::generated::{
    PERF_EVENT_IOC_ENABLE, PERF_FLAG_FD_CLOEXEC, bpf_attr, bpf_cmd, perf_event_attr,
    perf_event_mmap_page, perf_event_sample_format::PERF_SAMPLE_RAW, perf_event_type,
    perf_sw_ids::PERF_COUNT_SW_BPF_OUTPUT, perf_type_id::PERF_TYPE_SOFTWARE,
};

/// What a drain hands over, record by record.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// One `bpf_perf_event_output` sample (with the kernel's trailing alignment padding).
    Sample(&'a [u8]),
    /// The kernel dropped this many samples because the ring was full.
    Lost(u64),
}

pub struct PerfRing {
    fd: OwnedFd,
    base: NonNull<u8>,
    mmap_len: usize,
    page: usize,
    data_len: usize,
    /// A sample that wraps the end of the ring, copied whole.
    wrapped: Vec<u8>,
}

// SAFETY: the mapping is owned by this value alone; the kernel is the only other party.
unsafe impl Send for PerfRing {}

const HEADER: usize = 8;

/// Why a perf buffer could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The perf event, its mapping or its start failed.
    Event(io::Error),
    /// The kernel refused to lock the mapping in memory: past RLIMIT_MEMLOCK (and the
    /// perf_event_mlock_kb allowance), without CAP_IPC_LOCK.
    Lock(io::Error),
}

impl PerfRing {
    /// Opens `pages` data pages (a power of two) for BPF output on `cpu`; the reader is woken
    /// when `watermark` bytes are waiting. A buffer the kernel would not lock in memory (past
    /// the memlock limit without CAP_IPC_LOCK) is [`OpenError::Lock`].
    pub fn open(cpu: u32, pages: usize, watermark: u32) -> Result<Self, OpenError> {
        if !pages.is_power_of_two() {
            return Err(OpenError::Event(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a perf buffer is a power of two pages, not {pages}"),
            )));
        }
        // SAFETY: perf_event_attr is plain data; all-zero is its documented default.
        let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = PERF_TYPE_SOFTWARE as u32;
        attr.size = size_of::<perf_event_attr>() as u32;
        attr.config = PERF_COUNT_SW_BPF_OUTPUT as u64;
        attr.sample_type = PERF_SAMPLE_RAW as u64;
        attr.__bindgen_anon_1.sample_period = 1;
        attr.set_watermark(1);
        attr.__bindgen_anon_2.wakeup_watermark = watermark;
        // SAFETY: a valid attr; pid -1 with a cpu: every task on that CPU; no group.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const perf_event_attr,
                -1,
                cpu as libc::c_int,
                -1,
                PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(OpenError::Event(io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let ring = Self::map(fd, pages, libc::MAP_SHARED, true).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                OpenError::Lock(e)
            } else {
                OpenError::Event(e)
            }
        })?;
        // SAFETY: a perf fd; ENABLE takes no argument.
        if unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } != 0 {
            return Err(OpenError::Event(io::Error::last_os_error()));
        }
        Ok(ring)
    }

    /// Maps a control page and `pages` data pages: of the perf fd (`of_fd`), or anonymous
    /// memory shaped the same way (the tests' stand-in for the kernel).
    fn map(fd: OwnedFd, pages: usize, flags: libc::c_int, of_fd: bool) -> io::Result<Self> {
        let page = page_size();
        let mmap_len = page * (pages + 1);
        let map_fd = if of_fd { fd.as_raw_fd() } else { -1 };
        // SAFETY: a fresh mapping as the perf ABI describes; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mmap_len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                map_fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self {
            fd,
            base,
            mmap_len,
            page,
            data_len: page * pages,
            wrapped: Vec::new(),
        })
    }

    fn control(&self) -> *mut perf_event_mmap_page {
        self.base.as_ptr().cast()
    }

    fn data(&self) -> *const u8 {
        // SAFETY: the data pages follow the control page inside the mapping.
        unsafe { self.base.as_ptr().add(self.page) }
    }

    /// Whether the kernel wrote anything not yet drained.
    pub fn readable(&self) -> bool {
        let c = self.control();
        // SAFETY: fields of the mapped control page.
        unsafe {
            std::ptr::read_volatile(&raw const (*c).data_head)
                != std::ptr::read_volatile(&raw const (*c).data_tail)
        }
    }

    /// Copies `out.len()` bytes from ring offset `at`, wrapping at the end.
    fn copy(&self, at: u64, out: &mut [u8]) {
        let start = (at as usize) & (self.data_len - 1);
        let first = out.len().min(self.data_len - start);
        // SAFETY: both ranges lie inside the data pages.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data().add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data(),
                out.as_mut_ptr().add(first),
                out.len() - first,
            );
        }
    }

    /// Hands every record written so far to `f`, oldest first, then frees their space. A
    /// malformed frame (which the kernel never writes) ends the drain and skips what is left.
    pub fn drain(&mut self, f: impl FnMut(Item<'_>)) {
        self.drain_some(usize::MAX, f);
    }

    /// [`Self::drain`], stopping after the record that reaches `budget` bytes. Returns whether
    /// records are left.
    pub fn drain_some(&mut self, budget: usize, mut f: impl FnMut(Item<'_>)) -> bool {
        let c = self.control();
        // SAFETY: fields of the mapped control page; the fence orders the data reads after
        // the head read, as the ABI requires.
        let head = unsafe { std::ptr::read_volatile(&raw const (*c).data_head) };
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let mut tail = unsafe { std::ptr::read_volatile(&raw const (*c).data_tail) };
        let mut wrapped = std::mem::take(&mut self.wrapped);
        let start = tail;
        while head.wrapping_sub(tail) >= HEADER as u64 && tail.wrapping_sub(start) < budget as u64 {
            let mut header = [0u8; HEADER];
            self.copy(tail, &mut header);
            let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
            let size = u16::from_ne_bytes([header[6], header[7]]) as u64;
            if size < HEADER as u64 || size > head.wrapping_sub(tail) {
                tail = head;
                break;
            }
            let body_at = tail + HEADER as u64;
            let body_len = size as usize - HEADER;
            let start = (body_at as usize) & (self.data_len - 1);
            let body: &[u8] = if start + body_len <= self.data_len {
                // SAFETY: inside the data pages; the kernel does not overwrite it before the
                // tail moves past it.
                unsafe { std::slice::from_raw_parts(self.data().add(start), body_len) }
            } else {
                wrapped.resize(body_len, 0);
                self.copy(body_at, &mut wrapped);
                &wrapped
            };
            match kind {
                k if k == perf_event_type::PERF_RECORD_SAMPLE as u32 && body.len() >= 4 => {
                    let len = u32::from_ne_bytes([body[0], body[1], body[2], body[3]]) as usize;
                    f(Item::Sample(&body[4..(4 + len).min(body.len())]));
                }
                k if k == perf_event_type::PERF_RECORD_LOST as u32 && body.len() >= 16 => {
                    let mut lost = [0u8; 8];
                    lost.copy_from_slice(&body[8..16]);
                    f(Item::Lost(u64::from_ne_bytes(lost)));
                }
                _ => {}
            }
            tail += size;
        }
        self.wrapped = wrapped;
        fence(Ordering::Release);
        // SAFETY: the reader's own field of the control page.
        unsafe { std::ptr::write_volatile(&raw mut (*c).data_tail, tail) };
        head.wrapping_sub(tail) >= HEADER as u64
    }

    /// Puts this ring in slot `cpu` of a BPF_MAP_TYPE_PERF_EVENT_ARRAY.
    pub fn attach(&self, map: BorrowedFd<'_>, cpu: u32) -> io::Result<()> {
        let key = cpu;
        let value = self.fd.as_raw_fd() as u32;
        // SAFETY: all-zero is the kernel's default for every field of the union.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the map-element part of the union, written whole.
        unsafe {
            let elem = &mut attr.__bindgen_anon_2;
            elem.map_fd = map.as_raw_fd() as u32;
            elem.key = &key as *const u32 as u64;
            elem.__bindgen_anon_1.value = &value as *const u32 as u64;
        }
        // SAFETY: its pointers outlive the call.
        unsafe { bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &attr) }
    }
}

/// The bpf(2) system call with `attr` (include/uapi/linux/bpf.h's `union bpf_attr`, as aya-obj's
/// bindings have it).
///
/// # Safety
/// The part of `attr` that `cmd` reads must be set as the kernel expects, and every pointer in
/// it must be valid for the call.
pub(crate) unsafe fn bpf(cmd: bpf_cmd, attr: &bpf_attr) -> io::Result<()> {
    // SAFETY: the caller's promise; the size is the whole union's, its unused bytes zero.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *const bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This machine's page size: perf buffers are counted in pages.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

impl AsRawFd for PerfRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PerfRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mmap_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring as the kernel would leave it, without a kernel: the data pages are written by
    /// hand through the mapping of an anonymous region shaped like a perf buffer.
    fn fake(pages: usize) -> PerfRing {
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        PerfRing::map(fd, pages, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, false).unwrap()
    }

    /// Writes one framed record at the head, wrapping as the kernel does.
    fn write(ring: &PerfRing, kind: u32, body: &[u8]) {
        let c = ring.control();
        let head = unsafe { (*c).data_head };
        let size = (HEADER + body.len()) as u16;
        let mut frame = Vec::new();
        frame.extend_from_slice(&kind.to_ne_bytes());
        frame.extend_from_slice(&0u16.to_ne_bytes());
        frame.extend_from_slice(&size.to_ne_bytes());
        frame.extend_from_slice(body);
        for (i, b) in frame.iter().enumerate() {
            let at = (head as usize + i) & (ring.data_len - 1);
            unsafe { *ring.base.as_ptr().add(ring.page + at) = *b };
        }
        unsafe { (*c).data_head = head + frame.len() as u64 };
    }

    fn sample(payload: &[u8]) -> Vec<u8> {
        // The kernel pads the raw data so that size + data is 8-byte aligned.
        let mut body = (payload.len() as u32).to_ne_bytes().to_vec();
        body.extend_from_slice(payload);
        while !(body.len() + HEADER).is_multiple_of(8) {
            body.push(0);
        }
        body
    }

    fn drained(ring: &mut PerfRing) -> Vec<String> {
        let mut out = Vec::new();
        ring.drain(|item| match item {
            Item::Sample(s) => out.push(format!("sample {}", String::from_utf8_lossy(s))),
            Item::Lost(n) => out.push(format!("lost {n}")),
        });
        out
    }

    #[test]
    fn samples_and_losses_come_out_in_order_and_free_their_space() {
        let mut ring = fake(1);
        write(&ring, 9, &sample(b"one"));
        let mut lost = 7u64.to_ne_bytes().to_vec();
        lost.splice(0..0, 42u64.to_ne_bytes());
        write(&ring, 2, &lost);
        write(&ring, 9, &sample(b"two"));
        assert!(ring.readable());
        assert_eq!(drained(&mut ring), ["sample one", "lost 7", "sample two"]);
        assert!(!ring.readable());
        assert!(drained(&mut ring).is_empty());
    }

    #[test]
    fn a_drain_with_a_budget_stops_at_a_whole_record_and_the_next_goes_on_from_there() {
        let mut ring = fake(1);
        for word in [b"one", b"two", b"six"] {
            write(&ring, 9, &sample(word));
        }
        let mut out = Vec::new();
        let left = ring.drain_some(1, |item| {
            if let Item::Sample(s) = item {
                out.push(s.to_vec())
            }
        });
        assert!(left);
        assert_eq!(out, [b"one".to_vec()]);
        assert_eq!(drained(&mut ring), ["sample two", "sample six"]);
        assert!(!ring.readable());
    }

    #[test]
    fn a_sample_that_wraps_the_end_of_the_ring_comes_out_whole() {
        let mut ring = fake(1);
        let filler = vec![b'x'; 4096 - 64];
        write(&ring, 9, &sample(&filler));
        assert_eq!(drained(&mut ring).len(), 1);
        let long: Vec<u8> = (0..200).map(|i| b'a' + (i % 26) as u8).collect();
        write(&ring, 9, &sample(&long));
        assert_eq!(
            drained(&mut ring),
            [format!("sample {}", String::from_utf8_lossy(&long))]
        );
    }

    #[test]
    fn a_corrupt_frame_ends_the_drain_without_a_panic() {
        let mut ring = fake(1);
        write(&ring, 9, &sample(b"ok"));
        // A frame claiming more bytes than were written.
        let c = ring.control();
        let head = unsafe { (*c).data_head };
        write(&ring, 9, &[0u8; 8]);
        unsafe { *ring.base.as_ptr().add(ring.page + head as usize + 6) = 0xff };
        assert_eq!(drained(&mut ring), ["sample ok"]);
        assert!(!ring.readable());
    }
}
