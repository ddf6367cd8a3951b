use super::*;
use crate::{
    clock::WallClock,
    event::{Call, Fork, Record, Transition},
    output::fixture,
    timeline::Scope,
};

fn times() -> Times {
    Times {
        clock: WallClock::with_offset(0),
        utc: true,
    }
}

fn parse(svg: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(svg).expect("well-formed XML")
}

/// Every text element's own text.
fn texts<'a>(doc: &'a roxmltree::Document<'_>) -> Vec<&'a str> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect()
}

/// Each bar's fill and title.
fn bars<'a>(doc: &'a roxmltree::Document<'_>) -> Vec<(&'a str, &'a str)> {
    doc.descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("height") == Some("14"))
        .map(|n| {
            let title = n
                .children()
                .find(|c| c.has_tag_name("title"))
                .and_then(|t| t.text())
                .unwrap_or_default();
            (n.attribute("fill").unwrap(), title)
        })
        .collect()
}

#[test]
fn a_container_start_is_grouped_labelled_coloured_and_marked() {
    let tl = fixture::story();
    let svg = render(&tl, &times());
    let doc = parse(&svg);
    let texts = texts(&doc);
    // Groups: the host's processes, then the container's.
    let host = texts
        .iter()
        .position(|t| *t == "host: processes in no container");
    let container = texts
        .iter()
        .position(|t| *t == "container shop-web-1 (docker:0123456789ab)");
    assert!(host.is_some() && container.is_some(), "{texts:?}");
    assert!(host < container);
    for row in [
        "50 runc:[1:CHILD]",
        "60 nsenter",
        "51 sleep [shop-web-1 (docker:0123456789ab)]",
    ] {
        assert!(texts.contains(&row), "no row {row:?} in {texts:?}");
    }
    // Each set in the legend in full, and each bar's title names its set.
    let bars = bars(&doc);
    let legend: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| t.starts_with('S') && t.contains(": "))
        .collect();
    assert!(
        legend.iter().any(|t| t.contains("net:4026532181")),
        "{legend:?}"
    );
    for (_, title) in &bars {
        let named = if let Some(rest) = title.strip_prefix('S') {
            let n = rest.split(' ').next().unwrap();
            legend.iter().any(|l| l.starts_with(&format!("S{n}: ")))
        } else {
            *title == "the host's namespaces"
        };
        assert!(named, "{title:?} not in the legend {legend:?}");
    }
    // One colour per set: the same title has the same fill in every row, two sets two fills.
    let mut fills: BTreeMap<&str, &str> = BTreeMap::new();
    for (fill, title) in &bars {
        assert_eq!(*fills.entry(title).or_insert(fill), *fill, "{title}");
    }
    let distinct: std::collections::BTreeSet<&str> = fills.values().copied().collect();
    assert_eq!(distinct.len(), fills.len(), "{fills:?}");
    if let Some(fill) = fills.get("the host's namespaces") {
        assert_eq!(*fill, HOST_COLOUR);
    }
    // nsenter's bar after its setns says what differs from the host: its net, by inode (the
    // fixture's machine has no pid 1 to tell its mnt is the host's).
    let nsenter = legend
        .iter()
        .find(|l| l.contains("net:4026532181") && !l.contains("mnt:4026532177"))
        .unwrap_or_else(|| panic!("nsenter's set in {legend:?}"));
    let (n, key) = nsenter.split_once(": ").unwrap();
    assert!(
        bars.iter().any(|(_, t)| *t == format!("{n} {key}")),
        "{bars:?}"
    );
    // A mark and the id for each finding.
    for f in tl.findings() {
        assert!(texts.contains(&f.id), "no {} in {texts:?}", f.id);
    }
    // An arrow from runc (who made the net namespace) to nsenter (who entered it).
    let arrows: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("marker-end").is_some())
        .filter_map(|n| n.children().find(|c| c.has_tag_name("title")))
        .filter_map(|t| t.text())
        .collect();
    assert!(
        arrows.iter().any(
            |a| a.starts_with("net:[4026532181] made by 50 runc:[1:CHILD]")
                && a.contains("; 60 nsenter in it")
        ),
        "{arrows:?}"
    );
    // A tick per move, with its cause.
    let ticks: Vec<&str> = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("line")
                && n.attribute("stroke-width").is_some()
                && n.parent().is_some_and(|p| p.has_tag_name("svg"))
        })
        .filter_map(|n| n.children().find(|c| c.has_tag_name("title")))
        .filter_map(|t| t.text())
        .collect();
    let moves = tl
        .histories()
        .filter(|h| !h.moves.is_empty() || h.born_ns.is_some())
        .flat_map(|h| &h.moves)
        .count();
    assert_eq!(ticks.len(), moves, "{ticks:?}");
    assert!(
        ticks
            .iter()
            .any(|t| t.contains("found so in /proc after lost records"))
    );
}

/// A container of a hundred processes: its runtime makes the namespaces, its init is born into
/// them and forks 99 children that do nothing else. The picture shows the few that moved and
/// folds the rest into one line; it stays a few rows high.
#[test]
fn a_hundred_processes_fold_to_those_that_moved() {
    let host = fixture::set(&[]);
    let inside = fixture::set(&[
        (NsKind::Mnt, 4026532300),
        (NsKind::Pid, 4026532301),
        (NsKind::PidForChildren, 4026532301),
        (NsKind::Net, 4026532302),
    ]);
    let mut tl = Timeline::new(Scope::Descendants([100].into()));
    let task = fixture::task;
    tl.snapshot(
        &[task(1, "init"), task(2, "kthreadd"), task(100, "runc")],
        0,
    );
    let mut clone = Transition::blank();
    clone.ts_ns = 1_000;
    clone.call = Call::Clone3;
    clone.flags = (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET) as u64;
    clone.ret = 200;
    clone.tid = 100;
    clone.pid = 100;
    clone.ppid = 1;
    clone.comm = "runc".into();
    clone.before = host;
    clone.after = host;
    clone.child = Some(Box::new(crate::event::Child {
        tid: 200,
        start_ns: 1_000,
        ns_tid: 1,
        ns: inside,
    }));
    tl.apply(&Record::Transition(Box::new(clone)));
    for i in 0..99u32 {
        tl.apply(&Record::Fork(Fork {
            ts_ns: 2_000 + u64::from(i),
            tid: 300 + i,
            pid: 300 + i,
            start_ns: 2_000 + u64::from(i),
            parent_tid: 200,
            parent_pid: 200,
            parent_start_ns: 1_000,
            comm: if i % 2 == 0 { "worker" } else { "sh" }.into(),
        }));
    }
    let svg = render(&tl, &times());
    let doc = parse(&svg);
    let texts = texts(&doc);
    let rows: Vec<&&str> = texts
        .iter()
        .filter(|t| t.starts_with("100 ") || t.starts_with("200 ") || t.starts_with("3"))
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "runc and the container's init only: {rows:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with(
            "+ 99 more that only inherited their parent's namespaces (folded): sh ×49, worker ×50"
        ) || t.starts_with(
            "+ 99 more that only inherited their parent's namespaces (folded): worker ×50, sh ×49"
        )),
        "{texts:?}"
    );
    let height: f64 = doc
        .root_element()
        .attribute("height")
        .unwrap()
        .parse()
        .unwrap();
    assert!(height < 400.0, "{height}");
    // The init's bar says what differs from the host.
    assert!(
        texts.contains(&"S1 mnt:4026532300 pid:4026532301 net:4026532302"),
        "{texts:?}"
    );
}

#[test]
fn sets_past_the_palette_still_have_colours_of_their_own() {
    let colours: std::collections::BTreeSet<String> = (0..40).map(colour).collect();
    assert_eq!(colours.len(), 40);
    assert!(!colours.contains(HOST_COLOUR));
}

/// A container's start of a few milliseconds beside seconds of nothing: the time axis gives the
/// busy milliseconds room, keeps order, and reads back.
#[test]
fn quiet_stretches_are_compressed_and_order_is_kept() {
    const MS: u64 = 1_000_000;
    let events = vec![0, MS, 2 * MS, 3 * MS, 3_000 * MS];
    let axis = Axis::new(events, 0, 3_000 * MS);
    let f = |t: u64| axis.fraction(t);
    assert_eq!((f(0), f(3_000 * MS)), (0.0, 1.0));
    // Three busy milliseconds take more than a fifth of the width; linear, a thousandth.
    assert!(f(3 * MS) > 0.2, "{}", f(3 * MS));
    let mut last = -1.0;
    for t in (0..3_000 * MS).step_by(7 * MS as usize) {
        assert!(f(t) > last, "{t}");
        last = f(t);
        let back = axis.at(f(t));
        assert!(back.abs_diff(t) <= MS / 1000, "{t} read back as {back}");
    }
}
