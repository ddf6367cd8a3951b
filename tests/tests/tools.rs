//! The real tools people trace: util-linux's unshare and nsenter, iproute2's ip netns.
use std::{os::unix::fs::MetadataExt as _, process::Command};

use nstrace_tests::{
    Helper, Tracer, assert_root, assert_same_ns, binary, by, changed, proc_ns, strings,
};

/// `unshare -u -n nshelper hold`: one unshare by the tool, then its exec keeps the pid.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn util_linux_unshare_reports_the_exact_new_uts_and_net() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut cmd = Command::new("unshare");
    cmd.args(["-u", "-n"]).arg(binary("nshelper")).arg("hold");
    let mut helper = Helper::spawn_command(cmd);
    let pid = helper.wait_ready();
    assert_eq!(pid, helper.pid());

    let ev = tracer.wait_for("unshare by unshare(1)", by(pid, "unshare"));
    assert_eq!(ev["comm"], "unshare");
    assert_eq!(changed(&ev), ["uts", "net"]);
    assert_eq!(strings(&ev["flag_names"]), ["CLONE_NEWUTS", "CLONE_NEWNET"]);
    assert_same_ns("after", &ev["after"], &proc_ns(pid));
    assert_same_ns("before", &ev["before"], &proc_ns(std::process::id()));
    helper.finish();
}

/// `nsenter -t PID -a` into an unshared tree: one setns per type, then a fork into the target's
/// pid namespace; the process it runs ends up exactly where the target is.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn nsenter_all_enters_every_namespace_of_the_target() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut target = Helper::spawn(&["unshare", "mnt,uts,ipc,net,pid,cgroup", "fork", "hold"]);
    let t = target.wait_ready();
    let target_ns = proc_ns(t);

    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &t.to_string(), "-a"])
        .arg(binary("nshelper"))
        .arg("hold");
    let mut entered = Helper::spawn_command(cmd);
    let held = entered.wait_ready();
    let nsenter = entered.pid();

    let fork = tracer.wait_for("nsenter's fork", by(nsenter, "fork"));
    let setns = tracer.events(by(nsenter, "setns"));
    assert!(setns.len() >= 6, "one setns per type: {setns:#?}");
    assert!(
        setns
            .iter()
            .all(|e| e["ret"] == 0 && e["comm"] == "nsenter")
    );
    let mut moved: Vec<String> = setns.iter().flat_map(changed).collect();
    moved.sort();
    assert_eq!(
        moved,
        ["cgroup", "ipc", "mnt", "net", "pid_for_children", "uts"]
    );
    // Each setns starts where the previous one ended.
    for pair in setns.windows(2) {
        assert_eq!(pair[0]["after"], pair[1]["before"]);
    }
    assert_eq!(fork["child"]["tid"], held);
    assert_same_ns(
        "the process nsenter ran",
        &fork["child"]["ns"],
        &proc_ns(held),
    );
    for kind in ["mnt", "uts", "ipc", "net", "pid", "cgroup"] {
        assert_eq!(proc_ns(held)[kind], target_ns[kind], "{kind}");
    }
    entered.finish();
    target.finish();
}

/// Deletes the named network namespace however the test ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `ip netns add X` creates a network namespace (unshare, then back home with setns);
/// `ip netns exec X` enters it (setns) and makes a mount namespace for its /sys.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn ip_netns_add_and_exec_report_the_namespace_ip_created() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let name = format!("nstrace-test-{}", std::process::id());
    let mut add = Command::new("ip")
        .args(["netns", "add", &name])
        .spawn()
        .expect("ip netns add");
    let netns = Netns(name.clone());
    let add_pid = add.id();
    assert!(add.wait().expect("wait ip").success());
    let inode = std::fs::metadata(format!("/run/netns/{}", netns.0))
        .expect("the bind mount ip made")
        .ino();

    let created = tracer.wait_for("ip's unshare", by(add_pid, "unshare"));
    assert_eq!(changed(&created), ["net"]);
    assert_eq!(created["after"]["net"], inode);
    let back = tracer.wait_for("ip's setns home", by(add_pid, "setns"));
    assert_eq!(back["before"]["net"], inode);
    assert_eq!(back["after"]["net"], created["before"]["net"]);

    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &name])
        .arg(binary("nshelper"))
        .arg("hold");
    let mut exec = Helper::spawn_command(cmd);
    let pid = exec.wait_ready();
    let entered = tracer.wait_for("ip netns exec's setns", by(pid, "setns"));
    assert_eq!(changed(&entered), ["net"]);
    assert_eq!(entered["after"]["net"], inode);
    let mounts = tracer.wait_for("ip netns exec's unshare", by(pid, "unshare"));
    assert_eq!(changed(&mounts), ["mnt"]);
    assert_same_ns("the process ip ran", &mounts["after"], &proc_ns(pid));
    exec.finish();
}
