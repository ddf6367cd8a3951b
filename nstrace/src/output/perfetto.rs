//! A Chrome/Perfetto trace (the JSON trace-event format) of a timeline, for ui.perfetto.dev and
//! chrome://tracing: one track per process, grouped by container; a slice for each stretch of time
//! a process spent in one namespace set; an instant for each transition and finding; a flow
//! from the creator of each namespace to every process that joined it.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{
    output::FindingView,
    output::escape::escape,
    timeline::{Cause, Timeline},
};

/// Trace-event timestamps are microseconds.
fn us(ts_ns: u64) -> f64 {
    ts_ns as f64 / 1000.0
}

/// The name of a slice: the non-host namespaces the process is in, or "host namespaces".
fn set_name(labels: &BTreeMap<&'static str, String>) -> String {
    let own: Vec<&str> = labels
        .iter()
        .filter(|(k, v)| !v.ends_with("(host)") && !k.ends_with("_for_children"))
        .map(|(_, v)| v.as_str())
        .collect();
    if own.is_empty() {
        "host namespaces".into()
    } else {
        own.join(" ")
    }
}

pub fn trace(tl: &Timeline) -> Value {
    let mut events: Vec<Value> = Vec::new();
    let end = tl.last_ns;
    // Perfetto groups tracks by pid: one synthetic pid per container (1: no container).
    let mut groups: BTreeMap<String, u32> = BTreeMap::new();
    groups.insert("no container".into(), 1);
    let mut group_of = |name: String| -> u32 {
        let next = groups.len() as u32 + 1;
        *groups.entry(name).or_insert(next)
    };
    let mut track: BTreeMap<u32, u32> = BTreeMap::new();

    for h in tl.histories() {
        let group = group_of(h.container.as_ref().map_or_else(
            || "no container".into(),
            |c| escape(&tl.container_label(c)).into_owned(),
        ));
        track.insert(h.key.pid, group);
        events.push(json!({
            "ph": "M", "name": "thread_name", "pid": group, "tid": h.key.pid,
            "args": {"name": format!("{} {}", escape(&h.comm), h.key.pid)},
        }));
        let mut labels: BTreeMap<&'static str, String> = BTreeMap::new();
        let moves: Vec<_> = h.moves.iter().filter(|m| m.errno.is_none()).collect();
        if let Some(born) = h.born_ns.filter(|_| moves.is_empty()) {
            // Followed, never moved: one slice in what it inherited.
            let until = h.end_ns().unwrap_or(end).max(born);
            events.push(json!({
                "ph": "X", "cat": "namespaces", "name": "inherited namespaces",
                "pid": group, "tid": h.key.pid, "ts": us(born), "dur": us(until - born),
            }));
        }
        for (i, m) in moves.iter().enumerate() {
            for c in &m.changes {
                if let Some(to) = c.to {
                    labels.insert(c.kind.name(), tl.namespace(to).label());
                }
            }
            let until = moves
                .get(i + 1)
                .map(|next| next.ts_ns)
                .or(h.end_ns())
                .unwrap_or(end)
                .max(m.ts_ns);
            events.push(json!({
                "ph": "X", "cat": "namespaces", "name": set_name(&labels),
                "pid": group, "tid": h.key.pid, "ts": us(m.ts_ns), "dur": us(until - m.ts_ns),
                "args": labels.clone(),
            }));
        }
        for m in &h.moves {
            let changes: Vec<String> = m
                .changes
                .iter()
                .map(|c| {
                    let label =
                        |i: Option<usize>| i.map_or("?".into(), |i| tl.namespace(i).label());
                    format!("{}: {} -> {}", c.kind.name(), label(c.from), label(c.to))
                })
                .collect();
            events.push(json!({
                "ph": "i", "s": "t", "cat": "transition", "name": m.cause.describe(),
                "pid": group, "tid": h.key.pid, "ts": us(m.ts_ns),
                "args": {"tid": m.tid, "comm": m.comm, "errno": m.errno.map(crate::ns::errno_name), "changes": changes},
            }));
        }
    }

    for f in tl.findings() {
        let view = FindingView::new(tl, f);
        let group = track.get(&f.pid).copied().unwrap_or(1);
        events.push(json!({
            "ph": "i", "s": "p", "cat": "finding", "name": format!("{} {}", view.severity, view.id),
            "pid": group, "tid": f.pid, "ts": us(f.ts_ns),
            "args": {"message": view.message, "namespaces": view.namespaces, "container": view.container},
        }));
    }

    flows(tl, &track, &mut events);

    for (name, pid) in &groups {
        events.push(json!({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}}));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}

/// A join: (creator pid, creation time, joiner pid, join time, joiner comm).
type Join = (u32, u64, u32, u64, String);

/// Arrows from a namespace's creation to each process born into it or joining it; one arrow
/// per creator and joiner, naming every namespace it carries.
fn flows(tl: &Timeline, track: &BTreeMap<u32, u32>, out: &mut Vec<Value>) {
    let mut joins: BTreeMap<Join, Vec<String>> = BTreeMap::new();
    for ns in tl.namespaces() {
        let Some(created) = &ns.created else {
            continue;
        };
        for m in &ns.log {
            let joined = m.entered
                && m.pid != created.process.pid
                && matches!(
                    m.cause,
                    Cause::Setns { .. } | Cause::Clone { .. } | Cause::BornInto { .. }
                );
            if joined {
                joins
                    .entry((
                        created.process.pid,
                        created.ts_ns,
                        m.pid,
                        m.ts_ns,
                        m.comm.to_string(),
                    ))
                    .or_default()
                    .push(ns.label());
            }
        }
    }
    for (id, ((creator, created, joiner, at, comm), labels)) in joins.into_iter().enumerate() {
        let name = format!("{} {joiner} joins {}", escape(&comm), labels.join(", "));
        out.push(json!({
            "ph": "s", "id": id + 1, "cat": "joins", "name": name,
            "pid": track.get(&creator).copied().unwrap_or(1), "tid": creator, "ts": us(created),
        }));
        out.push(json!({
            "ph": "f", "bp": "e", "id": id + 1, "cat": "joins", "name": name,
            "pid": track.get(&joiner).copied().unwrap_or(1), "tid": joiner, "ts": us(at),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixture::stream;

    #[test]
    fn the_trace_has_tracks_slices_instants_and_flows() {
        let trace = trace(&stream());
        let events = trace["traceEvents"].as_array().unwrap();
        let of = |ph: &str| events.iter().filter(|e| e["ph"] == ph).count();
        assert_eq!(of("X"), 3, "one slice per stretch in one set");
        assert_eq!(of("i"), 3, "one instant per transition");
        assert_eq!(
            (of("s"), of("f")),
            (2, 2),
            "creator to the child, creator to nsenter"
        );
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["runc:[1:CHILD] 50", "runc:[1:CHILD] 51", "nsenter 60"]
        );
    }

    #[test]
    fn a_containers_tracks_are_grouped_under_its_name_and_so_are_its_findings() {
        let trace = trace(&crate::output::fixture::story());
        let events = trace["traceEvents"].as_array().unwrap();
        let group = events
            .iter()
            .find(|e| e["name"] == "process_name" && e["args"]["name"] != "no container")
            .expect("the container's group");
        assert_eq!(group["args"]["name"], "shop-web-1 (docker:0123456789ab)");
        let finding = events
            .iter()
            .find(|e| e["cat"] == "finding" && e["name"] == "medium NS-SHARES-HOST")
            .expect("the container's finding");
        assert_eq!(finding["pid"], group["pid"], "under its container");
        assert_eq!(finding["args"]["container"], group["args"]["name"]);
    }

    /// Pins the whole shape; regenerate with NSTRACE_BLESS=1 after a deliberate change.
    #[test]
    fn the_trace_matches_the_golden_file() {
        let got = serde_json::to_string_pretty(&trace(&stream())).unwrap() + "\n";
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/output/testdata/perfetto.golden.json"
        );
        if std::env::var_os("NSTRACE_BLESS").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).expect("the golden file");
        assert_eq!(
            got, want,
            "the Perfetto trace changed shape (NSTRACE_BLESS=1 to accept)"
        );
    }
}
