//! A small recorded stream the output tests share: a runc container start, seen as the
//! collector would feed it.
use crate::{
    event::{Call, Child, Exec, Exit, Fork, Loss, NsSet, Record, Transition},
    ns::NsKind,
    timeline::{ProcEntry, Scope, Timeline},
};

/// The host's set as the stream's machine has it, but for `overrides`.
pub fn set(overrides: &[(NsKind, u32)]) -> NsSet {
    let mut s = NsSet {
        inum: [
            4026531832,
            0xEFFF_FFFE,
            0xEFFF_FFFF,
            0xEFFF_FFFC,
            0xEFFF_FFFC,
            4026531833,
            0xEFFF_FFFD,
            0xEFFF_FFFB,
            0xEFFF_FFFA,
            0xEFFF_FFFA,
        ],
        id: [0; 10],
    };
    for &(k, i) in overrides {
        s.inum[k.slot()] = i;
    }
    s
}

/// A task of the stream's machine found in /proc in the host's namespaces (child of 1, started
/// at 0).
pub fn task(tid: u32, comm: &str) -> ProcEntry {
    ProcEntry {
        tid,
        pid: tid,
        ppid: 1,
        comm: comm.into(),
        start_ns: 0,
        inodes: set(&[]).inum.map(Some),
    }
}

/// runc:[1:CHILD] unshares, its child is born into the new pid namespace, then a process
/// from the host joins the new net namespace.
pub fn stream() -> Timeline {
    let mut tl = Timeline::new(Scope::All);
    tl.snapshot(
        &[
            task(2, "kthreadd"),
            task(50, "runc:[1:CHILD]"),
            task(60, "nsenter"),
        ],
        0,
    );
    let unshared = set(&[
        (NsKind::Mnt, 4026532177),
        (NsKind::PidForChildren, 4026532180),
        (NsKind::Net, 4026532181),
    ]);
    let base = Transition {
        ts_ns: 1_000_000,
        call: Call::Unshare,
        flags: (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET) as u64,
        ret: 0,
        fd: None,
        tid: 50,
        pid: 50,
        ppid: 1,
        uid: 0,
        ns_tid: 50,
        pid_level: 0,
        start_boottime_ns: 0,
        comm: "runc:[1:CHILD]".into(),
        before: set(&[]),
        after: unshared,
        child: None,
        before_inferred: false,
    };
    tl.apply(&Record::Transition(Box::new(base.clone())));
    let mut born = base.clone();
    born.ts_ns = 2_000_000;
    born.call = Call::Fork;
    born.flags = 0;
    born.ret = 51;
    born.before = unshared;
    born.child = Some(Box::new(Child {
        tid: 51,
        start_ns: 2_000_000,
        ns_tid: 1,
        ns: set(&[
            (NsKind::Mnt, 4026532177),
            (NsKind::Pid, 4026532180),
            (NsKind::PidForChildren, 4026532180),
            (NsKind::Net, 4026532181),
        ]),
    }));
    tl.apply(&Record::Transition(Box::new(born)));
    let mut join = base;
    join.ts_ns = 3_000_000;
    join.call = Call::Setns;
    join.flags = libc::CLONE_NEWNET as u64;
    join.fd = Some(3);
    join.tid = 60;
    join.pid = 60;
    join.comm = "nsenter".into();
    join.after = set(&[(NsKind::Net, 4026532181)]);
    tl.apply(&Record::Transition(Box::new(join)));
    tl.apply(&Record::Fork(Fork {
        ts_ns: 4_000_000,
        tid: 52,
        pid: 52,
        start_ns: 4_000_000,
        parent_tid: 51,
        parent_pid: 51,
        parent_start_ns: 2_000_000,
        comm: "sh".into(),
    }));
    tl
}

/// [`stream`] and the rest of that start: the child execs and is attributed to its container,
/// a process born in the container enters the host's pid namespace for its children (a
/// finding), records are lost and /proc is read again (the child's uts moved unseen), the child
/// exits.
pub fn story() -> Timeline {
    let mut tl = stream();
    tl.apply(&Record::Exec(Box::new(Exec {
        ts_ns: 5_000_000,
        tid: 51,
        pid: 51,
        old_tid: 51,
        start_ns: 2_000_000,
        comm: "sleep".into(),
        filename: "/bin/sleep".into(),
    })));
    tl.observe(
        51,
        5_000_001,
        "0::/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n",
        "",
    );
    // Its engine's names for it, as the names' reader answers.
    for container in tl.take_new_containers() {
        let names = crate::names::Names {
            name: Some("shop-web-1".into()),
            image: Some("bb:latest".into()),
            compose_project: Some("shop".into()),
            compose_service: Some("web".into()),
            ..Default::default()
        };
        tl.name(container, names);
    }
    let inside = set(&[
        (NsKind::Mnt, 4026532177),
        (NsKind::Pid, 4026532180),
        (NsKind::PidForChildren, 4026532180),
        (NsKind::Net, 4026532181),
    ]);
    let mut escape = Transition {
        ts_ns: 6_000_000,
        call: Call::Setns,
        flags: libc::CLONE_NEWPID as u64,
        ret: 0,
        fd: Some(4),
        tid: 52,
        pid: 52,
        ppid: 51,
        uid: 0,
        ns_tid: 2,
        pid_level: 1,
        start_boottime_ns: 4_000_000,
        comm: "sh".into(),
        before: inside,
        after: inside,
        child: None,
        before_inferred: false,
    };
    escape.after.inum[NsKind::PidForChildren.slot()] = 0xEFFF_FFFC;
    tl.apply(&Record::Transition(Box::new(escape)));
    tl.lost(&Loss {
        ts_ns: 7_000_000,
        noticed_ns: 7_500_000,
        cpu: 1,
        records: 12,
        batches: 1,
    });
    let host = set(&[]);
    let mut gone_to = inside;
    gone_to.inum[NsKind::Uts.slot()] = 4026532190;
    let proc = |tid: u32, comm: &str, ns: &NsSet| ProcEntry {
        tid,
        pid: tid,
        ppid: 1,
        comm: comm.into(),
        start_ns: 0,
        inodes: ns.inum.map(Some),
    };
    let mut child = proc(51, "sleep", &gone_to);
    child.start_ns = 2_000_000;
    let mut sh = proc(52, "sh", &inside);
    sh.start_ns = 4_000_000;
    sh.inodes[NsKind::PidForChildren.slot()] = Some(0xEFFF_FFFC);
    let runc = set(&[
        (NsKind::Mnt, 4026532177),
        (NsKind::PidForChildren, 4026532180),
        (NsKind::Net, 4026532181),
    ]);
    let nsenter = set(&[(NsKind::Net, 4026532181)]);
    tl.resync(
        &[
            proc(2, "kthreadd", &host),
            proc(50, "runc:[1:CHILD]", &runc),
            proc(60, "nsenter", &nsenter),
            child,
            sh,
        ],
        7_600_000,
        7_700_000,
    );
    tl.apply(&Record::Exit(Exit {
        ts_ns: 8_000_000,
        tid: 51,
        pid: 51,
        start_ns: 2_000_000,
        code: 0,
        group_dead: true,
        comm: "sleep".into(),
    }));
    tl
}
