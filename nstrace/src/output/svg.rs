//! An SVG picture of a timeline for incident write-ups.
//!
//! Processes are grouped by container (the host's first), one row each, in order of first
//! activity; a process that only inherited its parent's namespaces (no move, no finding, made
//! nothing) is folded into one line of its group, so a container of a hundred processes reads as
//! the few that moved. A row is bars, one per stretch of time in one namespace set: a set has one
//! colour wherever it appears (the host's grey), and each bar is labelled with what differs from
//! the host, type and inode, as far as its width allows (the legend lists every set in full). A
//! tick marks each transition; an arrow runs from each namespace's maker to each process born
//! into it or entering it; a red mark and the finding's id mark each finding. Hover for details.
//! Time runs left to right with quiet stretches compressed (see [`Axis`]): a container's start
//! takes milliseconds, and a picture of seconds would squeeze it to a line.
use std::{collections::BTreeMap, fmt::Write as _};

use nstrace_common::NS_SLOTS;

use crate::{
    ns::NsKind,
    output::summary::Times,
    timeline::{NsIdx, ProcessHistory, ProcessKey, Timeline},
};

const WIDTH: f64 = 1400.0;
/// The process names' column.
const LABEL: f64 = 300.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 26.0;
const BAR: f64 = 14.0;
/// A group's header.
const GROUP: f64 = 24.0;
const TOP: f64 = 74.0;
const LEGEND_LINE: f64 = 18.0;
/// Width of one character at the bars' font size (monospace 10 px).
const CHAR: f64 = 6.1;

const HOST_COLOUR: &str = "#dedede";
/// Light colours black text reads on, none of them red (findings) or grey (the host).
const PALETTE: [&str; 10] = [
    "#8fb9e3", "#f7b267", "#8fd18b", "#c9a3d1", "#9fd8d3", "#f1dd7a", "#c8a98c", "#a3a3e0",
    "#d4e39b", "#f4b6d2",
];

/// Any text, whatever its bytes, as well-formed XML that reads as one line.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    crate::output::escape::xml(s)
}

/// The colour of the `n`th set (from 0): the palette, then hues a golden angle apart.
fn colour(n: usize) -> String {
    match PALETTE.get(n) {
        Some(c) => (*c).to_owned(),
        None => format!("hsl({:.0}, 60%, 78%)", (n as f64 * 137.508) % 360.0),
    }
}

/// What of a set differs from the host: each own slot not in the host's namespace, in /proc
/// order, by the timeline's namespace (an inode the kernel reused is another namespace). Empty:
/// the host's set.
type SetKey = Vec<(NsKind, NsIdx)>;

fn key_of(tl: &Timeline, set: &[Option<NsIdx>; NS_SLOTS]) -> SetKey {
    NsKind::ALL
        .into_iter()
        .filter(|k| k.is_own())
        .filter_map(|k| {
            let idx = set[k.slot()]?;
            let ns = tl.namespace(idx);
            (!ns.host && !ns.folded).then_some((k, idx))
        })
        .collect()
}

fn key_text(tl: &Timeline, key: &SetKey) -> String {
    key.iter()
        .map(|&(k, idx)| format!("{}:{}", k.name(), tl.namespace(idx).inum))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The namespace sets of the picture, numbered in order of first appearance.
#[derive(Default)]
struct Sets {
    keys: Vec<SetKey>,
    /// A container the set's namespaces belong to, when they do.
    owners: Vec<Option<String>>,
}

impl Sets {
    /// The set's number: 0 is the host's.
    fn number(&mut self, tl: &Timeline, set: &[Option<NsIdx>; NS_SLOTS]) -> usize {
        let key = key_of(tl, set);
        if key.is_empty() {
            return 0;
        }
        if let Some(n) = self.keys.iter().position(|k| *k == key) {
            return n + 1;
        }
        let owner = NsKind::ALL
            .into_iter()
            .filter_map(|k| set[k.slot()])
            .map(|i| tl.namespace(i))
            .find(|ns| !ns.host)
            .and_then(|ns| ns.owner.as_ref())
            .map(|c| tl.container_label(c));
        self.keys.push(key);
        self.owners.push(owner);
        self.keys.len()
    }

    fn colour(n: usize) -> String {
        if n == 0 {
            HOST_COLOUR.into()
        } else {
            colour(n - 1)
        }
    }

    /// The bar's label that fits `width` pixels: the whole difference, its types, its number,
    /// or nothing.
    fn label(&self, tl: &Timeline, n: usize, width: f64) -> Option<String> {
        let fits = |s: &String| s.len() as f64 * CHAR + 12.0 <= width;
        if n == 0 {
            return Some("host".to_owned()).filter(fits);
        }
        let key = &self.keys[n - 1];
        let types: Vec<&str> = key.iter().map(|(k, _)| k.name()).collect();
        [
            format!("S{n} {}", key_text(tl, key)),
            format!("S{n} {}", types.join(" ")),
            format!("S{n}"),
        ]
        .into_iter()
        .find(fits)
    }
}

/// One stretch of a row in one set.
struct Stretch {
    from: u64,
    to: u64,
    set: usize,
}

/// A process in the picture: one with a history, or one that made namespaces without moving
/// itself (a runtime's clone3 of its container's init).
struct Proc<'a> {
    key: ProcessKey,
    comm: String,
    container: Option<String>,
    history: Option<&'a ProcessHistory>,
    /// Its first activity.
    first: u64,
}

/// The time axis: every instant something happens gets room, and quiet stretches are
/// compressed (each gap between two instants is as wide as the logarithm of its length), so
/// that a container's start, a few milliseconds, reads beside seconds of nothing.
struct Axis {
    /// The instants, in order, and the room before each (cumulative, from 0).
    times: Vec<u64>,
    room: Vec<f64>,
}

impl Axis {
    fn new(mut times: Vec<u64>, start: u64, end: u64) -> Self {
        times.retain(|t| (start..=end).contains(t));
        times.push(start);
        times.push(end);
        times.sort_unstable();
        times.dedup();
        let mut room = Vec::with_capacity(times.len());
        let mut total = 0.0;
        room.push(0.0);
        for pair in times.windows(2) {
            // A gap of 100 µs is worth ln 2; a second, ln 10001.
            total += (1.0 + (pair[1] - pair[0]) as f64 / 100_000.0).ln();
            room.push(total);
        }
        if total > 0.0 {
            room.iter_mut().for_each(|r| *r /= total);
        }
        Self { times, room }
    }

    /// Where `ts` falls, from 0 (the start) to 1 (the end).
    fn fraction(&self, ts: u64) -> f64 {
        let i = self.times.partition_point(|&t| t <= ts);
        if i == 0 {
            return 0.0;
        }
        if i == self.times.len() {
            return *self.room.last().unwrap_or(&0.0);
        }
        let (t0, t1) = (self.times[i - 1], self.times[i]);
        let (r0, r1) = (self.room[i - 1], self.room[i]);
        r0 + (r1 - r0) * (ts - t0) as f64 / (t1 - t0) as f64
    }

    /// The instant at `fraction` of the way.
    fn at(&self, fraction: f64) -> u64 {
        let i = self.room.partition_point(|&r| r < fraction);
        if i == 0 {
            return self.times[0];
        }
        if i == self.times.len() {
            return *self.times.last().expect("two instants at least");
        }
        let (t0, t1) = (self.times[i - 1], self.times[i]);
        let (r0, r1) = (self.room[i - 1], self.room[i]);
        if r1 <= r0 {
            return t1;
        }
        t0 + ((t1 - t0) as f64 * (fraction - r0) / (r1 - r0)) as u64
    }
}

/// The processes of one container (None: of none): those shown, and the idle ones counted by
/// command name.
struct Group<'a> {
    container: Option<String>,
    shown: Vec<&'a Proc<'a>>,
    folded: BTreeMap<String, u64>,
}

impl Group<'_> {
    fn new(container: Option<String>) -> Self {
        Self {
            container,
            shown: Vec::new(),
            folded: BTreeMap::new(),
        }
    }
}

/// A process's row: its stretches, and when each namespace entered its set (for the arrows).
struct Row<'a> {
    p: &'a Proc<'a>,
    stretches: Vec<Stretch>,
    entered: BTreeMap<NsIdx, u64>,
}

/// A process's set before its first move: the timeline's set when its history began, each
/// slot a first move changed taken from that change.
fn first_set(h: &ProcessHistory) -> [Option<NsIdx>; NS_SLOTS] {
    let mut set = h.start_set;
    let mut seen = [false; NS_SLOTS];
    for m in h.moves.iter().filter(|m| m.errno.is_none()) {
        for c in &m.changes {
            let slot = c.kind.slot();
            if !seen[slot] {
                seen[slot] = true;
                set[slot] = c.from;
            }
        }
    }
    set
}

fn row<'a>(tl: &Timeline, sets: &mut Sets, p: &'a Proc<'a>, start: u64, end: u64) -> Row<'a> {
    let Some(h) = p.history else {
        return Row {
            p,
            stretches: Vec::new(),
            entered: BTreeMap::new(),
        };
    };
    let mut set = first_set(h);
    let begin = h.born_ns.unwrap_or(start);
    let finish = h.end_ns().unwrap_or(end).max(begin);
    let mut entered = BTreeMap::new();
    if h.born_ns.is_some() {
        for idx in set.iter().flatten() {
            entered.insert(*idx, begin);
        }
    }
    let mut stretches = vec![Stretch {
        from: begin,
        to: finish,
        set: sets.number(tl, &set),
    }];
    for m in h.moves.iter().filter(|m| m.errno.is_none()) {
        for c in &m.changes {
            set[c.kind.slot()] = c.to;
            if let Some(to) = c.to {
                entered.entry(to).or_insert(m.ts_ns);
            }
        }
        let n = sets.number(tl, &set);
        let last = stretches.last_mut().expect("one stretch at least");
        last.to = m.ts_ns.max(last.from);
        let from = last.to;
        stretches.push(Stretch {
            from,
            to: finish,
            set: n,
        });
    }
    stretches.retain(|s| s.to > s.from || s.from == finish);
    Row {
        p,
        stretches,
        entered,
    }
}

/// Whether a process only inherited its parent's namespaces: no move (not even refused), no
/// finding, nothing made.
fn idle(tl: &Timeline, p: &Proc<'_>, makers: &[ProcessKey]) -> bool {
    p.history.is_some_and(|h| h.moves.is_empty())
        && !tl.findings().iter().any(|f| f.pid == p.key.pid)
        && !makers.contains(&p.key)
}

pub fn render(tl: &Timeline, times: &Times) -> String {
    let start = tl.first_ns.unwrap_or(0);
    let end = tl.last_ns.max(start + 1);
    // Every namespace made during the trace, with its maker.
    let made: Vec<(&crate::timeline::Creation, String)> = tl
        .namespaces()
        .iter()
        .filter(|ns| !ns.host && !ns.folded)
        .filter_map(|ns| ns.created.as_ref().map(|c| (c, ns.label())))
        .collect();
    let makers: Vec<ProcessKey> = made.iter().map(|(c, _)| c.process).collect();
    let label = |c: Option<&crate::container::Container>| c.map(|c| tl.container_label(c));
    let mut procs: Vec<Proc<'_>> = tl
        .histories()
        .filter(|h| !h.moves.is_empty() || h.born_ns.is_some())
        .map(|h| Proc {
            key: h.key,
            comm: h.comm.to_string(),
            container: label(h.container.as_ref()),
            history: Some(h),
            first: h
                .born_ns
                .or(h.moves.first().map(|m| m.ts_ns))
                .unwrap_or(start),
        })
        .collect();
    for (c, _) in &made {
        if !procs.iter().any(|p| p.key == c.process) {
            procs.push(Proc {
                key: c.process,
                comm: c.comm.to_string(),
                container: label(tl.container_of(c.process.pid)),
                history: None,
                first: c.ts_ns,
            });
        }
    }
    procs.sort_by_key(|p| (p.first, p.key.pid));

    // Groups: the host's processes first, then each container in order of first activity.
    let mut groups: Vec<Group<'_>> = vec![Group::new(None)];
    for p in &procs {
        let at = match groups.iter().position(|g| g.container == p.container) {
            Some(at) => at,
            None => {
                groups.push(Group::new(p.container.clone()));
                groups.len() - 1
            }
        };
        if idle(tl, p, &makers) {
            *groups[at].folded.entry(p.comm.clone()).or_default() += 1;
        } else {
            groups[at].shown.push(p);
        }
    }
    groups.retain(|g| !g.shown.is_empty() || !g.folded.is_empty());

    let mut sets = Sets::default();
    let mut body = String::new();
    let mut y = TOP;
    let mut rows: Vec<(Row<'_>, f64)> = Vec::new();
    for Group {
        container,
        shown,
        folded,
    } in &groups
    {
        let title = match container {
            Some(c) => format!("container {c}"),
            None => "host: processes in no container".to_owned(),
        };
        let _ = writeln!(
            body,
            r##"<rect x="0" y="{y:.1}" width="{WIDTH}" height="{GROUP}" fill="#f3f3f7"/><text x="10" y="{:.1}" font-weight="bold">{}</text>"##,
            y + 16.0,
            escape(&title)
        );
        y += GROUP;
        for p in shown {
            rows.push((row(tl, &mut sets, p, start, end), y));
            y += ROW;
        }
        if !folded.is_empty() {
            let count: u64 = folded.values().sum();
            let mut kinds: Vec<(&String, &u64)> = folded.iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let list: Vec<String> = kinds
                .iter()
                .take(8)
                .map(|(comm, n)| format!("{comm} ×{n}"))
                .collect();
            let more = if kinds.len() > 8 { ", ..." } else { "" };
            let _ = writeln!(
                body,
                r##"<text x="10" y="{:.1}" fill="#666" font-style="italic">{}</text>"##,
                y + 16.0,
                escape(&format!(
                    "+ {count} more that only inherited their parent's namespaces (folded): {}{more}",
                    list.join(", ")
                ))
            );
            y += ROW;
        }
    }
    let rows_end = y;
    let mut events = vec![start, end];
    for (r, _) in &rows {
        events.extend(r.stretches.iter().flat_map(|s| [s.from, s.to]));
        events.extend(
            r.p.history
                .iter()
                .flat_map(|h| h.moves.iter().map(|m| m.ts_ns)),
        );
    }
    events.extend(tl.findings().iter().map(|f| f.ts_ns));
    events.extend(made.iter().map(|(c, _)| c.ts_ns));
    let axis = Axis::new(events, start, end);
    let x = |ts: u64| LABEL + axis.fraction(ts) * (WIDTH - LABEL - RIGHT);

    // The rows: label, bars, ticks, findings.
    for (r, y) in &rows {
        let p = r.p;
        let container = p
            .container
            .as_ref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        let name = format!("{} {}{container}", p.key.pid, p.comm);
        let shown: String = if name.chars().count() > 46 {
            name.chars().take(45).chain(['…']).collect()
        } else {
            name.clone()
        };
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.1}">{}<title>{}</title></text>"#,
            y + 19.0,
            escape(&shown),
            escape(&name)
        );
        for s in &r.stretches {
            let (x0, x1) = (x(s.from), x(s.to).max(x(s.from) + 2.0));
            let what = if s.set == 0 {
                "the host's namespaces".to_owned()
            } else {
                format!("S{} {}", s.set, key_text(tl, &sets.keys[s.set - 1]))
            };
            let _ = writeln!(
                body,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{BAR}" fill="{}" stroke="#888" stroke-width="0.5"><title>{}</title></rect>"##,
                y + 8.0,
                x1 - x0,
                Sets::colour(s.set),
                escape(&what)
            );
            if let Some(label) = sets.label(tl, s.set, x1 - x0) {
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                    x0 + 8.0,
                    y + 19.0,
                    escape(&label)
                );
            }
        }
        for m in p.history.map_or(&[][..], |h| &h.moves) {
            let mx = x(m.ts_ns);
            let changes: Vec<String> = m
                .changes
                .iter()
                .map(|c| {
                    let inode = |i: Option<NsIdx>| {
                        i.map_or("?".to_owned(), |i| tl.namespace(i).inum.to_string())
                    };
                    format!("{} {} → {}", c.kind.name(), inode(c.from), inode(c.to))
                })
                .collect();
            let (what, style) = match m.errno {
                None => (
                    format!(
                        "{} {}: {}",
                        times.at(m.ts_ns),
                        m.cause.describe(),
                        changes.join(", ")
                    ),
                    r##"stroke="#222" stroke-width="2""##,
                ),
                Some(e) => (
                    format!(
                        "{} {}: refused ({})",
                        times.at(m.ts_ns),
                        m.cause.describe(),
                        crate::ns::errno_name(e)
                    ),
                    r##"stroke="#a00" stroke-width="1.5" stroke-dasharray="2,2""##,
                ),
            };
            let _ = writeln!(
                body,
                r#"<line x1="{mx:.1}" y1="{:.1}" x2="{mx:.1}" y2="{:.1}" {style}><title>{}</title></line>"#,
                y + 5.0,
                y + 25.0,
                escape(&what)
            );
        }
        // What it made, call by call.
        let mut calls: BTreeMap<u64, (&crate::timeline::Creation, Vec<&str>)> = BTreeMap::new();
        for (c, ns) in made.iter().filter(|(c, _)| c.process == p.key) {
            calls.entry(c.ts_ns).or_insert((c, Vec::new())).1.push(ns);
        }
        for (ts, (c, namespaces)) in calls {
            let cx = x(ts);
            let _ = writeln!(
                body,
                r##"<path d="M{cx:.1},{:.1} l4,5 l-4,5 l-4,-5 z" fill="#444"><title>{}</title></path>"##,
                y + 10.0,
                escape(&format!(
                    "{} made {} with {}({})",
                    times.at(ts),
                    namespaces.join(", "),
                    c.call.name(),
                    crate::ns::flag_names(c.flags, c.call == crate::event::Call::Clone).join("|")
                ))
            );
        }
        for f in tl.findings().iter().filter(|f| f.pid == p.key.pid) {
            let fx = x(f.ts_ns);
            let _ = writeln!(
                body,
                r##"<g><title>{}</title><path d="M{fx:.1},{:.1} l5,8 l-10,0 z" fill="#c00"/><text x="{:.1}" y="{:.1}" font-size="9" fill="#c00" font-weight="bold">{}</text></g>"##,
                escape(&format!("{} {}: {}", f.severity.name(), f.id, f.message)),
                y,
                fx + 6.0,
                y + 7.0,
                f.id
            );
        }
    }

    // Arrows: from each namespace's maker to each other row that was born into it or entered
    // it, once per pair of rows (the first namespace).
    let at_row: BTreeMap<ProcessKey, (usize, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, (r, y))| (r.p.key, (i, *y)))
        .collect();
    let mut drawn: Vec<(usize, usize)> = Vec::new();
    for (idx, ns) in tl.namespaces().iter().enumerate() {
        let Some(made) = ns.created.as_ref().filter(|_| !ns.host && !ns.folded) else {
            continue;
        };
        let Some(&(from_row, from_y)) = at_row.get(&made.process) else {
            continue;
        };
        for (to_row, (r, to_y)) in rows.iter().enumerate() {
            let Some(&when) = r.entered.get(&idx) else {
                continue;
            };
            if to_row == from_row || drawn.contains(&(from_row, to_row)) {
                continue;
            }
            drawn.push((from_row, to_row));
            let (x0, y0) = (x(made.ts_ns), from_y + 15.0);
            let (x1, y1) = (x(when), to_y + 15.0);
            let bulge = 14.0 + (y1 - y0).abs().min(200.0) / 8.0;
            let _ = writeln!(
                body,
                r##"<path d="M{x0:.1},{y0:.1} C{:.1},{y0:.1} {:.1},{y1:.1} {x1:.1},{y1:.1}" fill="none" stroke="#444" stroke-opacity="0.7" stroke-width="1.2" marker-end="url(#arrow)"><title>{}</title></path>"##,
                x0 + bulge,
                x1 + bulge,
                escape(&format!(
                    "{} made by {} {} ({}) at {}; {} {} in it from {}",
                    ns.label(),
                    made.process.pid,
                    made.comm,
                    made.call.name(),
                    times.at(made.ts_ns),
                    r.p.key.pid,
                    r.p.comm,
                    times.at(when)
                ))
            );
        }
    }

    // The legend: every set, then the marks.
    let mut legend = String::new();
    let mut ly = rows_end + 28.0;
    let _ = writeln!(
        legend,
        r#"<text x="10" y="{ly:.1}" font-weight="bold">Namespace sets (what differs from the host, type:inode)</text>"#
    );
    ly += 8.0;
    for n in 0..=sets.keys.len() {
        let text = if n == 0 {
            "host: the host's namespaces".to_owned()
        } else {
            let owner = sets.owners[n - 1]
                .as_ref()
                .map(|c| format!("  (container {c})"))
                .unwrap_or_default();
            format!("S{n}: {}{owner}", key_text(tl, &sets.keys[n - 1]))
        };
        let _ = writeln!(
            legend,
            r##"<rect x="10" y="{:.1}" width="28" height="12" fill="{}" stroke="#888" stroke-width="0.5"/><text x="46" y="{:.1}">{}</text>"##,
            ly + 3.0,
            Sets::colour(n),
            ly + 13.0,
            escape(&text)
        );
        ly += LEGEND_LINE;
    }
    let _ = writeln!(
        legend,
        r##"<line x1="14" y1="{0:.1}" x2="14" y2="{1:.1}" stroke="#222" stroke-width="2"/><text x="24" y="{2:.1}">a transition</text><line x1="134" y1="{0:.1}" x2="134" y2="{1:.1}" stroke="#a00" stroke-width="1.5" stroke-dasharray="2,2"/><text x="144" y="{2:.1}">a refused one</text><path d="M270,{2:.1} l24,0" stroke="#444" stroke-width="1.2" marker-end="url(#arrow)"/><text x="302" y="{2:.1}">from a namespace's maker to a process born into it or entering it</text><path d="M770,{3:.1} l5,8 l-10,0 z" fill="#c00"/><text x="782" y="{2:.1}">a finding, by id (hover for details)</text>"##,
        ly + 2.0,
        ly + 16.0,
        ly + 13.0,
        ly + 4.0
    );
    ly += LEGEND_LINE + 10.0;

    let height = ly + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="DejaVu Sans Mono, monospace" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs><rect width="100%" height="100%" fill="white"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">nstrace: namespaces over time, {} to {}</text>"#,
        times.at(start),
        times.at(end)
    );
    let processes: usize = rows.len();
    let folded: u64 = groups.iter().flat_map(|g| g.folded.values()).sum();
    let _ = writeln!(
        svg,
        r##"<text x="10" y="40" fill="#555">{processes} processes shown ({folded} folded), {} containers, {} namespace sets besides the host's, {} findings; time runs left to right, quiet stretches compressed</text>"##,
        groups.iter().filter(|g| g.container.is_some()).count(),
        sets.keys.len(),
        tl.findings().len()
    );
    for i in 0..=4 {
        let ts = axis.at(i as f64 / 4.0);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#e4e4e4"/><text x="{0:.1}" y="{3:.1}" text-anchor="{anchor}" fill="#555">{4}</text>"##,
            x(ts),
            TOP - 6.0,
            rows_end,
            TOP - 10.0,
            times.at(ts)
        );
    }
    svg.push_str(&body);
    svg.push_str(&legend);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests;
