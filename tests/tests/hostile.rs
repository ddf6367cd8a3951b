//! Attacks on what nstrace prints and writes, each run as a hostile process or user would: a
//! forged comm or exe path, links and files another user made in /tmp, records that are not
//! files or not records, lost records, a closed output, signals. Each test runs the attack
//! against the real binary and checks that it fails.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use nstrace_tests::{Helper, Tracer, Value, assert_root, binary, by, pin_to_cpu0, proc_ns};

/// A directory of this test's own, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("nstrace-hostile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The user another user is here: nobody.
const NOBODY: u32 = 65534;

fn nstrace(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(binary("nstrace"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nstrace")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("nstrace's output is UTF-8")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A JSON Lines record of `nshelper ACTIONS`, run by `nstrace run -o`; the helper's pid.
fn record_of(file: &Path, actions: &[&str], binary_encoding: bool) -> u32 {
    let mut args = vec![
        os("run"),
        os("--no-summary"),
        os("--json"),
        os("-o"),
        os(file),
    ];
    if binary_encoding {
        args.push(os("--binary"));
    }
    let helper = binary("nshelper");
    args.push(os("--"));
    args.push(os(&helper));
    args.extend(actions.iter().map(os));
    let out = nstrace(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first: Value = serde_json::from_str(
        stdout
            .lines()
            .find(|l| l.contains("\"transition\""))
            .unwrap_or_else(|| panic!("no transition in {stdout}")),
    )
    .expect("JSON");
    first["pid"].as_u64().expect("pid") as u32
}

/// `nstrace report ARGS`, killed (and failed) if it runs longer than `limit`, with its address
/// space capped at `max_bytes`: a reader that grows without bound dies of it.
fn report_bounded(args: &[&std::ffi::OsStr], limit: Duration, max_bytes: u64) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(binary("nstrace"));
    cmd.arg("report")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: one async-signal-safe call between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: max_bytes,
                rlim_max: max_bytes,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("run nstrace report");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for nstrace report"),
        Err(_) => {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("nstrace report {args:?} still ran after {limit:?}");
        }
    }
}

/// The lines of the live part of text output (before the summary).
fn live_lines(out: &str) -> Vec<&str> {
    out.lines().take_while(|l| !l.is_empty()).collect()
}

/// A comm that forges a line and clears the screen, with a byte that is not UTF-8.
const FORGED_COMM: &[u8] = b"ev\nFAKE\x1b[2J\xff";
const FORGED_ESCAPED: &str = "ev\\nFAKE\\x1b[2J\\u{fffd}";

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_forged_comm_stays_one_escaped_line_of_text() {
    assert_root();
    let helper = binary("nshelper");
    let hex = hex(FORGED_COMM);
    let out = nstrace(&[
        os("run"),
        os("--utc"),
        os("--"),
        os(&helper),
        os("comm"),
        os(&hex),
        os("unshare"),
        os("uts"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !out.stdout.contains(&0x1b),
        "a raw escape sequence was printed"
    );
    let stdout = text(&out.stdout);
    let live = live_lines(&stdout);
    assert_eq!(live.len(), 2, "the header and one transition: {stdout}");
    assert!(
        live[1].contains(FORGED_ESCAPED) && live[1].contains("unshare(CLONE_NEWUTS) = 0"),
        "{stdout}"
    );
    assert!(!stdout.lines().any(|l| l.starts_with("FAKE")), "{stdout}");
    // The summary names it the same way.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(FORGED_ESCAPED) && l.contains("unshare(")),
        "{stdout}"
    );

    // JSON keeps the exact text (the byte that is not UTF-8 as U+FFFD).
    let out = nstrace(&[
        os("run"),
        os("--json"),
        os("--"),
        os(&helper),
        os("comm"),
        os(&hex),
        os("unshare"),
        os("uts"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is one JSON object"))
        .collect();
    let unshare = events
        .iter()
        .find(|e| e["call"] == "unshare")
        .expect("the unshare");
    assert_eq!(unshare["comm"], "ev\nFAKE\u{1b}[2J\u{fffd}");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn an_exe_path_with_newlines_cannot_forge_the_summary_or_break_the_pictures() {
    assert_root();
    let dir = Scratch::new("exe");
    let forged =
        "x\n4242 FAKE, parent 1\n  00:00:00.000000  setns(3, CLONE_NEWNET): net 1 \u{2192} 2";
    std::fs::create_dir(dir.path(forged)).unwrap();
    let exe = dir.path(forged).join("nshelper");
    std::fs::copy(binary("nshelper"), &exe).unwrap();
    let (svg, trace) = (dir.path("p.svg"), dir.path("p.json"));
    let out = nstrace(&[
        os("run"),
        os("--utc"),
        os("--svg"),
        os(&svg),
        os("--perfetto"),
        os(&trace),
        os("--"),
        os(&exe),
        os("comm"),
        os(&hex(FORGED_COMM)),
        os("unshare"),
        os("uts"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("4242 FAKE") || l.starts_with("  00:00:00.000000  setns")),
        "a forged line: {stdout}"
    );
    let process = stdout
        .lines()
        .find(|l| l.contains("x\\n4242 FAKE, parent 1\\n"))
        .unwrap_or_else(|| panic!("the exe path, escaped, on one line: {stdout}"));
    assert!(process.contains(FORGED_ESCAPED), "{process}");

    let svg = std::fs::read_to_string(&svg).expect("the SVG");
    let doc = roxmltree::Document::parse(&svg)
        .unwrap_or_else(|e| panic!("the SVG is not well-formed XML ({e}):\n{svg}"));
    assert!(
        doc.descendants()
            .any(|n| n.text().is_some_and(|t| t.contains(FORGED_ESCAPED))),
        "{svg}"
    );
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap())
        .expect("the Perfetto trace is JSON");
    let names: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.contains(FORGED_ESCAPED)),
        "{names:?}"
    );
}

/// A root-only file, and a link to it owned by nobody in /tmp, as another user would make it.
struct Bait {
    _dir: Scratch,
    target: PathBuf,
    link: PathBuf,
    dir_link: PathBuf,
    inner: PathBuf,
}

impl Bait {
    fn new(name: &str) -> Self {
        let dir = Scratch::new(name);
        let target = dir.path("root-only");
        std::fs::write(&target, "keep").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let inner = dir.path("inner");
        std::fs::create_dir(&inner).unwrap();
        let tmp = std::env::temp_dir();
        let link = tmp.join(format!("nstrace-bait-{}-{name}", std::process::id()));
        let dir_link = tmp.join(format!("nstrace-baitdir-{}-{name}", std::process::id()));
        for (l, to) in [(&link, &target), (&dir_link, &inner)] {
            let _ = std::fs::remove_file(l);
            std::os::unix::fs::symlink(to, l).unwrap();
            std::os::unix::fs::lchown(l, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        Self {
            _dir: dir,
            target,
            link,
            dir_link,
            inner,
        }
    }

    fn untouched(&self) {
        assert_eq!(std::fs::read_to_string(&self.target).unwrap(), "keep");
        let meta = std::fs::metadata(&self.target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&self.inner).unwrap().count(), 0);
    }
}

impl Drop for Bait {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        let _ = std::fs::remove_file(&self.dir_link);
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn no_output_is_written_through_another_users_link() {
    assert_root();
    let bait = Bait::new("links");
    let dir = Scratch::new("links-record");
    let rec = dir.path("rec.jsonl");
    record_of(&rec, &["unshare", "uts"], false);
    let in_dir = bait.dir_link.join("p.svg");
    // Past a `..`, the link is still on the way.
    let link_name = bait.dir_link.file_name().unwrap().to_str().unwrap();
    let past_dot_dot = bait.dir_link.join("..").join(link_name).join("p.svg");
    for args in [
        vec![os("report"), os(&rec), os("--svg"), os(&bait.link)],
        vec![os("report"), os(&rec), os("--perfetto"), os(&bait.link)],
        vec![os("run"), os("-o"), os(&bait.link), os("--"), os("true")],
        vec![os("record"), os("-o"), os(&bait.link)],
        vec![os("report"), os(&rec), os("--svg"), os(&in_dir)],
        vec![os("report"), os(&rec), os("--svg"), os(&past_dot_dot)],
    ] {
        let out = nstrace(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("symbolic link"), "{args:?}: {err}");
        assert!(
            !err.contains("nstrace: tracing"),
            "refused before tracing: {err}"
        );
        bait.untouched();
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_record_over_a_file_another_user_made_becomes_the_callers_own_0600() {
    assert_root();
    let theirs = std::env::temp_dir().join(format!("nstrace-theirs-{}", std::process::id()));
    let _ = std::fs::remove_file(&theirs);
    std::fs::write(&theirs, "").unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The user keeps it open, to read what lands in it.
    let mut kept = std::fs::File::open(&theirs).unwrap();
    let pid = record_of(&theirs, &["unshare", "uts"], false);
    let meta = std::fs::metadata(&theirs).unwrap();
    let record = std::fs::read_to_string(&theirs).unwrap_or_default();
    let _ = std::fs::remove_file(&theirs);
    assert_eq!(meta.uid(), 0, "owned by the caller");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(record.contains(&format!("\"pid\":{pid},")), "{record}");
    let mut seen = String::new();
    kept.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "", "the other user's file was written into");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn output_paths_are_checked_before_tracing_and_never_overwrite_the_record() {
    assert_root();
    let dir = Scratch::new("paths");
    let started = Instant::now();
    let missing = dir.path("no-such-dir/p.svg");
    let out = nstrace(&[
        os("run"),
        os("--svg"),
        os(&missing),
        os("--"),
        os("sleep"),
        os("5"),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(err.contains("--svg"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(!err.contains("nstrace: tracing"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it traced first"
    );

    let rec = dir.path("rec.jsonl");
    record_of(&rec, &["unshare", "uts"], false);
    let before = std::fs::read(&rec).unwrap();
    let link = dir.path("rec-again.jsonl");
    std::fs::hard_link(&rec, &link).unwrap();
    let relative = Path::new(".").join(&rec);
    for picture in [&rec, &relative, &link] {
        for flag in ["--svg", "--perfetto"] {
            let out = nstrace(&[os("report"), os(&rec), os(flag), os(picture)]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("is the record it is made from"), "{err}");
            assert_eq!(std::fs::read(&rec).unwrap(), before, "the record changed");
        }
    }
    let both = dir.path("both");
    let out = nstrace(&[
        os("run"),
        os("-o"),
        os(&both),
        os("--perfetto"),
        os(&both),
        os("--"),
        os("true"),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("are one file"), "{err}");
    assert!(!both.exists());
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn zeros_and_holes_are_read_in_bounded_memory_and_time() {
    assert_root();
    const LIMIT: u64 = 1 << 30;
    let out = report_bounded(&[os("/dev/zero")], Duration::from_secs(30), LIMIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not an nstrace record"), "{err}");

    let dir = Scratch::new("holes");
    // A binary record with a 512 MiB hole after it: the hole is not a frame.
    let bin = dir.path("rec.nsr");
    let pid = record_of(&bin, &["unshare", "uts"], true);
    let file = std::fs::OpenOptions::new().write(true).open(&bin).unwrap();
    file.set_len(file.metadata().unwrap().len() + (512 << 20))
        .unwrap();
    drop(file);
    let out = report_bounded(
        &[os("--json"), os("--no-summary"), os(&bin)],
        Duration::from_secs(30),
        LIMIT,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("corrupt from here on"), "{err}");
    assert!(
        text(&out.stdout).contains(&format!("\"pid\":{pid},")),
        "what came before the hole is shown"
    );

    // JSON Lines with a 2 MiB run of zeros in the middle: skipped, the lines after it read.
    let json = dir.path("rec.jsonl");
    let pid = record_of(&json, &["unshare", "uts"], false);
    let content = std::fs::read_to_string(&json).unwrap();
    let lines: Vec<&str> = content.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("\"transition\""))
        .expect("a transition");
    let mut holed = lines[..at].join("\n").into_bytes();
    holed.push(b'\n');
    holed.extend(std::iter::repeat_n(0u8, 2 << 20));
    holed.push(b'\n');
    holed.extend(lines[at..].join("\n").into_bytes());
    holed.push(b'\n');
    std::fs::write(&json, &holed).unwrap();
    let out = report_bounded(
        &[os("--json"), os("--no-summary"), os(&json)],
        Duration::from_secs(30),
        LIMIT,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("line {}: longer than", at + 1)),
        "{err}"
    );
    assert!(
        text(&out.stdout).contains(&format!("\"pid\":{pid},")),
        "the lines after the zeros are read: {err}"
    );

    // A gap of 100 MiB with no line end: taken as corruption, in bounded time.
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&json)
        .unwrap();
    file.set_len(holed.len() as u64 + (100 << 20)).unwrap();
    let mut file = file;
    file.write_all(b"\n{}\n").unwrap();
    drop(file);
    let out = report_bounded(&[os(&json)], Duration::from_secs(30), LIMIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("without a line end"), "{err}");
}

/// Runs `SHELL -c SCRIPT` (with $NSTRACE set) with a deadline.
fn sh_bounded(shell: &str, script: &str, limit: Duration) -> Output {
    let child = Command::new(shell)
        .args(["-c", script])
        .env("NSTRACE", binary("nstrace"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sh");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for sh"),
        Err(_) => {
            // SAFETY: signalling our own child, and then its children.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", "nstrace report"])
                .status();
            panic!("`{script}` still ran after {limit:?}");
        }
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_record_reads_the_same_from_a_fifo_a_pipe_and_standard_input() {
    assert_root();
    let dir = Scratch::new("streams");
    for binary_encoding in [false, true] {
        let rec = dir.path(if binary_encoding {
            "rec.nsr"
        } else {
            "rec.jsonl"
        });
        record_of(&rec, &["unshare", "uts", "unshare", "net"], binary_encoding);
        let whole = nstrace(&[os("report"), os("--json"), os(&rec)]);
        assert!(whole.status.success(), "{}", text(&whole.stderr));
        let fifo = dir.path("fifo");
        let _ = std::fs::remove_file(&fifo);
        let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let rec = rec.display();
        let fifo = fifo.display();
        for (shell, script) in [
            (
                "sh",
                format!("cat '{rec}' > '{fifo}' & \"$NSTRACE\" report --json '{fifo}'"),
            ),
            ("sh", format!("cat '{rec}' | \"$NSTRACE\" report --json -")),
            (
                "sh",
                format!("cat '{rec}' | \"$NSTRACE\" report --json /dev/stdin"),
            ),
            ("bash", format!("\"$NSTRACE\" report --json <(cat '{rec}')")),
        ] {
            let out = sh_bounded(shell, &script, Duration::from_secs(30));
            assert!(out.status.success(), "{script}: {}", text(&out.stderr));
            assert_eq!(
                text(&out.stdout),
                text(&whole.stdout),
                "{script} read other entries than the file"
            );
        }
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_line_that_is_not_utf8_is_skipped_and_every_other_line_read() {
    assert_root();
    let dir = Scratch::new("utf8");
    let rec = dir.path("rec.jsonl");
    let pid = record_of(
        &rec,
        &["unshare", "uts", "unshare", "net", "unshare", "ipc"],
        false,
    );
    let mut lines: Vec<Vec<u8>> = std::fs::read(&rec)
        .unwrap()
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let at = lines
        .iter()
        .position(|l| {
            let l = String::from_utf8_lossy(l);
            l.contains("CLONE_NEWUTS") && l.contains("\"transition\"")
        })
        .expect("the uts unshare");
    let comm = lines[at]
        .windows(8)
        .position(|w| w == b"nshelper")
        .expect("its comm");
    lines[at][comm] = 0xff;
    std::fs::write(&rec, lines.join(&b'\n')).unwrap();
    let out = nstrace(&[os("report"), os("--utc"), os(&rec)]);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("line {}: not UTF-8", at + 1)),
        "{err}"
    );
    let shown: Vec<&str> = live_lines(&stdout)
        .into_iter()
        .filter(|l| l.contains(&format!(" {pid} ")))
        .collect();
    assert_eq!(shown.len(), 2, "{stdout}");
    assert!(shown[0].contains("unshare(CLONE_NEWNET)"), "{stdout}");
    assert!(shown[1].contains("unshare(CLONE_NEWIPC)"), "{stdout}");
}

/// Runs `nsstorm setns-ops N` on CPU 0.
fn storm_on_cpu0(ops: u64) {
    let out = pin_to_cpu0(Command::new(binary("nsstorm")).args(["setns-ops", &ops.to_string()]))
        .output()
        .expect("run nsstorm");
    assert!(out.status.success(), "{out:?}");
}

/// A collector frozen while CPU 0's small buffer overflows loses records there, among them a
/// helper's unshare. The loss is in the live JSON, the record (both encodings) and the summary;
/// the helper is marked uncertain, and /proc read again puts it where it is.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn lost_records_are_data_and_the_timeline_heals_from_proc() {
    assert_root();
    let dir = Scratch::new("loss");
    for binary_encoding in [false, true] {
        let rec = dir.path(if binary_encoding {
            "rec.nsr"
        } else {
            "rec.jsonl"
        });
        let mut args = vec!["-o", rec.to_str().unwrap(), "--buffer-pages", "8"];
        if binary_encoding {
            args.push("--binary");
        }
        let tracer = Tracer::start(&args);
        let mut cmd = Command::new(binary("nshelper"));
        pin_to_cpu0(cmd.args(["pause", "unshare", "uts", "hold"]));
        let mut helper = Helper::spawn_command(cmd);
        let pid = helper.wait_paused();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(tracer.pid() as i32, libc::SIGSTOP) };
        storm_on_cpu0(20_000);
        helper.resume();
        helper.wait_ready();
        storm_on_cpu0(20_000);
        let truth = proc_ns(pid);
        // SAFETY: as above.
        unsafe { libc::kill(tracer.pid() as i32, libc::SIGCONT) };

        let loss = tracer.wait_for("a loss on CPU 0", |e| e["type"] == "loss" && e["cpu"] == 0);
        assert_eq!(loss["cpu"], 0, "{loss}");
        let (records, batches) = (
            loss["records"].as_u64().unwrap(),
            loss["batches"].as_u64().unwrap(),
        );
        assert!(records >= batches && batches > 0, "{loss}");
        assert!(loss["ts_ns"].as_u64().unwrap() <= loss["noticed_ns"].as_u64().unwrap());
        // Its unshare went into CPU 0's full buffer: lost, and healed from /proc.
        let told = tracer.wait_for("the helper's uts", |e| {
            by(pid, "unshare")(e) || (e["type"] == "resync" && e["pid"] == pid)
        });
        assert_eq!(told["type"], "resync", "the unshare was not lost: {told}");
        assert_eq!(told["changes"][0]["slot"], "uts", "{told}");
        assert_eq!(told["changes"][0]["to"], truth["uts"], "{told}");
        helper.finish();
        let stderr = tracer.stop();
        let all_losses: u64 = tracer_losses(&stderr);
        let closing = stderr.lines().last().unwrap_or_default();
        assert!(
            closing.contains(&format!(" {all_losses} lost samples")) && all_losses >= records,
            "{closing}\n{stderr}"
        );

        // The record says where, and its replay heals the same way.
        let out = nstrace(&[os("report"), os("--json"), os(&rec)]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("the recording lost"), "{err}");
        let stdout = text(&out.stdout);
        let events: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let replayed_losses: Vec<&Value> = events.iter().filter(|e| e["type"] == "loss").collect();
        assert!(!replayed_losses.is_empty(), "{stdout}");
        let summary = events.last().unwrap();
        assert_eq!(summary["type"], "summary");
        assert_eq!(
            summary["counts"]["lost_records"], all_losses,
            "{}",
            summary["counts"]
        );
        assert!(!summary["losses"].as_array().unwrap().is_empty());
        let process = summary["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .expect("the helper's history");
        assert!(process["uncertain_since"].is_string(), "{process}");
        let last_uts = process["moves"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m["changes"]
                    .as_array()?
                    .iter()
                    .find(|c| c["slot"] == "uts")
                    .map(|c| c["to"]["inode"].clone())
            })
            .next_back();
        assert_eq!(last_uts, Some(truth["uts"].into()), "{process}");
    }
}

/// The records the stderr lines of a trace say were lost.
fn tracer_losses(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("nstrace: lost "))
        .filter_map(|l| {
            let mut words = l.split(' ');
            let n = words.next()?.parse::<u64>().ok()?;
            (words.next()? == "records").then_some(n)
        })
        .sum()
}

/// Traces started while a fork storm runs: records the programs could not send before the
/// buffers were open predate the trace and are not losses.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_trace_started_during_a_fork_storm_counts_no_loss() {
    assert_root();
    let mut storm = Command::new(binary("nsstorm"))
        .args(["fork", "60"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start nsstorm");
    let mut closing = Vec::new();
    for _ in 0..8 {
        let out = nstrace(&[os("run"), os("--no-summary"), os("--"), os("true")]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        closing.push(err.lines().last().unwrap_or_default().to_owned());
    }
    let _ = storm.kill();
    let _ = storm.wait();
    for line in &closing {
        assert!(line.contains(" 0 lost samples"), "{closing:#?}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn run_goes_on_recording_until_its_command_ends_when_its_output_is_closed() {
    assert_root();
    let dir = Scratch::new("head");
    let (rec, done) = (dir.path("rec.jsonl"), dir.path("done"));
    let script = format!(
        "sleep 0.5; '{}' unshare uts; touch '{}'; exit 3",
        binary("nshelper").display(),
        done.display()
    );
    let mut nstrace = Command::new(binary("nstrace"))
        .args(["run", "-o"])
        .arg(&rec)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nstrace");
    // `| head -1`: the header, then the reader is gone.
    let mut out = BufReader::new(nstrace.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("TIME"), "{first}");
    drop(out);
    let status = nstrace.wait().unwrap();
    let mut err = String::new();
    nstrace
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(3), "the command's status: {err}");
    assert!(done.exists(), "the command ran to its end");
    let record = std::fs::read_to_string(&rec).unwrap();
    assert!(
        record
            .lines()
            .any(|l| l.contains("\"call\":\"unshare\"") && l.contains("\"comm\":\"nshelper\"")),
        "the unshare after the output closed is recorded: {err}"
    );
}

/// `nstrace run ... 2>&1 | head -1`: stderr closes too. Nothing nstrace says may end it early.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn run_outlives_a_closed_stderr_and_exits_with_its_commands_status() {
    assert_root();
    let dir = Scratch::new("stderr");
    let rec = dir.path("rec.jsonl");
    let script = format!(
        "\"$NSTRACE\" run -o '{}' -- sh -c 'sleep 0.5; \"$0\" unshare uts; exit 4' '{}' 2>&1 \
         | head -1 >/dev/null; echo \"status ${{PIPESTATUS[0]}}\"",
        rec.display(),
        binary("nshelper").display()
    );
    let out = sh_bounded("bash", &script, Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.trim(), "status 4", "{}", text(&out.stderr));
    let record = std::fs::read_to_string(&rec).unwrap();
    assert!(record.ends_with('\n'), "a whole record");
    assert!(
        record.contains("\"call\":\"unshare\"") && record.contains("\"comm\":\"nshelper\""),
        "the command's unshare, after stderr closed, is recorded"
    );
}

/// A record's bad lines are quoted in the errors: escaped, and cut short.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_records_own_text_in_an_error_is_escaped_and_cut_short() {
    assert_root();
    let dir = Scratch::new("bad-text");
    let rec = dir.path("rec.jsonl");
    record_of(&rec, &["unshare", "uts"], false);
    let mut bytes = std::fs::read(&rec).unwrap();
    bytes.extend_from_slice(
        b"{\"type\":\"\\u001b[2J\\nnstrace: 0 transitions shown, replayed from x\"}\n",
    );
    bytes.extend_from_slice(format!("{{\"type\":\"{}\"}}\n", "A".repeat(500_000)).as_bytes());
    std::fs::write(&rec, &bytes).unwrap();
    let out = nstrace(&[os("report"), os("--no-summary"), os(&rec)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !out.stderr.contains(&0x1b),
        "a raw escape sequence on stderr"
    );
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("transitions shown").count(),
        2,
        "one forged, escaped: {err}"
    );
    assert!(
        !err.lines()
            .any(|l| l.starts_with("nstrace: 0 transitions shown")),
        "{err}"
    );
    assert!(
        err.lines().all(|l| l.len() < 1000),
        "a bad line quoted whole: {err}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_hangup_ends_a_recording_with_its_summary_and_pictures() {
    assert_root();
    let dir = Scratch::new("hup");
    let (rec, svg) = (dir.path("rec.jsonl"), dir.path("p.svg"));
    let mut nstrace = Command::new(binary("nstrace"))
        .args(["record", "-o"])
        .arg(&rec)
        .arg("--svg")
        .arg(&svg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nstrace");
    let mut stdout = nstrace.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let mut err = BufReader::new(nstrace.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("nstrace: tracing") {
        line.clear();
        assert_ne!(err.read_line(&mut line).unwrap(), 0, "nstrace ended");
    }
    let mut helper = Helper::spawn(&["unshare", "uts", "hold"]);
    helper.wait_ready();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nstrace.id() as i32, libc::SIGHUP) };
    let status = nstrace.wait().unwrap();
    helper.finish();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let out = out.join().unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(
        rest.contains(" transitions shown, "),
        "the closing line: {rest}"
    );
    assert!(out.contains("\nNAMESPACES ("), "the summary: {out}");
    let picture = std::fs::read_to_string(&svg).expect("the SVG was written");
    roxmltree::Document::parse(&picture).expect("a whole SVG");
}

/// A dropped ssh session: nstrace's terminal hangs up (its writes fail with EIO), then SIGHUP.
/// The record still gets everything, the pictures are written, the closing line said.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_terminal_that_hangs_up_mid_record_leaves_a_whole_record_and_the_pictures() {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    assert_root();
    let dir = Scratch::new("tty");
    let (rec, svg) = (dir.path("rec.jsonl"), dir.path("p.svg"));
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds; no name, termios or size asked for.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds that nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut nstrace = Command::new(binary("nstrace"))
        .args(["record", "-o"])
        .arg(&rec)
        .arg("--svg")
        .arg(&svg)
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nstrace");
    let mut err = BufReader::new(nstrace.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("nstrace: tracing") {
        line.clear();
        assert_ne!(err.read_line(&mut line).unwrap(), 0, "nstrace ended");
    }
    let mut before = Helper::spawn(&["unshare", "uts", "hold"]);
    let first = before.wait_ready();
    std::thread::sleep(Duration::from_millis(200));
    drop(master);
    let mut after = Helper::spawn(&["unshare", "net", "hold"]);
    let second = after.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nstrace.id() as i32, libc::SIGHUP) };
    let status = nstrace.wait().unwrap();
    before.finish();
    after.finish();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(
        rest.contains(" transitions shown, "),
        "the closing line: {rest}"
    );
    let record = std::fs::read_to_string(&rec).unwrap();
    for pid in [first, second] {
        assert!(
            record.contains(&format!("\"call\":\"unshare\",\"pid\":{pid},")),
            "the unshare of {pid} is recorded: {rest}"
        );
    }
    let picture = std::fs::read_to_string(&svg).expect("the SVG was written");
    roxmltree::Document::parse(&picture).expect("a whole SVG");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn ctrl_c_twice_says_what_still_runs_and_three_times_kills_it() {
    assert_root();
    let mut nstrace = Command::new(binary("nstrace"))
        .args(["run", "--no-summary", "--", "sh", "-c"])
        .arg("trap '' INT TERM HUP; echo started; while :; do sleep 0.1; done")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nstrace");
    let mut out = BufReader::new(nstrace.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "started" {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "nstrace ended");
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let mut err = nstrace.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    for _ in 0..2 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(nstrace.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            nstrace.try_wait().unwrap().is_none(),
            "nstrace ended while its command ran"
        );
    }
    // SAFETY: as above.
    unsafe { libc::kill(nstrace.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = nstrace.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = nstrace.kill();
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", "while :; do sleep 0.1; done"])
                .status();
            panic!("a third Ctrl-C did not end the command");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        err.contains("still waiting for the command (sh, pid"),
        "{err}"
    );
    assert!(err.contains("killing the command"), "{err}");
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{err}");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_command_that_cannot_run_exits_as_a_shell_does_and_odd_options_are_warned_of() {
    assert_root();
    let out = nstrace(&[os("run"), os("--"), os("/nonexistent/command")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(
        err.contains("/nonexistent/command: command not found"),
        "{err}"
    );
    assert!(!err.contains("nstrace: tracing"), "{err}");
    let out = nstrace(&[os("run"), os("--"), os("/etc/passwd")]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));

    let out = nstrace(&[
        os("run"),
        os("--no-summary"),
        os("--pid"),
        os("4194303"),
        os("--"),
        os("true"),
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--pid 4194303: no such process"), "{err}");

    let dir = Scratch::new("options");
    let rec = dir.path("rec.jsonl");
    record_of(&rec, &["unshare", "uts"], false);
    let out = nstrace(&[
        os("report"),
        os("--no-summary"),
        os(&rec),
        os("-o"),
        os(&dir.path("x")),
        os("--binary"),
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("`report` reads one and ignores them"), "{err}");
    assert!(!dir.path("x").exists());

    for args in [
        vec![os("report"), os("/nonexistent/rec.jsonl")],
        vec![
            os("run"),
            os("-o"),
            os("/nonexistent/dir/rec"),
            os("--"),
            os("true"),
        ],
    ] {
        let out = nstrace(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("/nonexistent/"), "the file is named: {err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn every_errno_has_its_name() {
    assert_root();
    let helper = binary("nshelper");
    let out = nstrace(&[
        os("run"),
        os("--json"),
        os("--"),
        os(&helper),
        os("try-clone3-big"),
        os("uts"),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refused: Value = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["call"] == "clone3")
        .unwrap_or_else(|| panic!("the refused clone3: {stdout}"));
    assert_eq!(refused["errno"], "E2BIG", "{refused}");
    assert_eq!(refused["ret"], -libc::E2BIG as i64);
}
