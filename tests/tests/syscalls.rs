//! Each namespace call made directly (through nshelper), checked against /proc.
use nstrace_tests::{
    Helper, Run, Tracer, Value, assert_root, assert_same_ns, by, changed, proc_ns, proc_ns_one,
    strings,
};

fn own_ns() -> nstrace_tests::NsSet {
    proc_ns(std::process::id())
}

/// A child unshares one type: the event's after-set is what /proc shows for the child, its
/// before-set is the parent's (this test's), and only that type changed.
fn unshare_one(kind: &str, flag: &str) {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["unshare", kind, "hold"]);
    let pid = helper.wait_ready();
    let ev = tracer.wait_for("unshare", by(pid, "unshare"));
    assert_eq!(ev["ret"], 0, "{ev}");
    assert_eq!(ev["errno"], Value::Null);
    assert_eq!(strings(&ev["flag_names"]), [flag]);
    assert_eq!(ev["tid"], ev["pid"]);
    assert_eq!(ev["ppid"], std::process::id());
    assert_eq!(ev["comm"], "nshelper");
    assert_same_ns("after", &ev["after"], &proc_ns(pid));
    assert_same_ns("before", &ev["before"], &own_ns());
    let slot = if kind == "mnt" { "mnt" } else { kind };
    assert_eq!(changed(&ev), [slot]);
    helper.finish();
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_mnt_enters_a_new_mount_namespace() {
    unshare_one("mnt", "CLONE_NEWNS");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_uts_enters_a_new_uts_namespace() {
    unshare_one("uts", "CLONE_NEWUTS");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_ipc_enters_a_new_ipc_namespace() {
    unshare_one("ipc", "CLONE_NEWIPC");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_net_enters_a_new_network_namespace() {
    unshare_one("net", "CLONE_NEWNET");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_user_enters_a_new_user_namespace() {
    unshare_one("user", "CLONE_NEWUSER");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_cgroup_enters_a_new_cgroup_namespace() {
    unshare_one("cgroup", "CLONE_NEWCGROUP");
}

/// unshare(CLONE_NEWPID) moves only pid_for_children; the next child is born into the new pid
/// namespace as its pid 1, and that birth is its own transition.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_pid_changes_only_pid_for_children_and_the_next_child_is_born_into_it() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["unshare", "pid", "fork", "hold"]);
    let child = helper.wait_ready();
    let parent = helper.pid();

    let ev = tracer.wait_for("unshare", by(parent, "unshare"));
    assert_eq!(changed(&ev), ["pid_for_children"]);
    assert_same_ns("unshare after", &ev["after"], &proc_ns(parent));
    assert_same_ns("unshare before", &ev["before"], &own_ns());

    let fork = tracer.wait_for("fork", by(parent, "fork"));
    assert_eq!(fork["child"]["tid"], child);
    assert_eq!(
        fork["child"]["ns_tid"], 1,
        "the child is pid 1 of the new namespace: {fork}"
    );
    assert_eq!(fork["ret"], child);
    assert_eq!(strings(&fork["child"]["moved"]), ["pid"]);
    assert_same_ns("fork child", &fork["child"]["ns"], &proc_ns(child));
    assert_eq!(
        proc_ns_one(child, "pid"),
        proc_ns_one(parent, "pid_for_children")
    );
    helper.finish();
}

/// A fork into a pid namespace whose init has exited is refused (ENOMEM): a failed entry into
/// that namespace, reported as such (`unshare -p` without `--fork` runs a shell whose first
/// child is the namespace's init; once it has exited, the shell cannot fork again).
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_fork_into_a_pid_namespace_whose_init_exited_is_a_refused_entry() {
    assert_root();
    let mut run = Run::start(&["unshare", "--pid", "sh", "-c", "/bin/true; /bin/true"]);
    let (status, transitions, summary) = run.finish();
    assert!(!status.success(), "the second fork fails: {}", run.stderr());
    let unshare = transitions
        .iter()
        .find(|t| t["call"] == "unshare")
        .expect("the unshare");
    let pid = unshare["pid"].as_u64().unwrap();
    let ns = &unshare["after"]["pid_for_children"];
    let forks: Vec<&Value> = transitions
        .iter()
        .filter(|t| t["pid"] == pid && t["call"] == "fork")
        .collect();
    assert_eq!(forks.len(), 2, "{forks:#?}");
    assert_eq!(forks[0]["child"]["ns_tid"], 1, "the init: {}", forks[0]);
    assert_eq!(forks[0]["errno"], Value::Null);
    assert_eq!(forks[1]["errno"], "ENOMEM", "{}", forks[1]);
    assert!(forks[1]["child"].is_null());
    assert_eq!(&forks[1]["after"]["pid_for_children"], ns);
    assert_eq!(forks[1]["before"], forks[1]["after"], "nothing changed");
    // The shell's history has the attempt; no finding (an ordinary mistake, not an attack).
    let shell = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .expect("the shell's history");
    let refused: Vec<&Value> = shell["moves"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["errno"] == "ENOMEM")
        .collect();
    assert_eq!(refused.len(), 1, "{shell}");
    assert_eq!(summary["findings"], serde_json::json!([]));
}

/// unshare(CLONE_NEWTIME) moves only time_for_children; the task itself enters the new time
/// namespace at its next exec, reported as an exec transition.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_time_changes_time_for_children_and_exec_enters_it() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["unshare", "time", "exec-self", "hold"]);
    let pid = helper.wait_ready();
    assert_eq!(pid, helper.pid(), "exec keeps the pid");

    let ev = tracer.wait_for("unshare", by(pid, "unshare"));
    assert_eq!(changed(&ev), ["time_for_children"]);
    assert_eq!(strings(&ev["flag_names"]), ["CLONE_NEWTIME"]);
    assert_same_ns("unshare before", &ev["before"], &own_ns());

    let exec = tracer.wait_for("exec", by(pid, "exec"));
    assert_eq!(changed(&exec), ["time"]);
    assert_eq!(exec["before"]["time_for_children"], exec["after"]["time"]);
    assert_same_ns("exec after", &exec["after"], &proc_ns(pid));
    helper.finish();
}

/// setns by a namespace fd into another process's namespaces, with nstype 0 (any type, as crun
/// does) and with the exact type.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn setns_by_fd_enters_another_process_namespaces_with_nstype_zero_or_exact() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut target = Helper::spawn(&["unshare", "uts,net", "hold"]);
    let t = target.wait_ready();
    let uts = format!("/proc/{t}/ns/uts");
    let net = format!("/proc/{t}/ns/net");
    let mut joiner = Helper::spawn(&["setns", &uts, "0", "setns", &net, "net", "hold"]);
    let j = joiner.wait_ready();

    let evs = tracer.wait_for_n(2, "two setns", by(j, "setns"));
    assert_eq!(evs[0]["flags"], 0);
    assert!(strings(&evs[0]["flag_names"]).is_empty());
    assert_eq!(changed(&evs[0]), ["uts"]);
    assert!(
        evs[0]["fd"].as_i64().is_some_and(|fd| fd >= 3),
        "{}",
        evs[0]
    );
    assert_same_ns("first before", &evs[0]["before"], &own_ns());
    // Started after the tracer: the kernel knows it from its exec, and tells its `before`.
    assert_eq!(evs[0].get("before_inferred"), None, "{}", evs[0]);

    assert_eq!(strings(&evs[1]["flag_names"]), ["CLONE_NEWNET"]);
    assert_eq!(changed(&evs[1]), ["net"]);
    assert_eq!(evs[0]["after"], evs[1]["before"]);
    let now = proc_ns(j);
    assert_same_ns("second after", &evs[1]["after"], &now);
    assert_eq!(now["uts"], proc_ns(t)["uts"]);
    assert_eq!(now["net"], proc_ns(t)["net"]);
    joiner.finish();
    target.finish();
}

/// A process already running when tracing began, that has not exec'd since, is one the kernel
/// programs do not know: its first setns's `before` is taken from the /proc snapshot and marked
/// so, and still matches /proc. From then on the kernel knows it, and the children it forks.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_setns_by_a_process_older_than_the_trace_is_marked_and_matches_proc() {
    assert_root();
    let mut target = Helper::spawn(&["unshare", "uts", "hold"]);
    let t = target.wait_ready();
    let theirs = format!("/proc/{t}/ns/uts");
    let ours = format!("/proc/{}/ns/uts", std::process::id());
    let mut early = Helper::spawn(&[
        "pause", "setns", &theirs, "uts", "fork", "setns", &ours, "uts", "hold",
    ]);
    let e = early.wait_paused();
    let before = proc_ns(e);
    let tracer = Tracer::start(&[]);
    early.resume();
    let child = early.wait_ready();

    let first = tracer.wait_for("the old process's setns", by(e, "setns"));
    assert_eq!(first["before_inferred"], true, "{first}");
    assert_same_ns("inferred before", &first["before"], &before);
    assert_eq!(changed(&first), ["uts"]);
    assert_eq!(first["after"]["uts"], proc_ns(t)["uts"]);

    let second = tracer.wait_for("its child's setns", by(child, "setns"));
    assert_eq!(second.get("before_inferred"), None, "{second}");
    assert_eq!(second["before"], first["after"]);
    assert_same_ns("child after", &second["after"], &proc_ns(child));
    assert_eq!(changed(&second), ["uts"]);
    early.finish();
    target.finish();
}

/// An unshare by a process that was running before the trace began and has neither exec'd nor
/// called since: the kernel has no `before` for it (the programs learn a task at its birth, its
/// exec or its first call), so the collector fills it in from the /proc snapshot and marks it.
/// Its next call starts from the set the kernel learnt.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn an_unshare_by_a_process_older_than_the_trace_is_marked_and_matches_proc() {
    assert_root();
    let mut early = Helper::spawn(&["pause", "unshare", "uts,ipc", "unshare", "net", "hold"]);
    let e = early.wait_paused();
    let before = proc_ns(e);
    let tracer = Tracer::start(&[]);
    early.resume();
    early.wait_ready();

    let mut calls = tracer.wait_for_n(2, "both unshares", by(e, "unshare"));
    let second = calls.pop().expect("two calls");
    let first = calls.pop().expect("two calls");
    assert_eq!(first["before_inferred"], true, "{first}");
    assert_same_ns("inferred before", &first["before"], &before);
    assert_eq!(changed(&first), ["uts", "ipc"]);
    assert_eq!(second.get("before_inferred"), None, "{second}");
    assert_eq!(second["before"], first["after"]);
    assert_eq!(changed(&second), ["net"]);
    assert_same_ns("after", &second["after"], &proc_ns(e));
    early.finish();
}

/// unshare(CLONE_NEWTIME) by a process older than the trace: its `before` is inferred, and the
/// exec that enters the new time namespace is still reported (the programs arm it from the set
/// they read at the unshare's exit).
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn an_older_process_that_unshares_time_enters_it_at_exec() {
    assert_root();
    let mut early = Helper::spawn(&["pause", "unshare", "time", "exec-self", "hold"]);
    let e = early.wait_paused();
    let tracer = Tracer::start(&[]);
    early.resume();
    early.wait_ready();

    let unshare = tracer.wait_for("unshare", by(e, "unshare"));
    assert_eq!(unshare["before_inferred"], true, "{unshare}");
    assert_eq!(changed(&unshare), ["time_for_children"]);
    let exec = tracer.wait_for("exec", by(e, "exec"));
    assert_eq!(changed(&exec), ["time"]);
    assert_eq!(exec["after"]["time"], unshare["after"]["time_for_children"]);
    assert_same_ns("exec after", &exec["after"], &proc_ns(e));
    early.finish();
}

/// A clone3 with CLONE_NEW* flags that the kernel refuses makes no child: it is reported from
/// the caller's exit with its errno, and the caller's set before and after is what /proc shows.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_refused_clone3_is_reported_with_its_errno_and_no_child() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["try-clone3", "uts,net", "hold"]);
    assert_eq!(helper.line(), "errno EINVAL");
    let h = helper.wait_ready();

    let ev = tracer.wait_for("clone3", by(h, "clone3"));
    assert_eq!(ev["ret"], -22);
    assert_eq!(ev["errno"], "EINVAL");
    assert_eq!(strings(&ev["flag_names"]), ["CLONE_NEWUTS", "CLONE_NEWNET"]);
    assert_eq!(ev["child"], Value::Null, "{ev}");
    assert!(changed(&ev).is_empty());
    assert_eq!(ev["before"], ev["after"]);
    assert_same_ns("after", &ev["after"], &proc_ns(h));
    helper.finish();
}

/// A pidfd enters several types at once: the types come from what changed.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn setns_with_pidfd_enters_uts_ipc_and_net_at_once() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut target = Helper::spawn(&["unshare", "uts,ipc,net", "hold"]);
    let t = target.wait_ready();
    let mut joiner = Helper::spawn(&["setns-pidfd", &t.to_string(), "uts,ipc,net", "hold"]);
    let j = joiner.wait_ready();

    let ev = tracer.wait_for("setns", by(j, "setns"));
    assert_eq!(ev["ret"], 0);
    assert_eq!(changed(&ev), ["uts", "ipc", "net"]);
    assert_eq!(
        strings(&ev["flag_names"]),
        ["CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWNET"]
    );
    assert_same_ns("after", &ev["after"], &proc_ns(j));
    assert_same_ns("before", &ev["before"], &own_ns());
    joiner.finish();
    target.finish();
}

/// clone3 with CLONE_NEW* flags: the parent stays where it is, and the event carries the child's
/// set, which is what /proc shows for the child.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn clone3_with_new_namespaces_reports_the_childs_set() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["clone3", "uts,ipc,net,pid", "hold"]);
    let child = helper.wait_ready();
    let parent = helper.pid();

    let ev = tracer.wait_for("clone3", by(parent, "clone3"));
    assert_eq!(ev["ret"], child);
    assert!(changed(&ev).is_empty(), "the parent does not move: {ev}");
    assert_same_ns("parent after", &ev["after"], &proc_ns(parent));
    assert_eq!(ev["child"]["tid"], child);
    assert_eq!(ev["child"]["ns_tid"], 1);
    assert_eq!(
        strings(&ev["child"]["moved"]),
        ["uts", "ipc", "pid", "pid_for_children", "net"]
    );
    assert_same_ns("child", &ev["child"]["ns"], &proc_ns(child));
    helper.finish();
}

/// A setns the kernel refuses is an event too: errno, and nothing changed.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_failing_setns_is_reported_with_its_errno_and_no_change() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut target = Helper::spawn(&["unshare", "uts", "hold"]);
    let t = target.wait_ready();
    // A uts namespace fd with nstype CLONE_NEWNET: EINVAL.
    let uts = format!("/proc/{t}/ns/uts");
    let mut joiner = Helper::spawn(&["try-setns", &uts, "net", "hold"]);
    assert_eq!(joiner.line(), "errno EINVAL");
    let j = joiner.wait_ready();

    let ev = tracer.wait_for("setns", by(j, "setns"));
    assert_eq!(ev["ret"], -22);
    assert_eq!(ev["errno"], "EINVAL");
    assert!(changed(&ev).is_empty());
    assert_eq!(ev["before"], ev["after"]);
    assert_same_ns("after", &ev["after"], &proc_ns(j));
    joiner.finish();
    target.finish();
}

/// One process makes call after call: each call's `before` is exactly the `after` of the one
/// before it (the kernel side keeps the set between calls instead of reading it again), also
/// across an exec, and the last `after` is what /proc shows.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn consecutive_calls_chain_their_sets_across_an_exec() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let me = std::process::id();
    let (own_uts, own_net) = (format!("/proc/{me}/ns/uts"), format!("/proc/{me}/ns/net"));
    let mut helper = Helper::spawn(&[
        "unshare",
        "uts",
        "setns",
        &own_uts,
        "uts",
        "unshare",
        "uts",
        "unshare",
        "net",
        "exec-self",
        "setns",
        &own_net,
        "net",
        "hold",
    ]);
    let pid = helper.wait_ready();
    let of_helper = |e: &Value| {
        e["pid"].as_u64() == Some(u64::from(pid))
            && (e["call"] == "unshare" || e["call"] == "setns")
    };
    let mut evs = tracer.wait_for_n(5, "five calls", of_helper);
    evs.sort_by_key(|e| e["ts_ns"].as_u64());
    let calls: Vec<_> = evs
        .iter()
        .map(|e| e["call"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(calls, ["unshare", "setns", "unshare", "unshare", "setns"]);
    assert_same_ns("first before", &evs[0]["before"], &own_ns());
    for pair in evs.windows(2) {
        assert_eq!(
            pair[1]["before"], pair[0]["after"],
            "{} then {}",
            pair[0], pair[1]
        );
        assert_eq!(pair[1]["before_id"], pair[0]["after_id"]);
    }
    assert_eq!(changed(&evs[1]), ["uts"]);
    assert_eq!(evs[1]["after"]["uts"], own_ns()["uts"]);
    assert_eq!(changed(&evs[2]), ["uts"]);
    // A new namespace, though it may reuse the freed first one's inode: ids are never reused.
    assert_ne!(evs[2]["after_id"]["uts"], evs[0]["after_id"]["uts"]);
    assert_eq!(changed(&evs[3]), ["net"]);
    assert_eq!(changed(&evs[4]), ["net"]);
    assert_same_ns("last after", &evs[4]["after"], &proc_ns(pid));
    helper.finish();
}

/// vfork(2) is its own syscall on x86_64: its child learns its set at that call's exit, like a
/// fork's or a clone's child, so the child's first call starts from the set the kernel read for
/// it (its parent's), not one the collector infers. The child makes that call while it still
/// runs in its parent's memory, before its exec.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_vfork_child_starts_from_the_set_it_was_born_with() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["vfork-unshare", "uts,ipc", "hold"]);
    let child = helper.wait_ready();
    let parent = helper.pid();
    assert_ne!(child, parent);

    let ev = tracer.wait_for("the vfork child's unshare", by(child, "unshare"));
    assert_eq!(ev["ret"], 0, "{ev}");
    assert_eq!(ev["ppid"], parent, "{ev}");
    assert_eq!(ev.get("before_inferred"), None, "{ev}");
    assert_same_ns("before", &ev["before"], &proc_ns(parent));
    assert_eq!(changed(&ev), ["uts", "ipc"]);
    assert_same_ns("after", &ev["after"], &proc_ns(child));
    helper.finish();
}
