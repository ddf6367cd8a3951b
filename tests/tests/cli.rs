//! The command line as a user meets it: text output, the closing line, clear errors.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    time::Duration,
};

use nstrace_tests::{Helper, Tracer, binary, proc_ns, require_root};

#[test]
fn text_output_shows_only_what_changed_with_the_proc_inodes() {
    if !require_root() {
        return;
    }
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
fn the_closing_line_counts_transitions_and_lost_samples() {
    if !require_root() {
        return;
    }
    let tracer = Tracer::start(&[]);
    let mut helper = Helper::spawn(&["unshare", "uts", "hold"]);
    let pid = helper.wait_ready();
    tracer.wait_for("unshare", nstrace_tests::by(pid, "unshare"));
    helper.finish();
    let stderr = tracer.stop();
    let last = stderr.lines().last().unwrap_or_default();
    let (seen, lost) = last
        .strip_prefix("nstrace: ")
        .and_then(|rest| rest.split_once(" transitions, "))
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
fn without_privileges_it_says_to_run_as_root() {
    if !require_root() {
        return;
    }
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
    assert!(!err.contains("panicked"), "{err}");
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
