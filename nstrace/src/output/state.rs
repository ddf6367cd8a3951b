//! `report --at TIME`: the state at one instant, as `lsns` would have shown it then: every
//! namespace alive, its type, inode, id, container, maker and members; with `--pid`, each
//! process's whole set. The timeline is rebuilt up to that instant (nothing later is applied),
//! then read.
use serde_json::{Value, json};

use super::{escape::Escaped, summary::Times};
use crate::{
    ns::NsKind,
    timeline::{NsIdx, Timeline},
};

/// A namespace alive at the instant.
struct Alive {
    idx: NsIdx,
    /// Its member processes (thread groups), in pid order.
    pids: Vec<u32>,
}

/// Every namespace with a member at the instant, in type then inode order.
fn alive(tl: &Timeline) -> Vec<Alive> {
    let mut by_ns: std::collections::BTreeMap<(usize, u32, NsIdx), Vec<u32>> = Default::default();
    for (tid, pid) in tl.live_tasks() {
        let Some(set) = tl.task_namespaces(tid) else {
            continue;
        };
        for kind in NsKind::ALL {
            // The *_for_children slots name namespaces their own slot lists once a process is
            // born there; until then they are the only sign of them.
            if let Some(idx) = set[kind.slot()] {
                let ns = tl.namespace(idx);
                by_ns
                    .entry((ns.ty as usize, ns.inum, idx))
                    .or_default()
                    .push(pid);
            }
        }
    }
    by_ns
        .into_iter()
        .map(|((_, _, idx), mut pids)| {
            pids.sort_unstable();
            pids.dedup();
            Alive { idx, pids }
        })
        .collect()
}

/// Who made a namespace, when it was seen: `unshare by runc:[1:CHILD] 4242 at TIME`.
fn made_by(tl: &Timeline, idx: NsIdx, times: &Times) -> Option<String> {
    let c = tl.namespace(idx).created.as_ref()?;
    Some(format!(
        "{} by {} {} at {}",
        c.call.name(),
        Escaped(&c.comm),
        c.process.pid,
        times.at(c.ts_ns)
    ))
}

fn owner(tl: &Timeline, idx: NsIdx) -> Option<String> {
    let ns = tl.namespace(idx);
    if ns.host {
        return Some("host".into());
    }
    ns.owner.as_ref().map(|c| tl.container_label(c))
}

/// How many member pids a text line lists before it says how many more.
const LISTED: usize = 12;

/// The state at `at_ns` as text; `pids`: only those processes, each with its whole set.
pub fn text(tl: &Timeline, at_ns: u64, start_ns: u64, pids: &[u32], times: &Times) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "STATE AT {} ({:.3} s into the recording)",
        times.at(at_ns),
        at_ns.saturating_sub(start_ns) as f64 / 1e9
    );
    if !pids.is_empty() {
        for &pid in pids {
            let Some(set) = tl.task_namespaces(pid) else {
                let _ = writeln!(out, "\nPROCESS {pid}: not alive then");
                continue;
            };
            let comm = tl.comm_of(pid).unwrap_or_default();
            let container = tl
                .container_of(pid)
                .map(|c| format!(" in {}", Escaped(&tl.container_label(c))))
                .unwrap_or_default();
            let _ = writeln!(out, "\nPROCESS {pid} {}{container}", Escaped(&comm));
            for kind in NsKind::ALL {
                let Some(idx) = set[kind.slot()] else {
                    let _ = writeln!(out, "  {:<18} unknown", kind.name());
                    continue;
                };
                let ns = tl.namespace(idx);
                let whose = match (owner(tl, idx), made_by(tl, idx, times)) {
                    (Some(o), Some(m)) => format!("  {}, made by {m}", Escaped(&o)),
                    (Some(o), None) => format!("  {}", Escaped(&o)),
                    (None, Some(m)) => format!("  made by {m}"),
                    (None, None) => String::new(),
                };
                let _ = writeln!(out, "  {:<18} {:<11}{whose}", kind.name(), ns.inum);
            }
        }
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<7} {:<11} {:>8} {:>6}  {:<28} MADE BY / MEMBERS",
        "TYPE", "NS", "ID", "PROCS", "OWNER"
    );
    for a in alive(tl) {
        let ns = tl.namespace(a.idx);
        let id = if ns.id == 0 {
            "-".to_string()
        } else {
            ns.id.to_string()
        };
        let owner = owner(tl, a.idx).unwrap_or_else(|| "-".into());
        let mut members: Vec<String> = a.pids.iter().take(LISTED).map(u32::to_string).collect();
        if a.pids.len() > LISTED {
            members.push(format!("+{} more", a.pids.len() - LISTED));
        }
        let made = made_by(tl, a.idx, times)
            .map(|m| format!("{m}; "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<7} {:<11} {:>8} {:>6}  {:<28} {made}{}",
            ns.ty.to_string(),
            ns.inum,
            id,
            a.pids.len(),
            Escaped(&owner).to_string(),
            members.join(" ")
        );
    }
    out
}

fn created_json(tl: &Timeline, idx: NsIdx, times: &Times) -> Value {
    tl.namespace(idx).created.as_ref().map_or(Value::Null, |c| {
        json!({
            "pid": c.process.pid,
            "start_boottime_ns": c.process.start_ns,
            "tid": c.tid,
            "comm": c.comm.as_str(),
            "call": c.call.name(),
            "flags": c.flags,
            "time": times.rfc3339(c.ts_ns),
        })
    })
}

/// The state at `at_ns` as one JSON object (`"type": "state"`); with `pids`, their sets.
pub fn json(tl: &Timeline, at_ns: u64, pids: &[u32], times: &Times) -> Value {
    let namespace = |idx: NsIdx| {
        let ns = tl.namespace(idx);
        json!({
            "type": ns.ty.to_string(),
            "inode": ns.inum,
            "id": (ns.id != 0).then_some(ns.id),
            "host": ns.host,
            "container": ns.owner.as_ref().map(|c| tl.container_label(c)),
            "created_by": created_json(tl, idx, times),
        })
    };
    let mut state = json!({
        "type": "state",
        "time": times.rfc3339(at_ns),
        "ts_ns": at_ns,
    });
    if pids.is_empty() {
        state["namespaces"] = alive(tl)
            .into_iter()
            .map(|a| {
                let mut v = namespace(a.idx);
                v["members"] = json!(a.pids);
                v
            })
            .collect();
    } else {
        state["processes"] = pids
            .iter()
            .map(|&pid| match tl.task_namespaces(pid) {
                None => json!({"pid": pid, "alive": false}),
                Some(set) => {
                    let set: serde_json::Map<String, Value> = NsKind::ALL
                        .into_iter()
                        .filter_map(|k| set[k.slot()].map(|idx| (k.name().into(), namespace(idx))))
                        .collect();
                    json!({
                        "pid": pid,
                        "alive": true,
                        "comm": tl.comm_of(pid).map(|c| c.to_string()),
                        "container": tl.container_of(pid).map(|c| tl.container_label(c)),
                        "namespaces": set,
                    })
                }
            })
            .collect();
    }
    state
}
