//! Questions asked of a recording (`report --at`, `--since`, `--until`), answered against /proc
//! as it was at known instants.
use std::{process::Command, time::Duration};

use nstrace_tests::{Helper, NsSet, Tracer, assert_root, binary, by, json_objects, proc_ns};
use serde_json::Value;

/// The wall clock now, RFC 3339 with nanoseconds (date(1), as a responder would note it).
fn now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn report(args: &[&str]) -> Vec<Value> {
    let out = Command::new(binary("nstrace"))
        .arg("report")
        .args(args)
        .output()
        .expect("nstrace report");
    assert!(
        out.status.success(),
        "report {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_objects(&out.stdout)
}

/// A process's set in a `--at --pid` answer, as /proc names the slots.
fn set_of(state: &Value, pid: u32) -> NsSet {
    let process = state["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
        .unwrap_or_else(|| panic!("{pid} in {state}"));
    process["namespaces"]
        .as_object()
        .unwrap_or_else(|| panic!("{pid} alive in {state}"))
        .iter()
        .filter(|(slot, _)| !slot.ends_with("_for_children"))
        .map(|(slot, ns)| (slot.clone(), ns["inode"].as_u64().expect("an inode")))
        .collect()
}

/// A recording in which a process unshares uts, pauses (the first instant, /proc read), then
/// unshares net (the second instant): `--at` each instant gives the set /proc showed then,
/// for the process and in the machine's state; `--until` and `--since` split the stream there.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_state_at_an_instant_is_what_proc_showed_then() {
    assert_root();
    let file = std::env::temp_dir().join(format!("nstrace-at-{}.jsonl", std::process::id()));
    let path = file.to_str().unwrap().to_owned();
    let tracer = Tracer::start(&["-o", &path, "--no-summary"]);
    let mut helper = Helper::spawn(&["unshare", "uts", "pause", "unshare", "net", "hold"]);
    let pid = helper.wait_paused();
    tracer.wait_for("the uts unshare", by(pid, "unshare"));
    std::thread::sleep(Duration::from_millis(50));
    let (first, at_first) = (proc_ns(pid), now());
    std::thread::sleep(Duration::from_millis(50));
    helper.resume();
    helper.wait_ready();
    tracer.wait_for("the net unshare", |e| {
        by(pid, "unshare")(e) && e["changed"] == serde_json::json!(["net"])
    });
    std::thread::sleep(Duration::from_millis(50));
    let (second, at_second) = (proc_ns(pid), now());
    assert_ne!(first["net"], second["net"]);
    tracer.stop();

    let pid_arg = pid.to_string();
    for (at, truth) in [(&at_first, &first), (&at_second, &second)] {
        let answer = report(&["--json", "--at", at, "--pid", &pid_arg, &path]);
        assert_eq!(answer.len(), 1, "one state object: {answer:?}");
        assert_eq!(answer[0]["type"], "state");
        let mut set = set_of(&answer[0], pid);
        // /proc's pid_for_children and time_for_children are left out on both sides.
        let mut truth = truth.clone();
        truth.retain(|k, _| !k.ends_with("_for_children"));
        set.retain(|k, _| truth.contains_key(k));
        assert_eq!(set, truth, "--at {at}");
    }
    // The machine's state at the first instant: the helper's uts namespace, with it as a
    // member; its net namespace did not exist yet.
    let state = &report(&["--json", "--at", &at_first, &path])[0];
    let namespaces = state["namespaces"].as_array().expect("namespaces");
    let uts = namespaces
        .iter()
        .find(|n| n["type"] == "uts" && n["inode"].as_u64() == Some(first["uts"]))
        .unwrap_or_else(|| panic!("uts {} alive at the first instant", first["uts"]));
    assert!(
        uts["members"]
            .as_array()
            .unwrap()
            .contains(&Value::from(pid))
    );
    assert_eq!(uts["created_by"]["pid"], pid, "{uts}");
    assert!(
        !namespaces
            .iter()
            .any(|n| n["type"] == "net" && n["inode"].as_u64() == Some(second["net"])),
        "the second namespace is not there yet"
    );
    // A time of day and an offset from the start name instants too (text answers).
    let text = Command::new(binary("nstrace"))
        .args([
            "report",
            "--utc",
            "--at",
            &at_second[11..26],
            "--pid",
            &pid_arg,
            &path,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("STATE AT "), "{text}");
    assert!(
        text.contains(&format!("net                {}", second["net"])),
        "{text}"
    );
    // The window: until the first instant the uts unshare, from it the net one.
    let calls = |args: &[&str]| -> Vec<Value> {
        report(&[args, &["--json", "--no-summary", "--pid", &pid_arg, &path]].concat())
            .into_iter()
            .filter(|e| e["type"] == "transition" && e["pid"] == pid)
            .map(|e| e["changed"].clone())
            .collect()
    };
    assert_eq!(calls(&["--until", &at_first]), [serde_json::json!(["uts"])]);
    assert_eq!(calls(&["--since", &at_first]), [serde_json::json!(["net"])]);
    // A time that cannot be read says what a time is.
    let out = Command::new(binary("nstrace"))
        .args(["report", "--at", "yesterday", &path])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--at \"yesterday\"") && err.contains("RFC 3339"),
        "{err}"
    );
    helper.finish();
    let _ = std::fs::remove_file(&file);
}

#[test]
fn the_queries_of_a_recording_are_refused_live() {
    for args in [["--at", "+1"], ["--since", "+1"], ["--until", "+1"]] {
        let out = Command::new(binary("nstrace")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("read a recording"), "{args:?}: {err}");
    }
    // No namespace is 0: refused before anything is traced.
    let out = Command::new(binary("nstrace"))
        .args(["--ns", "net:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("TYPE:INODE"), "{err}");
}

/// `--ns`: one namespace's life, as it happened: the process that made it, a process that
/// joined it with setns, both leaving as they exit, and when it emptied; by `TYPE:[INODE]` as
/// `ls -l /proc/PID/ns` shows it, and by the kernel's id.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_life_of_one_namespace_is_told_from_its_making_to_its_emptying() {
    assert_root();
    let file = std::env::temp_dir().join(format!("nstrace-ns-{}.jsonl", std::process::id()));
    let path = file.to_str().unwrap().to_owned();
    let tracer = Tracer::start(&["-o", &path, "--no-summary"]);
    let mut maker = Helper::spawn(&["unshare", "net", "hold"]);
    let made_by = maker.wait_ready();
    tracer.wait_for("the unshare", by(made_by, "unshare"));
    let net = proc_ns(made_by)["net"];
    let ns_path = format!("/proc/{made_by}/ns/net");
    let mut joiner = Helper::spawn(&["setns", &ns_path, "net", "hold"]);
    let joined_by = joiner.wait_ready();
    tracer.wait_for("the setns", by(joined_by, "setns"));
    assert_eq!(proc_ns(joined_by)["net"], net);
    joiner.finish();
    maker.finish();
    std::thread::sleep(Duration::from_millis(300));
    tracer.stop();

    let spec = format!("net:[{net}]");
    let lives = report(&["--json", "--ns", &spec, &path]);
    assert_eq!(lives.len(), 1, "{lives:?}");
    let life = &lives[0];
    assert_eq!(life["type"], "namespace");
    assert_eq!(
        (&life["ns_type"], &life["inode"]),
        (&"net".into(), &net.into())
    );
    assert_eq!(life["created_by"]["pid"], made_by, "{life}");
    assert_eq!(life["created_by"]["call"], "unshare");
    let log: Vec<(u64, bool)> = life["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["pid"].as_u64().unwrap(), m["entered"].as_bool().unwrap()))
        .collect();
    let (a, b) = (u64::from(made_by), u64::from(joined_by));
    assert_eq!(
        log,
        [(a, true), (b, true), (b, false), (a, false)],
        "{life}"
    );
    assert!(life["emptied"].is_string(), "{life}");
    assert_eq!(life["members_total"], 2);
    // By the kernel's id alone, the same namespace; as text, its story.
    let id = life["id"]
        .as_u64()
        .expect("an id (Linux 6.18+)")
        .to_string();
    let by_id = report(&["--json", "--ns", &id, &path]);
    assert_eq!(by_id[0]["inode"], life["inode"]);
    let text = Command::new(binary("nstrace"))
        .args(["report", "--ns", &spec, &path])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!("NAMESPACE net:[{net}], id {id}")),
        "{text}"
    );
    assert!(text.contains(&format!("+ {joined_by} ")), "{text}");
    assert!(text.contains("emptied"), "{text}");
    // One it never saw is said so.
    let out = Command::new(binary("nstrace"))
        .args(["report", "--ns", "net:1", &path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no namespace net:1"));
    let _ = std::fs::remove_file(&file);
}

/// Live `--ns`: the stream shows only the calls that touch the namespace, and the end its life
/// instead of the summary. A network namespace of `ip netns add` (its inode from /proc), entered
/// by `ip netns exec` and by nsenter; an unshare in the host's network namespace in the same run
/// is not shown.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn live_ns_follows_one_namespace_and_tells_its_life() {
    assert_root();
    let name = format!("nstrace-live-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("ip (iproute2)");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ip(&["netns", "add", &name]);
    let truth = ip(&["netns", "exec", &name, "readlink", "/proc/self/ns/net"]);
    let inode: u64 = truth
        .strip_prefix("net:[")
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{truth}"));
    let script =
        format!("ip netns exec {name} true; unshare -u true; nsenter --net=/run/netns/{name} true");
    let spec = format!("net:[{inode}]");
    let out = Command::new(binary("nstrace"))
        .args(["run", "--json", "--ns", &spec, "--", "sh", "-c", &script])
        .output()
        .expect("nstrace run");
    ip(&["netns", "delete", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_objects(&out.stdout);
    let calls: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["type"] == "transition")
        .map(|l| (l["comm"].as_str().unwrap(), l["call"].as_str().unwrap()))
        .collect();
    // ip netns exec enters it, then unshares its mount namespace inside it (to mount /sys):
    // both touch it; `unshare -u` in the host's network namespace does not.
    assert_eq!(
        calls,
        [("ip", "setns"), ("ip", "unshare"), ("nsenter", "setns")],
        "{lines:?}"
    );
    for l in lines.iter().filter(|l| l["type"] == "transition") {
        assert_eq!(l["after"]["net"], inode, "{l}");
    }
    // Its life, not the summary: both entries, by those processes.
    let life = lines.last().unwrap();
    assert_eq!(life["type"], "namespace", "{lines:?}");
    assert_eq!(life["inode"], inode);
    let entered: Vec<&str> = life["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["entered"] == true)
        .map(|m| m["comm"].as_str().unwrap())
        .collect();
    assert_eq!(entered, ["ip", "nsenter"], "{life}");
    assert!(!lines.iter().any(|l| l["type"] == "summary"));
}
