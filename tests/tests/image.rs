//! The image `cargo xtask image` builds, run with Docker as deploy/kubernetes/daemonset.yaml runs
//! it: the host's pid namespace, a read-only root, the same host paths mounted read-only at the
//! same places, `--json --no-summary`, NSTRACE_NODE set, and only the DaemonSet's capabilities.
//!
//! Docker 20.10 rejects `--cap-add BPF` and `--cap-add PERFMON` ("unknown capability"), so
//! SYS_ADMIN stands in for the two here; the rest are the DaemonSet's own (SYS_PTRACE, IPC_LOCK,
//! SYS_CHROOT). The kernel, the tracepoints and the runtimes' state are the real ones: what the
//! containerised nstrace reports is checked against /proc and against what Docker says.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use nstrace_tests::{
    EVENT_TIMEOUT, Value, assert_root, assert_same_ns, by, changed,
    engines::{Engine, Running},
    json_lines, proc_ns,
};

/// Debian's docker CLI (another one may come first in PATH and speak another API).
const DOCKER: &str = "/usr/bin/docker";

/// The DaemonSet's capabilities as Docker 20.10 can give them: SYS_ADMIN stands in for BPF and
/// PERFMON, which it does not know.
const CAPS: [&str; 4] = ["SYS_ADMIN", "SYS_PTRACE", "IPC_LOCK", "SYS_CHROOT"];

/// The DaemonSet's host paths (the kernel's BTF and tracefs), and Docker's state for containers'
/// names where the DaemonSet has containerd's and cri-o's: each read-only at its host path.
const MOUNTS: [&str; 5] = [
    "/sys/kernel/btf",
    "/sys/kernel/tracing",
    "/var/lib/docker/containers",
    "/run/docker/runtime-runc",
    "/run/docker/containerd/daemon/io.containerd.runtime.v2.task",
];

/// The DaemonSet's arguments (deploy/kubernetes/daemonset.yaml).
const DAEMONSET_ARGS: [&str; 4] = ["--json", "--no-summary", "--metrics", "0.0.0.0:9464"];

/// How long a pod that cannot start may take to say so and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The image's tag: the workspace version, as `cargo xtask image` tags it.
fn image(engine: &Engine) -> String {
    let image = format!("nstrace:{}", env!("CARGO_PKG_VERSION"));
    let present = engine
        .command()
        .args(["image", "inspect", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        present,
        "{} has no image {image}: build it with `cargo xtask image` (`cargo xtask test` \
         builds it before the tests)",
        engine.runtime
    );
    image
}

/// `docker OPTIONS...`, which must succeed: its standard output, trimmed.
fn docker(args: &[&str]) -> String {
    let out = Command::new(DOCKER)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{DOCKER} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{DOCKER} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The nstrace container, as the DaemonSet's pod runs it; removed when dropped.
struct Pod {
    engine: Engine,
    id: String,
    logs: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Pod {
    /// The DaemonSet's pod, with all its capabilities and mounts, once it is tracing.
    fn start(what: &str) -> Pod {
        let pod = Pod::run(what, &CAPS, &MOUNTS, &[]);
        pod.wait_tracing();
        pod
    }

    /// `docker run -d` of the image as the DaemonSet runs it, with only `caps` and `mounts`, and
    /// `extra` Docker options.
    fn run(what: &str, caps: &[&str], mounts: &[&str], extra: &[&str]) -> Pod {
        Pod::run_on(Engine::docker(), what, caps, mounts, extra)
    }

    /// As [`Pod::run`], with `engine`.
    fn run_on(engine: Engine, what: &str, caps: &[&str], mounts: &[&str], extra: &[&str]) -> Pod {
        assert_root();
        let image = image(&engine);
        let name = format!("nstrace-image-{what}-{}", std::process::id());
        let _ = engine
            .command()
            .args(["rm", "-f", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--pid=host", "--read-only"]
            .map(str::to_owned)
            .into();
        args.extend(["--cap-drop".into(), "ALL".into()]);
        for cap in caps {
            args.extend(["--cap-add".into(), (*cap).to_owned()]);
        }
        for path in mounts {
            args.extend(["-v".into(), format!("{path}:{path}:ro")]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(["-e".into(), "NSTRACE_NODE=testnode".into(), image]);
        // The DaemonSet's arguments.
        args.extend(DAEMONSET_ARGS.map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = engine.run(&args);
        // Its output, as the node's log collector would read it: stdout JSON, stderr text.
        let mut logs = engine
            .command()
            .args(["logs", "--follow", &id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker logs");
        let events = json_lines(logs.stdout.take().expect("stdout"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = logs.stderr.take().expect("stderr");
        {
            let text = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut text = text.lock().expect("lock");
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        Pod {
            engine,
            id,
            logs,
            events,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    fn running(&self) -> bool {
        self.engine
            .run(&["inspect", "--format", "{{.State.Running}}", &self.id])
            == "true"
    }

    /// Waits until nstrace says it is tracing (its programs attached).
    fn wait_tracing(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.stderr().contains("nstrace: tracing") {
            if !self.running() || Instant::now() > deadline {
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "the containerised nstrace did not start (running: {}); its stderr:\n{}",
                    self.running(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the container exits; its exit code and nstrace's stderr.
    fn wait_exit(&self) -> (i64, String) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while self.running() {
            assert!(
                Instant::now() < deadline,
                "still running after {EXIT_TIMEOUT:?}; its stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(100));
        }
        let code = self
            .engine
            .run(&["inspect", "--format", "{{.State.ExitCode}}", &self.id]);
        // Let the log reader see the end.
        thread::sleep(Duration::from_millis(200));
        (code.parse().expect("an exit code"), self.stderr())
    }

    fn events(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect()
    }

    /// Waits for an event that `pred` accepts.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(found) = self.events(&pred).into_iter().next() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the containerised nstrace's stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self
            .engine
            .command()
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.logs.kill();
        let _ = self.logs.wait();
    }
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_host_unshare_is_reported_with_the_sets_proc_shows() {
    let pod = Pod::start("unshare");
    let before = proc_ns(std::process::id());
    // Kept alive, so that its namespaces can be read after the event.
    let unshared = Reaped(
        Command::new("unshare")
            .args(["-u", "-n", "sleep", "30"])
            .spawn()
            .expect("unshare"),
    );
    let pid = unshared.0.id();
    let event = pod.wait_for("the host's unshare", by(pid, "unshare"));
    assert_eq!(changed(&event), ["uts", "net"], "{event}");
    assert_same_ns("before (the test's own)", &event["before"], &before);
    assert_same_ns("after", &event["after"], &proc_ns(pid));
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_docker_container_is_made_in_the_namespaces_proc_shows() {
    let pod = Pod::start("container");
    let engine = Engine::docker();
    engine.image();
    let c: Running = engine.start("made", &[], &["sleep", "60"]);
    let inside = proc_ns(c.pid);
    // The runtime's unshare made its mounts, hostname, IPC, network and its children's pid
    // namespace...
    let made = pod.wait_for("the runtime's unshare", |e| {
        e["type"] == "transition"
            && e["call"] == "unshare"
            && e["after"]["net"].as_u64() == inside.get("net").copied()
    });
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
    // ...and the fork into it is the container's first process, in every namespace /proc shows.
    let first = pod.wait_for("the container's first process", |e| {
        e["type"] == "transition" && e["child"]["tid"].as_u64() == Some(u64::from(c.pid))
    });
    assert_same_ns(
        "the container's first process",
        &first["child"]["ns"],
        &inside,
    );
    // The runtime's lines may come before the container is known (a process's cgroup is read
    // after its exec, and runc moves its init into the container's cgroup around then): they
    // name it or none, never another. What runs in it is attributed: an unshare that Docker's
    // profile refuses, from a `docker exec`, names the container as its engine calls it (from
    // Docker's state, mounted read-only). The shell lives a moment before its child tries.
    for line in [&made, &first] {
        assert!(
            line.get("container")
                .is_none_or(|name| name == c.label().as_str()),
            "{line}"
        );
    }
    let refused = Command::new(DOCKER)
        .args(["exec", &c.id, "sh", "-c", "sleep 1; unshare -u true"])
        .output()
        .expect("docker exec");
    assert!(
        !refused.status.success(),
        "Docker's default profile refuses unshare"
    );
    let inside_line = pod.wait_for("the refused unshare in the container", |e| {
        e["type"] == "transition"
            && e["call"] == "unshare"
            && e["errno"] == "EPERM"
            && e["comm"] == "unshare"
    });
    assert_eq!(
        inside_line["container"],
        c.label().as_str(),
        "{inside_line}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn no_finding_is_reported_against_nstraces_own_container() {
    let pod = Pod::start("self");
    let engine = Engine::docker();
    engine.image();
    // Findings work from inside the container, names included (Docker's state, mounted): a
    // container that shares the host's pid namespace is one.
    let hostpid = engine.start("hostpid", &["--pid=host"], &["sleep", "60"]);
    pod.wait_for("the other --pid=host container's finding", |e| {
        e["type"] == "finding"
            && e["id"] == "NS-SHARES-HOST"
            && e["container"] == hostpid.label().as_str()
    });
    // Work in nstrace's own container (it has only /nstrace), then time for any finding.
    docker(&["exec", &pod.id, "/nstrace", "--version"]);
    thread::sleep(Duration::from_secs(1));
    let own = &pod.id[..12];
    let about_itself = pod.events(|e| {
        e["type"] == "finding" && e["container"].as_str().is_some_and(|c| c.contains(own))
    });
    assert_eq!(
        about_itself,
        Vec::<Value>::new(),
        "nstrace's own container ({own}) is no finding: it shares the host's pid namespace by \
         design (hostPID)"
    );
}

/// Every capability but `missing`.
fn caps_without(missing: &str) -> Vec<&'static str> {
    CAPS.into_iter().filter(|c| *c != missing).collect()
}

/// Runs the pod with `caps`, `mounts` and `extra` options; it must exit non-zero, and its
/// stderr name `what`.
fn exits_naming(what_missing: &str, caps: &[&str], mounts: &[&str], extra: &[&str], named: &str) {
    let pod = Pod::run(what_missing, caps, mounts, extra);
    let (code, stderr) = pod.wait_exit();
    assert_ne!(
        code, 0,
        "without {what_missing} it exited 0; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(named),
        "without {what_missing}, nstrace's message should name {named}; it said:\n{stderr}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_ipc_lock_it_exits_and_names_ipc_lock() {
    exits_naming(
        "ipc-lock",
        &caps_without("IPC_LOCK"),
        &MOUNTS,
        &[],
        "IPC_LOCK",
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_sys_ptrace_it_names_sys_ptrace() {
    // Without SYS_PTRACE other processes' /proc/PID/ns cannot be read: nstrace may run on (it
    // learns namespaces from the kernel's records), but it must say what it cannot see.
    let pod = Pod::run("ptrace", &caps_without("SYS_PTRACE"), &MOUNTS, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pod.stderr().contains("SYS_PTRACE") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        pod.stderr().contains("SYS_PTRACE"),
        "without SYS_PTRACE, nstrace should say so (within 5 s); it said:\n{}",
        pod.stderr()
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn on_a_node_without_btf_it_exits_and_names_btf() {
    // The container's own sysfs shows the kernel's BTF whether it is mounted or not: an empty
    // directory over it is a kernel without BTF.
    let mounts: Vec<&str> = MOUNTS
        .into_iter()
        .filter(|m| *m != "/sys/kernel/btf")
        .collect();
    exits_naming(
        "btf",
        &CAPS,
        &mounts,
        &["--tmpfs", "/sys/kernel/btf:ro"],
        "BTF",
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_the_tracefs_mount_it_exits_and_names_tracefs() {
    // As in the DaemonSet, without SYS_ADMIN: nstrace cannot mount tracefs itself.
    let mounts: Vec<&str> = MOUNTS
        .into_iter()
        .filter(|m| *m != "/sys/kernel/tracing")
        .collect();
    exits_naming(
        "tracefs",
        &caps_without("SYS_ADMIN"),
        &mounts,
        &[],
        "tracefs",
    );
}

/// One HTTP GET to the pod's address, as the kubelet's probes and Prometheus make it: (status
/// line, body).
fn get(ip: &str, path: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s =
        std::net::TcpStream::connect((ip, 9464)).unwrap_or_else(|e| panic!("{ip}:9464: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {ip}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The probes and the metrics answer on the pod's own address, and every object of the stream
/// names the node (from NSTRACE_NODE, as the downward API sets it) and the host's boot.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_probes_and_metrics_answer_and_the_stream_names_the_node() {
    let pod = Pod::start("probes");
    let ip = docker(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        &pod.id,
    ]);
    assert!(!ip.is_empty(), "the pod has an address of its own");
    for path in ["/readyz", "/healthz"] {
        let (status, _) = get(&ip, path);
        assert!(status.contains(" 200 "), "{path}: {status}");
    }
    let mut child = Command::new("unshare")
        .args(["-u", "true"])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let unshare = pod.wait_for("the host's unshare", by(pid, "unshare"));
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(unshare["node"], "testnode", "{unshare}");
    assert_eq!(unshare["boot_id"], boot_id.trim(), "{unshare}");
    thread::sleep(Duration::from_millis(500));
    let (status, metrics) = get(&ip, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(metrics.contains("node=\"testnode\""), "{metrics}");
    let unshares = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nstrace_transitions_total{call=\"unshare\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(unshares.is_some_and(|n| n >= 1.0), "{metrics}");
}

/// Podman knows BPF and PERFMON: the DaemonSet's capability set exactly, SYS_ADMIN not among
/// them, with its seccomp profile Unconfined (Podman's default allows bpf() only with
/// SYS_ADMIN). It traces the host.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn under_podman_the_daemonsets_exact_capabilities_trace_the_host() {
    let pod = Pod::run_on(
        Engine::podman(),
        "podman",
        &["BPF", "PERFMON", "SYS_PTRACE", "IPC_LOCK", "SYS_CHROOT"],
        &MOUNTS[..2],
        &["--security-opt", "seccomp=unconfined"],
    );
    pod.wait_tracing();
    let child = Command::new("unshare")
        .args(["-u", "sleep", "30"])
        .spawn()
        .expect("unshare");
    let child = Reaped(child);
    let pid = child.0.id();
    // /proc read while it sleeps: the stream may wait for names a moment.
    thread::sleep(Duration::from_millis(300));
    let truth = proc_ns(pid);
    let unshare = pod.wait_for("the host's unshare", by(pid, "unshare"));
    assert_same_ns("after", &unshare["after"], &truth);
    drop(child);
    assert!(
        !pod.stderr().contains("warning"),
        "with SYS_PTRACE nothing is unreadable: {}",
        pod.stderr()
    );
}
