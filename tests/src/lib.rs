//! The harness of nstrace's root integration tests.
//!
//! [`Tracer`] runs the real `nstrace --json` binary (the real eBPF, loaded into this kernel) and
//! collects what it prints; [`Helper`] runs `nshelper`, which makes the namespace calls, so the
//! test process itself never changes namespace. Every assertion filters on the test's own pids:
//! other processes on the machine create namespaces too. Ground truth is `/proc/PID/ns`.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub mod engines;

/// How long an event may take to show up.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespace kinds, as named in `/proc/PID/ns` and in nstrace's JSON.
pub const KINDS: [&str; 10] = [
    "mnt",
    "uts",
    "ipc",
    "pid",
    "pid_for_children",
    "net",
    "user",
    "cgroup",
    "time",
    "time_for_children",
];

/// `target/<profile>/`, where cargo puts the binaries next to the test executables' `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("deps dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A binary of this workspace, built by `cargo xtask test` before the tests run.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo xtask test` does, or `cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// Fails the test unless this process may load eBPF (is root).
///
/// The tests that need root are `#[ignore]`d, so a plain `cargo test` leaves them out and says
/// so; `cargo xtask test` runs them (with `--include-ignored`, as root). Run any other way
/// without root, they fail here instead of passing without having tested anything.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test loads eBPF programs and needs root: run `cargo xtask test`"
    );
}

/// A running `nstrace --json`.
pub struct Tracer {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Tracer {
    /// Starts nstrace with `--json` and `args`, and waits until it is attached.
    pub fn start(args: &[&str]) -> Tracer {
        Tracer::start_under(&[], args)
    }

    /// Starts nstrace as [`Tracer::start`] does, run by the command `under` (e.g. `setpriv` with
    /// its options) when that is not empty.
    pub fn start_under(under: &[&str], args: &[&str]) -> Tracer {
        let nstrace = binary("nstrace");
        let mut command = match under.split_first() {
            Some((program, options)) => {
                let mut c = Command::new(program);
                c.args(options).arg(&nstrace);
                c
            }
            None => Command::new(&nstrace),
        };
        let mut child = command
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nstrace");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let events = json_lines(child.stdout.take().expect("stdout"));
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let text = Arc::clone(&stderr_text);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("nstrace: tracing") {
                        let _ = ready_tx.send(());
                    }
                    let mut text = text.lock().expect("lock");
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let mut tracer = Tracer {
            child,
            events,
            stderr: stderr_text,
        };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = tracer.child.try_wait().ok().flatten();
            panic!(
                "nstrace did not start (exit: {status:?}); its stderr:\n{}",
                tracer.stderr()
            );
        }
        tracer
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// nstrace's pid (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every event seen so far that `pred` accepts.
    pub fn events(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect()
    }

    /// Waits until `count` events match `pred` and returns them, in the order printed.
    pub fn wait_for_n(
        &self,
        count: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let found = self.events(&pred);
            if found.len() >= count {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {count} × {what}; found {found:#?}\nnstrace stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for one event that `pred` accepts.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_n(1, what, pred).remove(0)
    }

    /// Stops nstrace as [`Tracer::stop`] does; what it printed (the summary is the last line)
    /// and its stderr.
    pub fn stop_with_output(self) -> (Vec<Value>, String) {
        let events = Arc::clone(&self.events);
        let stderr = self.stop();
        let events = events.lock().expect("lock").clone();
        (events, stderr)
    }

    /// Stops nstrace with SIGTERM (SIGINT may be ignored in a background job) and returns its
    /// stderr (the closing line is the last).
    pub fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait nstrace");
        // Let the reader threads see EOF.
        thread::sleep(Duration::from_millis(50));
        assert!(
            status.success(),
            "nstrace exited with {status}: {}",
            self.stderr()
        );
        self.stderr()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every line of an nstrace `--json` stream as it comes, parsed on a thread of its own (a line
/// that is not JSON fails the test).
pub fn json_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<Value>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&events);
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("nstrace printed a line that is not JSON ({e}): {line}")
            });
            kept.lock().expect("lock").push(value);
        }
    });
    events
}

/// Every line of a finished `--json` output (a line that is not JSON fails the test).
pub fn json_objects(output: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A running nshelper (or a real tool that ends by running `nshelper hold`).
pub struct Helper {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// Every process of this helper that reported `ready`.
    pub ready: Vec<u32>,
}

impl Helper {
    /// `nshelper ACTIONS...`.
    pub fn spawn(actions: &[&str]) -> Helper {
        let mut cmd = Command::new(binary("nshelper"));
        cmd.args(actions);
        Helper::spawn_command(cmd)
    }

    /// Any command whose last step runs `nshelper ... hold`.
    pub fn spawn_command(mut cmd: Command) -> Helper {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Helper {
            child,
            stdout,
            ready: Vec::new(),
        }
    }

    /// The pid of the process spawned (the first of the helper's processes).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the helper's next line of output.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("read helper stdout");
        if n == 0 {
            let status = self.child.wait().expect("wait helper");
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the helper ended ({status}) before saying what was expected; stderr:\n{err}");
        }
        line.trim_end().to_owned()
    }

    /// Waits for the next `ready PID` and returns that pid.
    pub fn wait_ready(&mut self) -> u32 {
        let line = self.line();
        let pid = line
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected `ready PID` from the helper, got {line:?}"));
        self.ready.push(pid);
        pid
    }

    /// Waits for `paused PID` (the `pause` action) and returns that pid.
    pub fn wait_paused(&mut self) -> u32 {
        let line = self.line();
        line.strip_prefix("paused ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected `paused PID` from the helper, got {line:?}"))
    }

    /// Lets a paused helper go on.
    pub fn resume(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("write helper stdin");
        stdin.flush().expect("flush helper stdin");
    }

    /// Closes stdin (every holding process exits) and waits for the helper.
    pub fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait helper");
        assert!(status.success(), "the helper failed: {status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(100));
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// Makes `cmd` run on CPU 0 only (with a storm there, its records share that CPU's buffer).
pub fn pin_to_cpu0(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: one async-signal-safe call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        })
    }
}

/// A namespace set by kind name.
pub type NsSet = BTreeMap<String, u64>;

/// The inode of `/proc/PID/ns/KIND`, or None when it cannot be read (pid_for_children of a pid
/// namespace that has no process yet).
pub fn proc_ns_one(pid: u32, kind: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let link = link.to_string_lossy();
    // "uts:[4026531838]"
    let start = link.find('[')? + 1;
    let end = link.find(']')?;
    link[start..end].parse().ok()
}

/// Ground truth: `readlink /proc/PID/ns/*`.
pub fn proc_ns(pid: u32) -> NsSet {
    KINDS
        .iter()
        .filter_map(|k| proc_ns_one(pid, k).map(|inum| (k.to_string(), inum)))
        .collect()
}

/// A set from the event's JSON (`before`, `after`, or `child.ns`).
pub fn json_ns(set: &Value) -> NsSet {
    KINDS
        .iter()
        .map(|k| {
            let inum = set[k].as_u64().unwrap_or_else(|| panic!("no {k} in {set}"));
            (k.to_string(), inum)
        })
        .collect()
}

/// Asserts that the event's set equals /proc's on every kind /proc could show (all ten, or
/// nine when pid_for_children is not readable yet).
pub fn assert_same_ns(what: &str, event_set: &Value, proc_set: &NsSet) {
    let event = json_ns(event_set);
    assert!(
        proc_set.len() >= 9,
        "{what}: /proc showed too little: {proc_set:?}"
    );
    for (kind, inum) in proc_set {
        assert_eq!(
            event.get(kind),
            Some(inum),
            "{what}: {kind} differs (event {event:?}, /proc {proc_set:?})"
        );
    }
}

/// The `changed` list of an event, as strings.
pub fn changed(event: &Value) -> Vec<String> {
    strings(&event["changed"])
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// Selects events by process id and call.
pub fn by(pid: u32, call: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["pid"].as_u64() == Some(u64::from(pid)) && e["call"] == call
}

/// A running `nstrace run --json -o FILE -- CMD...`: the command's stdin is ours (closing it
/// ends `nshelper hold`), its stdout is nstrace's (`ready PID` lines among the JSON).
pub struct Run {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    ready: mpsc::Receiver<u32>,
    stderr: Arc<Mutex<String>>,
    /// The record file.
    pub file: PathBuf,
}

impl Run {
    /// `nstrace run --json -o FILE -- CMD`, the record file in JSON Lines.
    pub fn start(cmd: &[&str]) -> Run {
        Run::start_with(cmd, false)
    }

    /// [`Run::start`] with the record file in the binary encoding (`--binary`).
    pub fn start_binary(cmd: &[&str]) -> Run {
        Run::start_with(cmd, true)
    }

    /// [`Run::start`] with nstrace `options` before `--`.
    pub fn start_with_options(options: &[&str], cmd: &[&str]) -> Run {
        Run::spawn(options, cmd, false)
    }

    fn start_with(cmd: &[&str], binary_record: bool) -> Run {
        Run::spawn(&[], cmd, binary_record)
    }

    fn spawn(options: &[&str], cmd: &[&str], binary_record: bool) -> Run {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file =
            std::env::temp_dir().join(format!("nstrace-test-{}-{n}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let mut child = Command::new(binary("nstrace"))
            .args(["run", "--json", "-o"])
            .arg(&file)
            .args(binary_record.then_some("--binary"))
            .args(options)
            .arg("--")
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nstrace run");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        {
            let events = Arc::clone(&events);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(pid) = line.strip_prefix("ready ") {
                        let _ = ready_tx.send(pid.trim().parse().expect("a pid"));
                    } else if line.starts_with('{') {
                        let value: Value = serde_json::from_str(&line)
                            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                        events.lock().expect("lock").push(value);
                    }
                }
            });
        }
        let stderr = child.stderr.take().expect("stderr");
        {
            let text = Arc::clone(&stderr_text);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut text = text.lock().expect("lock");
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        Run {
            child,
            events,
            ready,
            stderr: stderr_text,
            file,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// The pid of the next `nshelper hold` that is ready.
    pub fn wait_ready(&self) -> u32 {
        self.ready
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the command never got ready; nstrace said:\n{}",
                    self.stderr()
                )
            })
    }

    /// Rebuilds the timeline from the record file as it stands, and checks every live process
    /// it follows against /proc: each is in exactly the namespaces /proc shows. Returns how many
    /// tasks were compared.
    pub fn checkpoint(&self) -> usize {
        // The collector releases records after a 30 ms reorder window.
        thread::sleep(Duration::from_millis(300));
        let mut pipeline = nstrace::pipeline::Pipeline::new(
            nstrace::timeline::Timeline::new(nstrace::timeline::Scope::All),
            nstrace::pipeline::Filter::default(),
        );
        let (_, replayed) = nstrace::record::Source::open(&self.file)
            .and_then(|source| nstrace::record::rebuild(source, &[], &mut pipeline))
            .unwrap_or_else(|e| panic!("the record file does not replay: {e}"));
        assert!(replayed.bad.is_empty(), "bad lines: {:?}", replayed.bad);
        let tl = pipeline.timeline;
        let mut compared = 0;
        for (tid, pid) in tl.live_tasks() {
            let dir = format!("/proc/{pid}/task/{tid}/ns");
            let truth: Vec<(&str, u64)> = KINDS
                .iter()
                .filter_map(|k| {
                    let link = std::fs::read_link(format!("{dir}/{k}")).ok()?;
                    let link = link.to_string_lossy().into_owned();
                    let inum = link[link.find('[')? + 1..link.find(']')?].parse().ok()?;
                    Some((*k, inum))
                })
                .collect();
            if truth.is_empty() {
                continue; // exited since
            }
            let model = tl.live_set(tid).unwrap_or_default();
            for (kind, inum) in truth {
                let modelled = model
                    .iter()
                    .find(|(k, _)| k.name() == kind)
                    .map(|(_, i)| u64::from(*i));
                assert_eq!(
                    modelled,
                    Some(inum),
                    "task {tid} of {pid}: {kind} in the timeline is not what /proc shows"
                );
            }
            compared += 1;
        }
        compared
    }

    /// Closes the command's stdin, waits for nstrace, and returns its exit status, the
    /// transitions it printed and its summary object. The record file stays for
    /// [`Run::report_summary`].
    pub fn finish(&mut self) -> (std::process::ExitStatus, Vec<Value>, Value) {
        let run = self;
        drop(run.child.stdin.take());
        let status = run.child.wait().expect("wait nstrace");
        thread::sleep(Duration::from_millis(100));
        let events = run.events.lock().expect("lock").clone();
        let summary = events
            .iter()
            .rev()
            .find(|e| e["type"] == "summary")
            .cloned()
            .unwrap_or_else(|| panic!("no summary; stderr:\n{}", run.stderr()));
        let transitions = events
            .into_iter()
            .filter(|e| e["type"] == "transition")
            .collect();
        (status, transitions, summary)
    }

    /// `nstrace report FILE --json`: the summary a replay gives.
    pub fn report_summary(&self) -> Value {
        let out = Command::new(binary("nstrace"))
            .args(["report", "--json"])
            .arg(&self.file)
            .output()
            .expect("nstrace report");
        assert!(
            out.status.success(),
            "report failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().expect("a summary line");
        serde_json::from_str(last).expect("JSON")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Summary namespaces of one type that some process created with `call`.
pub fn created_by<'a>(summary: &'a Value, ty: &str, call: &str) -> Vec<&'a Value> {
    summary["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter(|n| n["type"] == ty && n["created_by"]["call"] == call)
        .collect()
}

/// A busybox bundle for runc, in a fresh directory.
pub fn busybox_bundle(dir: &std::path::Path, args: &[&str], edit: impl FnOnce(&mut Value)) {
    let rootfs = dir.join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox (Debian's busybox-static; cargo xtask test installs it)");
    std::fs::copy(busybox, rootfs.join("busybox")).unwrap();
    for tool in ["sh", "read", "echo", "cat", "sleep", "true"] {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join(tool));
    }
    let status = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(dir)
        .status()
        .expect("runc spec");
    assert!(status.success());
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["process"]["terminal"] = Value::Bool(false);
    config["process"]["args"] = serde_json::json!(args);
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
}
