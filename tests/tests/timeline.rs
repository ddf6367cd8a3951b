//! `nstrace run` on real tools: the timeline at a checkpoint matches /proc, the summary says who
//! made which namespace with which call, and the record file replays to the same summary.
use std::process::Command;

use nstrace_tests::{Run, Value, assert_root, binary, busybox_bundle, created_by};

fn nshelper() -> String {
    binary("nshelper").display().to_string()
}

/// The replayed summary is the live one.
fn assert_replays_the_same(run: &Run, live: &Value) {
    let replayed = run.report_summary();
    assert_eq!(&replayed, live, "record + report differ from live");
}

fn log_causes(ns: &Value) -> Vec<String> {
    ns["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|m| {
            format!(
                "{}{} {}",
                if m["entered"] == true { '+' } else { '-' },
                m["comm"].as_str().unwrap_or_default(),
                m["cause"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn unshare_pid_fork_mount_proc_makes_its_child_pid_1_of_a_new_pid_namespace() {
    assert_root();
    let helper = nshelper();
    let mut run = Run::start(&["unshare", "-p", "-f", "--mount-proc", &helper, "hold"]);
    // With its own /proc mounted, the helper sees itself as pid 1.
    assert_eq!(run.wait_ready(), 1);
    let compared = run.checkpoint();
    assert!(
        compared >= 2,
        "unshare and its child are followed and alive: {compared}"
    );
    let live = {
        let (status, transitions, summary) = run.finish();
        assert!(status.success(), "{status}");
        let fork = transitions
            .iter()
            .find(|t| t["call"] == "fork")
            .expect("the fork into the new pid namespace");
        assert_eq!(fork["child"]["ns_tid"], 1);
        assert_eq!(fork["comm"], "unshare");
        summary
    };
    let pid_ns = created_by(&live, "pid", "unshare");
    assert_eq!(pid_ns.len(), 1, "{live:#}");
    assert_eq!(pid_ns[0]["created_by"]["comm"], "unshare");
    assert_eq!(
        pid_ns[0]["parent"]["host"], true,
        "made inside the host's pid namespace"
    );
    assert!(
        pid_ns[0]["emptied"].is_string(),
        "emptied when the helper exited"
    );
    assert_eq!(created_by(&live, "mnt", "unshare").len(), 1);
    assert_eq!(live["findings"], serde_json::json!([]), "nothing to flag");
    assert_replays_the_same(&run, &live);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn ip_netns_add_makes_a_network_namespace_that_ip_netns_exec_enters() {
    assert_root();
    let name = format!("nstrace-tl-{}", std::process::id());
    let script = format!(
        "ip netns add {name} && exec ip netns exec {name} {} hold",
        nshelper()
    );
    let mut run = Run::start(&["sh", "-c", &script]);
    let held = run.wait_ready();
    assert!(run.checkpoint() >= 1);
    let (status, _, live) = run.finish();
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    assert!(status.success());
    let nets = created_by(&live, "net", "unshare");
    assert_eq!(nets.len(), 1, "{live:#}");
    let log = log_causes(nets[0]);
    assert_eq!(log[0], "+ip unshare(CLONE_NEWNET)", "{log:?}");
    assert!(
        log.iter().any(|l| l.starts_with("-ip setns(")),
        "ip goes home: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("+ip setns(") && l.ends_with("CLONE_NEWNET)")),
        "ip netns exec enters it: {log:?}"
    );
    let processes = live["processes"].as_array().unwrap();
    assert!(
        processes.iter().any(|p| p["pid"] == held),
        "the held process moved: {live:#}"
    );
    assert_eq!(live["findings"], serde_json::json!([]), "nothing to flag");
    assert_replays_the_same(&run, &live);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn bwrap_unshare_all_creates_every_namespace_with_one_clone() {
    assert_root();
    let helper = nshelper();
    // Recorded in the binary encoding: its checkpoint and replay read that file.
    let mut run = Run::start_binary(&[
        "bwrap",
        "--unshare-all",
        "--ro-bind",
        "/",
        "/",
        &helper,
        "hold",
    ]);
    run.wait_ready();
    assert!(run.checkpoint() >= 2, "bwrap and its sandboxed child");
    let (status, transitions, live) = run.finish();
    assert!(status.success());
    let clone = transitions
        .iter()
        .find(|t| t["comm"] == "bwrap" && (t["call"] == "clone" || t["call"] == "clone3"))
        .expect("bwrap's clone");
    let moved: Vec<&str> = clone["child"]["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for kind in ["mnt", "uts", "ipc", "pid", "net", "user", "cgroup"] {
        assert!(moved.contains(&kind), "{kind} not in {moved:?}");
    }
    let call = clone["call"].as_str().unwrap();
    for ty in ["mnt", "uts", "ipc", "pid", "net", "user", "cgroup"] {
        assert_eq!(created_by(&live, ty, call).len(), 1, "{ty}: {live:#}");
    }
    assert_eq!(created_by(&live, "user", call)[0]["parent"]["host"], true);
    assert_eq!(live["findings"], serde_json::json!([]), "nothing to flag");
    assert_replays_the_same(&run, &live);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_runc_container_start_shows_runc_making_its_namespaces_and_its_init() {
    assert_root();
    let dir = std::env::temp_dir().join(format!("nstrace-runc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    busybox_bundle(
        &dir,
        &["sh", "-c", "echo ready $$; cat > /dev/null"],
        |_| {},
    );
    let id = format!("nstrace-test-{}", std::process::id());
    let bundle = dir.display().to_string();
    let mut run = Run::start(&["runc", "run", "-b", &bundle, &id]);
    assert_eq!(
        run.wait_ready(),
        1,
        "the container's init is pid 1 in its pid namespace"
    );
    assert!(run.checkpoint() >= 2, "runc and the container's init");
    let (status, _, live) = run.finish();
    let _ = Command::new("runc").args(["delete", "-f", &id]).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status}");
    for ty in ["mnt", "uts", "ipc", "pid", "net"] {
        let made = created_by(&live, ty, "unshare");
        assert_eq!(made.len(), 1, "{ty}: {live:#}");
        assert_eq!(made[0]["created_by"]["comm"], "runc:[1:CHILD]");
        assert!(made[0]["emptied"].is_string(), "{ty} emptied at the end");
    }
    let pid_ns = created_by(&live, "pid", "unshare")[0];
    let log = log_causes(pid_ns);
    assert!(
        log[0].starts_with("+runc:[1:CHILD] born of"),
        "the container's init is born into the pid namespace first: {log:?}"
    );
    assert_eq!(live["findings"], serde_json::json!([]), "nothing to flag");
    assert_replays_the_same(&run, &live);
}
