//! The summary for people: the rows of [`Summary`] as tables and stories, every name a traced
//! process chose escaped.
use std::fmt::Write as _;

use super::{
    ChangeRow, ContainerRow, FoldedRows, LossRow, NamespaceRow, ProcessRow, Summary, Times, summary,
};
use crate::{
    output::{escape::Escaped, text::style},
    timeline::{KEEP_HISTORIES, KEEP_NAMESPACES, Timeline},
};

/// The human summary.
pub fn text(tl: &Timeline, times: &Times, only: Option<&str>) -> String {
    text_in(tl, times, only, false)
}

/// The human summary, findings, losses and changed namespaces standing out when `colour` (a
/// terminal).
pub fn text_in(tl: &Timeline, times: &Times, only: Option<&str>, colour: bool) -> String {
    let s = summary(tl, times, only);
    let mut out = String::new();
    namespaces(&mut out, &s.namespaces);
    members(&mut out, &s.namespaces);
    processes(&mut out, &s.processes, colour);
    folded(&mut out, &s.folded);
    containers(&mut out, &s.containers);
    losses(&mut out, &s, colour);
    let _ = writeln!(out, "\nFINDINGS ({})", s.findings.len());
    for f in &s.findings {
        let line = style::paint(colour, style::severity(f.view.severity), &f.view.line());
        let _ = writeln!(out, "  {}  {line}", f.time.at());
    }
    let c = &s.counts;
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

/// The table of namespaces.
fn namespaces(out: &mut String, rows: &[NamespaceRow<'_>]) {
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
    for ns in rows {
        let at = ns
            .created_by
            .as_ref()
            .map_or_else(|| "-".into(), |c| c.time.at());
        let id = if ns.name.id == 0 {
            "-".into()
        } else {
            ns.name.id.to_string()
        };
        let inum = if ns.name.host {
            format!("{}*", ns.name.inode)
        } else {
            ns.name.inode.to_string()
        };
        let state = if ns.replaced {
            "freed (inode reused)".into()
        } else {
            match &ns.emptied {
                Some(t) => format!("emptied {}", t.at()),
                None => format!("alive, {} members", ns.members_now),
            }
        };
        let creator = match &ns.created_by {
            Some(c) => c.described.clone(),
            None if ns.name.host => "the kernel (initial)".into(),
            None => "before tracing or unseen".into(),
        };
        let _ = writeln!(
            out,
            "{:<7} {:<11} {:<6} {:<16} {:<13} {:<24} {}",
            ns.name.ty,
            inum,
            id,
            at,
            format!("{} (peak {})", ns.members_total, ns.members_peak),
            state,
            Escaped(&creator),
        );
    }
    if rows.iter().any(|ns| ns.name.host) {
        let _ = writeln!(out, "(* the host's namespace)");
    }
}

/// Who joined and left each namespace made during the trace, in order.
fn members(out: &mut String, rows: &[NamespaceRow<'_>]) {
    const SHOWN: usize = 12;
    let made: Vec<_> = rows
        .iter()
        .filter(|ns| !ns.name.host && !ns.log.is_empty())
        .collect();
    if made.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nMEMBERS (entries + and exits -, in order)");
    // Namespaces made together and shared by the same tasks have the same log: one list.
    let mut groups: Vec<Vec<&NamespaceRow<'_>>> = Vec::new();
    for ns in made {
        match groups.iter_mut().find(|g| g[0].log == ns.log) {
            Some(group) => group.push(ns),
            None => groups.push(vec![ns]),
        }
    }
    for group in groups {
        let labels: Vec<String> = group
            .iter()
            .map(|n| match &n.parent {
                Some(p) => format!("{} (inside {})", n.name.label(), p.label()),
                None => n.name.label(),
            })
            .collect();
        let _ = writeln!(out, "{}", labels.join(", "));
        let ns = group[0];
        let times = ns.first_seen.times;
        for m in ns.log.iter().take(SHOWN) {
            log_line(out, "  ", m, &times);
        }
        let more = ns.log.len().saturating_sub(SHOWN) as u64 + ns.log_dropped;
        if more > 0 {
            let _ = writeln!(out, "  ... {more} more");
        }
    }
}

/// One entry or exit of a namespace's log, after `indent`: `TIME + PID[/TID] COMM: cause`.
pub(crate) fn log_line(out: &mut String, indent: &str, m: &super::LogRow<'_>, times: &Times) {
    let sign = if m.entered { '+' } else { '-' };
    let who = if m.tid == m.pid {
        m.pid.to_string()
    } else {
        format!("{}/{}", m.pid, m.tid)
    };
    let _ = writeln!(
        out,
        "{indent}{} {sign} {who} {}: {}",
        times.at(m.ts_ns),
        Escaped(m.comm),
        m.cause
    );
}

/// `kind from → to` for each change.
fn changes(changes: &[ChangeRow]) -> String {
    let inode =
        |r: &Option<super::NsRef>| r.as_ref().map_or_else(|| "?".into(), |r| r.inode_text());
    changes
        .iter()
        .map(|c| format!("{} {} \u{2192} {}", c.slot, inode(&c.from), inode(&c.to)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per process that moved, who it is and where it went.
fn processes(out: &mut String, rows: &[ProcessRow<'_>], colour: bool) {
    let (moved, still): (Vec<&ProcessRow<'_>>, Vec<&ProcessRow<'_>>) =
        rows.iter().partition(|h| !h.moves.is_empty());
    let _ = writeln!(
        out,
        "\nPROCESSES ({} moved; {} more followed that did not)",
        moved.len(),
        still.len()
    );
    for h in moved {
        let _ = write!(out, "{} {}", h.pid, Escaped(h.comm));
        if let Some(exe) = h.exe {
            let _ = write!(out, " ({})", Escaped(exe));
        }
        let _ = write!(out, ", parent {}", h.ppid);
        if let Some(born) = &h.born {
            let _ = write!(out, ", born {}", born.at());
        }
        if let Some(exit) = &h.exited {
            let _ = write!(
                out,
                ", exited {} (status {})",
                exit.time.at(),
                exit.status >> 8
            );
        }
        if let Some(t) = &h.vanished {
            let _ = write!(out, ", gone by {} (its exit was lost)", t.at());
        }
        if let Some(t) = &h.uncertain_since {
            let _ = write!(
                out,
                "; records of it may be missing from {} (see LOSSES)",
                t.at()
            );
        }
        out.push('\n');
        for m in &h.moves {
            let who = if m.tid == h.pid {
                String::new()
            } else if m.thread_apart {
                format!("thread {} alone: ", m.tid)
            } else {
                format!("thread {}: ", m.tid)
            };
            let what = match &m.errno {
                Some(errno) => format!("{} REFUSED ({errno}), nothing changed", m.cause),
                None if m.changes.is_empty() => format!("{}: already there", m.cause),
                None => format!(
                    "{}: {}",
                    m.cause,
                    style::paint(colour, style::CHANGED, &changes(&m.changes))
                ),
            };
            let _ = writeln!(out, "  {}  {who}{what}", m.time.at());
        }
        if h.moves_dropped > 0 {
            let _ = writeln!(out, "  ... {} more moves", h.moves_dropped);
        }
    }
}

/// The kinds of processes and namespaces counted rather than listed (see `timeline::fold`).
fn folded(out: &mut String, folded: &FoldedRows<'_>) {
    if folded.processes.is_empty() && folded.namespaces.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nFOLDED (past the first {KEEP_HISTORIES} processes and {KEEP_NAMESPACES} namespaces, \
         the ones that ended are counted by kind)"
    );
    for g in &folded.processes {
        let _ = writeln!(
            out,
            "  {:>8} processes {}: {}  ({} to {})",
            g.count,
            Escaped(g.kind.comm),
            Escaped(g.kind.did),
            g.first.at(),
            g.last.at()
        );
    }
    for g in &folded.namespaces {
        let _ = writeln!(
            out,
            "  {:>8} {} namespaces {}, emptied  ({} to {})",
            g.count,
            g.kind.ty,
            Escaped(g.kind.made),
            g.first.at(),
            g.last.at()
        );
    }
}

/// Each container's start as a story.
fn containers(out: &mut String, rows: &[ContainerRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nCONTAINERS ({})", rows.len());
    for v in rows {
        let _ = writeln!(out, "{}", Escaped(&v.name));
        if let Some(details) = v
            .names
            .as_ref()
            .map(|n| n.details())
            .filter(|d| !d.is_empty())
        {
            let _ = writeln!(out, "  {}", Escaped(&details));
        }
        // What one call made, on one line.
        let mut made: Vec<(&str, Vec<&str>)> = Vec::new();
        for m in &v.made {
            match made.iter_mut().find(|(by, _)| *by == m.created_by) {
                Some((_, namespaces)) => namespaces.push(&m.namespace),
                None => made.push((&m.created_by, vec![&m.namespace])),
            }
        }
        for (by, namespaces) in made {
            let _ = writeln!(out, "  made {} by {}", namespaces.join(", "), Escaped(by));
        }
        let whose: Vec<String> = v
            .namespaces
            .0
            .iter()
            .map(|(ty, whose)| match whose.as_str() {
                "own" => format!("{ty} its own"),
                "host" => format!("{ty} the host's"),
                other => format!("{ty} {}'s", Escaped(other)),
            })
            .collect();
        if !whose.is_empty() {
            let _ = writeln!(out, "  namespaces: {}", whose.join(", "));
        }
        for ns in &v.joined {
            let _ = writeln!(out, "  joined {}", Escaped(ns));
        }
        let procs: Vec<String> = v
            .processes
            .iter()
            .map(|p| format!("{} {}", p.pid, Escaped(&p.comm)))
            .collect();
        let _ = writeln!(out, "  processes: {}", procs.join(", "));
        if let Some(first) = &v.first_seen {
            let _ = writeln!(out, "  first seen {}", first.at());
        }
    }
}

/// Where records were lost, and what reading /proc again found.
fn losses(out: &mut String, s: &Summary<'_>, colour: bool) {
    const SHOWN: usize = 20;
    let c = &s.counts;
    if s.losses.is_empty() && c.losses_dropped == 0 {
        return;
    }
    let head = format!(
        "LOSSES ({} records in {} gaps: the kernel found a CPU's perf buffer full; \
         --buffer-pages makes them larger)",
        c.lost_records,
        s.losses.len() as u64 + c.losses_dropped
    );
    let _ = writeln!(out, "\n{}", style::paint(colour, style::LOSS, &head));
    for LossRow { loss, time } in s.losses.iter().take(SHOWN) {
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
            time.at(),
            loss.cpu
        );
    }
    let more = s.losses.len().saturating_sub(SHOWN) as u64 + c.losses_dropped;
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
