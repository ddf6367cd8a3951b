//! One human-readable line per transition: time, pid, comm, call, and only what changed.
use std::{fmt::Write as _, io};

use super::Sink;
use crate::{
    clock::WallClock,
    event::{Call, NsSet, Record, Transition},
    ns::{NsKind, write_flag_names},
};

pub const HEADER: &str = "TIME             PID      COMM             TRANSITION";

pub struct TextSink<W: io::Write> {
    out: W,
    clock: WallClock,
    /// The local time zone's offset, looked up once: per line it costs more than the line.
    offset: chrono::FixedOffset,
    /// `HH:MM:SS` of the last second printed: most lines share their second with the one before.
    second: Option<(i64, String)>,
    /// The line being built, reused.
    line: String,
    /// The last heads made (see [`describe_head`]), replaced in turn.
    heads: [Head; 4],
    next_head: usize,
    /// Findings, losses and the namespaces that changed stand out in colour (a terminal).
    colour: bool,
}

/// The styles of a coloured line: the namespaces a call changed, and findings by severity.
pub(crate) mod style {
    use anstyle::{AnsiColor, Style};

    pub const CHANGED: Style = Style::new()
        .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Cyan)))
        .bold();
    pub const HIGH: Style = Style::new()
        .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)))
        .bold();
    pub const MEDIUM: Style = Style::new()
        .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow)))
        .bold();
    pub const LOW: Style = Style::new().bold();
    pub const LOSS: Style = Style::new()
        .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)))
        .bold();

    /// A finding's style by its severity's name.
    pub fn severity(name: &str) -> Style {
        match name {
            "high" => HIGH,
            "medium" => MEDIUM,
            _ => LOW,
        }
    }

    /// `text` in `style` when `colour`, else as it is.
    pub fn paint(colour: bool, style: Style, text: &str) -> String {
        if colour {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }
}

/// A line's head as made, with what it depends on and whether the call succeeded; and the
/// tail last made after it, with the sets it shows (a task in a loop moves between the same
/// few sets).
#[derive(Default)]
struct Head {
    key: Option<HeadKey>,
    text: String,
    ok: bool,
    tail_key: Option<TailKey>,
    tail: String,
}

/// What a tail without a child shows: the sets, and whether `before` was inferred.
struct TailKey {
    before: NsSet,
    after: NsSet,
    inferred: bool,
}

impl TailKey {
    /// Whether a tail made for this key is `t`'s tail.
    fn shows(&self, t: &Transition) -> bool {
        self.inferred == t.before_inferred && self.before == t.before && self.after == t.after
    }
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
            second: None,
            line: String::with_capacity(256),
            heads: Default::default(),
            next_head: 0,
            colour: false,
        }
    }

    /// In colour (for a terminal; never for a pipe or a file, nor with NO_COLOR set: the
    /// caller decides).
    pub fn with_colour(mut self, colour: bool) -> Self {
        self.colour = colour;
        self
    }

    /// Appends what `text` writes, in `style` when in colour.
    fn painted(&mut self, style: anstyle::Style, text: impl FnOnce(&mut String)) {
        if self.colour {
            let _ = write!(self.line, "{}", style.render());
        }
        text(&mut self.line);
        if self.colour {
            let _ = write!(self.line, "{}", style.render_reset());
        }
    }

    /// Starts a line with the time column: `HH:MM:SS.micros` and a space.
    fn start_line(&mut self, ts_ns: u64) {
        self.line.clear();
        // i64 arithmetic: an i128 division is a library call, and this runs once per line.
        let unix_ns = self
            .clock
            .to_unix_ns(ts_ns)
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let (second, nanos) = (
            unix_ns.div_euclid(1_000_000_000),
            unix_ns.rem_euclid(1_000_000_000),
        );
        if self.second.as_ref().is_none_or(|(s, _)| *s != second) {
            let text = self
                .clock
                .to_utc(ts_ns)
                .with_timezone(&self.offset)
                .format("%H:%M:%S")
                .to_string();
            self.second = Some((second, text));
        }
        if let Some((_, text)) = &self.second {
            self.line.push_str(text);
        }
        let micros = (nanos / 1000) as u32;
        self.line.push('.');
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(micros);
        for _ in digits.len()..6 {
            self.line.push('0');
        }
        self.line.push_str(digits);
        self.line.push_str("  ");
    }

    fn end_line(&mut self) -> io::Result<()> {
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
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
        self.start_line(t.ts_ns);
        // A task in a loop repeats a few heads line after line (a setns storm: two fds): each
        // is made once and copied after.
        let at = match self
            .heads
            .iter()
            .position(|h| h.key.as_ref().is_some_and(|key| key.describes(t)))
        {
            Some(at) => at,
            None => {
                let at = self.next_head;
                self.next_head = (at + 1) % self.heads.len();
                let head = &mut self.heads[at];
                head.text.clear();
                head.ok = describe_head(&mut head.text, t);
                head.key = Some(HeadKey::of(t));
                head.tail_key = None;
                at
            }
        };
        let colour = self.colour;
        let head = &mut self.heads[at];
        self.line.push_str(&head.text);
        if head.ok {
            if t.child.is_some() {
                describe_tail(&mut self.line, t, colour);
            } else {
                if !head.tail_key.as_ref().is_some_and(|key| key.shows(t)) {
                    head.tail.clear();
                    describe_tail(&mut head.tail, t, colour);
                    head.tail_key = Some(TailKey {
                        before: t.before,
                        after: t.after,
                        inferred: t.before_inferred,
                    });
                }
                self.line.push_str(&head.tail);
            }
        }
        self.end_line()
    }

    fn finding(&mut self, finding: &super::FindingView) -> io::Result<()> {
        self.start_line(finding.ts_ns);
        self.painted(style::severity(finding.severity), |line| {
            line.push_str(&finding.line())
        });
        self.end_line()
    }

    fn loss(&mut self, loss: &crate::event::Loss) -> io::Result<()> {
        self.start_line(loss.ts_ns);
        self.painted(style::LOSS, |line| {
            let _ = write!(line, "{}", loss_line(loss));
        });
        self.end_line()
    }

    fn heal(&mut self, heal: &super::HealView<'_>) -> io::Result<()> {
        let h = heal.heal;
        self.start_line(h.ts_ns);
        let at = self.line.len();
        push_num(&mut self.line, h.pid);
        if h.tid != h.pid {
            self.line.push('/');
            push_num(&mut self.line, h.tid);
        }
        pad(&mut self.line, at, 8);
        self.line.push(' ');
        let at = self.line.len();
        super::escape::push_escaped(&mut self.line, &h.comm);
        pad(&mut self.line, at, 16);
        self.line.push_str(if h.found {
            " found in /proc after lost records, apart from its parent:"
        } else {
            " found so in /proc after lost records:"
        });
        for (slot, from, to) in &heal.changes {
            let inode = |i: &Option<u32>| i.map_or_else(|| "?".to_owned(), |i| i.to_string());
            let _ = write!(self.line, "  {slot} {} \u{2192} {}", inode(from), inode(to));
        }
        self.end_line()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A loss for people, as the live output and the report show it.
pub fn loss_line(loss: &crate::event::Loss) -> String {
    let what = if loss.records == 0 {
        // Counted with the loss before on that CPU (see `Loss::records`).
        format!("{} more batches", loss.batches)
    } else {
        format!("{} records ({} batches)", loss.records, loss.batches)
    };
    format!(
        "!! LOST {what} on CPU {}: its perf buffer was full (--buffer-pages makes it larger); \
         what they held is missing from here on, and /proc is read again",
        loss.cpu
    )
}

/// Pads `line` with spaces from `from` to `width` bytes (a column of at least `width`).
fn pad(line: &mut String, from: usize, width: usize) {
    const SPACES: &str = "                ";
    let mut missing = width.saturating_sub(line.len() - from);
    while missing > 0 {
        let n = missing.min(SPACES.len());
        line.push_str(&SPACES[..n]);
        missing -= n;
    }
}

fn push_num(line: &mut String, n: impl itoa::Integer) {
    line.push_str(itoa::Buffer::new().format(n));
}

/// What a line's head depends on: who called what, with which arguments, and what it returned.
struct HeadKey {
    pid: u32,
    tid: u32,
    comm: crate::event::Comm,
    call: Call,
    fd: Option<i32>,
    flags: u64,
    ret: i64,
}

impl HeadKey {
    /// Whether a head made for this key is `t`'s head.
    fn describes(&self, t: &Transition) -> bool {
        self.tid == t.tid
            && self.ret == t.ret
            && self.fd == t.fd
            && self.flags == t.flags
            && self.call == t.call
            && self.pid == t.pid
            && self.comm == t.comm
    }

    fn of(t: &Transition) -> Self {
        Self {
            pid: t.pid,
            tid: t.tid,
            comm: t.comm.clone(),
            call: t.call,
            fd: t.fd,
            flags: t.flags,
            ret: t.ret,
        }
    }
}

/// The caller, the call and its result, appended to `line`; false when the call failed (the
/// head then says so, and there is nothing more to show).
fn describe_head(line: &mut String, t: &Transition) -> bool {
    let at = line.len();
    push_num(line, t.pid);
    if t.tid != t.pid {
        line.push('/');
        push_num(line, t.tid);
    }
    pad(line, at, 8);
    line.push(' ');
    let at = line.len();
    super::escape::push_escaped(line, &t.comm);
    pad(line, at, 16);
    line.push(' ');
    match t.call {
        Call::Setns => {
            line.push_str("setns(");
            push_num(line, t.fd.unwrap_or(-1));
            line.push_str(", ");
            if t.flags == 0 {
                line.push('0');
            } else {
                write_flag_names(line, t.flags, false);
            }
            line.push(')');
        }
        Call::Fork if t.errno().is_some() => {
            // Refused: its pid namespace for children has no init any more.
            let _ = write!(
                line,
                "fork into pid:[{}]",
                t.after.inum[NsKind::PidForChildren.slot()]
            );
        }
        Call::Fork => line.push_str("fork"),
        Call::Exec => line.push_str("exec"),
        call => {
            line.push_str(call.name());
            line.push('(');
            write_flag_names(line, t.flags, call == Call::Clone);
            line.push(')');
        }
    }
    match t.errno_name() {
        Some(errno) => {
            let _ = write!(line, " = -1 {errno}  FAILED, nothing changed");
            if t.call == Call::Fork {
                line.push_str(" (its init has exited, or memory is short)");
            }
            return false;
        }
        None if t.call != Call::Exec => {
            line.push_str(" = ");
            push_num(line, t.ret);
        }
        None => {}
    }
    true
}

/// What changed, for the caller and any child, appended to `line`.
fn describe_tail(line: &mut String, t: &Transition, colour: bool) {
    changes(line, &t.before, &t.after, colour);
    if t.before_inferred {
        line.push_str("  (before: as nstrace last saw the task)");
    }
    if let Some(child) = &t.child {
        let _ = write!(line, "  child {}", child.tid);
        if child.ns_tid != child.tid {
            let _ = write!(line, " (pid {} in its pid ns)", child.ns_tid);
        }
        line.push(':');
        if !changes(line, &t.after, &child.ns, colour) {
            line.push_str(" same namespaces");
        }
    }
}

/// Appends `  kind from → to` for every kind that differs (in colour: standing out); false when
/// none does.
fn changes(line: &mut String, from: &NsSet, to: &NsSet, colour: bool) -> bool {
    use std::fmt::Write as _;
    let differ = from.differences(to);
    for kind in differ {
        line.push_str("  ");
        if colour {
            let _ = write!(line, "{}", style::CHANGED.render());
        }
        line.push_str(kind.name());
        line.push(' ');
        push_num(line, from.inum[kind.slot()]);
        line.push_str(" \u{2192} ");
        push_num(line, to.inum[kind.slot()]);
        if colour {
            let _ = write!(line, "{}", style::CHANGED.render_reset());
        }
    }
    !differ.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Record, decode, encode, tests::setns_record};

    fn describe(t: &Transition) -> String {
        let mut line = String::new();
        if describe_head(&mut line, t) {
            describe_tail(&mut line, t, false);
        }
        line
    }

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

    #[test]
    fn a_head_made_for_one_line_is_reused_only_for_the_same_call_and_result() {
        let mut variants = Vec::new();
        let base = transition(&setns_record());
        variants.push(base.clone());
        variants.push(base.clone());
        // The same head with other sets: the tail is made again.
        let mut back = base.clone();
        std::mem::swap(&mut back.before, &mut back.after);
        variants.push(back.clone());
        variants.push(back);
        let mut inferred = base.clone();
        inferred.before_inferred = true;
        variants.push(inferred);
        let mut other_id = base.clone();
        other_id.after.id[1] = 77;
        variants.push(other_id);
        let mut other_fd = base.clone();
        other_fd.fd = Some(9);
        variants.push(other_fd);
        let mut failed = base.clone();
        failed.ret = -22;
        variants.push(failed);
        let mut renamed = base.clone();
        renamed.comm = "nsenter2".into();
        variants.push(renamed);
        let mut thread = base.clone();
        thread.tid = 44;
        variants.push(thread);
        variants.push(base);
        let mut out = Vec::new();
        let mut sink = TextSink::new(&mut out, WallClock::with_offset(0), true);
        for t in &variants {
            sink.record(&Record::Transition(Box::new(t.clone())))
                .unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| &l[17..]).collect();
        let expected: Vec<String> = variants.iter().map(describe).collect();
        assert_eq!(lines, expected);
    }
}
