//! Containers and findings with real runtimes: attribution, and exactly the expected findings.
use std::{path::PathBuf, process::Command};

use nstrace_tests::{Run, Value, assert_root, binary, busybox_bundle, json_objects};

/// A runc bundle in a fresh directory, removed (with its container) at the end.
struct Bundle {
    dir: PathBuf,
    id: String,
}

impl Bundle {
    fn new(name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
        let id = format!("nstrace-{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        busybox_bundle(&dir, args, edit);
        Bundle { dir, id }
    }

    fn path(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn findings(summary: &Value) -> Vec<(String, String)> {
    summary["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["container"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn containers(summary: &Value) -> Vec<String> {
    summary["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn run_to_end(cmd: &[&str]) -> Value {
    let mut run = Run::start(cmd);
    let (status, _, summary) = run.finish();
    assert!(status.success(), "{status}: {}", run.stderr());
    summary
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_plain_runc_container_is_named_and_flags_nothing() {
    assert_root();
    let b = Bundle::new("plain", &["sh", "-c", "sleep 0.2"], |_| {});
    let summary = run_to_end(&["runc", "run", "-b", &b.path(), &b.id]);
    assert_eq!(containers(&summary), [format!("runc:{}", b.id)]);
    let made: Vec<&str> = summary["containers"][0]["made"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["namespace"].as_str().unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(made, ["mnt", "uts", "ipc", "pid", "net"]);
    assert_eq!(findings(&summary), []);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_runc_container_on_the_host_pid_namespace_flags_exactly_one_finding() {
    assert_root();
    let b = Bundle::new("hostpid", &["sh", "-c", "sleep 0.2"], |config| {
        let ns = config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let summary = run_to_end(&["runc", "run", "-b", &b.path(), &b.id]);
    assert_eq!(
        findings(&summary),
        [("NS-SHARES-HOST".to_owned(), format!("runc:{}", b.id))]
    );
    let f = &summary["findings"][0];
    assert_eq!(f["severity"], "high");
    assert!(f["message"].as_str().unwrap().contains("host's pid"), "{f}");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_runc_container_joining_another_ones_pid_and_ipc_is_flagged() {
    assert_root();
    let first = Bundle::new("first", &["sleep", "30"], |_| {});
    let status = Command::new("runc")
        .args(["run", "-d", "-b", &first.path(), &first.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("runc run -d");
    assert!(status.success());
    let state = Command::new("runc")
        .args(["state", &first.id])
        .output()
        .unwrap();
    let state: Value = serde_json::from_slice(&state.stdout).expect("runc state");
    let init = state["pid"].as_u64().expect("the first container's pid");
    let second = Bundle::new("second", &["sh", "-c", "sleep 0.2"], |config| {
        for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "pid" || ns["type"] == "ipc" {
                let kind = ns["type"].as_str().unwrap().to_owned();
                ns["path"] = format!("/proc/{init}/ns/{kind}").into();
            }
        }
    });
    let summary = run_to_end(&["runc", "run", "-b", &second.path(), &second.id]);
    let _ = Command::new("runc")
        .args(["kill", &first.id, "KILL"])
        .status();
    assert_eq!(
        findings(&summary),
        [(
            "NS-JOINS-CONTAINER".to_owned(),
            format!("runc:{}", second.id)
        )]
    );
    let message = summary["findings"][0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("runc:{}", first.id)), "{message}");
    assert!(
        message.contains("ipc, pid") || message.contains("pid, ipc"),
        "{message}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn bwrap_and_ip_netns_are_ordinary_work_and_flag_nothing() {
    assert_root();
    let summary = run_to_end(&["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"]);
    assert_eq!(findings(&summary), []);
    let name = format!("nstrace-fp-{}", std::process::id());
    let script = format!("ip netns add {name} && ip netns exec {name} true; ip netns del {name}");
    let summary = run_to_end(&["sh", "-c", &script]);
    assert_eq!(findings(&summary), []);
}

/// pid 1's namespace links can be unreadable in a sandbox; kthreadd (pid 2) is on the host's too.
fn host_pid() -> &'static str {
    if std::fs::read_link("/proc/1/ns/mnt").is_ok() {
        "1"
    } else {
        "2"
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn nsenter_into_the_hosts_namespaces_from_an_unshared_tree_is_an_escape() {
    assert_root();
    let script = format!("nsenter -t {} -m -p true", host_pid());
    let summary = run_to_end(&["unshare", "-m", "-u", "sh", "-c", &script]);
    assert_eq!(
        findings(&summary),
        [("NS-SETNS-HOST".to_owned(), String::new())]
    );
    let f = &summary["findings"][0];
    assert_eq!(f["severity"], "high");
    assert_eq!(f["comm"], "nsenter");
    assert!(
        f["namespaces"][0].as_str().unwrap().ends_with("(host)"),
        "{f}"
    );

    let script = format!("nsenter -t {} -a true", host_pid());
    let summary = run_to_end(&["unshare", "-m", "-u", "-i", "sh", "-c", &script]);
    let ids: Vec<String> = findings(&summary).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids, ["NS-SETNS-HOST"; 3],
        "mnt, uts and ipc, one setns each"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn an_unprivileged_user_namespace_mapped_to_root_is_flagged() {
    assert_root();
    let summary = run_to_end(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "unshare",
        "-r",
        "-u",
        // Alive long enough for its uid_map to be read after its exec.
        "sh",
        "-c",
        "sleep 0.5",
    ]);
    let ids: Vec<String> = findings(&summary).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["NS-USERNS-UNPRIVILEGED", "NS-USERNS-ROOTMAP"]);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_refused_setns_is_an_attempt() {
    assert_root();
    // Its own namespace: open, but setns needs CAP_SYS_ADMIN: EPERM.
    let summary = run_to_end(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        binary("nshelper").to_str().unwrap(),
        "try-setns",
        "/proc/self/ns/uts",
        "uts",
    ]);
    let ids: Vec<String> = findings(&summary).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["NS-REFUSED"]);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn perfetto_and_svg_pictures_of_a_run_are_valid_and_hold_its_processes() {
    assert_root();
    let dir = std::env::temp_dir();
    let trace = dir.join(format!("nstrace-{}.perfetto.json", std::process::id()));
    let svg = dir.join(format!("nstrace-{}.svg", std::process::id()));
    let png = dir.join(format!("nstrace-{}.png", std::process::id()));
    let truth = dir.join(format!("nstrace-{}.net", std::process::id()));
    let out = Command::new(binary("nstrace"))
        .args(["run", "--no-summary", "--perfetto"])
        .arg(&trace)
        .arg("--svg")
        .arg(&svg)
        .args(["--", "unshare", "-p", "-f", "-n", "sh", "-c"])
        .arg(format!(
            "readlink /proc/self/ns/net > {}; sleep 0.1",
            truth.display()
        ))
        .output()
        .expect("nstrace run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace_json: Value =
        serde_json::from_slice(&std::fs::read(&trace).unwrap()).expect("valid JSON");
    let events = trace_json["traceEvents"].as_array().expect("traceEvents");
    let threads: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert!(
        threads.iter().any(|t| t.starts_with("unshare ")),
        "{threads:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "X" && e["name"].as_str().unwrap().contains("net:["))
    );
    let starts = events.iter().filter(|e| e["ph"] == "s").count();
    let ends = events.iter().filter(|e| e["ph"] == "f").count();
    assert!(
        starts >= 1 && starts == ends,
        "flows from unshare to its child: {starts}/{ends}"
    );
    for e in events {
        assert!(e["ph"].is_string() && e["pid"].is_u64(), "{e}");
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg ") && picture.trim_end().ends_with("</svg>"));
    assert!(picture.contains("unshare"), "rows name the processes");
    // The child's net namespace, as /proc named it, is in the legend and labels its bar.
    let net = std::fs::read_to_string(&truth).unwrap();
    let inode = net
        .trim()
        .strip_prefix("net:[")
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{net}"));
    let named = format!("net:{inode}");
    assert!(
        picture.matches(&named).count() >= 2,
        "{named} in a bar and the legend:\n{picture}"
    );
    // A real renderer draws it (a report embeds the PNG).
    let out = Command::new("rsvg-convert")
        .arg(&svg)
        .arg("-o")
        .arg(&png)
        .output()
        .expect("rsvg-convert (librsvg2-bin)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read(&png).unwrap();
    assert_eq!(&head[1..4], b"PNG");
    assert_eq!(u32::from_be_bytes(head[16..20].try_into().unwrap()), 1400);
    for file in [&trace, &svg, &png, &truth] {
        let _ = std::fs::remove_file(file);
    }
}

/// `--evidence DIR`: a refused setns (NS-REFUSED) keeps a record of the second before and after
/// it, which `report` replays to the same finding: an unshare just before it and one just
/// after are in it, as /proc named their namespaces; one long after is not.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_finding_keeps_its_evidence_and_the_evidence_replays() {
    assert_root();
    let dir = std::env::temp_dir().join(format!("nstrace-evidence-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kept = dir.join("kept");
    let truth = dir.join("truth");
    std::fs::create_dir_all(&truth).unwrap();
    let script = format!(
        "unshare -u sh -c 'readlink /proc/self/ns/uts > {t}/before'; sleep 0.3; \
         setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all {helper} try-setns \
         /proc/self/ns/uts uts; sleep 0.3; \
         unshare -i sh -c 'readlink /proc/self/ns/ipc > {t}/after'; sleep 2.5; \
         unshare -n sh -c 'readlink /proc/self/ns/net > {t}/later'",
        t = truth.display(),
        helper = binary("nshelper").display(),
    );
    let mut run = Run::start_with_options(
        &[
            "--evidence",
            kept.to_str().unwrap(),
            "--evidence-window",
            "1",
        ],
        &["sh", "-c", &script],
    );
    let (status, transitions, summary) = run.finish();
    assert!(status.success(), "{}", run.stderr());
    let ids: Vec<String> = findings(&summary).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["NS-REFUSED"]);
    let refused = transitions
        .iter()
        .find(|t| t["errno"] == "EPERM")
        .unwrap_or_else(|| panic!("the refused setns in {transitions:?}"));
    let pid = refused["pid"].as_u64().unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&kept)
        .expect("the evidence directory")
        .map(|e| e.unwrap().path())
        .collect();
    let suffix = format!("-NS-REFUSED-{pid}.jsonl");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].to_str().unwrap().ends_with(&suffix),
        "{files:?} {suffix}"
    );
    assert!(
        run.stderr()
            .contains(&format!("evidence of NS-REFUSED (pid {pid}) kept in")),
        "{}",
        run.stderr()
    );

    let out = Command::new(binary("nstrace"))
        .args(["report", "--json"])
        .arg(&files[0])
        .output()
        .expect("nstrace report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is the evidence of NS-REFUSED"), "{stderr}");
    let out_live = out.stdout.clone();
    let lines = json_objects(&out.stdout);
    let replayed = lines.last().unwrap();
    let found: Vec<(String, u64)> = replayed["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, [("NS-REFUSED".to_owned(), pid)]);
    let inode = |slot: &str, file: &str| -> u64 {
        let text = std::fs::read_to_string(truth.join(file)).unwrap();
        text.trim()
            .strip_prefix(&format!("{slot}:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{text}"))
    };
    let made = |slot: &str, ino: u64| {
        lines.iter().any(|l| {
            l["type"] == "transition"
                && l["call"] == "unshare"
                && l["after"][slot].as_u64() == Some(ino)
        })
    };
    assert!(
        made("uts", inode("uts", "before")),
        "the unshare 0.3 s before"
    );
    assert!(
        made("ipc", inode("ipc", "after")),
        "the unshare 0.3 s after"
    );
    assert!(
        !made("net", inode("net", "later")),
        "not the unshare 2.8 s after"
    );

    // The same evidence cut out of the run's whole recording by `report`: the same file name
    // (the finding's time, id and pid), the same finding and calls when replayed.
    let cut = dir.join("cut");
    let out = Command::new(binary("nstrace"))
        .args([
            "report",
            "--no-summary",
            "--evidence-window",
            "1",
            "--evidence",
        ])
        .arg(&cut)
        .arg(&run.file)
        .output()
        .expect("nstrace report --evidence");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = |d: &std::path::Path| -> Vec<std::ffi::OsString> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert_eq!(names(&cut), names(&kept));
    let again = Command::new(binary("nstrace"))
        .args(["report", "--json"])
        .arg(cut.join(&names(&cut)[0]))
        .output()
        .expect("nstrace report");
    assert!(again.status.success());
    let calls = |stdout: &[u8]| -> Vec<(u64, String)> {
        json_objects(stdout)
            .into_iter()
            .filter(|l| l["type"] == "transition")
            .map(|l| {
                (
                    l["pid"].as_u64().unwrap(),
                    l["call"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(calls(&again.stdout), calls(&out_live), "cut and kept live");
    let _ = std::fs::remove_dir_all(dir);
}

/// Evidence on a full disk: said once, no more evidence is kept, and the trace goes on (a later
/// transition is still shown; nstrace exits as its command did).
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn evidence_on_a_full_disk_is_said_and_the_trace_goes_on() {
    assert_root();
    let dir = std::env::temp_dir().join(format!("nstrace-evidence-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 8 KiB: less than the machine's snapshot an evidence file starts with.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(mounted.success());
    let script = "setpriv --reuid=65534 --regid=65534 --clear-groups unshare -n true; \
                  sleep 0.2; unshare -u true";
    let mut run = Run::start_with_options(
        &["--evidence", dir.to_str().unwrap()],
        &["sh", "-c", script],
    );
    let (status, transitions, _) = run.finish();
    let stderr = run.stderr();
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("no more evidence is kept (the trace goes on)"),
        "{stderr}"
    );
    assert!(
        transitions
            .iter()
            .any(|t| t["call"] == "unshare" && t["changed"] == serde_json::json!(["uts"])),
        "the unshare after the failure is shown: {transitions:?}"
    );
}
