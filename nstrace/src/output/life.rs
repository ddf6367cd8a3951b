//! `report --ns TYPE:INODE` or `--ns ID`: the life of one namespace: who made it (process,
//! container, call), its parent and owner, every member's entry and exit with its cause, when
//! it emptied, and the findings that name it. An inode can name several namespaces over a long
//! recording (the kernel reuses them): each is told, in the order first seen.
use serde_json::{Value, json};

use super::{
    FindingView,
    escape::Escaped,
    summary::{Times, creator_call, log_line, namespace_row},
};
use crate::timeline::{NsIdx, Timeline};

/// The findings that name namespace `idx`.
fn findings(tl: &Timeline, idx: NsIdx) -> Vec<FindingView> {
    tl.findings()
        .iter()
        .filter(|f| f.namespaces.contains(&idx))
        .map(|f| FindingView::new(tl, f))
        .collect()
}

/// The lives of `found` as text.
pub fn text(tl: &Timeline, found: &[NsIdx], times: &Times) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for &idx in found {
        let row = namespace_row(tl, idx, tl.namespace(idx), *times);
        let id = if row.name.id == 0 {
            String::new()
        } else {
            format!(", id {}", row.name.id)
        };
        let _ = writeln!(out, "NAMESPACE {}{id}", row.name.label());
        match &row.created_by {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  made       {} by {} {} (tid {}, uid {}) with {}",
                    c.time.at(),
                    Escaped(c.comm),
                    c.pid,
                    c.tid,
                    tl.namespace(idx).created.as_ref().map_or(0, |c| c.uid),
                    creator_call(tl.namespace(idx)).unwrap_or_else(|| c.call.into())
                );
            }
            None if row.name.host => {
                let _ = writeln!(out, "  made       by the kernel (the host's)");
            }
            None => {
                let _ = writeln!(
                    out,
                    "  made       before the recording, or unseen (first seen {})",
                    row.first_seen.at()
                );
            }
        }
        if let Some(parent) = &row.parent {
            let _ = writeln!(out, "  inside     {}", parent.label());
        }
        if let Some(owner) = &row.owner {
            let _ = writeln!(out, "  container  {}", Escaped(owner));
        }
        let end = match &row.emptied {
            Some(at) => format!("emptied {}", at.at()),
            None => format!("{} members at the end", row.members_now),
        };
        let _ = writeln!(
            out,
            "  members    {} in all, {} at once at most; {end}{}",
            row.members_total,
            row.members_peak,
            if row.replaced {
                "; gone (its inode named another later)"
            } else {
                ""
            }
        );
        if !row.log.is_empty() {
            let _ = writeln!(out, "  LIFE (entries + and exits -)");
        }
        for m in &row.log {
            log_line(&mut out, "    ", m, times);
        }
        if row.log_dropped > 0 {
            let _ = writeln!(out, "    ... {} more, not kept", row.log_dropped);
        }
        let named = findings(tl, idx);
        if !named.is_empty() {
            let _ = writeln!(out, "  FINDINGS");
            for f in named {
                let _ = writeln!(out, "    {} {}", times.at(f.ts_ns), f.line());
            }
        }
        out.push('\n');
    }
    out
}

/// The lives of `found`, one JSON object each (`"type": "namespace"`, the summary's namespace
/// fields, and `findings`).
pub fn json(tl: &Timeline, found: &[NsIdx], times: &Times) -> Vec<Value> {
    found
        .iter()
        .map(|&idx| {
            let row = namespace_row(tl, idx, tl.namespace(idx), *times);
            let mut v = serde_json::to_value(&row).unwrap_or(Value::Null);
            // The summary's row names its type `type`: here that is the object's, so `ns_type`.
            if let Some(map) = v.as_object_mut() {
                let ty = map.remove("type").unwrap_or(Value::Null);
                map.insert("ns_type".into(), ty);
                map.insert("type".into(), "namespace".into());
                map.insert(
                    "findings".into(),
                    findings(tl, idx)
                        .iter()
                        .map(|f| {
                            let mut f = serde_json::to_value(f).unwrap_or(Value::Null);
                            f["time"] = times.rfc3339(f["ts_ns"].as_u64().unwrap_or(0)).into();
                            f
                        })
                        .collect(),
                );
            }
            v
        })
        .map(|v| if v.is_null() { json!({}) } else { v })
        .collect()
}
