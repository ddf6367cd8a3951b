//! The command line as a user meets it: text output, the closing line, clear errors.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    time::Duration,
};

use nstrace_tests::{
    Helper, Tracer, assert_root, assert_same_ns, binary, by, pin_to_cpu0, proc_ns,
};

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn text_output_shows_only_what_changed_with_the_proc_inodes() {
    assert_root();
    let mut nstrace = Command::new(binary("nstrace"))
        .arg("--utc")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nstrace");
    let stderr = BufReader::new(nstrace.stderr.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut err = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.starts_with("nstrace: tracing") {
                let _ = ready_tx.send(());
            }
            err.push_str(&line);
            err.push('\n');
        }
        err
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("nstrace attaches");
    let before = proc_ns(std::process::id());
    let mut helper = Helper::spawn(&["unshare", "uts", "hold"]);
    let pid = helper.wait_ready();
    let after = proc_ns(pid);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nstrace.id() as i32, libc::SIGTERM) };
    let mut out = String::new();
    nstrace
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let err = err_reader.join().unwrap();
    assert!(nstrace.wait().unwrap().success(), "{err}");
    helper.finish();

    assert!(out.starts_with("TIME "), "a header first: {out}");
    let wanted = format!(
        "unshare(CLONE_NEWUTS) = 0  uts {} \u{2192} {}",
        before["uts"], after["uts"]
    );
    let line = out
        .lines()
        .find(|l| l.contains(&format!(" {pid} ")) && l.contains("unshare("))
        .unwrap_or_else(|| panic!("no line for pid {pid} in:\n{out}"));
    assert!(
        line.ends_with(&wanted),
        "{line:?} should end with {wanted:?}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("nstrace: tracing")),
        "{err}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_closing_line_counts_transitions_and_lost_samples() {
    assert_root();
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["unshare", "uts", "hold"]);
    let pid = helper.wait_ready();
    tracer.wait_for("unshare", by(pid, "unshare"));
    helper.finish();
    let stderr = tracer.stop();
    let last = stderr.lines().last().unwrap_or_default();
    let (seen, lost) = last
        .strip_prefix("nstrace: ")
        .and_then(|rest| rest.split_once(" transitions shown, "))
        .and_then(|(n, rest)| {
            Some((
                n.parse::<u64>().ok()?,
                rest.split(' ').next()?.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("unexpected closing line {last:?}"));
    assert!(seen >= 1, "{last}");
    assert_eq!(lost, 0, "{last}");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_privileges_it_says_to_run_as_root() {
    assert_root();
    // setpriv (util-linux) drops to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(binary("nstrace"))
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs root"), "{err}");
}

/// Without CAP_SYS_CHROOT the loader cannot be made on a thread with a root of its own (the way
/// start-up skips the loader's parse of the kernel's BTF): it is made as usual, and nstrace
/// traces as it does otherwise.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_cap_sys_chroot_the_loader_parses_btf_and_traces() {
    assert_root();
    // setpriv (util-linux): CAP_SYS_CHROOT leaves the bounding set, so root's exec of nstrace
    // gets every capability but that one.
    let tracer = Tracer::start_under(&["setpriv", "--bounding-set", "-sys_chroot"], &["-v"]);
    let stderr = tracer.stderr();
    assert!(
        stderr.contains("the loader parses the kernel's BTF: no root of its own"),
        "{stderr}"
    );
    let mut helper = Helper::spawn(&["unshare", "uts", "hold"]);
    let pid = helper.wait_ready();
    let ev = tracer.wait_for("unshare", by(pid, "unshare"));
    assert_eq!(ev["ret"], 0, "{ev}");
    assert_same_ns("after", &ev["after"], &proc_ns(pid));
    helper.finish();
}

/// Without CAP_IPC_LOCK, past the memlock limit (a container's lot: it cannot raise its own),
/// the kernel will not lock the perf buffers: the message names the capability and how each
/// engine grants it, and the limit it met.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_cap_ipc_lock_past_the_memlock_limit_the_capability_is_named() {
    assert_root();
    let out = Command::new("prlimit")
        .args([
            "--memlock=65536:65536",
            "setpriv",
            "--bounding-set",
            "-ipc_lock",
        ])
        .arg(binary("nstrace"))
        .arg("--no-summary")
        .stdin(Stdio::null())
        .output()
        .expect("prlimit and setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for says in [
        "would not lock CPU 0's perf buffer",
        "ulimit -l 64 KiB",
        "without CAP_IPC_LOCK",
        "--cap-add IPC_LOCK",
        "capabilities.add [IPC_LOCK]",
    ] {
        assert!(err.contains(says), "{says:?} not in: {err}");
    }
    assert!(!err.contains("nstrace: tracing"), "{err}");
}

/// Root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (a container that was not given them):
/// the kernel refuses bpf(), and the message names the capabilities and how to grant them.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_cap_bpf_the_refusal_names_the_capabilities() {
    assert_root();
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-bpf,-perfmon,-sys_admin"])
        .arg(binary("nstrace"))
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for says in ["refused bpf()", "CAP_BPF and CAP_PERFMON", "--cap-add BPF"] {
        assert!(err.contains(says), "{says:?} not in: {err}");
    }
}

/// Without CAP_SYS_PTRACE other processes' namespaces cannot be read: nstrace traces, and
/// says what it cannot see and how to grant the capability.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn without_cap_sys_ptrace_the_unreadable_processes_are_counted() {
    assert_root();
    let tracer = Tracer::start_under(&["setpriv", "--bounding-set", "-sys_ptrace"], &[]);
    let err = tracer.stop();
    assert!(
        err.contains("cannot be read without CAP_SYS_PTRACE")
            && err.contains("--cap-add SYS_PTRACE"),
        "{err}"
    );
}

#[test]
fn a_buffer_size_that_is_not_a_power_of_two_is_refused_with_a_hint() {
    let out = Command::new(binary("nstrace"))
        .args(["--buffer-pages", "100"])
        .output()
        .expect("run nstrace");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a power of two (try 128)"), "{err}");
}

/// Records the whole machine while a helper unshares, then reports offline.
fn record_unshare(file: &std::path::Path, kinds: &str) -> u32 {
    let tracer = Tracer::start(&["-o", file.to_str().unwrap(), "--no-summary"]);
    let mut helper = Helper::spawn(&["unshare", kinds, "hold"]);
    let pid = helper.wait_ready();
    tracer.wait_for("unshare", by(pid, "unshare"));
    helper.finish();
    let stderr = tracer.stop();
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains(" transitions shown, 0 lost samples"),
        "SIGTERM prints the counts: {stderr}"
    );
    pid
}

fn report(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary("nstrace"))
        .arg("report")
        .args(args)
        .output()
        .expect("nstrace report");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn report_with_pid_and_type_filters_shows_only_that_process_tree_and_type() {
    assert_root();
    let file = std::env::temp_dir().join(format!("nstrace-cli-{}.jsonl", std::process::id()));
    let pid = record_unshare(&file, "uts,ipc");
    let mode = std::fs::metadata(&file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let path = file.to_str().unwrap();

    let (code, out, err) = report(&["--json", "--pid", &pid.to_string(), path]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, transitions) = lines.split_last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(
        transitions.len(),
        1,
        "only the helper's unshare: {transitions:#?}"
    );
    assert_eq!(transitions[0]["pid"], pid);
    let pids: Vec<&serde_json::Value> = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["pid"])
        .collect();
    assert_eq!(pids, [&serde_json::json!(pid)]);

    let (_, out, _) = report(&["--json", "--pid", &pid.to_string(), "--type", "net", path]);
    assert_eq!(
        out.lines().count(),
        1,
        "no net transition, only the summary: {out}"
    );
    let (_, out, _) = report(&["--json", "--pid", &pid.to_string(), "--type", "ipc", path]);
    assert_eq!(out.lines().count(), 2, "the unshare moved ipc: {out}");
    let _ = std::fs::remove_file(&file);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_corrupt_record_is_reported_by_line_and_every_good_line_is_still_read() {
    assert_root();
    let file = std::env::temp_dir().join(format!("nstrace-corrupt-{}.jsonl", std::process::id()));
    let pid = record_unshare(&file, "uts");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let unshare_at = lines
        .iter()
        .position(|l| l.contains("\"call\":\"unshare\"") && l.contains(&format!("\"pid\":{pid},")))
        .expect("the helper's unshare is recorded");
    // Damage the line before it, and cut the last line in half (a crash mid-write).
    let bad = unshare_at - 1;
    lines[bad] = "{\"type\":\"transition\",\"ts_ns\":".into();
    let last = lines.len() - 1;
    let half = lines[last].len() / 2;
    lines[last].truncate(half);
    std::fs::write(&file, lines.join("\n")).unwrap();

    let (code, out, err) = report(&["--json", "--pid", &pid.to_string(), file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("line {}:", bad + 1)), "{err}");
    assert!(
        err.contains(&format!("line {}: truncated", last + 1)),
        "{err}"
    );
    assert!(err.contains("every good line was read"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["pid"], pid,
        "the good lines after the bad one are read: {out}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn report_of_a_file_that_is_not_a_record_says_so() {
    let file = std::env::temp_dir().join(format!("nstrace-notrecord-{}.txt", std::process::id()));
    std::fs::write(&file, "hello\n").unwrap();
    let (code, _, err) = report(&[file.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not an nstrace record"), "{err}");
    let (code, _, err) = report(&["/nonexistent/file.jsonl"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("opening /nonexistent/file.jsonl"), "{err}");
    let _ = std::fs::remove_file(&file);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_closed_output_stops_nstrace_and_leaves_a_whole_record() {
    assert_root();
    let file = std::env::temp_dir().join(format!("nstrace-head-{}.jsonl", std::process::id()));
    // `nstrace --json -o FILE | head -1`, with the pipe made here.
    let mut nstrace = Command::new(binary("nstrace"))
        .args(["--json", "-o", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nstrace");
    let mut out = BufReader::new(nstrace.stdout.take().unwrap());
    let mut err_lines = attached(&mut nstrace);
    let mut helper = Helper::spawn(&["unshare", "uts", "hold"]);
    helper.wait_ready();
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "{first}");
    drop(out); // head exits
    helper.finish();
    let status = nstrace.wait().unwrap();
    let mut err = String::new();
    err_lines.read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("the output was closed; stopping"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, err) = report(&["--no-summary", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "the record replays whole: {err}");
    let _ = std::fs::remove_file(&file);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn sigterm_mid_record_flushes_a_whole_record_and_the_counts() {
    assert_root();
    let file = std::env::temp_dir().join(format!("nstrace-term-{}.jsonl", std::process::id()));
    let pid = record_unshare(&file, "net");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n'), "the last line is whole");
    assert!(
        text.contains(&format!("\"pid\":{pid},")),
        "the helper's unshare was recorded"
    );
    let (code, out, err) = report(&["--json", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.lines().last().unwrap().contains("\"type\":\"summary\""));
    let _ = std::fs::remove_file(&file);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn sigterm_mid_binary_record_leaves_whole_frames_that_replay() {
    assert_root();
    let file = std::env::temp_dir().join(format!("nstrace-term-{}.nsr", std::process::id()));
    let tracer = Tracer::start(&["-o", file.to_str().unwrap(), "--binary", "--no-summary"]);
    let mut helper = Helper::spawn(&["unshare", "net", "hold"]);
    let pid = helper.wait_ready();
    tracer.wait_for("unshare", by(pid, "unshare"));
    helper.finish();
    let stderr = tracer.stop();
    assert!(stderr.contains(" transitions shown, "), "{stderr}");
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.starts_with(&nstrace::record::BIN_MAGIC),
        "a binary record"
    );
    let (code, out, err) = report(&["--json", "--pid", &pid.to_string(), file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "every frame is whole: {err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["pid"], pid, "the helper's unshare replays: {out}");
    assert_eq!(first["call"], "unshare");
    assert_eq!(first["changed"], serde_json::json!(["net"]));
    let _ = std::fs::remove_file(&file);
}

/// Unmounts a small tmpfs however the test ends.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_full_disk_ends_with_a_clear_message_and_a_record_that_replays() {
    assert_root();
    let dir = std::env::temp_dir().join(format!("nstrace-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(status.success());
    let disk = SmallDisk(dir);
    let file = disk.0.join("r.jsonl");
    let mut nstrace = Command::new(binary("nstrace"))
        .args(["--no-summary", "-o", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nstrace");
    let mut err_lines = attached(&mut nstrace);
    // Each unshare writes a ~1.5 KB line and its fork, exec and exit some more: fill the disk.
    for _ in 0..400 {
        if let Ok(Some(_)) = nstrace.try_wait() {
            break;
        }
        let _ = Command::new("unshare").args(["-u", "true"]).status();
    }
    let status = nstrace.wait().unwrap();
    let mut err = String::new();
    err_lines.read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("writing the record file") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(err.contains("every whole line written before"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, report_err) = report(&["--no-summary", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "the record replays whole: {report_err}");
}

/// Waits until a spawned nstrace says it is attached; returns the rest of its stderr.
fn attached(nstrace: &mut std::process::Child) -> BufReader<std::process::ChildStderr> {
    let mut err_lines = BufReader::new(nstrace.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    while !line.starts_with("nstrace: tracing") {
        line.clear();
        let n = err_lines.read_line(&mut line).expect("read stderr");
        assert_ne!(n, 0, "nstrace ended before attaching");
    }
    err_lines
}

/// Peak resident memory of `nstrace report FILE` (wait4's rusage), in KiB.
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn report_peak_kib(file: &std::path::Path, args: &[&str]) -> i64 {
    let child = Command::new(binary("nstrace"))
        .args(["report", "--no-summary"])
        .args(args)
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run nstrace report");
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage; wait4 on our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(rc, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    usage.ru_maxrss
}

/// A soak sized for CI: a storm of short-lived processes, each making a namespace, replayed at
/// two lengths, as findings only and as the `--json` stream a node ships. Exited processes and
/// emptied namespaces are folded, so four times the storm takes no more memory.
#[test]
fn a_long_storm_replays_in_flat_memory() {
    let dir = std::env::temp_dir().join(format!("nstrace-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let synth = |n: u32| {
        let file = dir.join(format!("storm-{n}.jsonl"));
        let status = Command::new(binary("nsstorm"))
            .args(["synth", file.to_str().expect("path"), &n.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run nsstorm");
        assert!(status.success());
        file
    };
    let (short, long) = (synth(30_000), synth(120_000));
    for args in [&["--findings"][..], &["--json"]] {
        let (small, big) = (report_peak_kib(&short, args), report_peak_kib(&long, args));
        assert!(
            big < small + 4096,
            "{args:?}: 30k records: {small} KiB at peak; 120k records: {big} KiB"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The collector micro-benchmark checks itself: every short setns record it feeds decodes and
/// is shown once.
#[test]
fn the_collector_benchmark_shows_every_record_it_feeds() {
    let out = Command::new(binary("nsstorm"))
        .args(["pipe", "20000"])
        .output()
        .expect("run nsstorm pipe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"records\":20000"), "{text}");
}

/// A Ctrl-C while the programs load still ends the trace with its closing line, even for an
/// nstrace that inherited SIGINT ignored (as a script's background job does).
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn ctrl_c_while_loading_ends_the_trace_with_the_closing_line() {
    use std::os::unix::process::CommandExt as _;
    assert_root();
    let mut cmd = Command::new(binary("nstrace"));
    cmd.args(["-v", "--no-summary"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: one async-signal-safe call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut nstrace = cmd.spawn().expect("start nstrace");
    let mut err = BufReader::new(nstrace.stderr.take().expect("stderr piped"));
    let mut seen = String::new();
    // The loader's words come after the handlers are installed and before anything attaches.
    while !seen.contains("[DEBUG nstrace::load]") {
        let n = err.read_line(&mut seen).expect("read stderr");
        assert_ne!(n, 0, "nstrace ended while loading: {seen}");
    }
    assert!(!seen.contains("nstrace: tracing"), "{seen}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nstrace.id() as i32, libc::SIGINT) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    let Ok(rest) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = nstrace.kill();
        let _ = nstrace.wait();
        panic!("the Ctrl-C was not heeded: nstrace still ran 20 s later");
    };
    let status = nstrace.wait().expect("wait for nstrace");
    assert!(status.success(), "{status}: {rest}");
    assert!(
        rest.lines()
            .last()
            .is_some_and(|l| l.contains(" transitions shown, ")),
        "{rest}"
    );
}

/// Everything in the buffers when nstrace is stopped is read: a collector frozen while 14 MB
/// of records pile up in one CPU's 16 MiB buffer, then stopped, shows every one, none lost.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_stop_reads_whole_buffers_that_a_frozen_collector_left_full() {
    assert_root();
    // 60,000 setns records of about 232 bytes each, all on CPU 0.
    const ROUND_TRIPS: u64 = 30_000;
    let mut nstrace = Command::new(binary("nstrace"))
        .args([
            "--comm",
            "nsstorm",
            "--buffer-pages",
            "4096",
            "--no-summary",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nstrace");
    let stdout = nstrace.stdout.take().expect("stdout piped");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(" setns("))
            .count() as u64
    });
    let mut err = attached(&mut nstrace);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nstrace.id() as i32, libc::SIGSTOP) };
    let mut storm = Command::new(binary("nsstorm"));
    storm.args(["setns-ops", &ROUND_TRIPS.to_string()]);
    let out = pin_to_cpu0(&mut storm).output().expect("run nsstorm");
    assert!(out.status.success(), "{out:?}");
    // SAFETY: as above. The stop is pending when the collector wakes.
    unsafe {
        libc::kill(nstrace.id() as i32, libc::SIGTERM);
        libc::kill(nstrace.id() as i32, libc::SIGCONT);
    }
    let status = nstrace.wait().expect("wait for nstrace");
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains(" 0 lost samples"), "{rest}");
    let shown = lines.join().expect("stdout reader");
    assert_eq!(shown, 2 * ROUND_TRIPS, "{rest}");
}

/// Runs nstrace with `args` as root in a mount namespace of its own, after `setup` (sh) has
/// changed that namespace's mounts: the machine's own are left alone.
fn nstrace_in_own_mounts(setup: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "( set -e\n{setup}\n) || {{ echo 'the test set-up failed' >&2; exit 99; }}\n\
             exec \"$0\" \"$@\""
        ))
        .arg(binary("nstrace"))
        .args(args)
        .output()
        .expect("run unshare (util-linux)");
    assert_ne!(
        out.status.code(),
        Some(99),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs nstrace with no arguments after `setup` (see [`nstrace_in_own_mounts`]) and checks that
/// it refuses to start, exit status 1, with an error holding every one of `says`.
fn refused_in_own_mounts(setup: &str, says: &[&str]) {
    let out = nstrace_in_own_mounts(setup, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in says {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

/// Unmounts tracefs wherever it is, and debugfs (whose tracing directory mounts tracefs when
/// looked at), however many times each is mounted.
const NO_TRACEFS: &str = "while umount -l /sys/kernel/tracing 2>/dev/null; do :; done
while umount -l /sys/kernel/debug/tracing 2>/dev/null; do :; done
while umount -l /sys/kernel/debug 2>/dev/null; do :; done
test ! -e /sys/kernel/tracing/events
test ! -e /sys/kernel/debug/tracing/events";

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn tracefs_not_mounted_is_mounted_by_nstrace_which_then_traces() {
    assert_root();
    let out = nstrace_in_own_mounts(
        NO_TRACEFS,
        &["-v", "--no-summary", "run", "unshare", "--uts", "true"],
    );
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("tracefs is not mounted: mounting it"), "{err}");
    assert!(err.contains("nstrace: tracing"), "{err}");
    assert!(
        text.lines()
            .any(|l| l.contains("unshare(CLONE_NEWUTS) = 0") && l.contains("uts ")),
        "{text}\n{err}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn tracefs_that_cannot_be_mounted_gets_the_command_that_mounts_it() {
    assert_root();
    // A tmpfs over /sys/kernel: no tracing directory to mount tracefs on.
    refused_in_own_mounts(
        &format!("{NO_TRACEFS}\nmount -t tmpfs none /sys/kernel"),
        &[
            "tracefs is not mounted and mounting it failed",
            "mount -t tracefs nodev /sys/kernel/tracing",
            "CONFIG_FTRACE",
        ],
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_missing_syscall_tracepoint_is_named_with_the_kernel_option() {
    assert_root();
    // A tracefs stand-in with the first syscall tracepoint and not the second.
    let setup = format!(
        "{NO_TRACEFS}\nmount -t tmpfs none /sys/kernel/tracing\n\
         mkdir -p /sys/kernel/tracing/events/syscalls/sys_exit_clone"
    );
    refused_in_own_mounts(
        &setup,
        &[
            "no tracepoint syscalls/sys_exit_clone3",
            "CONFIG_FTRACE_SYSCALLS=y",
        ],
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_kernel_without_btf_is_told_the_kernel_option() {
    assert_root();
    refused_in_own_mounts(
        "mount -t tmpfs none /sys/kernel/btf",
        &[
            "/sys/kernel/btf/vmlinux is missing",
            "CONFIG_DEBUG_INFO_BTF=y",
        ],
    );
}

/// Every object of a `--json` stream names its node and boot, live and replayed: the node as
/// `NSTRACE_NODE` (a DaemonSet's downward API) or `--node` gives it, the boot as the kernel
/// does.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn every_json_object_names_its_node_and_boot_live_and_replayed() {
    assert_root();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot_id");
    let boot_id = boot_id.trim();
    let file = std::env::temp_dir().join(format!("nstrace-node-{}.jsonl", std::process::id()));
    let out = Command::new(binary("nstrace"))
        .env("NSTRACE_NODE", "node-\"7\"")
        .args(["run", "--json", "-o"])
        .arg(&file)
        .args(["--", "unshare", "-u", "true"])
        .output()
        .expect("nstrace run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = |text: &str, node: &str| {
        let objects: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(
            objects
                .iter()
                .any(|o| o["type"] == "transition" && o["call"] == "unshare"),
            "{text}"
        );
        assert_eq!(objects.last().unwrap()["type"], "summary");
        for o in &objects {
            assert_eq!(o["node"], node, "{o}");
            assert_eq!(o["boot_id"], boot_id, "{o}");
        }
    };
    check(&String::from_utf8_lossy(&out.stdout), "node-\"7\"");
    // The record's header keeps them; a replay names the recorded node, whoever replays it.
    let (code, replayed, err) = report(&["--json", "--node", "elsewhere", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    check(&replayed, "node-\"7\"");
    let _ = std::fs::remove_file(&file);
}

/// `record --rotate-size --rotate-keep`: past the size the file moves to FILE.1 (and so on, the
/// oldest going), and each file replays on its own, its snapshot what the timeline knew when it
/// began: a process that left a namespace before the file began is there in it, as /proc
/// shows it. Both encodings.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_rotating_record_keeps_n_files_each_replayable_alone() {
    assert_root();
    for encoded in [false, true] {
        let dir =
            std::env::temp_dir().join(format!("nstrace-rotate-{}-{encoded}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.rec");
        let mut args = vec![
            "record",
            "-o",
            file.to_str().unwrap(),
            "--rotate-size",
            "16K",
            "--rotate-keep",
            "2",
        ];
        if encoded {
            args.push("--binary");
        }
        let tracer = Tracer::start(&args);
        let mut helper = Helper::spawn(&["unshare", "uts", "hold"]);
        let pid = helper.wait_ready();
        tracer.wait_for("unshare", by(pid, "unshare"));
        let truth = proc_ns(pid);
        // Enough records for many files.
        let storm = Command::new(binary("nsstorm"))
            .args(["setns-ops", "2000"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(storm.success());
        std::thread::sleep(Duration::from_millis(300));
        tracer.stop();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["node.rec", "node.rec.1", "node.rec.2"],
            "binary {encoded}"
        );
        for name in &names {
            let path = dir.join(name);
            let mode = std::fs::metadata(&path).unwrap().permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600
            );
            let (code, out, err) = report(&["--json", "--no-summary", path.to_str().unwrap()]);
            assert_eq!(code, Some(0), "{name} (binary {encoded}): {err}");
            assert!(
                !err.contains("line") && !err.contains("frame"),
                "{name}: {err}"
            );
            if name != "node.rec" {
                assert!(out.lines().count() > 10, "{name} holds transitions: {err}");
            }
        }
        // The newest rotated file began after the helper's unshare: replayed alone, it has
        // the helper in the namespaces /proc shows.
        let mut pipeline = nstrace::pipeline::Pipeline::new(
            nstrace::timeline::Timeline::new(nstrace::timeline::Scope::All),
            nstrace::pipeline::Filter::default(),
        );
        let (_, replayed) = nstrace::record::Source::open(&dir.join("node.rec.1"))
            .and_then(|source| nstrace::record::rebuild(source, &[], &mut pipeline))
            .unwrap_or_else(|e| panic!("node.rec.1 does not replay: {e}"));
        assert!(replayed.bad.is_empty(), "{:?}", replayed.bad);
        let model = pipeline
            .timeline
            .live_set(pid)
            .expect("the helper in node.rec.1");
        for (kind, inum) in model {
            assert_eq!(
                proc_ns(pid).get(kind.name()).copied(),
                Some(u64::from(inum)),
                "{} of {pid} (binary {encoded})",
                kind.name()
            );
        }
        assert_ne!(truth.get("uts"), proc_ns(std::process::id()).get("uts"));
        helper.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The completion scripts and the manual page come from the options themselves: each names
/// the newest options, bash loads its script, and groff renders the page without a warning.
#[test]
fn completions_and_the_manual_page_are_made_from_the_options() {
    let run = |args: &[&str]| {
        let out = Command::new(binary("nstrace")).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for (shell, opening) in [
        ("bash", "_nstrace()"),
        ("zsh", "#compdef nstrace"),
        ("fish", "complete -c nstrace"),
    ] {
        let script = run(&["completions", shell]);
        assert!(script.contains(opening), "{shell}: {script}");
        // bash and zsh write `--rotate-size`, fish `-l rotate-size`.
        for option in ["rotate-size", "metrics", "container", "node"] {
            assert!(script.contains(option), "{shell} completes --{option}");
        }
    }
    let bash = run(&["completions", "bash"]);
    let loaded = Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p nstrace"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(bash.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("-F _nstrace nstrace"),
        "bash loads it: {loaded:?}"
    );
    let page = run(&["man"]);
    assert!(page.contains(".TH nstrace 1"), "{page}");
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(page.as_bytes())?;
            child.wait_with_output()
        })
        .expect("groff");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success() && rendered.stderr.is_empty(),
        "{rendered:?}"
    );
    assert!(
        text.contains("rotate") && text.contains("EXAMPLES") || text.contains("record"),
        "{text}"
    );
}

/// On a terminal, findings and the namespaces a call changed stand out in colour; never in a
/// pipe, nor with NO_COLOR set. script(1) gives nstrace a terminal.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn findings_and_changes_are_coloured_on_a_terminal_only() {
    assert_root();
    let inner = "unshare -u true; setpriv --bounding-set -sys_admin unshare -u true; true";
    let nstrace = binary("nstrace");
    let cmd = format!("{} run -- sh -c '{inner}'", nstrace.display());
    let on_terminal = |no_color: Option<&str>| {
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        String::from_utf8_lossy(&c.output().expect("script (util-linux)").stdout).into_owned()
    };
    let coloured = on_terminal(None);
    assert!(
        coloured.contains("\u{1b}[1m\u{1b}[36muts ")
            || coloured.contains("\u{1b}[36m\u{1b}[1muts ")
            || coloured.contains("\u{1b}[1;36muts "),
        "the changed uts stands out: {coloured:?}"
    );
    assert!(coloured.contains("!! LOW NS-REFUSED"), "{coloured:?}");
    assert!(coloured.contains("\u{1b}[0m"), "{coloured:?}");
    // The summary too: its finding and the changed namespaces of each process.
    let summary = coloured
        .split_once("\nPROCESSES (")
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("a summary: {coloured:?}"));
    let findings = summary.split_once("FINDINGS (1)").unwrap().1;
    assert!(
        findings.contains("\u{1b}[1m!! LOW NS-REFUSED"),
        "{findings:?}"
    );
    assert!(
        summary.contains("\u{1b}[36muts ")
            || summary.contains("36m\u{1b}[1muts ")
            || summary.contains("\u{1b}[1;36muts "),
        "{summary:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(
        plain.contains("uts ") && !plain.contains('\u{1b}'),
        "NO_COLOR: {plain:?}"
    );
    let piped = Command::new(&nstrace)
        .args(["run", "--", "sh", "-c", inner])
        .output()
        .unwrap();
    let piped = String::from_utf8_lossy(&piped.stdout);
    assert!(
        piped.contains("NS-REFUSED") && !piped.contains('\u{1b}'),
        "a pipe: {piped:?}"
    );
}
