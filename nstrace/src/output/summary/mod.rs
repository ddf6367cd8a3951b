//! The closing summary of a timeline: the namespaces made, entered and left, who moved where,
//! the containers, the losses and the findings.
//!
//! What the summary says is built once, as typed rows ([`Summary`]); [`text`] renders them for
//! people and [`json`] serializes them. Both read the same rows, so the two cannot drift apart.
mod text;

use serde::{Serialize, Serializer};
use serde_json::Value;

pub(crate) use text::log_line;
pub use text::{text, text_in};

use crate::{
    clock::WallClock,
    container::Container,
    event::{Comm, Loss},
    names::Names,
    ns::{NsKind, flag_names},
    output::FindingView,
    timeline::{Change, Counts, Namespace, NsIdx, ProcessHistory, Timeline},
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

    pub fn rfc3339(&self, ts_ns: u64) -> String {
        self.clock
            .to_utc(ts_ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }

    fn stamp(self, ts_ns: u64) -> Stamp {
        Stamp { ts_ns, times: self }
    }
}

/// A kernel time: RFC 3339 in JSON, a time of day in text.
#[derive(Clone, Copy)]
pub struct Stamp {
    pub ts_ns: u64,
    times: Times,
}

impl Stamp {
    /// For people.
    pub fn at(&self) -> String {
        self.times.at(self.ts_ns)
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.times.rfc3339(self.ts_ns))
    }
}

/// What the summary says.
#[derive(Serialize)]
pub struct Summary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pub namespaces: Vec<NamespaceRow<'a>>,
    pub processes: Vec<ProcessRow<'a>>,
    pub folded: FoldedRows<'a>,
    pub containers: Vec<ContainerRow>,
    pub findings: Vec<FindingRow>,
    pub losses: Vec<LossRow<'a>>,
    pub counts: &'a Counts,
}

/// A namespace by its names, as a move or a parent names it.
#[derive(Serialize)]
pub struct NsRef {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub inode: u32,
    pub id: u64,
    pub host: bool,
}

impl NsRef {
    fn of(tl: &Timeline, idx: NsIdx) -> Self {
        let ns = tl.namespace(idx);
        Self {
            ty: ns.ty.name(),
            inode: ns.inum,
            id: ns.id,
            host: ns.host,
        }
    }

    /// `mnt:[4026531832] (host)`.
    pub fn label(&self) -> String {
        if self.host {
            format!("{}:[{}] (host)", self.ty, self.inode)
        } else {
            format!("{}:[{}]", self.ty, self.inode)
        }
    }

    /// The inode, and `(host)` for the host's.
    pub fn inode_text(&self) -> String {
        if self.host {
            format!("{} (host)", self.inode)
        } else {
            self.inode.to_string()
        }
    }
}

/// Who made a namespace.
#[derive(Serialize)]
pub struct CreatorRow<'a> {
    pub pid: u32,
    pub start_boottime_ns: u64,
    pub tid: u32,
    pub comm: &'a Comm,
    pub call: &'static str,
    pub flags: u64,
    pub time: Stamp,
    /// `call(FLAG|FLAG)`, for people.
    #[serde(skip)]
    pub described: String,
}

/// An entry into or an exit from a namespace.
#[derive(Serialize, PartialEq)]
pub struct LogRow<'a> {
    #[serde(skip)]
    pub ts_ns: u64,
    pub time: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a Comm,
    pub cause: String,
    pub entered: bool,
}

/// One namespace made, entered or left while tracing.
#[derive(Serialize)]
pub struct NamespaceRow<'a> {
    #[serde(flatten)]
    pub name: NsRef,
    pub first_seen: Stamp,
    pub created_by: Option<CreatorRow<'a>>,
    pub parent: Option<NsRef>,
    pub members_now: usize,
    pub members_peak: usize,
    pub members_total: u64,
    /// When its last member left, if none is left.
    pub emptied: Option<Stamp>,
    pub replaced: bool,
    pub owner: Option<String>,
    pub log: Vec<LogRow<'a>>,
    pub log_dropped: u64,
}

/// One slot's change in a move.
#[derive(Serialize)]
pub struct ChangeRow {
    pub slot: &'static str,
    pub from: Option<NsRef>,
    pub to: Option<NsRef>,
}

/// One entry of a process's history.
#[derive(Serialize)]
pub struct MoveRow<'a> {
    pub time: Stamp,
    pub tid: u32,
    pub comm: &'a Comm,
    pub cause: String,
    pub errno: Option<String>,
    pub thread_apart: bool,
    pub changes: Vec<ChangeRow>,
}

/// How a process ended.
#[derive(Serialize)]
pub struct ExitRow {
    pub time: Stamp,
    /// As wait(2) encodes it.
    pub status: i32,
}

/// One process followed.
#[derive(Serialize)]
pub struct ProcessRow<'a> {
    pub pid: u32,
    pub start_boottime_ns: u64,
    pub ppid: u32,
    pub comm: &'a Comm,
    pub exe: Option<&'a str>,
    pub container: Option<String>,
    pub born: Option<Stamp>,
    pub moves_dropped: u64,
    pub exited: Option<ExitRow>,
    pub vanished: Option<Stamp>,
    pub uncertain_since: Option<Stamp>,
    pub moves: Vec<MoveRow<'a>>,
}

/// Processes and namespaces counted by kind rather than listed (see `timeline::fold`).
#[derive(Serialize)]
pub struct FoldedRows<'a> {
    pub processes: Vec<FoldedRow<FoldedProcess<'a>>>,
    pub namespaces: Vec<FoldedRow<FoldedNamespace<'a>>>,
}

/// How many of one kind were folded, over what time.
#[derive(Serialize)]
pub struct FoldedRow<K> {
    #[serde(flatten)]
    pub kind: K,
    pub count: u64,
    pub first: Stamp,
    pub last: Stamp,
}

/// A kind of process: its comm and what it did.
#[derive(Serialize)]
pub struct FoldedProcess<'a> {
    pub comm: &'a str,
    pub did: &'a str,
}

/// A kind of namespace: its type and what made it.
#[derive(Serialize)]
pub struct FoldedNamespace<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub made: &'a str,
}

/// Something about each of a container's namespaces, by type, in /proc order: a map in JSON.
pub struct Whose<T = String>(pub Vec<(&'static str, T)>);

impl<T> Default for Whose<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Serialize> Serialize for Whose<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (ty, whose) in &self.0 {
            map.serialize_entry(ty, whose)?;
        }
        map.end()
    }
}

/// A namespace a container made, and who made it.
#[derive(Serialize)]
pub struct MadeRow {
    pub namespace: String,
    pub created_by: String,
}

/// A process of a container.
#[derive(Serialize)]
pub struct MemberRow {
    pub pid: u32,
    pub comm: String,
}

/// Each container's start as a story: who made its namespaces with which call, whose each of
/// its namespaces is, which it shares, its processes.
#[derive(Serialize)]
pub struct ContainerRow {
    /// How it is shown: `web (docker:0123456789ab)`, or `docker:0123456789ab` unnamed.
    pub name: String,
    pub runtime: &'static str,
    pub id: String,
    /// What its engine calls it, when it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Names>,
    pub made: Vec<MadeRow>,
    /// Per namespace type, in /proc order, whose its namespace is: `own`, `host`, or the
    /// container it shares it with.
    pub namespaces: Whose,
    /// The inodes of those namespaces (`ls -l /proc/PID/ns` of its first process).
    pub set: Whose<u32>,
    /// Namespaces it is in that it does not own (the host's, another container's).
    pub shares: Vec<String>,
    /// Of those, the ones its processes moved into after it started.
    #[serde(skip)]
    pub joined: Vec<String>,
    pub processes: Vec<MemberRow>,
    /// When its first process was born.
    #[serde(skip)]
    pub first_seen: Option<Stamp>,
}

#[derive(Serialize)]
pub struct FindingRow {
    #[serde(flatten)]
    pub view: FindingView,
    pub time: Stamp,
}

#[derive(Serialize)]
pub struct LossRow<'a> {
    #[serde(flatten)]
    pub loss: &'a Loss,
    pub time: Stamp,
}

/// The machine-readable summary: one JSON object (its keys sorted).
pub fn json(tl: &Timeline, times: &Times, only: Option<&str>) -> Value {
    serde_json::to_value(summary(tl, times, only)).unwrap_or(Value::Null)
}

/// What the summary says of `tl`; with `only` (a `--container` argument), of that container:
/// its processes, its namespaces and those they were in, its findings (and every loss).
pub fn summary<'a>(tl: &'a Timeline, times: &Times, only: Option<&str>) -> Summary<'a> {
    let times = *times;
    let keep = |c: Option<&Container>| {
        only.is_none_or(|what| c.is_some_and(|c| tl.container_matches(c, what)))
    };
    let shown = only.map(|what| focus(tl, what));
    Summary {
        kind: "summary",
        namespaces: tl
            .namespaces()
            .iter()
            .enumerate()
            .filter(|(idx, ns)| ns.touched && shown.as_ref().is_none_or(|s| s.contains(idx)))
            .map(|(idx, ns)| namespace_row(tl, idx, ns, times))
            .collect(),
        processes: tl
            .histories()
            .filter(|h| keep(h.container.as_ref()))
            .map(|h| process_row(tl, h, times))
            .collect(),
        folded: if only.is_some() {
            // Folded processes are counted by kind, not by container.
            FoldedRows {
                processes: Vec::new(),
                namespaces: Vec::new(),
            }
        } else {
            folded_rows(tl, times)
        },
        containers: container_rows(tl, times, &keep),
        findings: tl
            .findings()
            .iter()
            .filter(|f| keep(f.container.as_ref()))
            .map(|f| FindingRow {
                view: FindingView::new(tl, f),
                time: times.stamp(f.ts_ns),
            })
            .collect(),
        losses: tl
            .losses()
            .iter()
            .map(|loss| LossRow {
                loss,
                time: times.stamp(loss.ts_ns),
            })
            .collect(),
        counts: &tl.counts,
    }
}

/// The namespaces a container's summary shows: those it owns or started in, and every one its
/// processes moved into or out of.
fn focus(tl: &Timeline, what: &str) -> std::collections::BTreeSet<NsIdx> {
    let ours = |c: Option<&Container>| c.is_some_and(|c| tl.container_matches(c, what));
    let mut shown: std::collections::BTreeSet<NsIdx> = tl
        .namespaces()
        .iter()
        .enumerate()
        .filter(|(_, ns)| ours(ns.owner.as_ref()))
        .map(|(idx, _)| idx)
        .collect();
    for h in tl.histories().filter(|h| ours(h.container.as_ref())) {
        if let Some(set) = h.container.as_ref().and_then(|c| tl.container_set(c)) {
            shown.extend(set.iter().flatten());
        }
        for change in h.moves.iter().flat_map(|m| &m.changes) {
            shown.extend(change.from.into_iter().chain(change.to));
        }
    }
    shown
}

/// `call(FLAG|FLAG)` of what made a namespace.
pub(crate) fn creator_call(ns: &Namespace) -> Option<String> {
    ns.created.as_ref().map(|c| {
        format!(
            "{}({})",
            c.call.name(),
            flag_names(c.flags, c.call == crate::event::Call::Clone).join("|")
        )
    })
}

/// Who made a namespace, in words.
pub(crate) fn creator(ns: &Namespace) -> String {
    match (&ns.created, creator_call(ns)) {
        (Some(c), Some(call)) => format!("{} {}: {call}", c.comm, c.process.pid),
        _ if ns.host => "the kernel (initial)".into(),
        _ => "before tracing or unseen".into(),
    }
}

pub(crate) fn namespace_row<'a>(
    tl: &'a Timeline,
    idx: NsIdx,
    ns: &'a Namespace,
    t: Times,
) -> NamespaceRow<'a> {
    NamespaceRow {
        name: NsRef::of(tl, idx),
        first_seen: t.stamp(ns.first_seen_ns),
        created_by: ns.created.as_ref().map(|c| CreatorRow {
            pid: c.process.pid,
            start_boottime_ns: c.process.start_ns,
            tid: c.tid,
            comm: &c.comm,
            call: c.call.name(),
            flags: c.flags,
            time: t.stamp(c.ts_ns),
            described: creator(ns),
        }),
        parent: ns.parent.map(|p| NsRef::of(tl, p)),
        members_now: ns.members(),
        members_peak: ns.peak_members,
        members_total: ns.total_members,
        emptied: ns
            .emptied_ns
            .filter(|_| ns.members() == 0)
            .map(|ts| t.stamp(ts)),
        replaced: ns.replaced,
        owner: ns.owner.as_ref().map(|o| tl.container_label(o)),
        log: ns
            .log
            .iter()
            .map(|m| LogRow {
                ts_ns: m.ts_ns,
                time: t.rfc3339(m.ts_ns),
                pid: m.pid,
                tid: m.tid,
                comm: &m.comm,
                cause: m.cause.describe(),
                entered: m.entered,
            })
            .collect(),
        log_dropped: ns.log_dropped,
    }
}

fn change_rows(tl: &Timeline, changes: &[Change]) -> Vec<ChangeRow> {
    changes
        .iter()
        .map(|c| ChangeRow {
            slot: c.kind.name(),
            from: c.from.map(|i| NsRef::of(tl, i)),
            to: c.to.map(|i| NsRef::of(tl, i)),
        })
        .collect()
}

fn process_row<'a>(tl: &'a Timeline, h: &'a ProcessHistory, t: Times) -> ProcessRow<'a> {
    ProcessRow {
        pid: h.key.pid,
        start_boottime_ns: h.key.start_ns,
        ppid: h.ppid,
        comm: &h.comm,
        exe: h.exe.as_deref(),
        container: h.container.as_ref().map(|c| tl.container_label(c)),
        born: h.born_ns.map(|ts| t.stamp(ts)),
        moves_dropped: h.moves_dropped,
        exited: h.exited.map(|(ts, status)| ExitRow {
            time: t.stamp(ts),
            status,
        }),
        vanished: h.vanished.map(|ts| t.stamp(ts)),
        uncertain_since: tl.uncertain_since(h).map(|ts| t.stamp(ts)),
        moves: h
            .moves
            .iter()
            .map(|m| MoveRow {
                time: t.stamp(m.ts_ns),
                tid: m.tid,
                comm: &m.comm,
                cause: m.cause.describe(),
                errno: m.errno.map(crate::ns::errno_name),
                thread_apart: m.thread_apart,
                changes: change_rows(tl, &m.changes),
            })
            .collect(),
    }
}

fn folded_rows(tl: &Timeline, t: Times) -> FoldedRows<'_> {
    let folded = tl.folded();
    FoldedRows {
        processes: folded
            .processes
            .iter()
            .map(|((comm, did), g)| FoldedRow {
                kind: FoldedProcess { comm, did },
                count: g.count,
                first: t.stamp(g.first_ns),
                last: t.stamp(g.last_ns),
            })
            .collect(),
        namespaces: folded
            .namespaces
            .iter()
            .map(|((ty, made), g)| FoldedRow {
                kind: FoldedNamespace {
                    ty: ty.name(),
                    made,
                },
                count: g.count,
                first: t.stamp(g.first_ns),
                last: t.stamp(g.last_ns),
            })
            .collect(),
    }
}

/// A namespace a container shares: `pid:[4026531836] (host)`, `ipc:[4026532249] of web (docker:…)`.
fn share_label(tl: &Timeline, ns: &Namespace) -> String {
    match &ns.owner {
        Some(o) => format!("{} of {}", ns.label(), tl.container_label(o)),
        None => ns.label(),
    }
}

fn container_rows(
    tl: &Timeline,
    t: Times,
    keep: &dyn Fn(Option<&Container>) -> bool,
) -> Vec<ContainerRow> {
    let mut containers: Vec<_> = tl
        .histories()
        .filter_map(|h| h.container.clone())
        .chain(
            tl.namespaces()
                .iter()
                .filter(|n| n.touched)
                .filter_map(|n| n.owner.clone()),
        )
        .filter(|c| keep(Some(c)))
        .collect();
    containers.sort();
    containers.dedup();
    let mut rows: Vec<ContainerRow> = containers
        .into_iter()
        .map(|c| {
            let made = tl
                .namespaces()
                .iter()
                .filter(|n| n.owner.as_ref() == Some(&c))
                .map(|n| MadeRow {
                    namespace: n.label(),
                    created_by: creator(n),
                })
                .collect();
            let members: Vec<&ProcessHistory> = tl
                .histories()
                .filter(|h| h.container.as_ref() == Some(&c))
                .collect();
            let set = tl.container_set(&c);
            let mut namespaces = Whose::default();
            let mut inodes = Whose::default();
            let mut shares: Vec<String> = Vec::new();
            let mut joined: Vec<String> = Vec::new();
            // Whose each namespace it was started in is.
            for kind in NsKind::ALL.into_iter().filter(|k| k.is_own()) {
                let Some(idx) = set.and_then(|s| s[kind.slot()]) else {
                    continue;
                };
                let ns = tl.namespace(idx);
                let whose = match &ns.owner {
                    _ if ns.host => "host".to_owned(),
                    Some(o) if *o == c => "own".to_owned(),
                    Some(o) => tl.container_label(o),
                    None => "unknown".to_owned(),
                };
                if whose != "own" && !shares.contains(&share_label(tl, ns)) {
                    shares.push(share_label(tl, ns));
                }
                namespaces.0.push((kind.ns_type().name(), whose));
                inodes.0.push((kind.ns_type().name(), ns.inum));
            }
            // And those its processes moved into since.
            for h in &members {
                for ch in h.moves.iter().flat_map(|m| &m.changes) {
                    let Some(to) = ch.to else { continue };
                    let ns = tl.namespace(to);
                    let label = share_label(tl, ns);
                    if ns.owner.as_ref() != Some(&c) && ch.kind.is_own() && !shares.contains(&label)
                    {
                        shares.push(label.clone());
                        joined.push(label);
                    }
                }
            }
            ContainerRow {
                name: tl.container_label(&c),
                runtime: c.runtime,
                id: c.id.clone(),
                names: tl.names_of(&c).filter(|n| !n.is_empty()).cloned(),
                made,
                namespaces,
                set: inodes,
                shares,
                joined,
                processes: members
                    .iter()
                    .map(|h| MemberRow {
                        pid: h.key.pid,
                        comm: h.comm.to_string(),
                    })
                    .collect(),
                first_seen: members
                    .iter()
                    .filter_map(|h| h.born_ns)
                    .min()
                    .map(|ts| t.stamp(ts)),
            }
        })
        .collect();
    // In the order they started (those seen only before the trace first).
    rows.sort_by_key(|r| r.first_seen.map(|s| s.ts_ns));
    rows
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
        text(&tl, &times, None)
    }

    #[test]
    fn names_a_traced_process_chose_cannot_add_lines_or_controls() {
        let plain = summary_of("ev", "/tmp/x", "0::/default/evil\n");
        let forged = summary_of(
            "ev\nFAKE\x1b[2J",
            "/tmp/x\n100 FAKE, parent 1\n",
            "0::/default/evil\u{1b}[2J\u{202e}name\n",
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
            forged.contains("containerd:evil\\x1b[2J\\u{202e}name"),
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
        let json = serde_json::to_string_pretty(&json(&tl, &times, None)).unwrap() + "\n";
        for (name, got) in [
            ("summary.golden.txt", text(&tl, &times, None)),
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
