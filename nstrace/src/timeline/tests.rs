//! The model on hand-written streams.
use nstrace_common::flags::{CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUTS};

use nstrace_common::NS_SLOTS;

use super::{findings::Severity, *};
use crate::{
    event::{Call, Child, Exec, Exit, Fork, Loss, NsSet, Record, Transition},
    ns::{NsKind, NsType},
    transport::Reorder,
};

/// The host's set on the machine these streams run on: each initial namespace's fixed inode,
/// and mnt and net as its pid 1 has them (they have no fixed inode).
const HOST: [u32; NS_SLOTS] = {
    let mut out = [0; NS_SLOTS];
    let mut i = 0;
    while i < NS_SLOTS {
        let kind = NsKind::ALL[i];
        out[kind.slot()] = match (kind, kind.ns_type().initial_inode()) {
            (_, Some(inum)) => inum,
            (NsKind::Mnt, None) => 4026531841,
            _ => 4026531840,
        };
        i += 1;
    }
    out
};

fn host_set() -> NsSet {
    NsSet {
        inum: HOST,
        id: [0; NS_SLOTS],
    }
}

fn with(mut set: NsSet, kind: NsKind, inum: u32, id: u64) -> NsSet {
    set.inum[kind.slot()] = inum;
    set.id[kind.slot()] = id;
    set
}

fn entry(tid: u32, pid: u32, ppid: u32, comm: &str) -> ProcEntry {
    ProcEntry {
        tid,
        pid,
        ppid,
        comm: comm.into(),
        start_ns: u64::from(tid) * 1000,
        inodes: HOST.map(Some),
    }
}

/// A machine with init (1) and a shell (100).
fn machine(scope: Scope) -> Timeline {
    let mut tl = Timeline::new(scope);
    tl.snapshot(&[entry(1, 1, 0, "init"), entry(100, 100, 1, "sh")], 0);
    tl
}

/// A transition by `tid`, to be built up: `setns(300, CLONE_NEWNET).at(20).to(net)`. It starts
/// at time 0, in the host's set and staying there, as a call that succeeded.
#[derive(Clone)]
struct Tx(Transition);

/// A call of `tid` with these flags (setns's nstype).
fn call(call: Call, tid: u32, flags: u64) -> Tx {
    Tx(Transition {
        ts_ns: 0,
        call,
        flags,
        ret: 0,
        fd: (call == Call::Setns).then_some(3),
        tid,
        pid: tid,
        ppid: 1,
        uid: 0,
        ns_tid: tid,
        pid_level: 0,
        start_boottime_ns: u64::from(tid) * 1000,
        comm: "sh".into(),
        before: host_set(),
        after: host_set(),
        child: None,
        before_inferred: false,
    })
}

fn unshare(tid: u32, flags: u64) -> Tx {
    call(Call::Unshare, tid, flags)
}

fn setns(tid: u32, nstype: u64) -> Tx {
    call(Call::Setns, tid, nstype)
}

impl Tx {
    fn at(mut self, ts_ns: u64) -> Self {
        self.0.ts_ns = ts_ns;
        self
    }

    /// The set before the call.
    fn from(mut self, set: NsSet) -> Self {
        self.0.before = set;
        self
    }

    /// The set after the call.
    fn to(mut self, set: NsSet) -> Self {
        self.0.after = set;
        self
    }

    fn done(self) -> Transition {
        self.0
    }

    fn rec(self) -> Record {
        rec(self.0)
    }
}

fn fork(ts: u64, parent: u32, child: u32) -> Record {
    Record::Fork(Fork {
        ts_ns: ts,
        tid: child,
        pid: child,
        start_ns: u64::from(child) * 1000 + ts,
        parent_tid: parent,
        parent_pid: parent,
        parent_start_ns: u64::from(parent) * 1000,
        comm: "sh".into(),
    })
}

fn exit(ts: u64, tid: u32, pid: u32) -> Record {
    Record::Exit(Exit {
        ts_ns: ts,
        tid,
        pid,
        start_ns: 0,
        code: 0,
        group_dead: tid == pid,
        comm: "sh".into(),
    })
}

fn rec(t: Transition) -> Record {
    Record::Transition(Box::new(t))
}

fn ns_named(tl: &Timeline, ty: NsType, inum: u32) -> Vec<&Namespace> {
    tl.namespaces()
        .iter()
        .filter(|n| n.ty == ty && n.inum == inum)
        .collect()
}

#[test]
fn host_namespaces_are_labelled_from_fixed_inodes_and_pid_1() {
    let tl = machine(Scope::All);
    let hosts = tl.namespaces().iter().filter(|n| n.host).count();
    assert_eq!(hosts, 8, "{:#?}", tl.namespaces());
    assert_eq!(tl.namespace(0).label(), "mnt:[4026531841] (host)");
}

#[test]
fn unshare_creates_a_namespace_that_empties_when_its_last_member_exits() {
    let mut tl = machine(Scope::All);
    let after = with(host_set(), NsKind::Uts, 4026532177, 0);
    tl.apply(&unshare(100, CLONE_NEWUTS).at(10).to(after).rec());
    let uts = ns_named(&tl, NsType::Uts, 4026532177)[0];
    let created = uts.created.as_ref().expect("creator");
    assert_eq!((created.process.pid, created.call), (100, Call::Unshare));
    assert_eq!(uts.members(), 1);
    assert_eq!(uts.emptied_ns, None);

    tl.apply(&fork(20, 100, 101));
    assert_eq!(ns_named(&tl, NsType::Uts, 4026532177)[0].members(), 2);
    tl.apply(&exit(30, 100, 100));
    assert_eq!(ns_named(&tl, NsType::Uts, 4026532177)[0].emptied_ns, None);
    tl.apply(&exit(40, 101, 101));
    let uts = ns_named(&tl, NsType::Uts, 4026532177)[0];
    assert_eq!(uts.emptied_ns, Some(40));
    assert_eq!((uts.peak_members, uts.total_members), (2, 2));
    let entries: Vec<(u32, bool)> = uts.log.iter().map(|m| (m.tid, m.entered)).collect();
    assert_eq!(
        entries,
        [(100, true), (101, true), (100, false), (101, false)]
    );

    let h: Vec<_> = tl.histories().collect();
    assert_eq!(h.len(), 1, "only the process that moved has a history");
    assert_eq!(
        h[0].moves[0].cause,
        Cause::Unshare {
            flags: CLONE_NEWUTS
        }
    );
    assert_eq!(h[0].exited, Some((30, 0)));
}

#[test]
fn a_reused_pid_is_a_new_process() {
    let mut tl = machine(Scope::All);
    tl.apply(&fork(10, 100, 200));
    let first = with(host_set(), NsKind::Net, 4026532300, 0);
    let mut t = unshare(200, CLONE_NEWNET).at(20).to(first).done();
    t.start_boottime_ns = 200_010;
    tl.apply(&rec(t));
    tl.apply(&exit(30, 200, 200));
    // pid 200 again, a new process.
    tl.apply(&fork(40, 100, 200));
    let second = with(host_set(), NsKind::Uts, 4026532301, 0);
    let mut t = unshare(200, CLONE_NEWUTS).at(50).to(second).done();
    t.start_boottime_ns = 200_040;
    tl.apply(&rec(t));
    let keys: Vec<ProcessKey> = tl.histories().map(|h| h.key).collect();
    assert_eq!(
        keys,
        [
            ProcessKey {
                pid: 200,
                start_ns: 200_010
            },
            ProcessKey {
                pid: 200,
                start_ns: 200_040
            }
        ]
    );
    assert_eq!(tl.counts.unknown_tasks, 0);
    assert_eq!(
        tl.live_set(200).unwrap()[NsKind::Net.slot()].1,
        HOST[NsKind::Net.slot()]
    );
}

#[test]
fn a_reused_inode_with_another_ns_id_is_another_namespace() {
    let mut tl = machine(Scope::All);
    let a = with(host_set(), NsKind::Net, 4026532400, 50);
    tl.apply(&unshare(100, CLONE_NEWNET).at(10).to(a).rec());
    tl.apply(&setns(100, CLONE_NEWNET).at(20).from(a).rec());
    // The namespace is freed; the kernel hands its inode to a new one.
    let b = with(host_set(), NsKind::Net, 4026532400, 51);
    tl.apply(&unshare(100, CLONE_NEWNET).at(30).to(b).rec());
    let nets = ns_named(&tl, NsType::Net, 4026532400);
    assert_eq!(nets.len(), 2);
    assert_eq!((nets[0].id, nets[1].id), (50, 51));
    assert!(nets[0].replaced);
    assert_eq!(nets[0].emptied_ns, Some(20));
    assert!(nets[1].created.is_some());
    // Without ids an inode seen again is the same namespace (the best the kernel tells).
    let mut tl = machine(Scope::All);
    let c = with(host_set(), NsKind::Net, 4026532500, 0);
    tl.apply(&unshare(100, CLONE_NEWNET).at(10).to(c).rec());
    tl.apply(&setns(100, CLONE_NEWNET).at(20).from(c).rec());
    tl.apply(&setns(100, CLONE_NEWNET).at(30).to(c).rec());
    assert_eq!(ns_named(&tl, NsType::Net, 4026532500).len(), 1);
}

#[test]
fn records_from_two_cpus_are_applied_in_kernel_time_order() {
    // CPU 1 delivers the child's setns before CPU 0 delivers the fork that made the child.
    let target = with(host_set(), NsKind::Uts, 4026532600, 0);
    let mut setns = setns(300, 0).at(20).to(target).done();
    setns.start_boottime_ns = 300_010;
    let cpu1 = vec![rec(setns)];
    let cpu0 = vec![fork(10, 100, 300)];
    let mut reorder = Reorder::new(5);
    for r in cpu1 {
        reorder.push(1, r);
    }
    for r in cpu0 {
        reorder.push(0, r);
    }
    let mut tl = machine(Scope::Descendants([100].into()));
    reorder.drain(|r| {
        tl.apply(r);
    });
    assert_eq!(tl.counts.unknown_tasks, 0, "the fork came first");
    assert!(tl.in_scope(300));
    assert_eq!(tl.live_set(300).unwrap()[NsKind::Uts.slot()].1, 4026532600);
}

#[test]
fn a_thread_that_setns_alone_is_shown_apart_from_its_siblings() {
    let mut tl = machine(Scope::All);
    tl.apply(&Record::Fork(Fork {
        ts_ns: 10,
        tid: 101,
        pid: 100,
        start_ns: 101_010,
        parent_tid: 100,
        parent_pid: 100,
        parent_start_ns: 100_000,
        comm: "sh".into(),
    }));
    let net = with(host_set(), NsKind::Net, 4026532700, 0);
    let mut t = setns(101, CLONE_NEWNET).at(20).to(net).done();
    t.pid = 100;
    t.start_boottime_ns = 101_010;
    tl.apply(&rec(t));
    assert_eq!(tl.live_tids(100), [100, 101]);
    let h: Vec<_> = tl.histories().collect();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].key.pid, 100);
    let m = &h[0].moves[0];
    assert_eq!(m.tid, 101);
    assert!(m.thread_apart);
    assert_eq!(
        tl.live_set(100).unwrap()[NsKind::Net.slot()].1,
        HOST[NsKind::Net.slot()]
    );
}

#[test]
fn a_pid_namespace_is_created_by_clone_and_empties_when_its_init_and_children_exit() {
    let mut tl = machine(Scope::All);
    let child_set = with(
        with(host_set(), NsKind::Pid, 4026532800, 0),
        NsKind::PidForChildren,
        4026532800,
        0,
    );
    let mut t = call(Call::Clone3, 100, CLONE_NEWPID).at(10).done();
    t.ret = 400;
    t.child = Some(Box::new(Child {
        tid: 400,
        start_ns: 400_010,
        ns_tid: 1,
        ns: child_set,
    }));
    tl.apply(&rec(t));
    let pidns = ns_named(&tl, NsType::Pid, 4026532800)[0];
    assert_eq!(pidns.created.as_ref().unwrap().call, Call::Clone3);
    let parent = pidns.parent.expect("a parent pid namespace");
    assert!(tl.namespace(parent).host);
    // The init forks a child into the same namespace, then the init exits first.
    tl.apply(&fork(20, 400, 401));
    tl.apply(&exit(30, 400, 400));
    assert_eq!(ns_named(&tl, NsType::Pid, 4026532800)[0].members(), 1);
    tl.apply(&exit(31, 401, 401));
    assert_eq!(
        ns_named(&tl, NsType::Pid, 4026532800)[0].emptied_ns,
        Some(31)
    );
    let child = tl
        .histories()
        .find(|h| h.key.pid == 400)
        .expect("the init's history");
    assert_eq!(child.born_ns, Some(10));
    let kinds: Vec<NsKind> = child.moves[0].changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [NsKind::Pid, NsKind::PidForChildren]);
}

#[test]
fn a_descendants_scope_follows_children_however_reparented() {
    let mut tl = machine(Scope::Descendants([100].into()));
    tl.apply(&fork(10, 100, 500));
    tl.apply(&fork(11, 500, 501));
    // 500 exits; 501 is re-parented to init but is still 100's descendant.
    tl.apply(&exit(12, 500, 500));
    let net = with(host_set(), NsKind::Net, 4026532900, 0);
    let mut t = unshare(501, CLONE_NEWNET).at(20).to(net).done();
    t.ppid = 1;
    t.start_boottime_ns = 501_011;
    assert!(tl.apply(&rec(t)));
    // Another process on the machine is not followed.
    tl.apply(&fork(30, 1, 600));
    let mut other = unshare(600, CLONE_NEWUTS).at(31).done();
    other.start_boottime_ns = 600_030;
    assert!(!tl.apply(&rec(other)));
}

#[test]
fn a_refused_call_is_an_attempt_in_the_history_and_changes_nothing() {
    let mut tl = machine(Scope::All);
    let mut t = setns(100, CLONE_NEWNET).at(10).done();
    t.ret = -1;
    tl.apply(&rec(t));
    let h: Vec<_> = tl.histories().collect();
    assert_eq!(h[0].moves[0].errno, Some(1));
    assert!(h[0].moves[0].changes.is_empty());
    assert!(tl.namespaces().iter().all(|n| n.host));
}

#[test]
fn a_thread_that_execs_takes_over_its_process_which_keeps_its_history() {
    let mut tl = machine(Scope::All);
    let net = with(host_set(), NsKind::Net, 4026533000, 0);
    tl.apply(&unshare(100, CLONE_NEWNET).at(10).to(net).rec());
    tl.apply(&Record::Fork(Fork {
        ts_ns: 20,
        tid: 101,
        pid: 100,
        start_ns: 101_020,
        parent_tid: 100,
        parent_pid: 100,
        parent_start_ns: 100_000,
        comm: "sh".into(),
    }));
    tl.apply(&Record::Exec(Box::new(Exec {
        ts_ns: 30,
        tid: 100,
        pid: 100,
        old_tid: 101,
        start_ns: 100_000,
        comm: "sleep".into(),
        filename: "/bin/sleep".into(),
    })));
    assert_eq!(tl.live_tids(100), [100]);
    let h: Vec<_> = tl.histories().collect();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].exe.as_deref(), Some("/bin/sleep"));
    assert_eq!(h[0].comm, "sleep");
    assert_eq!(tl.live_set(100).unwrap()[NsKind::Net.slot()].1, 4026533000);
}

fn ids(tl: &Timeline) -> Vec<&'static str> {
    tl.findings().iter().map(|f| f.id).collect()
}

/// sh (100) unshares mnt; its child 700 is born outside the host's mount namespace.
fn unshared_tree() -> Timeline {
    let mut tl = machine(Scope::All);
    let mnt = with(host_set(), NsKind::Mnt, 4026533100, 0);
    tl.apply(&unshare(100, libc::CLONE_NEWNS as u64).at(10).to(mnt).rec());
    tl.apply(&fork(20, 100, 700));
    tl
}

#[test]
fn setns_into_the_host_from_a_process_never_there_is_an_escape_and_going_home_is_not() {
    let mut tl = unshared_tree();
    let mnt = with(host_set(), NsKind::Mnt, 4026533100, 0);
    // 100 was in the host's mount namespace before: returning is not an escape.
    tl.apply(&setns(100, 0).at(30).from(mnt).rec());
    assert!(ids(&tl).is_empty(), "{:?}", tl.findings());
    // 700 was born outside it.
    let mut t = setns(700, 0).at(40).from(mnt).done();
    t.start_boottime_ns = 700_020;
    tl.apply(&rec(t));
    assert_eq!(ids(&tl), ["NS-SETNS-HOST"]);
    let f = &tl.findings()[0];
    assert_eq!(f.severity, Severity::High, "the host's mounts");
    assert_eq!(f.pid, 700);
    assert!(tl.namespace(f.namespaces[0]).host);
    assert_eq!(tl.take_new_findings().len(), 1);
    assert!(tl.take_new_findings().is_empty());
}

const DOCKER_A: &str = "0::/system.slice/docker-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.scope\n";
const DOCKER_B: &str = "0::/system.slice/docker-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.scope\n";

/// nstrace in its own host-pid container (a DaemonSet's pod) shares the host's pid namespace by
/// design: its own mount namespace's processes are not flagged; another container on the same
/// terms is.
#[test]
fn nstrace_s_own_container_is_not_flagged_for_the_host_pid_namespace_it_needs() {
    let mut tl = unshared_tree();
    tl.set_own_mnt(4026533100);
    tl.observe(700, 30, DOCKER_A, "0 0 4294967295\n");
    assert!(ids(&tl).is_empty(), "{:?}", tl.findings());
    let mut tl = unshared_tree();
    tl.set_own_mnt(4026533999);
    tl.observe(700, 30, DOCKER_A, "0 0 4294967295\n");
    assert_eq!(ids(&tl), ["NS-SHARES-HOST"]);
}

/// A host process that enters a container's mounts only (`nsenter -t PID -m`) has a mixed set
/// once it execs: NS-PARTIAL-JOIN, once. One that enters all the container's own namespaces
/// is not; nor is a process of the container, nor a runtime making one.
#[test]
fn a_host_process_in_some_of_a_containers_namespaces_is_a_partial_join() {
    let mut tl = machine(Scope::All);
    tl.apply(&fork(10, 100, 700));
    let inside = [
        (NsKind::Mnt, 4026533100),
        (NsKind::Uts, 4026533101),
        (NsKind::Ipc, 4026533102),
        (NsKind::Net, 4026533103),
    ]
    .into_iter()
    .fold(host_set(), |set, (kind, inum)| with(set, kind, inum, 0));
    let flags =
        (libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET) as u64;
    let mut t = unshare(700, flags).at(20).to(inside).done();
    t.start_boottime_ns = 700_010;
    tl.apply(&rec(t));
    tl.observe(700, 21, DOCKER_A, "");
    let partial = |tl: &Timeline| -> Vec<u32> {
        tl.findings()
            .iter()
            .filter(|f| f.id == "NS-PARTIAL-JOIN")
            .map(|f| f.pid)
            .collect()
    };
    assert!(partial(&tl).is_empty(), "{:?}", tl.findings());
    // 800 enters the mounts alone, then execs.
    tl.apply(&fork(30, 100, 800));
    let mut t = setns(800, libc::CLONE_NEWNS as u64)
        .at(40)
        .to(with(host_set(), NsKind::Mnt, 4026533100, 0))
        .done();
    t.start_boottime_ns = 800_030;
    tl.apply(&rec(t));
    let exec = |pid: u32, ts: u64| {
        Record::Exec(Box::new(Exec {
            ts_ns: ts,
            tid: pid,
            pid,
            old_tid: pid,
            start_ns: u64::from(pid) * 1000 + 30,
            comm: "sh".into(),
            filename: "/bin/sh".into(),
        }))
    };
    tl.apply(&exec(800, 50));
    tl.observe(800, 51, "0::/user.slice\n", "");
    tl.observe(800, 52, "0::/user.slice\n", "");
    assert_eq!(partial(&tl), [800], "{:?}", tl.findings());
    let f = tl.findings().iter().find(|f| f.pid == 800).unwrap();
    assert_eq!(f.severity, Severity::Low);
    assert!(f.message.contains("host's uts, ipc, net"), "{}", f.message);
    // 900 enters all four, one at a time, then execs: a whole join.
    tl.apply(&fork(30, 100, 900));
    let mut before = host_set();
    for (i, kind) in [NsKind::Mnt, NsKind::Uts, NsKind::Ipc, NsKind::Net]
        .into_iter()
        .enumerate()
    {
        let after = with(before, kind, inside.get(kind).inum, 0);
        let mut t = setns(900, kind.clone_flag())
            .at(60 + i as u64)
            .from(before)
            .to(after)
            .done();
        t.start_boottime_ns = 900_030;
        tl.apply(&rec(t));
        before = after;
    }
    tl.apply(&exec(900, 70));
    tl.observe(900, 71, "0::/user.slice\n", "");
    assert_eq!(partial(&tl), [800], "{:?}", tl.findings());
}

#[test]
fn a_container_on_the_host_pid_namespace_is_flagged_once() {
    let mut tl = unshared_tree();
    tl.observe(700, 30, DOCKER_A, "0 0 4294967295\n");
    assert_eq!(ids(&tl), ["NS-SHARES-HOST"]);
    let f = &tl.findings()[0];
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.container.as_ref().map(|c| c.runtime), Some("docker"));
    assert!(f.message.contains("pid, ipc, net, uts"), "{}", f.message);
    // Another process of the same container says the same thing: not again.
    tl.apply(&fork(40, 700, 701));
    tl.observe(701, 41, DOCKER_A, "");
    assert_eq!(tl.findings().len(), 1);
}

#[test]
fn a_fully_isolated_container_and_an_unknown_cgroup_are_not_flagged() {
    let mut tl = machine(Scope::All);
    let mut isolated = host_set();
    for (kind, inum) in [
        (NsKind::Mnt, 4026533200),
        (NsKind::Uts, 4026533201),
        (NsKind::Ipc, 4026533202),
        (NsKind::Pid, 4026533203),
        (NsKind::PidForChildren, 4026533203),
        (NsKind::Net, 4026533204),
    ] {
        isolated = with(isolated, kind, inum, 0);
    }
    let mut t = call(Call::Clone3, 100, CLONE_NEWPID | CLONE_NEWNET)
        .at(10)
        .done();
    t.child = Some(Box::new(Child {
        tid: 800,
        start_ns: 800_010,
        ns_tid: 1,
        ns: isolated,
    }));
    tl.apply(&rec(t));
    tl.observe(800, 20, DOCKER_A, "");
    tl.observe(100, 21, "0::/user.slice/session-1.scope\n", "");
    assert!(ids(&tl).is_empty(), "{:?}", tl.findings());
    assert_eq!(tl.container_of(800).map(|c| c.runtime), Some("docker"));
    // Container B started in A's pid and ipc namespaces (--pid=container:A).
    tl.apply(&fork(30, 800, 801));
    tl.observe(801, 31, DOCKER_B, "");
    assert_eq!(ids(&tl), ["NS-JOINS-CONTAINER"]);
    let f = &tl.findings()[0];
    assert!(f.message.contains("docker:aaaaaaaaaaaa"), "{}", f.message);
}

#[test]
fn unprivileged_user_namespaces_root_mappings_and_refusals_are_flagged() {
    let mut tl = machine(Scope::All);
    let user = with(host_set(), NsKind::User, 4026533300, 0);
    let mut t = unshare(100, libc::CLONE_NEWUSER as u64)
        .at(10)
        .to(user)
        .done();
    t.uid = 1000;
    tl.apply(&rec(t));
    tl.observe(100, 11, "0::/\n", "         0       1000          1\n");
    let mut refused = setns(100, CLONE_NEWNET).at(12).from(user).to(user).done();
    refused.ret = -i64::from(libc::EPERM);
    tl.apply(&rec(refused));
    assert_eq!(
        ids(&tl),
        ["NS-USERNS-UNPRIVILEGED", "NS-USERNS-ROOTMAP", "NS-REFUSED"]
    );
    // Root making a user namespace is ordinary.
    let mut tl = machine(Scope::All);
    tl.apply(
        &unshare(100, libc::CLONE_NEWUSER as u64)
            .at(10)
            .to(user)
            .rec(),
    );
    tl.observe(100, 11, "0::/\n", "0 0 1\n");
    assert!(ids(&tl).is_empty(), "{:?}", tl.findings());
}

#[test]
fn a_container_process_that_never_moved_is_listed_under_its_container() {
    // docker run --pid=host: the container's process was born by a fork, changed nothing
    // itself, and is still the container's, in its history and its finding.
    let mut tl = unshared_tree();
    tl.observe(700, 30, DOCKER_A, "");
    let history = tl
        .histories()
        .find(|h| h.key.pid == 700)
        .expect("the container's process has a history");
    assert_eq!(
        history.container.as_ref().map(|c| c.runtime),
        Some("docker")
    );
    assert_eq!(history.born_ns, Some(20));
    assert_eq!(
        tl.findings()[0].container.as_ref(),
        history.container.as_ref()
    );
}

#[test]
fn a_root_runtime_mapping_container_root_to_a_high_uid_is_not_a_root_mapping() {
    // podman run --uidmap 0:100000:65536: root made the user namespace.
    let mut tl = machine(Scope::All);
    let user = with(host_set(), NsKind::User, 4026533300, 0);
    tl.apply(
        &unshare(100, libc::CLONE_NEWUSER as u64)
            .at(10)
            .to(user)
            .rec(),
    );
    tl.observe(100, 11, "0::/\n", "0 100000 65536\n");
    assert!(ids(&tl).is_empty(), "{:?}", tl.findings());
    // A non-root user mapping root to someone else's uid cannot (the kernel refuses it), and
    // mapping root to its own uid is the finding, once per user namespace.
    let mut tl = machine(Scope::All);
    let mut t = unshare(100, libc::CLONE_NEWUSER as u64)
        .at(10)
        .to(user)
        .done();
    t.uid = 1000;
    tl.apply(&rec(t));
    tl.observe(100, 11, "0::/\n", "0 1000 1\n");
    tl.observe(100, 12, "0::/\n", "0 1000 1\n");
    assert_eq!(ids(&tl), ["NS-USERNS-UNPRIVILEGED", "NS-USERNS-ROOTMAP"]);
    assert!(tl.findings()[1].message.contains("uid 1000"));
}

#[test]
fn a_process_attributed_before_its_own_mount_namespace_is_checked_again_after_it_moves() {
    // The container's first process is seen in the host's mounts (it has not unshared yet):
    // nothing to say. Once it has its own mounts, sharing the host's pid namespace is.
    let mut tl = machine(Scope::All);
    tl.apply(&fork(10, 100, 700));
    tl.observe(700, 11, DOCKER_A, "");
    assert!(ids(&tl).is_empty(), "{:?}", tl.findings());
    let mnt = with(host_set(), NsKind::Mnt, 4026533100, 0);
    let mut t = unshare(700, libc::CLONE_NEWNS as u64).at(20).to(mnt).done();
    t.start_boottime_ns = 700_010;
    tl.apply(&rec(t));
    assert_eq!(ids(&tl), ["NS-SHARES-HOST"]);
    let f = &tl.findings()[0];
    assert_eq!(f.ts_ns, 20);
    assert_eq!(f.container.as_ref().map(|c| c.runtime), Some("docker"));
}

#[test]
fn a_runtime_halfway_through_making_a_container_is_not_judged_its_program_is() {
    // runc's init is in the container's cgroup before it has made the container: its child
    // unshares the mounts while still in the host's pid namespace (its own children will not
    // be). What is judged is the program it execs.
    let mut tl = machine(Scope::All);
    tl.apply(&fork(10, 100, 700));
    tl.observe(700, 11, DOCKER_A, "");
    let mnt = with(host_set(), NsKind::Mnt, 4026533100, 0);
    let mut t = unshare(700, libc::CLONE_NEWNS as u64).at(20).to(mnt).done();
    t.start_boottime_ns = 700_010;
    t.comm = "runc:[1:CHILD]".into();
    tl.apply(&rec(t));
    assert!(ids(&tl).is_empty(), "{:?}", tl.findings());
    tl.apply(&Record::Exec(Box::new(Exec {
        ts_ns: 30,
        tid: 700,
        pid: 700,
        old_tid: 700,
        start_ns: 700_010,
        comm: "sleep".into(),
        filename: "/bin/sleep".into(),
    })));
    tl.observe(700, 31, DOCKER_A, "");
    assert_eq!(ids(&tl), ["NS-SHARES-HOST"]);
    assert_eq!(tl.findings()[0].comm, "sleep");
}

#[test]
fn a_runtimes_init_in_its_callers_mounts_gives_the_container_neither_owner_nor_set() {
    // podman --uidmap: podman makes mounts of its own; runc's init, re-exec'd from
    // /proc/self/exe there, is seen in the container's cgroup. The container is what its
    // program is in.
    let mut tl = machine(Scope::All);
    let podman_mnt = with(host_set(), NsKind::Mnt, 4026533176, 0);
    tl.apply(
        &unshare(100, libc::CLONE_NEWNS as u64)
            .at(10)
            .to(podman_mnt)
            .rec(),
    );
    // runc (forked by podman's conmon) forks its init.
    let mut runc = fork(20, 100, 700);
    if let Record::Fork(f) = &mut runc {
        f.comm = "runc".into();
    }
    tl.apply(&runc);
    let exec = |ts, comm: &str, filename: &str| {
        Record::Exec(Box::new(Exec {
            ts_ns: ts,
            tid: 700,
            pid: 700,
            old_tid: 700,
            start_ns: 700_020,
            comm: comm.into(),
            filename: filename.into(),
        }))
    };
    tl.apply(&exec(30, "exe", "/proc/self/exe"));
    tl.observe(700, 31, DOCKER_A, "");
    let podman_ns = ns_named(&tl, NsType::Mnt, 4026533176)[0];
    assert_eq!(
        podman_ns.owner, None,
        "podman's mounts are not the container's"
    );
    let container = tl
        .container_of(700)
        .cloned()
        .expect("in the container's cgroup");
    assert!(tl.container_set(&container).is_none());
    // Its child makes the container's mounts, and execs the program.
    let mut t = call(Call::Clone, 700, libc::CLONE_NEWNS as u64)
        .at(40)
        .done();
    t.before = podman_mnt;
    t.after = podman_mnt;
    t.start_boottime_ns = 700_020;
    t.child = Some(Box::new(Child {
        tid: 701,
        start_ns: 701_040,
        ns_tid: 701,
        ns: with(host_set(), NsKind::Mnt, 4026533178, 0),
    }));
    tl.apply(&rec(t));
    tl.apply(&Record::Exec(Box::new(Exec {
        ts_ns: 50,
        tid: 701,
        pid: 701,
        old_tid: 701,
        start_ns: 701_040,
        comm: "sleep".into(),
        filename: "/bin/sleep".into(),
    })));
    tl.observe(701, 51, DOCKER_A, "");
    let set = tl.container_set(&container).expect("the program's set");
    let mnt = set[NsKind::Mnt.slot()].expect("mnt");
    assert_eq!(tl.namespace(mnt).inum, 4026533178);
    assert_eq!(tl.namespace(mnt).owner.as_ref(), Some(&container));
}

/// sh (100), called `comm`, unshares mnt, uts and ipc and is then seen in the one-level cgroup
/// `/payload`.
fn made_by(comm: &str) -> Timeline {
    let mut tl = machine(Scope::All);
    let mut set = with(host_set(), NsKind::Mnt, 4026533100, 0);
    set = with(set, NsKind::Uts, 4026533101, 0);
    let mut t = unshare(100, (libc::CLONE_NEWNS | libc::CLONE_NEWUTS) as u64)
        .at(10)
        .to(set)
        .done();
    t.comm = comm.into();
    tl.apply(&rec(t));
    tl.observe(100, 11, "0::/payload\n", "");
    tl
}

#[test]
fn a_one_level_cgroup_older_than_the_trace_is_named_by_the_runtime_whose_state_has_it() {
    // Nothing seen made its namespaces: the runtime's state says whose it is, or nothing does.
    let snapshot = |tl: &mut Timeline| {
        let mut e = entry(700, 700, 1, "sleep");
        e.inodes[NsKind::Mnt.slot()] = Some(4026533100);
        tl.snapshot(&[entry(1, 1, 0, "init"), e], 0);
    };
    let mut tl = Timeline::new(Scope::All);
    snapshot(&mut tl);
    tl.observe_in(700, 1, "0::/web\n", "", Some("runc"));
    assert_eq!(
        tl.container_of(700).map(|c| c.short()),
        Some("runc:web".into())
    );
    let mut tl = Timeline::new(Scope::All);
    snapshot(&mut tl);
    tl.observe_in(700, 1, "0::/web\n", "", None);
    assert_eq!(tl.container_of(700), None);
}

#[test]
fn a_one_level_cgroup_is_named_by_the_runtime_that_made_its_namespaces_or_is_no_container() {
    for (comm, runtime) in [
        ("runc:[1:CHILD]", Some("runc")),
        ("crun", Some("crun")),
        ("systemd-nspawn", Some("nspawn")),
        ("unshare", None),
    ] {
        let tl = made_by(comm);
        let found = tl.container_of(100);
        assert_eq!(found.map(|c| c.runtime), runtime, "{comm}");
        if let Some(c) = found {
            assert_eq!(c.short(), format!("{}:payload", runtime.unwrap()));
        }
        // Whatever the runtime, a finding names it, never another.
        for f in tl.findings() {
            assert_eq!(f.container.as_ref().map(|c| c.runtime), runtime, "{f:?}");
        }
    }
}

/// `n` short processes that each fork from sh, unshare `kind` and exit.
fn unshare_storm(n: u32, kind: NsKind, flag: u64) -> Timeline {
    let mut tl = machine(Scope::All);
    let mut ts = 1000;
    for i in 0..n {
        let child = 1000 + i;
        ts += 100;
        tl.apply(&fork(ts, 100, child));
        let after = with(host_set(), kind, 4026540000 + i, 10_000 + u64::from(i));
        let mut t = unshare(child, flag).at(ts + 10).to(after).done();
        t.start_boottime_ns = u64::from(child) * 1000 + ts;
        tl.apply(&rec(t));
        tl.apply(&exit(ts + 20, child, child));
    }
    tl
}

#[test]
fn a_long_storm_of_short_processes_is_folded_and_memory_stays_flat() {
    use super::{KEEP_HISTORIES, KEEP_NAMESPACES};
    let n = 3 * (KEEP_HISTORIES + KEEP_NAMESPACES) as u32;
    let tl = unshare_storm(n, NsKind::Uts, CLONE_NEWUTS);
    // Rows and histories stay near what is kept in full, whatever the storm's length.
    let histories = tl.histories().count();
    assert!(histories <= KEEP_HISTORIES + 1, "{histories} histories");
    assert!(
        tl.order.len() <= 2 * (KEEP_HISTORIES + 1),
        "{} keys",
        tl.order.len()
    );
    assert_eq!(tl.counts.unknown_tasks, 0);

    // Nothing is lost: every process and namespace is either kept or counted.
    let folded = tl.folded();
    let storm = ("sh".into(), "unshare(CLONE_NEWUTS)".to_string());
    assert_eq!(
        folded.processes[&storm].count + histories as u64,
        u64::from(n)
    );
    assert_storm_namespaces_kept_or_folded(&tl, NsType::Uts, n);
    assert_eq!(folded.namespaces.len(), 1, "{:?}", folded.namespaces);

    // A namespace made after folding began resolves to its own row, with its creator.
    let last = ns_named(&tl, NsType::Uts, 4026540000 + n - 1);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].id, 10_000 + u64::from(n - 1));
    assert!(last[0].created.is_some());
}

/// A namespace only ever some task's pid_for_children (unshare -p without a fork) has no
/// member: it is folded once its tasks are gone, like an emptied one.
#[test]
fn namespaces_only_for_children_are_folded_when_their_tasks_are_gone() {
    use super::KEEP_NAMESPACES;
    let n = 3 * KEEP_NAMESPACES as u32;
    let tl = unshare_storm(n, NsKind::PidForChildren, CLONE_NEWPID);
    assert_storm_namespaces_kept_or_folded(&tl, NsType::Pid, n);
}

/// After [`unshare_storm`]: namespace rows stay near what is kept in full, and each of the
/// storm's `n` namespaces of `ty` is either kept or counted among those folded.
fn assert_storm_namespaces_kept_or_folded(tl: &Timeline, ty: NsType, n: u32) {
    use super::KEEP_NAMESPACES;
    assert!(
        tl.namespaces().len() <= KEEP_NAMESPACES * 2,
        "{} rows",
        tl.namespaces().len()
    );
    let kept = tl
        .namespaces()
        .iter()
        .filter(|ns| !ns.folded && !ns.host && ns.ty == ty)
        .count() as u64;
    let made = (ty, "made by sh unshare".to_string());
    assert_eq!(tl.folded().namespaces[&made].count + kept, u64::from(n));
}

fn loss_at(ts: u64) -> Loss {
    Loss {
        ts_ns: ts,
        noticed_ns: ts + 10,
        cpu: 1,
        records: 12,
        batches: 1,
    }
}

#[test]
fn a_loss_makes_the_processes_that_lived_through_it_uncertain() {
    let mut tl = machine(Scope::All);
    let uts = with(host_set(), NsKind::Uts, 4026532200, 0);
    // 100 moves and lives on; 200 moves and exits before the loss; 300 is born after it.
    // A child's start time is the one `fork` gives it.
    let of_child = |t: Tx, born: u64| {
        let mut t = t.done();
        t.start_boottime_ns = u64::from(t.tid) * 1000 + born;
        rec(t)
    };
    let net = with(uts, NsKind::Net, 4026532400, 0);
    tl.apply(&unshare(100, CLONE_NEWUTS).at(10).to(uts).rec());
    tl.apply(&fork(20, 100, 200));
    tl.apply(&of_child(unshare(200, CLONE_NEWUTS).at(30).from(uts), 20));
    tl.apply(&exit(40, 200, 200));
    tl.lost(&loss_at(50));
    tl.apply(&fork(60, 100, 300));
    tl.apply(&of_child(
        unshare(300, CLONE_NEWNET).at(70).from(uts).to(net),
        60,
    ));
    let since = |pid: u32| {
        let h = tl
            .histories()
            .find(|h| h.key.pid == pid)
            .expect("a history");
        tl.uncertain_since(h)
    };
    assert_eq!(since(100), Some(50));
    assert_eq!(since(200), None, "it ended before the loss");
    assert_eq!(since(300), None, "it was born after the loss");
    assert_eq!(tl.losses(), [loss_at(50)]);
    assert_eq!((tl.counts.lost_records, tl.counts.lost_batches), (12, 1));
}

#[test]
fn proc_read_again_after_a_loss_heals_moves_exits_and_births() {
    let mut tl = machine(Scope::All);
    tl.apply(&fork(10, 100, 200));
    tl.lost(&loss_at(20));
    // Lost: 100 unshared uts, 200 exited, 100 forked 300, which unshared net.
    let mut sh = entry(100, 100, 1, "sh");
    sh.inodes[NsKind::Uts.slot()] = Some(4026532300);
    let mut born = entry(300, 300, 100, "sh");
    born.start_ns = 25_000;
    born.inodes[NsKind::Uts.slot()] = Some(4026532300);
    born.inodes[NsKind::Net.slot()] = Some(4026532301);
    let heals = tl.resync(&[entry(1, 1, 0, "init"), sh, born], 28, 30);

    let inode = |tid: u32, kind: NsKind| {
        tl.live_set(tid)
            .and_then(|set| set.into_iter().find(|(k, _)| *k == kind))
            .map(|(_, inum)| inum)
    };
    assert_eq!(inode(100, NsKind::Uts), Some(4026532300));
    assert_eq!(inode(300, NsKind::Net), Some(4026532301));
    assert_eq!(inode(200, NsKind::Uts), None, "200 is gone");
    assert_eq!(
        (tl.counts.resyncs, tl.counts.vanished, tl.counts.found),
        (1, 1, 1)
    );
    let healed: Vec<(u32, bool, Vec<NsKind>)> = heals
        .iter()
        .map(|h| (h.pid, h.found, h.changes.iter().map(|c| c.kind).collect()))
        .collect();
    assert_eq!(
        healed,
        [
            (100, false, vec![NsKind::Uts]),
            // Its parent's uts is where it is; its net is not.
            (300, true, vec![NsKind::Net]),
        ]
    );
    let sh = tl.histories().find(|h| h.key.pid == 100).expect("sh moved");
    let last = sh.moves.last().expect("a move");
    assert_eq!(last.cause, Cause::Resync);
    assert_eq!(tl.uncertain_since(sh), Some(20));
    // The namespace 100 is found in has it as a member; the host's uts lost it.
    let uts = ns_named(&tl, NsType::Uts, 4026532300)[0];
    assert_eq!(uts.members(), 2);
}

#[test]
fn a_resync_that_finds_everything_where_it_was_changes_nothing() {
    let mut tl = machine(Scope::All);
    let uts = with(host_set(), NsKind::Uts, 4026532200, 0);
    tl.apply(&unshare(100, CLONE_NEWUTS).at(10).to(uts).rec());
    let before = tl.histories().cloned().collect::<Vec<_>>();
    let mut sh = entry(100, 100, 1, "sh");
    sh.inodes[NsKind::Uts.slot()] = Some(4026532200);
    // pid_for_children cannot be read before its namespace has a process: says nothing.
    sh.inodes[NsKind::PidForChildren.slot()] = None;
    let heals = tl.resync(&[entry(1, 1, 0, "init"), sh], 18, 20);
    assert!(heals.is_empty(), "{heals:?}");
    assert_eq!(tl.histories().cloned().collect::<Vec<_>>(), before);
    assert_eq!(
        (tl.counts.resyncs, tl.counts.vanished, tl.counts.found),
        (0, 0, 0)
    );
}

/// /proc is read over some milliseconds, from `read_from` on: what changed meanwhile is told by
/// the records, which are fresher.
#[test]
fn a_resync_trusts_the_records_made_while_proc_was_read() {
    let mut tl = machine(Scope::All);
    // 200, 300 and 500 live before the reading; 400 is born during it, after /proc was read
    // where it would be; 300 and 500 exit during it, after /proc showed them.
    for (ts, child) in [(10, 200), (11, 300), (12, 500)] {
        tl.apply(&fork(ts, 100, child));
    }
    tl.lost(&loss_at(20));
    let uts = with(host_set(), NsKind::Uts, 4026532300, 0);
    // During the reading (from 30 to 40): 100 unshares after /proc showed it in the host's
    // uts; 400 is born; 300 and 500 exit.
    tl.apply(&unshare(100, CLONE_NEWUTS).at(32).to(uts).rec());
    tl.apply(&fork(33, 100, 400));
    tl.apply(&exit(34, 300, 300));
    tl.apply(&exit(35, 500, 500));
    let read = |tid: u32, born: u64| {
        let mut e = entry(tid, tid, 100, "sh");
        e.start_ns = u64::from(tid) * 1000 + born;
        e
    };
    // /proc showed 100 (still in the host's uts), 200, 300 and 500; 400 not yet.
    let heals = tl.resync(
        &[
            entry(1, 1, 0, "init"),
            entry(100, 100, 1, "sh"),
            read(200, 10),
            read(300, 11),
            read(500, 12),
        ],
        30,
        40,
    );
    assert!(heals.is_empty(), "{heals:?}");
    let uts_of = |tid| {
        tl.live_set(tid)
            .and_then(|set| set.into_iter().find(|(k, _)| *k == NsKind::Uts))
            .map(|(_, inum)| inum)
    };
    assert_eq!(
        uts_of(100),
        Some(4026532300),
        "its record is fresher than /proc"
    );
    assert!(
        tl.live_set(400).is_some(),
        "born after the reading began: not gone"
    );
    assert!(
        tl.live_set(300).is_none() && tl.live_set(500).is_none(),
        "exited: not found again"
    );
    assert_eq!(
        (tl.counts.resyncs, tl.counts.vanished, tl.counts.found),
        (0, 0, 0)
    );
    // A reading that could not list /proc changes nothing.
    assert!(tl.resync(&[], 50, 60).is_empty());
    assert!(tl.live_set(200).is_some());
}

#[test]
fn losses_close_together_are_one_span_and_a_process_born_inside_it_is_uncertain() {
    let mut tl = machine(Scope::All);
    let uts = with(host_set(), NsKind::Uts, 4026532300, 0);
    tl.lost(&loss_at(100_000_000));
    tl.apply(&fork(102_000_000, 100, 200));
    let mut t = unshare(200, CLONE_NEWUTS).at(103_000_000).to(uts).done();
    t.start_boottime_ns = 200 * 1000 + 102_000_000;
    tl.apply(&rec(t));
    tl.lost(&loss_at(105_000_000));
    // Out of order, and far: its own span.
    tl.lost(&loss_at(50_000_000));
    let h = tl
        .histories()
        .find(|h| h.key.pid == 200)
        .expect("200 moved");
    assert_eq!(tl.uncertain_since(h), Some(102_000_000));
    assert_eq!(tl.loss_spans.len(), 2, "{:?}", tl.loss_spans);
}

/// A record file may list a task twice (the fuzzer's find): the second is the one kept, and
/// the first leaves its namespaces.
#[test]
fn a_snapshot_that_lists_a_tid_twice_keeps_the_last() {
    let mut tl = Timeline::new(Scope::All);
    let mut again = entry(100, 100, 1, "sh2");
    again.inodes[NsKind::Uts.slot()] = Some(4026532300);
    tl.snapshot(&[entry(100, 100, 1, "sh"), again], 0);
    let uts = |inum| ns_named(&tl, NsType::Uts, inum)[0].members();
    assert_eq!((uts(HOST[NsKind::Uts.slot()]), uts(4026532300)), (0, 1));
}
