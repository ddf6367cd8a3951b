//! The benchmark's workload: namespace storms, timed by their own loop.
//!
//!   nsstorm unshare SECONDS   fork; the child unshares UTS and exits
//!   nsstorm fork SECONDS      fork and exit, no namespace change
//!   nsstorm setns SECONDS     setns into a held UTS namespace and back (one op: both)
//!   nsstorm setns-ops N       the same, exactly N times
//!   nsstorm clone SECONDS     clone with CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWNET; the child exits
//!   nsstorm docker SECONDS    `docker run --rm` of busybox running `true`: a container's whole
//!                             start and end (the image is imported first, untimed)
//!   nsstorm synth FILE N      write a record file of N synthetic records (replay benchmark)
//!   nsstorm pipe N            N kernel setns records through the collector's path (decode,
//!                             reorder, timeline, text output to nowhere): its cost per record
//!   nsstorm pipe N json       the same with `--json` output (node and boot id included)
//!   nsstorm json N            N setns transitions serialised as `--json` lines, to nowhere:
//!                             the serialiser alone, on one core
//!
//! Prints one JSON line: {"storm", "ops", "seconds", "rate"}.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

fn fail(what: &str) -> ! {
    eprintln!("nsstorm: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}

fn wait(child: libc::pid_t) {
    let mut status = 0;
    // SAFETY: our own child.
    if unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        fail("waitpid");
    }
}

/// Forks a child that runs `child` and exits; waits for it.
fn fork_and(child: impl Fn()) {
    // SAFETY: single-threaded; the child only makes syscalls and exits.
    match unsafe { libc::fork() } {
        r if r < 0 => fail("fork"),
        0 => {
            child();
            // SAFETY: leave without running destructors or atexit handlers.
            unsafe { libc::_exit(0) }
        }
        pid => wait(pid),
    }
}

fn storm(kind: &str, until: Instant) -> u64 {
    let mut ops = 0u64;
    match kind {
        "unshare" => {
            while Instant::now() < until {
                fork_and(|| {
                    // SAFETY: plain syscall.
                    unsafe { libc::unshare(libc::CLONE_NEWUTS) };
                });
                ops += 1;
            }
        }
        "fork" => {
            while Instant::now() < until {
                fork_and(|| {});
                ops += 1;
            }
        }
        "setns" => ops = setns_round_trips(None, until),
        "clone" => {
            let flags =
                libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET | libc::SIGCHLD;
            while Instant::now() < until {
                // SAFETY: no CLONE_VM: the child is a copy that exits at once.
                let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
                match pid {
                    r if r < 0 => fail("clone"),
                    // SAFETY: leave at once.
                    0 => unsafe { libc::_exit(0) },
                    pid => wait(pid as libc::pid_t),
                }
                ops += 1;
            }
        }
        "docker" => {
            let docker = nstrace_tests::engines::Engine::docker();
            while Instant::now() < until {
                docker.run(&["run", "--rm", nstrace_tests::engines::IMAGE, "true"]);
                ops += 1;
            }
        }
        other => {
            eprintln!(
                "nsstorm: unknown storm {other} (unshare, fork, setns, clone, docker, synth)"
            );
            std::process::exit(2);
        }
    }
    ops
}

/// setns into a held UTS namespace and back (one op: both), until `until` or, given a count,
/// exactly that many times.
fn setns_round_trips(count: Option<u64>, until: Instant) -> u64 {
    let mut ops = 0u64;
    let home = File::open("/proc/self/ns/uts").unwrap_or_else(|_| fail("open uts"));
    // SAFETY: plain syscall.
    if unsafe { libc::unshare(libc::CLONE_NEWUTS) } != 0 {
        fail("unshare");
    }
    let held = File::open("/proc/self/ns/uts").unwrap_or_else(|_| fail("open uts"));
    let (home, held) = (home.as_raw_fd(), held.as_raw_fd());
    // Checking the clock every op would cost as much as the op.
    loop {
        for _ in 0..256 {
            if count.is_some_and(|n| ops == n) {
                return ops;
            }
            // SAFETY: valid namespace fds.
            unsafe {
                if libc::setns(home, libc::CLONE_NEWUTS) != 0
                    || libc::setns(held, libc::CLONE_NEWUTS) != 0
                {
                    fail("setns");
                }
            }
            ops += 1;
        }
        if count.is_none() && Instant::now() >= until {
            return ops;
        }
    }
}

/// A record file of `n` records: unshare transitions, forks and exits of many processes; JSON
/// Lines, or the binary encoding.
fn synth(path: &str, n: u64, binary: bool) {
    use std::io::Write as _;

    use nstrace::{
        clock::WallClock,
        event::{Call, Exit, Fork, NsSet, Record, Transition},
        output::{Sink, json::JsonSink},
        record::{BinSink, RecordFile},
    };
    let mut out: Box<dyn Sink> = if binary {
        let file =
            RecordFile::create(std::path::Path::new(path)).unwrap_or_else(|_| fail("create"));
        Box::new(BinSink::new(file).unwrap_or_else(|_| fail("write")))
    } else {
        let file = File::create(path).unwrap_or_else(|_| fail("create"));
        Box::new(JsonSink::new(
            std::io::BufWriter::new(file),
            WallClock::with_offset(0),
            true,
        ))
    };
    let host = NsSet {
        inum: [
            4026531832, 4026531838, 4026531839, 4026531836, 4026531836, 4026531833, 4026531837,
            4026531835, 4026531834, 4026531834,
        ],
        id: [0; 10],
    };
    let header = serde_json::json!({
        "type": "header", "format": "nstrace-record", "version": 1, "kernel": "synthetic",
        "clock_offset_ns": 0, "start_ts_ns": 0, "host": {}, "nested": false,
    });
    out.note(&header).unwrap_or_else(|_| fail("write"));
    out.note(&serde_json::json!({
        "type": "process", "tid": 100, "pid": 100, "ppid": 1, "comm": "storm", "start_ns": 0,
        "ns": {"mnt": 4026531832u32, "uts": 4026531838u32, "ipc": 4026531839u32,
               "pid": 4026531836u32, "pid_for_children": 4026531836u32, "net": 4026531833u32,
               "user": 4026531837u32, "cgroup": 4026531835u32, "time": 4026531834u32,
               "time_for_children": 4026531834u32},
    }))
    .unwrap_or_else(|_| fail("write"));
    let mut ts = 1_000u64;
    let mut written = 0u64;
    let mut child = 1000u32;
    while written < n {
        child = if child >= 4_000_000 { 1000 } else { child + 1 };
        ts += 1000;
        let fork = Record::Fork(Fork {
            ts_ns: ts,
            tid: child,
            pid: child,
            start_ns: ts,
            parent_tid: 100,
            parent_pid: 100,
            parent_start_ns: 0,
            comm: "storm".into(),
        });
        let mut after = host;
        after.inum[1] = 4026532000 + (child % 50_000);
        let unshare = Record::Transition(Box::new(Transition {
            ts_ns: ts + 100,
            call: Call::Unshare,
            flags: libc::CLONE_NEWUTS as u64,
            ret: 0,
            fd: None,
            tid: child,
            pid: child,
            ppid: 100,
            uid: 0,
            ns_tid: child,
            pid_level: 0,
            start_boottime_ns: ts,
            comm: "storm".into(),
            before: host,
            after,
            child: None,
            before_inferred: false,
        }));
        let exit = Record::Exit(Exit {
            ts_ns: ts + 200,
            tid: child,
            pid: child,
            start_ns: ts,
            code: 0,
            group_dead: true,
            comm: "storm".into(),
        });
        for r in [fork, unshare, exit] {
            out.record(&r).unwrap_or_else(|_| fail("write"));
        }
        written += 3;
    }
    out.flush().unwrap_or_else(|_| fail("flush"));
    let _ = std::io::stdout().flush();
    println!("{{\"records\":{written}}}");
}

/// The collector's work per record, without the kernel: setns records of one task flipping
/// between two UTS namespaces (the setns storm's stream), decoded from their wire bytes,
/// merged, applied to the timeline and printed as text to a sink that discards them.
/// The two setns records the storm makes (there and back), as the programs send them.
fn setns_pair() -> [Vec<u8>; 2] {
    use nstrace::event::encode_move;
    use nstrace_common::{Transition, call, flags::CLONE_NEWUTS, slot};

    let mut raw = Transition::EMPTY;
    raw.call = call::SETNS;
    raw.flags = CLONE_NEWUTS;
    raw.fd = 3;
    (raw.tid, raw.tgid, raw.ppid, raw.ns_tid) = (4242, 4242, 1, 4242);
    raw.start_boottime_ns = 1;
    raw.comm[..7].copy_from_slice(b"nsstorm");
    let inums = [
        4026531841, 4026531838, 4026531839, 4026531836, 4026531836, 4026531840, 4026531837,
        4026531835, 4026531834, 4026531834,
    ];
    raw.before.inum = inums;
    raw.before.id = [1, 2, 3, 4, 4, 5, 6, 7, 8, 8];
    raw.after = raw.before;
    raw.after.inum[slot::UTS] = 4026532400;
    raw.after.id[slot::UTS] = 900;
    // As the programs send a known task's setns: a move.
    let there = encode_move(&raw);
    // Home again through another fd, as the storm does.
    (raw.before, raw.after) = (raw.after, raw.before);
    raw.fd = 4;
    let back = encode_move(&raw);
    [there, back]
}

/// A JSON sink as `nstrace --json` makes it, writing to nowhere.
fn json_sink() -> nstrace::output::json::JsonSink<std::io::BufWriter<std::io::Sink>> {
    use nstrace::{clock::WallClock, origin::Origin};
    nstrace::output::json::JsonSink::new(
        std::io::BufWriter::with_capacity(64 * 1024, std::io::sink()),
        WallClock::now(),
        false,
    )
    .with_origin(&Origin::here(Some("bench-node")))
}

/// `n` setns transitions through the serialiser alone.
fn json(n: u64) {
    use nstrace::{event::Record, output::Sink as _, transport::Reorder};
    let mut reorder = Reorder::new(0);
    let records = setns_pair().map(|bytes| match reorder.decode(&bytes) {
        Ok(record) => record,
        Err(e) => fail(&format!("decode: {e}")),
    });
    let mut sink = json_sink();
    let start = Instant::now();
    for i in 0..n {
        let mut record = records[(i % 2) as usize].clone();
        if let Record::Transition(t) = &mut record {
            t.ts_ns = i * 1000;
        }
        if sink.record(&record).is_err() {
            fail("write");
        }
    }
    let _ = sink.flush();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{{\"storm\":\"json\",\"records\":{n},\"seconds\":{elapsed:.3},\"ns_per_record\":{:.1},\"rate\":{:.0}}}",
        elapsed * 1e9 / n as f64,
        n as f64 / elapsed
    );
}

fn pipe(n: u64, json: bool) {
    pipe_with(n, json, None)
}

/// [`pipe`] keeping `--evidence` in `dir` besides: the machine's tasks (from /proc) are the
/// timeline's, so that each snapshot costs what it would on this machine.
fn pipe_with(n: u64, json: bool, evidence: Option<&str>) {
    use nstrace::{
        clock::WallClock,
        output::{Sink, text::TextSink},
        pipeline::{Filter, Pipeline},
        timeline::{Scope, Timeline},
        transport::Reorder,
    };
    let [there, back] = setns_pair();
    let mut sink: Box<dyn Sink> = if json {
        Box::new(json_sink())
    } else {
        Box::new(TextSink::new(
            std::io::sink(),
            WallClock::with_offset(0),
            true,
        ))
    };
    let mut pipeline = Pipeline::new(Timeline::new(Scope::All), Filter::default());
    pipeline.sinks.push(sink.as_mut());
    let mut archive = evidence.map(|dir| {
        let dir = nstrace::output::file::Directory::open(std::path::Path::new(dir))
            .unwrap_or_else(|e| fail(&format!("--evidence {dir}: {e}")));
        let window = nstrace::record::evidence::Window {
            window_ns: 10_000_000_000,
            keep: 100,
        };
        nstrace::record::evidence::Evidence::new(dir, window, WallClock::with_offset(0))
    });
    if let Some(archive) = archive.as_mut() {
        pipeline.archive = Some(archive);
        if pipeline.snapshot(&nstrace::proc::snapshot(), 0).is_err() {
            fail("snapshot");
        }
    }
    let mut reorder = Reorder::new(0);
    let start = Instant::now();
    let mut bytes = Vec::new();
    for i in 1..=n {
        bytes.clear();
        bytes.extend_from_slice(if i % 2 == 1 { &there } else { &back });
        bytes[..8].copy_from_slice(&(i * 1000).to_ne_bytes());
        match reorder.decode(&bytes) {
            Ok(record) => reorder.push(0, record),
            Err(e) => fail(&format!("decode: {e}")),
        }
        if i % 1024 == 0 || i == n {
            reorder.release(i * 1000, |r| {
                if pipeline.feed(r, false).is_err() {
                    fail("feed")
                }
            });
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if pipeline.shown != n {
        fail(&format!("{} of {n} records shown", pipeline.shown));
    }
    println!(
        "{{\"storm\":\"pipe\",\"json\":{json},\"evidence\":{},\"records\":{n},\"seconds\":{elapsed:.3},\"ns_per_record\":{:.1}}}",
        evidence.is_some(),
        elapsed * 1e9 / n as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [synth_cmd, path, n] if synth_cmd == "synth" => {
            synth(path, n.parse().unwrap_or_else(|_| fail("bad count")), false)
        }
        [synth_cmd, path, n, bin] if synth_cmd == "synth" && bin == "--binary" => {
            synth(path, n.parse().unwrap_or_else(|_| fail("bad count")), true)
        }
        [pipe_cmd, n] if pipe_cmd == "pipe" => {
            pipe(n.parse().unwrap_or_else(|_| fail("bad count")), false)
        }
        [pipe_cmd, n, evidence, dir] if pipe_cmd == "pipe" && evidence == "evidence" => pipe_with(
            n.parse().unwrap_or_else(|_| fail("bad count")),
            false,
            Some(dir),
        ),
        [pipe_cmd, n, json] if pipe_cmd == "pipe" && json == "json" => {
            pipe(n.parse().unwrap_or_else(|_| fail("bad count")), true)
        }
        [json_cmd, n] if json_cmd == "json" => {
            json(n.parse().unwrap_or_else(|_| fail("bad count")))
        }
        [cmd, n] if cmd == "setns-ops" => {
            let n = n.parse().unwrap_or_else(|_| fail("bad count"));
            let start = Instant::now();
            setns_round_trips(Some(n), start);
            println!(
                "{{\"storm\":\"setns-ops\",\"ops\":{n},\"seconds\":{:.3}}}",
                start.elapsed().as_secs_f64()
            );
        }
        [kind, seconds] => {
            let seconds: f64 = seconds.parse().unwrap_or_else(|_| fail("bad seconds"));
            if kind == "docker" {
                nstrace_tests::engines::Engine::docker().image();
            }
            let start = Instant::now();
            let ops = storm(kind, start + Duration::from_secs_f64(seconds));
            let elapsed = start.elapsed().as_secs_f64();
            println!(
                "{{\"storm\":\"{kind}\",\"ops\":{ops},\"seconds\":{elapsed:.3},\"rate\":{:.1}}}",
                ops as f64 / elapsed
            );
        }
        _ => {
            eprintln!(
                "usage: nsstorm unshare|fork|setns|clone|docker SECONDS | nsstorm setns-ops N | \
                 nsstorm synth FILE N [--binary] | nsstorm pipe N"
            );
            std::process::exit(2);
        }
    }
}
