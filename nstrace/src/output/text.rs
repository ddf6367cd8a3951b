//! One human-readable line per transition: time, pid, comm, call, and only what changed.
use std::{fmt::Write as _, io};

use super::Sink;
use crate::{
    clock::WallClock,
    event::{Call, NsSet, Record, Transition},
    ns::NsKind,
};

pub const HEADER: &str = "TIME             PID      COMM             TRANSITION";

pub struct TextSink<W: io::Write> {
    out: W,
    clock: WallClock,
    /// The local time zone's offset, looked up once: per line it costs more than the line.
    offset: chrono::FixedOffset,
}

impl<W: io::Write> TextSink<W> {
    /// `utc`: print times in UTC instead of local time.
    pub fn new(out: W, clock: WallClock, utc: bool) -> Self {
        let offset = if utc {
            chrono::FixedOffset::east_opt(0)
        } else {
            Some(*chrono::Local::now().offset())
        };
        Self {
            out,
            clock,
            offset: offset.unwrap_or(chrono::FixedOffset::east_opt(0).expect("zero offset")),
        }
    }

    fn time(&self, ts_ns: u64) -> impl std::fmt::Display {
        self.clock
            .to_utc(ts_ns)
            .with_timezone(&self.offset)
            .format("%H:%M:%S%.6f")
    }
}

impl<W: io::Write> Sink for TextSink<W> {
    fn start(&mut self) -> io::Result<()> {
        writeln!(self.out, "{HEADER}")
    }

    fn record(&mut self, record: &Record) -> io::Result<()> {
        // One line per transition; forks, execs and exits feed the summary.
        let Record::Transition(t) = record else {
            return Ok(());
        };
        let time = self.time(t.ts_ns).to_string();
        writeln!(self.out, "{time:<16} {}", describe(t))
    }

    fn finding(&mut self, finding: &super::FindingView) -> io::Result<()> {
        let time = self.time(finding.ts_ns).to_string();
        writeln!(self.out, "{time:<16} {}", finding.line())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Everything after the time column.
pub fn describe(t: &Transition) -> String {
    let mut line = String::with_capacity(160);
    let pid = if t.tid == t.pid {
        t.pid.to_string()
    } else {
        format!("{}/{}", t.pid, t.tid)
    };
    let _ = write!(line, "{pid:<8} {:<16} ", t.comm);
    let flags = t.flag_names().join("|");
    match t.call {
        Call::Setns => {
            let nstype = if t.flags == 0 { "0".into() } else { flags };
            let _ = write!(line, "setns({}, {nstype})", t.fd.unwrap_or(-1));
        }
        Call::Fork => line.push_str("fork"),
        Call::Exec => line.push_str("exec"),
        call => {
            let _ = write!(line, "{}({flags})", call.name());
        }
    }
    match t.errno_name() {
        Some(errno) => {
            let _ = write!(line, " = -1 {errno}  FAILED, nothing changed");
            return line;
        }
        None if t.call != Call::Exec => {
            let _ = write!(line, " = {}", t.ret);
        }
        None => {}
    }
    changes(&mut line, &t.before, &t.after, &t.changed());
    if let Some(child) = &t.child {
        let _ = write!(line, "  child {}", child.tid);
        if child.ns_tid != child.tid {
            let _ = write!(line, " (pid {} in its pid ns)", child.ns_tid);
        }
        line.push(':');
        let moved = t.child_moved();
        if moved.is_empty() {
            line.push_str(" same namespaces");
        }
        changes(&mut line, &t.after, &child.ns, &moved);
    }
    line
}

fn changes(line: &mut String, from: &NsSet, to: &NsSet, kinds: &[NsKind]) {
    for &kind in kinds {
        let _ = write!(
            line,
            "  {kind} {} \u{2192} {}",
            from.get(kind).inum,
            to.get(kind).inum
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Record, decode, encode, tests::setns_record};

    fn transition(raw: &nstrace_common::Transition) -> Transition {
        let Ok(Record::Transition(t)) = decode(&encode(raw)) else {
            panic!("a transition")
        };
        *t
    }

    #[test]
    fn a_setns_shows_only_what_changed() {
        let t = transition(&setns_record());
        assert_eq!(
            describe(&t),
            "42/43    nsenter          setns(3, CLONE_NEWUTS) = 0  uts 4026531831 \u{2192} 4026532177"
        );
    }

    #[test]
    fn a_failure_is_marked() {
        let mut raw = setns_record();
        raw.ret = -1;
        raw.after = raw.before;
        raw.flags = 0;
        let line = describe(&transition(&raw));
        assert!(
            line.ends_with("setns(3, 0) = -1 EPERM  FAILED, nothing changed"),
            "{line}"
        );
    }

    #[test]
    fn a_clone_names_the_childs_new_namespaces() {
        let mut raw = setns_record();
        raw.tid = raw.tgid;
        raw.call = nstrace_common::call::CLONE;
        raw.flags = nstrace_common::flags::CLONE_NEWPID | libc::SIGCHLD as u64;
        raw.after = raw.before;
        raw.ret = 50;
        raw.child_tid = 50;
        raw.child_ns_tid = 1;
        raw.child = raw.before;
        raw.child.inum[nstrace_common::slot::PID] = 4026532300;
        raw.child.inum[nstrace_common::slot::PID_FOR_CHILDREN] = 4026532300;
        let line = describe(&transition(&raw));
        assert_eq!(
            line,
            "42       nsenter          clone(SIGCHLD|CLONE_NEWPID) = 50  child 50 (pid 1 in its pid ns):  \
             pid 4026531833 \u{2192} 4026532300  pid_for_children 4026531834 \u{2192} 4026532300"
        );
    }

    #[test]
    fn the_sink_writes_a_header_and_utc_times() {
        let mut out = Vec::new();
        let mut sink = TextSink::new(&mut out, WallClock::with_offset(0), true);
        sink.start().unwrap();
        let mut raw = setns_record();
        raw.header.ts_ns = 3_723_000_001_000; // 01:02:03.000001
        sink.record(&Record::Transition(Box::new(transition(&raw))))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        assert!(lines.next().unwrap().starts_with("01:02:03.000001  42/43 "));
    }
}
