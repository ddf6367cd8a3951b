//! Docker and Podman end to end: the tutorial's own commands (`--pid=host`, `--ipc=host`,
//! `--pid=container:X`, `--ipc=container:X`, and the rest of the family), `exec`, a host
//! `nsenter`, a container older than the trace, podman's `--uidmap`; and Kubernetes names from
//! a runc bundle annotated as containerd's CRI plugin writes it.
//!
//! Each container is checked against what the engine says of it (`inspect`: its name, image
//! and first process) and against /proc (each of its namespaces, whose it is); the findings must
//! be exactly the expected ones.
use std::collections::BTreeMap;

use nstrace_tests::{
    KINDS, Run, Tracer, Value, assert_root, binary, busybox_bundle,
    engines::{Engine, Running},
    proc_ns, proc_ns_one,
};

/// The kinds a container's summary names, in /proc order.
const OWN: [&str; 8] = ["mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"];

/// The host's namespace of a kind: the test's own (pid 1 may be a process whose namespaces
/// cannot be read, in a sandbox).
fn host(kind: &str) -> Option<u64> {
    proc_ns_one(std::process::id(), kind)
}

/// The summary's entry for a container.
fn entry<'a>(summary: &'a Value, c: &Running) -> &'a Value {
    summary["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|e| e["id"] == c.id.as_str())
        .unwrap_or_else(|| panic!("no entry for {} in {:#}", c.name, summary["containers"]))
}

/// Whose each of `c`'s namespaces is, by /proc: the host's, one of `others`', or
/// its own.
fn whose_by_proc(c: &Running, others: &[&Running]) -> BTreeMap<String, String> {
    OWN.iter()
        .map(|kind| {
            let inode = proc_ns_one(c.pid, kind);
            let whose = if inode == host(kind) {
                "host".to_owned()
            } else if let Some(other) = others
                .iter()
                .find(|o| o.id != c.id && proc_ns_one(o.pid, kind) == inode)
            {
                other.label()
            } else {
                "own".to_owned()
            };
            (kind.to_string(), whose)
        })
        .collect()
}

/// Checks a container's entry against the engine and /proc: its names, its first process, each
/// namespace's inode and whose it is.
fn check_entry(summary: &Value, c: &Running, others: &[&Running]) {
    let e = entry(summary, c);
    let inspect = c.engine.inspect(&c.id);
    assert_eq!(e["name"], c.label().as_str(), "{e:#}");
    assert_eq!(e["runtime"], c.engine.runtime);
    assert_eq!(e["names"]["name"], c.name.as_str(), "{e:#}");
    let image = match c.engine.runtime {
        "docker" => &inspect["Config"]["Image"],
        _ => &inspect["ImageName"],
    };
    assert_eq!(&e["names"]["image"], image, "{e:#}");
    let pids: Vec<u64> = e["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert!(
        pids.contains(&u64::from(c.pid)),
        "{}'s first process {} is not among {pids:?}",
        c.name,
        c.pid
    );
    for kind in OWN {
        assert_eq!(
            e["set"][kind].as_u64(),
            proc_ns_one(c.pid, kind),
            "{} {kind}: {e:#}",
            c.name
        );
    }
    let whose: BTreeMap<String, String> =
        serde_json::from_value(e["namespaces"].clone()).expect("namespaces");
    assert_eq!(whose, whose_by_proc(c, others), "{}", c.name);
}

/// The findings about these containers, as (id, container), sorted.
fn findings_of(summary: &Value, ours: &[&Running]) -> Vec<(String, String)> {
    let labels: Vec<String> = ours.iter().map(|c| c.label()).collect();
    let mut found: Vec<(String, String)> = summary["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| {
            let container = f["container"].as_str()?;
            labels
                .contains(&container.to_owned())
                .then(|| (f["id"].as_str().unwrap().to_owned(), container.to_owned()))
        })
        .collect();
    found.sort();
    found
}

fn expected(pairs: &[(&str, &Running)]) -> Vec<(String, String)> {
    let mut want: Vec<(String, String)> = pairs
        .iter()
        .map(|(id, c)| ((*id).to_owned(), c.label()))
        .collect();
    want.sort();
    want
}

/// The summary, once nstrace has stopped.
fn summary_of(events: &[Value]) -> Value {
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "summary")
        .cloned()
        .expect("a summary")
}

/// The tutorial's commands and their family on one engine, under one trace.
fn the_seeds_commands(engine: &Engine) {
    assert_root();
    engine.image();
    let tracer = Tracer::start(&[]);
    let sleep = ["sleep", "60"];
    let compose = [
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=web",
    ];
    let plain = engine.start("plain", &compose, &sleep);
    let hostpid = engine.start("hostpid", &["--pid=host"], &sleep);
    let hostipc = engine.start("hostipc", &["--ipc=host"], &sleep);
    let hostnet = engine.start("hostnet", &["--net=host"], &sleep);
    let hostuts = engine.start("hostuts", &["--uts=host"], &sleep);
    let donor = engine.start("donor", &["--ipc=shareable"], &sleep);
    let pid_of = format!("--pid=container:{}", donor.id);
    let ipc_of = format!("--ipc=container:{}", donor.id);
    let net_of = format!("--net=container:{}", donor.id);
    let pidjoin = engine.start("pidjoin", &[&pid_of], &sleep);
    let ipcjoin = engine.start("ipcjoin", &[&ipc_of], &sleep);
    let netjoin = engine.start("netjoin", &[&net_of], &sleep);
    // Work in a container that is no finding: an exec, and a host nsenter into all of it.
    plain.exec(&["sleep", "30"]);
    let pid = plain.pid.to_string();
    let nsenter = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-a", "sleep", "1"])
        .spawn()
        .expect("nsenter");
    let nsenter_pid = nsenter.id();
    let by_nsenter = |e: &Value| e["pid"] == nsenter_pid && e["call"] == "setns";
    tracer.wait_for_n(5, "nsenter's setns", by_nsenter);
    let status = nsenter.wait_with_output().expect("nsenter").status;
    assert!(status.success());
    // A partial one: its mounts and processes, the host's network, hostname and IPC.
    let partial = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "-p", "sleep", "1"])
        .status()
        .expect("nsenter");
    assert!(partial.success());
    let entered = tracer.events(by_nsenter);
    let (events, stderr) = tracer.stop_with_output();
    let summary = summary_of(&events);

    let all = [
        &plain, &hostpid, &hostipc, &hostnet, &hostuts, &donor, &pidjoin, &ipcjoin, &netjoin,
    ];
    for c in all {
        check_entry(&summary, c, &[&donor]);
    }
    assert_eq!(
        findings_of(&summary, &all),
        expected(&[
            ("NS-SHARES-HOST", &hostpid),
            ("NS-SHARES-HOST", &hostipc),
            ("NS-SHARES-HOST", &hostnet),
            ("NS-SHARES-HOST", &hostuts),
            ("NS-JOINS-CONTAINER", &pidjoin),
            ("NS-JOINS-CONTAINER", &ipcjoin),
            ("NS-JOINS-CONTAINER", &netjoin),
        ]),
        "nstrace stderr:\n{stderr}"
    );
    let host_pid = summary["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["container"] == hostpid.label().as_str())
        .unwrap();
    assert_eq!(
        host_pid["severity"], "high",
        "the host's processes: {host_pid}"
    );
    // Nothing about the nsenter or anything else of ours outside a container.
    let ours_elsewhere: Vec<&Value> = summary["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["pid"] == nsenter_pid)
        .collect();
    assert_eq!(ours_elsewhere, Vec::<&Value>::new());
    // The partial nsenter is one, the whole one none: one NS-PARTIAL-JOIN, naming the
    // container and the host's namespaces it kept.
    let partial: Vec<&Value> = summary["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["id"] == "NS-PARTIAL-JOIN"
                && f["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&plain.label()))
        })
        .collect();
    assert_eq!(partial.len(), 1, "{partial:?}");
    let message = partial[0]["message"].as_str().unwrap();
    assert!(
        message.contains("entered the mnt, pid namespaces")
            && message.contains("host's uts, ipc, net"),
        "{message}"
    );
    assert_eq!(partial[0]["severity"], "low");
    // The exec'd process is the container's.
    let comms: Vec<&str> = entry(&summary, &plain)["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] != plain.pid)
        .map(|p| p["comm"].as_str().unwrap())
        .collect();
    assert!(comms.contains(&"sleep"), "the exec'd sleep: {comms:?}");
    // Its compose labels, as the engine keeps them.
    let names = &entry(&summary, &plain)["names"];
    assert_eq!(names["compose_project"], "shop", "{names}");
    assert_eq!(names["compose_service"], "web", "{names}");
    // The nsenter ended in the container's namespaces, as /proc has them.
    let last = entered.last().unwrap();
    let mut want = proc_ns(plain.pid);
    // Its own pid namespace stays the host's; its children go into the container's.
    want.insert("pid".into(), host("pid").unwrap());
    want.insert(
        "pid_for_children".into(),
        proc_ns_one(plain.pid, "pid").unwrap(),
    );
    want.retain(|k, _| !k.starts_with("time"));
    let after: BTreeMap<String, u64> = want
        .keys()
        .map(|k| (k.clone(), last["after"][k].as_u64().unwrap()))
        .collect();
    assert_eq!(after, want, "nsenter's last setns: {last}");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn docker_the_seeds_commands_are_attributed_named_and_flagged_exactly() {
    the_seeds_commands(&Engine::docker());
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn podman_the_seeds_commands_are_attributed_named_and_flagged_exactly() {
    the_seeds_commands(&Engine::podman());
}

/// A container that was running before the trace began is known by its names from the start,
/// and its sharing is a finding then.
fn started_before(engine: &Engine) {
    assert_root();
    let old = engine.start("old", &["--pid=host"], &["sleep", "60"]);
    let tracer = Tracer::start(&[]);
    old.exec(&["sleep", "1"]);
    tracer.wait_for("the exec in the old container", |e| {
        e["type"] == "finding" || e["type"] == "transition"
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (events, _) = tracer.stop_with_output();
    let summary = summary_of(&events);
    check_entry(&summary, &old, &[]);
    assert_eq!(
        findings_of(&summary, &[&old]),
        expected(&[("NS-SHARES-HOST", &old)])
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn docker_a_container_started_before_nstrace_is_named_and_flagged() {
    started_before(&Engine::docker());
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn podman_a_container_started_before_nstrace_is_named_and_flagged() {
    started_before(&Engine::podman());
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn podman_uidmap_is_its_own_user_namespace_and_no_finding() {
    assert_root();
    let engine = Engine::podman();
    engine.image();
    let tracer = Tracer::start(&[]);
    let mapped = engine.start(
        "uidmap",
        &["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"],
        &["sleep", "60"],
    );
    let uid_map = std::fs::read_to_string(format!("/proc/{}/uid_map", mapped.pid)).unwrap();
    assert!(
        uid_map.split_whitespace().eq(["0", "100000", "65536"]),
        "{uid_map}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (events, _) = tracer.stop_with_output();
    let summary = summary_of(&events);
    check_entry(&summary, &mapped, &[]);
    assert_eq!(entry(&summary, &mapped)["namespaces"]["user"], "own");
    assert_eq!(findings_of(&summary, &[&mapped]), Vec::new());
    // Nor any root-mapping finding without a container: root made it.
    let rootmaps: Vec<&Value> = summary["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "NS-USERNS-ROOTMAP")
        .collect();
    assert_eq!(rootmaps, Vec::<&Value>::new());
}

/// `--container NAME` shows one container's making and what came into it, nothing of another.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn docker_container_filter_shows_one_container_by_name_live_and_replayed() {
    assert_root();
    let engine = Engine::docker();
    engine.image();
    let file = std::env::temp_dir().join(format!("nstrace-filter-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let name = format!("nstrace-shown-{}", std::process::id());
    let tracer = Tracer::start(&["--container", &name, "-o", &file.display().to_string()]);
    let shown = engine.start("shown", &[], &["sleep", "60"]);
    assert_eq!(shown.name, name);
    let other = engine.start("other", &[], &["sleep", "60"]);
    shown.exec(&["sleep", "1"]);
    let made = tracer.wait_for("the container's making", |e| {
        e["type"] == "transition" && e["call"] == "unshare"
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (events, _) = tracer.stop_with_output();
    let inside = proc_ns(shown.pid);
    // Every transition shown entered one of the container's namespaces.
    let transitions: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "transition")
        .collect();
    assert!(
        transitions.len() >= 3,
        "its making and the exec: {transitions:#?}"
    );
    for t in &transitions {
        let ours = KINDS.iter().any(|k| {
            let after = t["after"][k].as_u64();
            let child = t["child"]["ns"][k].as_u64();
            [after, child]
                .into_iter()
                .flatten()
                .any(|i| i != host(k).unwrap_or(0) && Some(&i) == inside.get(*k))
        });
        assert!(ours, "not the container's: {t}");
    }
    // The runtime made its mounts, hostname, IPC, network and its children's pid namespace.
    for (kind, proc_kind) in [
        ("mnt", "mnt"),
        ("uts", "uts"),
        ("ipc", "ipc"),
        ("net", "net"),
        ("pid_for_children", "pid"),
    ] {
        assert_eq!(
            made["after"][kind].as_u64(),
            inside.get(proc_kind).copied(),
            "{kind}: {made}"
        );
    }
    let summary = summary_of(&events);
    let names: Vec<&str> = summary["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["names"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, [name.as_str()]);
    // The record has everything; its replay, filtered by id, shows the same transitions.
    let out = std::process::Command::new(binary("nstrace"))
        .args(["report", "--json", "--container", &shown.id[..12]])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""type":"transition""#))
        .count();
    assert_eq!(replayed, transitions.len());
    let unfiltered = std::process::Command::new(binary("nstrace"))
        .args(["report", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&unfiltered.stdout);
    assert!(
        all.contains(&other.id[..12]),
        "the record keeps the other one"
    );
    let _ = std::fs::remove_file(&file);
}

/// A runc container whose bundle carries the annotations containerd's CRI plugin writes, in a
/// Kubernetes pod's cgroup: named by its pod, the pod's namespace and its container name.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn kubernetes_names_come_from_the_cri_annotations_of_the_bundle() {
    assert_root();
    let id = format!("{:0>64x}", u64::from(std::process::id()) * 0x9e37_79b9);
    let uid = "0d8c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    let dir = std::env::temp_dir().join(format!("nstrace-k8s-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    busybox_bundle(&dir, &["sh", "-c", "sleep 0.5"], |config| {
        config["linux"]["cgroupsPath"] = format!("/kubepods/besteffort/pod{uid}/{id}").into();
        config["annotations"] = serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "web",
            "io.kubernetes.cri.image-name": "docker.io/library/busybox:1.36",
            "io.kubernetes.cri.sandbox-id": "f".repeat(64),
            "io.kubernetes.cri.sandbox-name": "shop-7d9f",
            "io.kubernetes.cri.sandbox-namespace": "prod",
        });
    });
    // Followed live by its pod's name: runc's making of it is all of what `run` sees.
    let mut run = Run::start_with_options(
        &["--container", "prod/shop-7d9f/web"],
        &["runc", "run", "-b", &dir.display().to_string(), &id],
    );
    let (status, transitions, summary) = run.finish();
    let _ = std::process::Command::new("runc")
        .args(["delete", "-f", &id])
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{}", run.stderr());
    let containers = summary["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    let c = &containers[0];
    assert_eq!(c["runtime"], "containerd", "a Kubernetes pod's cgroup: {c}");
    assert_eq!(c["id"], id.as_str());
    assert_eq!(
        c["name"],
        format!("prod/shop-7d9f/web (containerd:{})", &id[..12]).as_str()
    );
    assert_eq!(c["names"]["pod"], "shop-7d9f");
    assert_eq!(c["names"]["pod_namespace"], "prod");
    assert_eq!(c["names"]["name"], "web");
    assert_eq!(c["names"]["image"], "docker.io/library/busybox:1.36");
    // The replay names it the same, and `--container` finds it by its pod.
    let report = run.report_summary();
    assert_eq!(report["containers"][0]["name"], c["name"]);
    let out = std::process::Command::new(binary("nstrace"))
        .args(["report", "--json", "--container", "prod/shop-7d9f/web"])
        .arg(&run.file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let count = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(r#""type":"transition""#))
            .count()
    };
    let all = std::process::Command::new(binary("nstrace"))
        .args(["report", "--json"])
        .arg(&run.file)
        .output()
        .unwrap();
    assert!(
        count(&all) >= 2,
        "runc's unshare and its fork into the pid namespace"
    );
    assert_eq!(
        transitions.len(),
        count(&all),
        "live: runc's making of it, all of it"
    );
    assert_eq!(count(&out), count(&all), "replayed, the same");
    let elsewhere = std::process::Command::new(binary("nstrace"))
        .args(["report", "--json", "--container", "prod/shop-7d9f/other"])
        .arg(&run.file)
        .output()
        .unwrap();
    assert_eq!(
        count(&elsewhere),
        0,
        "another container of the pod: nothing"
    );
}
