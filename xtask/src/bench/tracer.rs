//! Running the tracers and the workload: starting, sampling and stopping them, and reading
//! what they print.
use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub(super) struct Tracer {
    pub(super) child: Child,
    pub(super) startup: Duration,
    /// The lines of the stream it says it is attached on.
    pub(super) lines: std::sync::mpsc::Receiver<String>,
    pub(super) kind: Kind,
}

/// Which tracer runs: each says it is attached on its own stream (nstrace on stderr, its stdout
/// being the trace, discarded here; bpftrace on stdout, its printf) and stops its own way.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Nstrace,
    Bpftrace,
}

/// Starts a tracer and waits until it says it is attached. nstrace's stdout (its trace) is the
/// caller's to set.
pub(super) fn start(cmd: &mut Command, ready: &str, kind: Kind) -> Result<Tracer> {
    let began = Instant::now();
    match kind {
        Kind::Nstrace => cmd.stderr(Stdio::piped()),
        Kind::Bpftrace => cmd.stdout(Stdio::piped()).stderr(Stdio::null()),
    };
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let stream: Box<dyn std::io::Read + Send> = match kind {
        Kind::Nstrace => Box::new(child.stderr.take().context("stderr")?),
        Kind::Bpftrace => Box::new(child.stdout.take().context("stdout")?),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(&ready) {
                let _ = ready_tx.send(());
            }
            let _ = tx.send(line);
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        bail!("{cmd:?} did not attach within 60 s");
    }
    Ok(Tracer {
        child,
        startup: began.elapsed(),
        lines: rx,
        kind,
    })
}

/// A live process's /proc/PID/status (VmHWM: peak memory; VmRSS: now, in KiB).
pub(super) fn status(pid: u32) -> Option<procfs::process::Status> {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .ok()
}

/// Samples a process's resident memory every 50 ms until told to stop; returns the largest.
pub(super) fn sample_rss(pid: u32) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<u64>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut max = 0;
        loop {
            max = max.max(status(pid).and_then(|s| s.vmrss).unwrap_or(0));
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return max;
            }
        }
    });
    (tx, handle)
}

/// Stops a tracer with SIGTERM; returns the lines of the stream it was read on. nstrace must
/// end within 30 s. bpftrace 0.17 can miss a SIGTERM that lands while it attaches, so it is
/// sent one every second (SIGKILL after 30 s).
pub(super) fn stop(mut t: Tracer) -> Result<Vec<String>> {
    let kind = t.kind;
    let pid = t.child.id() as i32;
    let began = Instant::now();
    let mut sent = None::<Instant>;
    loop {
        if t.child.try_wait()?.is_some() {
            break;
        }
        if began.elapsed() > Duration::from_secs(30) {
            let _ = t.child.kill();
            let _ = t.child.wait();
            if kind == Kind::Nstrace {
                bail!("nstrace did not stop within 30 s of SIGTERM");
            }
            break;
        }
        let resend =
            kind == Kind::Bpftrace && sent.is_some_and(|s| s.elapsed() >= Duration::from_secs(1));
        if sent.is_none() || resend {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            sent = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    Ok(t.lines.try_iter().collect())
}

/// nstrace's closing line: (transitions shown, lost samples).
pub(super) fn closing(lines: &[String]) -> (u64, u64) {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains(" transitions shown, "))
        .cloned()
        .unwrap_or_default();
    let num = |after: &str| -> u64 {
        line.split(after)
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num(" transitions shown"), num(" lost samples"))
}

/// Runs `nsstorm ARGS`; its one line of JSON on stdout.
pub(super) fn nsstorm(bin: &Path, args: &[&str]) -> Result<String> {
    nsstorm_on(bin, args, None)
}

/// Runs `nsstorm ARGS`, on CPU `cpu` only when given; its one line of JSON on stdout.
pub(super) fn nsstorm_on(bin: &Path, args: &[&str], cpu: Option<usize>) -> Result<String> {
    let mut cmd = Command::new(bin.join("nsstorm"));
    cmd.args(args);
    if let Some(cpu) = cpu {
        // SAFETY: between fork and exec this only calls sched_setaffinity on the child itself.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
    let out = cmd
        .output()
        .with_context(|| format!("running nsstorm {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "nsstorm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A number field of nsstorm's JSON line.
pub(super) fn field(text: &str, name: &str) -> Option<f64> {
    text.split(&format!("\"{name}\":"))
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
}

/// The CPUs this process may run on.
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size is that of the set passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads within the set.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The CPU time a process (all its threads) has used, in clock ticks (/proc/PID/stat).
pub(super) fn cpu_ticks(pid: u32) -> u64 {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map_or(0, |s| s.utime + s.stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cpus_include_the_current_one() {
        // SAFETY: sched_getcpu has no preconditions.
        let now = unsafe { libc::sched_getcpu() };
        assert!(now >= 0);
        assert!(allowed_cpus().contains(&(now as usize)));
    }
}
