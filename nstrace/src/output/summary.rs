//! The closing summary of a timeline: a table of namespaces and, per process, who moved where.
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{
    clock::WallClock,
    ns::flag_names,
    output::{FindingView, escape::Escaped},
    timeline::{
        Change, Group, KEEP_HISTORIES, KEEP_NAMESPACES, Namespace, NsIdx, ProcessHistory, Timeline,
    },
};

/// Formats kernel times for people.
#[derive(Clone, Copy)]
pub struct Times {
    pub clock: WallClock,
    pub utc: bool,
}

impl Times {
    pub fn at(&self, ts_ns: u64) -> String {
        let t = self.clock.to_utc(ts_ns);
        if self.utc {
            t.format("%H:%M:%S%.6f").to_string()
        } else {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S%.6f")
                .to_string()
        }
    }

    fn rfc3339(&self, ts_ns: u64) -> String {
        self.clock
            .to_utc(ts_ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }
}

/// The namespaces worth a row: made, entered or left during the trace by a followed process.
fn shown(tl: &Timeline) -> impl Iterator<Item = (NsIdx, &Namespace)> {
    tl.namespaces()
        .iter()
        .enumerate()
        .filter(|(_, ns)| ns.touched)
}

fn inode(tl: &Timeline, idx: Option<NsIdx>) -> String {
    match idx {
        Some(i) => {
            let ns = tl.namespace(i);
            if ns.host {
                format!("{} (host)", ns.inum)
            } else {
                ns.inum.to_string()
            }
        }
        None => "?".into(),
    }
}

fn changes(tl: &Timeline, changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| {
            format!(
                "{} {} \u{2192} {}",
                c.kind,
                inode(tl, c.from),
                inode(tl, c.to)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn creator(ns: &Namespace) -> String {
    match &ns.created {
        Some(c) => format!(
            "{} {}: {}({})",
            c.comm,
            c.process.pid,
            c.call.name(),
            flag_names(c.flags, c.call == crate::event::Call::Clone).join("|")
        ),
        None if ns.host => "the kernel (initial)".into(),
        None => "before tracing or unseen".into(),
    }
}

fn state(ns: &Namespace, times: &Times) -> String {
    if ns.replaced {
        return "freed (inode reused)".into();
    }
    match ns.emptied_ns {
        Some(t) if ns.members() == 0 => format!("emptied {}", times.at(t)),
        _ => format!("alive, {} members", ns.members()),
    }
}

/// Who joined and left each namespace made during the trace, in order.
fn members(out: &mut String, tl: &Timeline, rows: &[(NsIdx, &Namespace)], times: &Times) {
    const SHOWN: usize = 12;
    let made: Vec<_> = rows
        .iter()
        .filter(|(_, ns)| !ns.host && !ns.log.is_empty())
        .collect();
    if made.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nMEMBERS (entries + and exits -, in order)");
    // Namespaces made together and shared by the same tasks have the same log: one list.
    let mut groups: Vec<Vec<&Namespace>> = Vec::new();
    for (_, ns) in made {
        match groups.iter_mut().find(|g| g[0].log == ns.log) {
            Some(group) => group.push(ns),
            None => groups.push(vec![ns]),
        }
    }
    for group in groups {
        let ns = group[0];
        let labels: Vec<String> = group
            .iter()
            .map(|n| match n.parent {
                Some(p) => format!("{} (inside {})", n.label(), tl.namespace(p).label()),
                None => n.label(),
            })
            .collect();
        let _ = writeln!(out, "{}", labels.join(", "));
        for m in ns.log.iter().take(SHOWN) {
            let sign = if m.entered { '+' } else { '-' };
            let who = if m.tid == m.pid {
                m.pid.to_string()
            } else {
                format!("{}/{}", m.pid, m.tid)
            };
            let _ = writeln!(
                out,
                "  {} {sign} {who} {}: {}",
                times.at(m.ts_ns),
                Escaped(&m.comm),
                m.cause.describe()
            );
        }
        let more = ns.log.len().saturating_sub(SHOWN) as u64 + ns.log_dropped;
        if more > 0 {
            let _ = writeln!(out, "  ... {more} more");
        }
    }
}

/// Each container's start as a story: who made its namespaces with which call, which existing
/// ones it joined, its processes.
fn containers(out: &mut String, tl: &Timeline, times: &Times) {
    let views = container_views(tl);
    if views.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nCONTAINERS ({})", views.len());
    for v in views {
        let _ = writeln!(out, "{}", Escaped(&v.name));
        for (ns, creator) in &v.made {
            let _ = writeln!(out, "  made {} ({})", ns, Escaped(creator));
        }
        for ns in &v.joined {
            let _ = writeln!(out, "  shares {}", Escaped(ns));
        }
        let procs: Vec<String> = v
            .processes
            .iter()
            .map(|(pid, comm)| format!("{pid} {}", Escaped(comm)))
            .collect();
        let _ = writeln!(out, "  processes: {}", procs.join(", "));
        if let Some(first) = v.first_ns {
            let _ = writeln!(out, "  first seen {}", times.at(first));
        }
    }
}

/// What the summary says of one container.
struct ContainerView {
    name: String,
    /// Namespaces it owns, with who made them.
    made: Vec<(String, String)>,
    /// Namespaces it is in that it does not own (the host's, another container's).
    joined: Vec<String>,
    processes: Vec<(u32, String)>,
    first_ns: Option<u64>,
}

fn container_views(tl: &Timeline) -> Vec<ContainerView> {
    let mut names: Vec<_> = tl
        .histories()
        .filter_map(|h| h.container.clone())
        .chain(tl.namespaces().iter().filter_map(|n| n.owner.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|c| {
            let made = tl
                .namespaces()
                .iter()
                .filter(|n| n.owner.as_ref() == Some(&c))
                .map(|n| (n.label(), creator(n)))
                .collect();
            let members: Vec<&ProcessHistory> = tl
                .histories()
                .filter(|h| h.container.as_ref() == Some(&c))
                .collect();
            let mut joined: Vec<String> = Vec::new();
            for h in &members {
                for m in &h.moves {
                    for ch in &m.changes {
                        if let Some(to) = ch.to {
                            let ns = tl.namespace(to);
                            if ns.owner.as_ref() != Some(&c) && ch.kind.is_own() {
                                let label = match &ns.owner {
                                    Some(o) => format!("{} of {}", ns.label(), o.short()),
                                    None => ns.label(),
                                };
                                if !joined.contains(&label) {
                                    joined.push(label);
                                }
                            }
                        }
                    }
                }
            }
            ContainerView {
                name: c.short(),
                made,
                joined,
                processes: members
                    .iter()
                    .map(|h| (h.key.pid, h.comm.to_string()))
                    .collect(),
                first_ns: members.iter().filter_map(|h| h.born_ns).min(),
            }
        })
        .collect()
}

/// Where records were lost, and what reading /proc again found.
fn losses(out: &mut String, tl: &Timeline, times: &Times) {
    const SHOWN: usize = 20;
    let losses = tl.losses();
    let c = &tl.counts;
    if losses.is_empty() && c.losses_dropped == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "\nLOSSES ({} records in {} gaps: the kernel found a CPU's perf buffer full; \
         --buffer-pages makes them larger)",
        c.lost_records,
        losses.len() as u64 + c.losses_dropped
    );
    for loss in losses.iter().take(SHOWN) {
        let what = if loss.records == 0 {
            format!(
                "{} more batches (their records told with the loss before)",
                loss.batches
            )
        } else {
            format!("{} records ({} batches)", loss.records, loss.batches)
        };
        let _ = writeln!(
            out,
            "  {}  CPU {}: {what} lost after this time",
            times.at(loss.ts_ns),
            loss.cpu,
        );
    }
    let more = losses.len().saturating_sub(SHOWN) as u64 + c.losses_dropped;
    if more > 0 {
        let _ = writeln!(out, "  ... {more} more");
    }
    let _ = writeln!(
        out,
        "  /proc read again after them: {} tasks found elsewhere than their records said, {} \
         gone, {} unknown before; processes that lived through a loss are marked",
        c.resyncs, c.vanished, c.found
    );
}

/// The kinds of processes and namespaces counted rather than listed (see `timeline::fold`).
fn folded(out: &mut String, tl: &Timeline, times: &Times) {
    let folded = tl.folded();
    if folded.is_empty() {
        return;
    }
    let span = |g: &Group| format!("{} to {}", times.at(g.first_ns), times.at(g.last_ns));
    let _ = writeln!(
        out,
        "\nFOLDED (past the first {KEEP_HISTORIES} processes and {KEEP_NAMESPACES} namespaces, \
         the ones that ended are counted by kind)"
    );
    for ((comm, what), g) in &folded.processes {
        let _ = writeln!(
            out,
            "  {:>8} processes {}: {}  ({})",
            g.count,
            Escaped(comm),
            Escaped(what),
            span(g)
        );
    }
    for ((ty, made), g) in &folded.namespaces {
        let _ = writeln!(
            out,
            "  {:>8} {} namespaces {}, emptied  ({})",
            g.count,
            ty.name(),
            Escaped(made),
            span(g)
        );
    }
}

pub fn text(tl: &Timeline, times: &Times) -> String {
    let mut out = String::new();
    let rows: Vec<_> = shown(tl).collect();
    let _ = writeln!(
        out,
        "\nNAMESPACES ({} created, entered or left while tracing)",
        rows.len()
    );
    let _ = writeln!(
        out,
        "{:<7} {:<11} {:<6} {:<16} {:<13} {:<24} CREATED BY",
        "TYPE", "INODE", "ID", "AT", "MEMBERS", "STATE"
    );
    for (_, ns) in &rows {
        let at = ns
            .created
            .as_ref()
            .map_or_else(|| "-".into(), |c| times.at(c.ts_ns));
        let id = if ns.id == 0 {
            "-".into()
        } else {
            ns.id.to_string()
        };
        let inum = if ns.host {
            format!("{}*", ns.inum)
        } else {
            ns.inum.to_string()
        };
        let _ = writeln!(
            out,
            "{:<7} {:<11} {:<6} {:<16} {:<13} {:<24} {}",
            ns.ty.name(),
            inum,
            id,
            at,
            format!("{} (peak {})", ns.total_members, ns.peak_members),
            state(ns, times),
            Escaped(&creator(ns)),
        );
    }
    if rows.iter().any(|(_, ns)| ns.host) {
        let _ = writeln!(out, "(* the host's namespace)");
    }
    members(&mut out, tl, &rows, times);

    let (histories, still): (Vec<&ProcessHistory>, Vec<&ProcessHistory>) =
        tl.histories().partition(|h| !h.moves.is_empty());
    let _ = writeln!(
        out,
        "\nPROCESSES ({} moved; {} more followed that did not)",
        histories.len(),
        still.len()
    );
    for h in histories {
        let _ = write!(out, "{} {}", h.key.pid, Escaped(&h.comm));
        if let Some(exe) = &h.exe {
            let _ = write!(out, " ({})", Escaped(exe));
        }
        let _ = write!(out, ", parent {}", h.ppid);
        if let Some(born) = h.born_ns {
            let _ = write!(out, ", born {}", times.at(born));
        }
        if let Some((t, code)) = h.exited {
            let _ = write!(out, ", exited {} (status {})", times.at(t), code >> 8);
        }
        if let Some(t) = h.vanished {
            let _ = write!(out, ", gone by {} (its exit was lost)", times.at(t));
        }
        if let Some(t) = tl.uncertain_since(h) {
            let _ = write!(
                out,
                "; records of it may be missing from {} (see LOSSES)",
                times.at(t)
            );
        }
        out.push('\n');
        for m in &h.moves {
            let who = if m.tid == h.key.pid {
                String::new()
            } else if m.thread_apart {
                format!("thread {} alone: ", m.tid)
            } else {
                format!("thread {}: ", m.tid)
            };
            let what = match m.errno {
                Some(errno) => format!(
                    "{} REFUSED ({}), nothing changed",
                    m.cause.describe(),
                    crate::ns::errno_name(errno)
                ),
                None if m.changes.is_empty() => {
                    format!("{}: already there", m.cause.describe())
                }
                None => format!("{}: {}", m.cause.describe(), changes(tl, &m.changes)),
            };
            let _ = writeln!(out, "  {}  {who}{what}", times.at(m.ts_ns));
        }
        if h.moves_dropped > 0 {
            let _ = writeln!(out, "  ... {} more moves", h.moves_dropped);
        }
    }
    folded(&mut out, tl, times);
    containers(&mut out, tl, times);
    losses(&mut out, tl, times);
    let findings = tl.findings();
    let _ = writeln!(out, "\nFINDINGS ({})", findings.len());
    for f in findings {
        let view = FindingView::new(tl, f);
        let _ = writeln!(out, "  {}  {}", times.at(f.ts_ns), view.line());
    }
    let c = &tl.counts;
    let _ = write!(
        out,
        "\n{} transitions, {} forks, {} execs, {} exits",
        c.transitions, c.forks, c.execs, c.exits
    );
    if c.lost_records > 0 {
        let _ = write!(out, ", {} records lost", c.lost_records);
    }
    out.push('\n');
    if c.histories_dropped > 0 {
        let _ = writeln!(
            out,
            "{} process histories not kept (limit)",
            c.histories_dropped
        );
    }
    out
}

fn ns_json(tl: &Timeline, idx: Option<NsIdx>) -> Value {
    match idx {
        Some(i) => {
            let ns = tl.namespace(i);
            json!({"type": ns.ty.name(), "inode": ns.inum, "id": ns.id, "host": ns.host})
        }
        None => Value::Null,
    }
}

/// The machine-readable summary: one JSON object.
pub fn json(tl: &Timeline, times: &Times) -> Value {
    let namespaces: Vec<Value> = shown(tl)
        .map(|(_, ns)| {
            json!({
                "type": ns.ty.name(),
                "inode": ns.inum,
                "id": ns.id,
                "host": ns.host,
                "first_seen": times.rfc3339(ns.first_seen_ns),
                "created_by": ns.created.as_ref().map(|c| json!({
                    "pid": c.process.pid,
                    "start_boottime_ns": c.process.start_ns,
                    "tid": c.tid,
                    "comm": c.comm,
                    "call": c.call.name(),
                    "flags": c.flags,
                    "time": times.rfc3339(c.ts_ns),
                })),
                "parent": ns.parent.map(|p| ns_json(tl, Some(p))),
                "members_now": ns.members(),
                "members_peak": ns.peak_members,
                "members_total": ns.total_members,
                "emptied": ns.emptied_ns.filter(|_| ns.members() == 0).map(|t| times.rfc3339(t)),
                "replaced": ns.replaced,
                "owner": ns.owner.as_ref().map(|o| o.short()),
                "log": ns.log.iter().map(|m| json!({
                    "time": times.rfc3339(m.ts_ns),
                    "pid": m.pid,
                    "tid": m.tid,
                    "comm": m.comm,
                    "cause": m.cause.describe(),
                    "entered": m.entered,
                })).collect::<Vec<_>>(),
                "log_dropped": ns.log_dropped,
            })
        })
        .collect();
    let processes: Vec<Value> = tl
        .histories()
        .map(|h| {
            json!({
                "pid": h.key.pid,
                "start_boottime_ns": h.key.start_ns,
                "ppid": h.ppid,
                "comm": h.comm,
                "exe": h.exe,
                "container": h.container.as_ref().map(|c| c.short()),
                "born": h.born_ns.map(|t| times.rfc3339(t)),
                "moves_dropped": h.moves_dropped,
                "exited": h.exited.map(|(t, code)| json!({"time": times.rfc3339(t), "status": code})),
                "vanished": h.vanished.map(|t| times.rfc3339(t)),
                "uncertain_since": tl.uncertain_since(h).map(|t| times.rfc3339(t)),
                "moves": h.moves.iter().map(|m| json!({
                    "time": times.rfc3339(m.ts_ns),
                    "tid": m.tid,
                    "comm": m.comm,
                    "cause": m.cause.describe(),
                    "errno": m.errno.map(crate::ns::errno_name),
                    "thread_apart": m.thread_apart,
                    "changes": m.changes.iter().map(|c| json!({
                        "slot": c.kind.name(),
                        "from": ns_json(tl, c.from),
                        "to": ns_json(tl, c.to),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let findings: Vec<Value> = tl
        .findings()
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(FindingView::new(tl, f)).unwrap_or(Value::Null);
            v["time"] = times.rfc3339(f.ts_ns).into();
            v
        })
        .collect();
    let containers: Vec<Value> = container_views(tl)
        .into_iter()
        .map(|v| {
            json!({
                "name": v.name,
                "made": v.made.iter().map(|(ns, by)| json!({"namespace": ns, "created_by": by})).collect::<Vec<_>>(),
                "shares": v.joined,
                "processes": v.processes.iter().map(|(pid, comm)| json!({"pid": pid, "comm": comm})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let folded = tl.folded();
    let group = |g: &Group| json!({"count": g.count, "first": times.rfc3339(g.first_ns), "last": times.rfc3339(g.last_ns)});
    let folded = json!({
        "processes": folded.processes.iter().map(|((comm, what), g)| {
            let mut v = group(g);
            v["comm"] = comm.as_str().into();
            v["did"] = what.as_str().into();
            v
        }).collect::<Vec<_>>(),
        "namespaces": folded.namespaces.iter().map(|((ty, made), g)| {
            let mut v = group(g);
            v["type"] = ty.name().into();
            v["made"] = made.as_str().into();
            v
        }).collect::<Vec<_>>(),
    });
    let c = &tl.counts;
    let losses: Vec<Value> = tl
        .losses()
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap_or(Value::Null);
            v["time"] = times.rfc3339(l.ts_ns).into();
            v
        })
        .collect();
    json!({
        "type": "summary",
        "namespaces": namespaces,
        "processes": processes,
        "folded": folded,
        "containers": containers,
        "findings": findings,
        "losses": losses,
        "counts": {
            "transitions": c.transitions,
            "forks": c.forks,
            "execs": c.execs,
            "exits": c.exits,
            "unknown_tasks": c.unknown_tasks,
            "resyncs": c.resyncs,
            "histories_dropped": c.histories_dropped,
            "lost_records": c.lost_records,
            "lost_batches": c.lost_batches,
            "losses_dropped": c.losses_dropped,
            "vanished": c.vanished,
            "found": c.found,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Call, Exec, NsSet, Record, Transition},
        timeline::{ProcEntry, Scope},
    };

    /// A shell that renames itself `comm`, unshares uts, execs `exe` and is found in the cgroup
    /// `cgroup`; the summary of that.
    fn summary_of(comm: &str, exe: &str, cgroup: &str) -> String {
        let host: [u32; nstrace_common::NS_SLOTS] = std::array::from_fn(|i| 4026531830 + i as u32);
        let mut tl = Timeline::new(Scope::All);
        tl.snapshot(
            &[ProcEntry {
                tid: 100,
                pid: 100,
                ppid: 1,
                comm: "sh".into(),
                start_ns: 0,
                inodes: host.map(Some),
            }],
            0,
        );
        let before = NsSet {
            inum: host,
            id: [0; nstrace_common::NS_SLOTS],
        };
        let mut after = before;
        after.inum[crate::ns::NsKind::Uts.slot()] = 4026532300;
        let mut t = Transition::blank();
        (t.ts_ns, t.call, t.flags, t.tid, t.pid) = (10, Call::Unshare, 0x0400_0000, 100, 100);
        (t.comm, t.before, t.after) = (comm.into(), before, after);
        tl.apply(&Record::Transition(Box::new(t)));
        tl.apply(&Record::Exec(Box::new(Exec {
            ts_ns: 20,
            tid: 100,
            pid: 100,
            old_tid: 100,
            start_ns: 0,
            comm: comm.into(),
            filename: exe.into(),
        })));
        tl.observe(100, 30, cgroup, "");
        let times = Times {
            clock: WallClock::with_offset(0),
            utc: true,
        };
        text(&tl, &times)
    }

    #[test]
    fn names_a_traced_process_chose_cannot_add_lines_or_controls() {
        let plain = summary_of("ev", "/tmp/x", "0::/evil\n");
        let forged = summary_of(
            "ev\nFAKE\x1b[2J",
            "/tmp/x\n100 FAKE, parent 1\n",
            "0::/evil\u{1b}[2J\u{202e}name\n",
        );
        assert_eq!(forged.lines().count(), plain.lines().count(), "{forged}");
        assert!(
            !forged
                .lines()
                .any(|l| l.starts_with("FAKE") || l.starts_with("100 FAKE"))
        );
        assert!(
            forged.chars().all(|c| c == '\n' || !c.is_control()),
            "{forged}"
        );
        assert!(!forged.contains('\u{202e}'), "{forged}");
        assert!(
            forged.contains("100 ev\\nFAKE\\x1b[2J (/tmp/x\\n100 FAKE, parent 1\\n)"),
            "{forged}"
        );
        assert!(
            forged.contains("runc:evil\\x1b[2J\\u{202e}name"),
            "{forged}"
        );
    }

    /// The whole summary of a container's start, as text and as JSON, pinned; regenerate with
    /// NSTRACE_BLESS=1 after a deliberate change.
    #[test]
    fn the_summary_matches_the_golden_files() {
        let tl = crate::output::fixture::story();
        let times = Times {
            clock: WallClock::with_offset(0),
            utc: true,
        };
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/output/testdata");
        let json = serde_json::to_string_pretty(&json(&tl, &times)).unwrap() + "\n";
        for (name, got) in [
            ("summary.golden.txt", text(&tl, &times)),
            ("summary.golden.json", json),
        ] {
            let path = format!("{dir}/{name}");
            if std::env::var_os("NSTRACE_BLESS").is_some() {
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path).expect("the golden file");
            assert_eq!(got, want, "{name} changed (NSTRACE_BLESS=1 to accept)");
        }
    }
}
