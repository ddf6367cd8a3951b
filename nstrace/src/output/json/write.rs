//! A transition's JSON line, written straight into a buffer: the bytes serde writes for a
//! [`TransitionLine`](crate::lines::TransitionLine), field for field, without building the line
//! first (no `String` for the time, no `Vec` for the flag names, no map per set).
//!
//! A live `--json` stream under a setns storm writes a million lines a second; built through
//! serde each cost about a microsecond, most of it allocation and the time's formatting. The
//! schema stays [`crate::lines`]'s: a test holds the two byte for byte.
use nstrace_common::NS_SLOTS;

use crate::{
    clock::WallClock,
    event::{Call, KindSet, NsSet, Transition},
    ns::{FlagName, NsKind, for_each_flag_name},
};

/// What the lines of a stream share, formatted once: the time's date and second, and the sets
/// seen last (a process's set changes in one slot or two; the same sets come back line after
/// line).
#[derive(Default)]
pub struct Writer {
    times: Times,
    inodes: Recent<u32>,
    ids: Recent<u64>,
}

/// The last few sets written, each with its JSON object.
struct Recent<T> {
    entries: [([T; NS_SLOTS], Vec<u8>); RECENT],
    next: usize,
}

const RECENT: usize = 4;

impl<T: Copy + Default + Eq + Into<u64>> Default for Recent<T> {
    fn default() -> Self {
        Self {
            entries: std::array::from_fn(|_| ([T::default(); NS_SLOTS], Vec::new())),
            next: 0,
        }
    }
}

impl<T: Copy + Default + Eq + Into<u64>> Recent<T> {
    /// Appends `{"mnt":…,…}` for `values`.
    fn write(&mut self, out: &mut Vec<u8>, values: &[T; NS_SLOTS]) {
        if let Some((_, json)) = self
            .entries
            .iter()
            .find(|(v, json)| v == values && !json.is_empty())
        {
            out.extend_from_slice(json);
            return;
        }
        let (v, json) = &mut self.entries[self.next];
        self.next = (self.next + 1) % RECENT;
        *v = *values;
        json.clear();
        slots(json, |slot| values[slot].into());
        out.extend_from_slice(json);
    }
}

/// RFC 3339 UTC times with nanoseconds (`2026-12-06T17:33:31.123456789Z`), the date and time
/// of day formatted once a second.
#[derive(Default)]
struct Times {
    /// The Unix second last formatted, and its `"YYYY-MM-DDTHH:MM:SS.` (quote included).
    second: Option<i64>,
    prefix: Vec<u8>,
}

impl Times {
    /// Appends the quoted time of `ts_ns`, as chrono's `to_rfc3339_opts(Nanos, true)` writes it.
    fn write(&mut self, out: &mut Vec<u8>, clock: &WallClock, ts_ns: u64) {
        let unix = clock.to_unix_ns(ts_ns).clamp(0, i128::from(i64::MAX)) as i64;
        let (second, nanos) = (
            unix.div_euclid(1_000_000_000),
            unix.rem_euclid(1_000_000_000),
        );
        if self.second != Some(second) {
            let at = clock.to_utc(ts_ns);
            self.prefix.clear();
            self.prefix.push(b'"');
            self.prefix
                .extend_from_slice(at.format("%Y-%m-%dT%H:%M:%S.").to_string().as_bytes());
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        let mut digits = [b'0'; 9];
        let mut n = nanos as u32;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits);
        out.extend_from_slice(b"Z\"");
    }
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `,"key":` (the comma before every key but the first, which the caller writes itself).
fn key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Escaped as serde escapes it: a traced process names itself.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn slots(out: &mut Vec<u8>, values: impl Fn(usize) -> u64) {
    out.push(b'{');
    for (i, kind) in NsKind::ALL.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(kind.name().as_bytes());
        out.extend_from_slice(b"\":");
        number(out, values(kind.slot()));
    }
    out.push(b'}');
}

impl Writer {
    fn inodes(&mut self, out: &mut Vec<u8>, name: &str, set: &NsSet) {
        key(out, name);
        self.inodes.write(out, &set.inum);
    }

    fn ids(&mut self, out: &mut Vec<u8>, name: &str, set: &NsSet) {
        if set.has_ids() {
            key(out, name);
            self.ids.write(out, &set.id);
        }
    }
}

fn kinds(out: &mut Vec<u8>, kinds: KindSet) {
    out.push(b'[');
    for (i, kind) in kinds.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(kind.name().as_bytes());
        out.push(b'"');
    }
    out.push(b']');
}

impl Writer {
    /// Appends `t`'s line (without the newline). `origin`: fields every object of the stream
    /// carries (`"node":…,"boot_id":…,`, already JSON), written first.
    pub fn transition(
        &mut self,
        out: &mut Vec<u8>,
        clock: &WallClock,
        origin: &[u8],
        t: &Transition,
    ) {
        out.push(b'{');
        out.extend_from_slice(origin);
        out.extend_from_slice(b"\"type\":\"transition\",\"time\":");
        self.times.write(out, clock, t.ts_ns);
        key(out, "ts_ns");
        number(out, t.ts_ns);
        key(out, "call");
        out.push(b'"');
        out.extend_from_slice(t.call.name().as_bytes());
        out.push(b'"');
        for (name, value) in [
            ("pid", t.pid),
            ("tid", t.tid),
            ("ppid", t.ppid),
            ("uid", t.uid),
        ] {
            key(out, name);
            number(out, value);
        }
        key(out, "comm");
        string(out, &t.comm);
        key(out, "ns_tid");
        number(out, t.ns_tid);
        key(out, "pid_level");
        number(out, t.pid_level);
        key(out, "start_boottime_ns");
        number(out, t.start_boottime_ns);
        key(out, "flags");
        number(out, t.flags);
        key(out, "flag_names");
        out.push(b'[');
        let mut first = true;
        for_each_flag_name(t.flags, t.call == Call::Clone, |name| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            match name {
                FlagName::Name(name) => out.extend_from_slice(name.as_bytes()),
                // A signal's or a number's name: letters, digits, spaces and `0x`.
                other => out.extend_from_slice(other.to_string().as_bytes()),
            }
            out.push(b'"');
        });
        out.push(b']');
        if let Some(fd) = t.fd {
            key(out, "fd");
            number(out, fd);
        }
        key(out, "ret");
        number(out, t.ret);
        key(out, "errno");
        match t.errno_name() {
            Some(name) => string(out, &name),
            None => out.extend_from_slice(b"null"),
        }
        key(out, "changed");
        kinds(out, t.changed());
        self.inodes(out, "before", &t.before);
        self.inodes(out, "after", &t.after);
        self.ids(out, "before_id", &t.before);
        self.ids(out, "after_id", &t.after);
        key(out, "child");
        match &t.child {
            None => out.extend_from_slice(b"null"),
            Some(c) => {
                out.extend_from_slice(b"{\"tid\":");
                number(out, c.tid);
                key(out, "start_boottime_ns");
                number(out, c.start_ns);
                key(out, "ns_tid");
                number(out, c.ns_tid);
                key(out, "moved");
                kinds(out, t.child_moved());
                key(out, "ns");
                self.inodes.write(out, &c.ns.inum);
                self.ids(out, "ns_id", &c.ns);
                out.push(b'}');
            }
        }
        if t.before_inferred {
            out.extend_from_slice(b",\"before_inferred\":true");
        }
        out.push(b'}');
        debug_assert_eq!(NS_SLOTS, NsKind::ALL.len());
    }
}
