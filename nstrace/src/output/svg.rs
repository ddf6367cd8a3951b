//! An SVG picture of a timeline for incident write-ups: one row per process that moved, a bar
//! for each stretch of time in one namespace set (same set, same colour), a tick for each
//! transition and a red mark for each finding.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    hash::{Hash, Hasher},
};

use crate::{output::summary::Times, timeline::Timeline};

const ROW: f64 = 28.0;
const LABEL: f64 = 230.0;
const WIDTH: f64 = 1200.0;
const TOP: f64 = 56.0;

/// Any text, whatever its bytes, as well-formed XML that reads as one line.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    crate::output::escape::xml(s)
}

/// A stable, readable colour for a namespace set.
fn colour(key: &str) -> String {
    if key == "host namespaces" {
        return "#d9d9d9".into();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let hue = h.finish() % 360;
    format!("hsl({hue}, 55%, 62%)")
}

pub fn render(tl: &Timeline, times: &Times) -> String {
    let histories: Vec<_> = tl
        .histories()
        .filter(|h| !h.moves.is_empty() || h.born_ns.is_some())
        .collect();
    let start = tl.first_ns.unwrap_or(0);
    let end = tl.last_ns.max(start + 1);
    let x = |ts: u64| {
        LABEL + (ts.saturating_sub(start)) as f64 / (end - start) as f64 * (WIDTH - LABEL - 20.0)
    };
    let height = TOP + ROW * histories.len() as f64 + 40.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">nstrace: namespaces over time, {} to {}</text>"#,
        times.at(start),
        times.at(end)
    );
    for i in 0..=4 {
        let ts = start + (end - start) * i / 4;
        let anchor = if i == 4 { "end" } else { "middle" };
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/><text x="{0:.1}" y="44" text-anchor="{anchor}">{2}</text>"##,
            x(ts),
            height - 30.0,
            times.at(ts)
        );
    }
    for (row, h) in histories.iter().enumerate() {
        let y = TOP + ROW * row as f64;
        let who = format!("{} {}", h.key.pid, h.comm);
        let container = h
            .container
            .as_ref()
            .map(|c| format!(" [{}]", tl.container_label(c)))
            .unwrap_or_default();
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{:.1}">{}</text>"#,
            y + 16.0,
            escape(&format!("{who}{container}"))
        );
        let mut labels: BTreeMap<&str, String> = BTreeMap::new();
        let moves: Vec<_> = h.moves.iter().filter(|m| m.errno.is_none()).collect();
        if let Some(born) = h.born_ns.filter(|_| moves.is_empty()) {
            let until = h.end_ns().unwrap_or(end);
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="18" fill="#eef" stroke="#99b"><title>inherited its parent's namespaces</title></rect>"##,
                x(born),
                y + 4.0,
                (x(until) - x(born)).max(2.0)
            );
        }
        for (i, m) in moves.iter().enumerate() {
            for c in &m.changes {
                if let Some(to) = c.to {
                    labels.insert(c.kind.name(), tl.namespace(to).label());
                }
            }
            let key: Vec<&str> = labels
                .iter()
                .filter(|(k, v)| !v.ends_with("(host)") && !k.ends_with("_for_children"))
                .map(|(_, v)| v.as_str())
                .collect();
            let key = if key.is_empty() {
                "host namespaces".to_owned()
            } else {
                key.join(" ")
            };
            let until = moves
                .get(i + 1)
                .map(|n| n.ts_ns)
                .or(h.end_ns())
                .unwrap_or(end);
            let (x0, x1) = (x(m.ts_ns), x(until).max(x(m.ts_ns) + 2.0));
            let _ = writeln!(
                svg,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="18" fill="{}"><title>{}</title></rect><line x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{:.1}" stroke="#333" stroke-width="2"><title>{}</title></line>"##,
                y + 4.0,
                x1 - x0,
                colour(&key),
                escape(&key),
                y + 2.0,
                y + 24.0,
                escape(&format!("{} {}", times.at(m.ts_ns), m.cause.describe()))
            );
        }
        for f in tl.findings().iter().filter(|f| f.pid == h.key.pid) {
            let fx = x(f.ts_ns);
            let _ = writeln!(
                svg,
                r##"<path d="M{fx:.1},{:.1} l5,9 l-10,0 z" fill="#c00"><title>{}</title></path>"##,
                y + 2.0,
                escape(&format!("{} {}: {}", f.severity.name(), f.id, f.message))
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<text x="10" y="{:.1}" fill="#555">bars: time in one namespace set (grey: the host's); ticks: transitions; red: findings. Hover for details.</text>"##,
        height - 12.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallClock;

    fn picture() -> (Timeline, String) {
        let tl = crate::output::fixture::story();
        let times = Times {
            clock: WallClock::with_offset(0),
            utc: true,
        };
        let svg = render(&tl, &times);
        (tl, svg)
    }

    #[test]
    fn a_container_start_is_a_row_per_process_with_its_bars_ticks_and_findings() {
        let (tl, svg) = picture();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        let rows = tl
            .histories()
            .filter(|h| !h.moves.is_empty() || h.born_ns.is_some())
            .count();
        assert_eq!(rows, 4);
        for label in [
            "50 runc:[1:CHILD]",
            "51 sleep [shop-web-1 (docker:0123456789ab)]",
            "60 nsenter",
            "52 sh",
        ] {
            assert!(texts.contains(&label), "no row {label:?} in {texts:?}");
        }
        let titles: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("title"))
            .filter_map(|n| n.text())
            .collect();
        // A mark for each finding, named by its id.
        for f in tl.findings() {
            assert!(
                titles.iter().any(|t| t.contains(f.id)),
                "no mark for {} in {titles:?}",
                f.id
            );
        }
        // A tick for each move that changed something, with its cause.
        let moves = tl
            .histories()
            .flat_map(|h| &h.moves)
            .filter(|m| m.errno.is_none())
            .count();
        let ticks = doc.descendants().filter(|n| n.has_tag_name("line")).count();
        assert_eq!(ticks, moves + 5, "a tick per move, and five grid lines");
        assert!(
            titles
                .iter()
                .any(|t| t.contains("found so in /proc after lost records"))
        );
    }

    #[test]
    fn the_same_namespace_set_has_the_same_colour_and_the_hosts_is_grey() {
        assert_eq!(colour("host namespaces"), "#d9d9d9");
        assert_eq!(colour("net:[4026532181]"), colour("net:[4026532181]"));
        assert_ne!(colour("net:[4026532181]"), colour("host namespaces"));
    }
}
