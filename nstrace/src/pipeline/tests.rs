//! The pipeline on hand-made records.
use nstrace_common::NS_SLOTS;

use std::collections::VecDeque;

use super::*;
use crate::{
    event::{Call, NsSet, Transition},
    timeline::Scope,
};

/// Keeps every record it is given.
#[derive(Default)]
struct Kept(Vec<Record>);

impl Sink for Kept {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.0.push(record.clone());
        Ok(())
    }
    fn loss(&mut self, _loss: &Loss) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const SH: u32 = 100;
const START: u64 = 5_000_000;

/// A shell found in /proc (inodes only), then a setns of it whose `before` the kernel could
/// not tell, and a second one whose `before` it could.
fn setns_of_a_snapshot_task(kept: &mut Kept, archive: &mut Kept) {
    let host: [u32; NS_SLOTS] = std::array::from_fn(|i| 4026531830 + i as u32);
    let mut timeline = Timeline::new(Scope::All);
    timeline.snapshot(
        &[ProcEntry {
            tid: SH,
            pid: SH,
            ppid: 1,
            comm: "sh".into(),
            start_ns: START,
            inodes: host.map(Some),
        }],
        0,
    );
    let mut pipeline = Pipeline::new(timeline, Filter::default());
    pipeline.sinks.push(kept);
    pipeline.archive = Some(archive);
    let mut after = NsSet {
        inum: host,
        id: std::array::from_fn(|i| 1000 + i as u64),
    };
    after.inum[1] = 4026532177;
    after.id[1] = 2000;
    let mut t = Transition::blank();
    t.ts_ns = 10;
    t.call = Call::Setns;
    t.tid = SH;
    t.pid = SH;
    t.start_boottime_ns = START;
    t.comm = "sh".into();
    t.after = after;
    pipeline
        .feed(&Record::Transition(Box::new(t.clone())), true)
        .unwrap();
    let mut back = t;
    back.ts_ns = 20;
    back.before = after;
    back.after.inum[1] = host[1];
    back.after.id[1] = 1001;
    pipeline
        .feed(&Record::Transition(Box::new(back)), true)
        .unwrap();
}

#[test]
fn an_unknown_before_is_taken_from_the_timeline_and_marked() {
    let (mut kept, mut archive) = (Kept::default(), Kept::default());
    setns_of_a_snapshot_task(&mut kept, &mut archive);
    let transitions: Vec<&Transition> = kept
        .0
        .iter()
        .filter_map(|r| match r {
            Record::Transition(t) => Some(&**t),
            _ => None,
        })
        .collect();
    let [first, second] = transitions[..] else {
        panic!("two transitions, got {transitions:?}")
    };
    assert!(first.before_inferred);
    assert_eq!(first.before.inum[0], 4026531830);
    assert_eq!(first.before.inum[1], 4026531831, "the uts the shell was in");
    // Where the shell stayed, the kernel's id is taken; where it moved, /proc had none.
    assert_eq!(first.before.id[0], 1000);
    assert_eq!(first.before.id[1], 0);
    assert_eq!(first.changed(), [crate::ns::NsKind::Uts]);
    assert!(!second.before_inferred, "the kernel told this one");
    // The record file keeps what was shown: a replay shows the same.
    assert_eq!(archive.0, kept.0);
}

/// A sink whose reader is gone: every write fails as `error` does.
struct Gone(i32);

impl Sink for Gone {
    fn record(&mut self, _: &Record) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(self.0))
    }
    fn loss(&mut self, _: &Loss) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(self.0))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(self.0))
    }
}

#[test]
fn a_closed_pipe_or_a_hung_up_terminal_drops_its_sink_and_the_trace_goes_on() {
    for errno in [libc::EPIPE, libc::EIO] {
        let (mut gone, mut archive) = (Gone(errno), Kept::default());
        let mut pipeline = Pipeline::new(Timeline::new(Scope::All), Filter::default());
        pipeline.sinks.push(&mut gone);
        pipeline.archive = Some(&mut archive);
        let t = Transition::blank();
        pipeline
            .feed(&Record::Transition(Box::new(t.clone())), true)
            .unwrap_or_else(|e| panic!("errno {errno}: {e}"));
        assert!(
            pipeline.closed && pipeline.sinks.is_empty(),
            "errno {errno}"
        );
        pipeline
            .feed(&Record::Transition(Box::new(t)), true)
            .unwrap();
        drop(pipeline);
        assert_eq!(archive.0.len(), 2, "the record goes on");
    }
    // Any other failure is an error that says so.
    let mut full = Gone(libc::ENOSPC);
    let mut pipeline = Pipeline::new(Timeline::new(Scope::All), Filter::default());
    pipeline.sinks.push(&mut full);
    let err = pipeline
        .feed(&Record::Transition(Box::new(Transition::blank())), true)
        .unwrap_err();
    assert!(err.to_string().starts_with("writing the output"), "{err}");
}

/// What reached a sink, one line each: `record PID CALL`, `finding ID CONTAINER`, `loss`.
#[derive(Default)]
struct Seen(Vec<String>);

impl Sink for Seen {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        let what = match record {
            Record::Transition(t) => t.call.name(),
            Record::Fork(_) => "fork",
            Record::Exec(_) => "exec",
            Record::Exit(_) => "exit",
        };
        self.0.push(format!("record {} {what}", record.pid()));
        Ok(())
    }
    fn record_in(&mut self, record: &Record, container: Option<&str>) -> io::Result<()> {
        self.record(record)?;
        if let (Some(container), Some(last)) = (container, self.0.last_mut()) {
            last.push_str(&format!(" in {container}"));
        }
        Ok(())
    }
    fn note(&mut self, line: &serde_json::Value) -> io::Result<()> {
        if line["type"] == "container" {
            self.0.push(format!("names {}", line["names"]));
        }
        Ok(())
    }
    fn finding(&mut self, f: &FindingView) -> io::Result<()> {
        let container = f.container.as_deref().unwrap_or("-");
        self.0.push(format!("finding {} {container}", f.id));
        Ok(())
    }
    fn loss(&mut self, _: &Loss) -> io::Result<()> {
        self.0.push("loss".into());
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Names answered only when the test says so.
#[derive(Clone, Default)]
struct Engine(std::rc::Rc<std::cell::RefCell<EngineState>>);

#[derive(Default)]
struct EngineState {
    asked: Vec<Container>,
    ready: VecDeque<(Container, Names)>,
}

impl Engine {
    /// Answers every request so far with `name`.
    fn answer(&self, name: &str) {
        let mut state = self.0.borrow_mut();
        let asked = std::mem::take(&mut state.asked);
        for c in asked {
            let names = Names {
                name: Some(name.into()),
                ..Names::default()
            };
            state.ready.push_back((c, names));
        }
    }
}

impl NameSource for Engine {
    fn request(&mut self, container: &Container) {
        self.0.borrow_mut().asked.push(container.clone());
    }
    fn answer(&mut self, _wait: Duration) -> Option<(Container, Names)> {
        self.0.borrow_mut().ready.pop_front()
    }
}

use crate::{container::Container, names::Names, ns::NsKind};

const DOCKER: &str =
    "0::/docker/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n";

/// The host's set as the timeline knows it: each initial namespace's fixed inode.
fn host() -> NsSet {
    NsSet {
        inum: std::array::from_fn(|slot| {
            NsKind::ALL
                .into_iter()
                .find(|k| k.slot() == slot)
                .and_then(|k| k.ns_type().initial_inode())
                .unwrap_or(4026531840)
        }),
        id: [0; NS_SLOTS],
    }
}

/// A machine with init (1) and a shell (SH).
fn machine() -> Timeline {
    let mut timeline = Timeline::new(Scope::All);
    let entry = |pid: u32, comm: &str| ProcEntry {
        tid: pid,
        pid,
        ppid: 1,
        comm: comm.into(),
        start_ns: u64::from(pid) * 1000,
        inodes: host().inum.map(Some),
    };
    timeline.snapshot(&[entry(1, "init"), entry(SH, "sh")], 0);
    timeline
}

/// `pid` (born at `pid * 1000`) unshares its mount namespace at `ts`.
fn unshare_mnt(pid: u32, ts: u64) -> Record {
    let mut t = Transition::blank();
    t.ts_ns = ts;
    t.call = Call::Unshare;
    t.flags = libc::CLONE_NEWNS as u64;
    t.tid = pid;
    t.pid = pid;
    t.start_boottime_ns = u64::from(pid) * 1000;
    t.comm = "sh".into();
    t.before = host();
    t.after = host();
    t.after.inum[NsKind::Mnt.slot()] = 4026533000 + pid;
    Record::Transition(Box::new(t))
}

#[test]
fn output_waits_for_a_containers_names_and_its_finding_names_it() {
    let (mut seen, mut archive) = (Seen::default(), Seen::default());
    let engine = Engine::default();
    let mut pipeline = Pipeline::new(machine(), Filter::default());
    pipeline.names = Some(Box::new(engine.clone()));
    pipeline.sinks.push(&mut seen);
    pipeline.archive = Some(&mut archive);
    pipeline.feed(&unshare_mnt(SH, 10), false).unwrap();
    // The shell is seen in a docker container (on the host's pid namespace): a finding, about
    // a container whose names are asked for.
    pipeline.observed(SH, 11, DOCKER, "", None).unwrap();
    pipeline.feed(&unshare_mnt(SH, 12), false).unwrap();
    pipeline.flush().unwrap();
    assert_eq!(engine.0.borrow().asked.len(), 1);
    engine.answer("web");
    pipeline.feed(&unshare_mnt(SH, 13), false).unwrap();
    pipeline.finish_names(Duration::ZERO).unwrap();
    drop(pipeline);
    assert_eq!(
        seen.0,
        [
            "record 100 unshare",
            "finding NS-SHARES-HOST web (docker:aaaaaaaaaaaa)",
            // Its records in the container carry it, named once the names came.
            "record 100 unshare in web (docker:aaaaaaaaaaaa)",
            "record 100 unshare in web (docker:aaaaaaaaaaaa)",
        ]
    );
    // The archive is told of the finding as it is made, names or not (evidence keeps the
    // time around it; a record file ignores it).
    assert_eq!(archive.0[1], "finding NS-SHARES-HOST docker:aaaaaaaaaaaa");
    // The record file has the names where they came: a replay holds and names the same.
    let entries: Vec<&String> = archive
        .0
        .iter()
        .filter(|e| !e.starts_with("finding"))
        .collect();
    assert_eq!(
        entries[2], r#"names {"name":"web"}"#,
        "after the two records before the answer: {:?}",
        archive.0
    );
}

#[test]
fn a_container_filter_passes_its_records_by_name_once_known() {
    let mut seen = Seen::default();
    let engine = Engine::default();
    let filter = Filter {
        container: Some("web".into()),
        ..Filter::default()
    };
    let mut pipeline = Pipeline::new(machine(), filter);
    pipeline.names = Some(Box::new(engine.clone()));
    pipeline.sinks.push(&mut seen);
    // A process forked on the host execs into a container (the observation follows the exec).
    let fork = Record::Fork(crate::event::Fork {
        ts_ns: 10,
        tid: 700,
        pid: 700,
        start_ns: 700_000,
        parent_tid: SH,
        parent_pid: SH,
        parent_start_ns: SH as u64 * 1000,
        comm: "sh".into(),
    });
    pipeline.feed(&fork, false).unwrap();
    let exec = Record::Exec(Box::new(crate::event::Exec {
        ts_ns: 20,
        tid: 700,
        pid: 700,
        old_tid: 700,
        start_ns: 700_000,
        comm: "sleep".into(),
        filename: "/bin/sleep".into(),
    }));
    pipeline.feed(&exec, false).unwrap();
    pipeline.observed(700, 21, DOCKER, "", None).unwrap();
    pipeline.feed(&unshare_mnt(700, 30), false).unwrap();
    pipeline.feed(&unshare_mnt(SH, 31), false).unwrap();
    engine.answer("web");
    pipeline.feed(&unshare_mnt(700, 40), false).unwrap();
    pipeline.feed(&unshare_mnt(SH, 41), false).unwrap();
    pipeline.finish_names(Duration::ZERO).unwrap();
    drop(pipeline);
    assert_eq!(
        seen.0,
        [
            "record 700 exec",
            "record 700 unshare in web (docker:aaaaaaaaaaaa)",
            "finding NS-SHARES-HOST web (docker:aaaaaaaaaaaa)",
            "record 700 unshare in web (docker:aaaaaaaaaaaa)",
        ],
        "the host's records and the fork on the host are not the container's"
    );
}

#[test]
fn names_that_never_come_hold_nothing_past_the_wait_or_the_limit() {
    let (mut seen, mut archive) = (Seen::default(), Seen::default());
    let mut pipeline = Pipeline::new(machine(), Filter::default());
    pipeline.names = Some(Box::new(Engine::default()));
    pipeline.name_wait = Duration::ZERO;
    pipeline.sinks.push(&mut seen);
    pipeline.archive = Some(&mut archive);
    pipeline.feed(&unshare_mnt(SH, 10), false).unwrap();
    pipeline.observed(SH, 11, DOCKER, "", None).unwrap();
    pipeline.flush().unwrap();
    drop(pipeline);
    assert_eq!(
        seen.0,
        [
            "record 100 unshare",
            "finding NS-SHARES-HOST docker:aaaaaaaaaaaa"
        ]
    );
    assert!(
        archive.0.contains(&"names {}".to_owned()),
        "{:?}",
        archive.0
    );

    // A replay whose record has no names for a container: held up to the limit only.
    let mut seen = Seen::default();
    let mut pipeline = Pipeline::new(machine(), Filter::default());
    pipeline.sinks.push(&mut seen);
    pipeline.observed(SH, 11, DOCKER, "", None).unwrap();
    for i in 0..HOLD_LIMIT as u64 {
        pipeline.feed(&unshare_mnt(SH, 20 + i), false).unwrap();
    }
    pipeline
        .feed(&unshare_mnt(SH, u64::MAX / 2), false)
        .unwrap();
    drop(pipeline);
    assert_eq!(seen.0.len(), HOLD_LIMIT);
}

#[test]
fn a_container_filter_shows_how_the_container_was_made_and_who_came_in() {
    let mut seen = Seen::default();
    let engine = Engine::default();
    let filter = Filter {
        container: Some("web".into()),
        ..Filter::default()
    };
    let mut pipeline = Pipeline::new(machine(), filter);
    pipeline.names = Some(Box::new(engine.clone()));
    pipeline.sinks.push(&mut seen);
    // The runtime (SH, on the host) makes the mounts; 600 on the host makes its own, which
    // nobody will own.
    pipeline.feed(&unshare_mnt(SH, 10), false).unwrap();
    let mut stray = unshare_mnt(600, 11);
    if let Record::Transition(t) = &mut stray {
        t.comm = "unshare".into();
    }
    pipeline.feed(&stray, false).unwrap();
    // The runtime's child, seen in the container's cgroup in those mounts, makes them the
    // container's.
    let fork = Record::Fork(crate::event::Fork {
        ts_ns: 20,
        tid: 700,
        pid: 700,
        start_ns: 700_000,
        parent_tid: SH,
        parent_pid: SH,
        parent_start_ns: SH as u64 * 1000,
        comm: "sh".into(),
    });
    pipeline.feed(&fork, false).unwrap();
    pipeline.observed(700, 21, DOCKER, "", None).unwrap();
    engine.answer("web");
    pipeline.tick(30).unwrap();
    // The runtime's unshare is through; the stray one, and all after it, wait for an owner.
    assert_eq!(pipeline.shown, 1);
    // Past the wait, the stray one is dropped.
    pipeline.tick(11 + OWNER_WAIT_NS).unwrap();
    drop(pipeline);
    assert_eq!(
        seen.0,
        [
            "record 100 unshare",
            "record 700 fork",
            "finding NS-SHARES-HOST web (docker:aaaaaaaaaaaa)"
        ],
        "the runtime's unshare made the container's mounts; the stray one is no container's"
    );
}
