//! Kernel timestamps (CLOCK_MONOTONIC, what `bpf_ktime_get_ns` returns) to wall-clock time.

/// Nanoseconds of a clock, read now.
fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The kernel's CLOCK_MONOTONIC now, in ns: the clock of every record's `ts_ns`.
pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Converts kernel timestamps to Unix time, with the offset between the clocks taken once.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> Self {
        Self {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// A clock with a fixed offset, for tests and replays.
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Unix time of a kernel timestamp, in ns.
    pub fn to_unix_ns(&self, ts_ns: u64) -> i128 {
        i128::from(ts_ns) + self.offset_ns
    }

    pub fn to_utc(&self, ts_ns: u64) -> chrono::DateTime<chrono::Utc> {
        let unix = self.to_unix_ns(ts_ns);
        chrono::DateTime::from_timestamp_nanos(unix.clamp(0, i128::from(i64::MAX)) as i64)
    }
}
