//! `--metrics ADDR:PORT`: nstrace's health in the Prometheus text format, for the monitoring a
//! cluster already has, with the probes a DaemonSet asks (`/readyz`, `/healthz`).
//!
//! The collector never touches a shared counter per record: the pipeline counts in its own
//! fields (the timeline's counts, findings and losses it hands on) and publishes them here at
//! most every [`PUBLISH_PERIOD`], from its drain tick. A scrape reads what was published; a
//! scraper, however slow or hostile, runs on its own thread and can only wait for its answer.
use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus::{
    Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::{clock::monotonic_ns, event::Call};

/// How often the pipeline's counts are published (a scrape is rarely more often than 10 s).
pub const PUBLISH_PERIOD: Duration = Duration::from_millis(250);
/// `/healthz` fails when the collector has not ticked for this long: stuck, not busy (a drain
/// tick comes every 10 ms, storm or not).
pub const STUCK_AFTER: Duration = Duration::from_secs(10);
/// What a request may take to arrive and its answer to leave, and its largest size.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_LIMIT: usize = 8 * 1024;

/// What the pipeline has counted, as it publishes it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Transitions by call, in [`Call::ALL`]'s order.
    pub transitions: [u64; Call::ALL.len()],
    /// Every record fed: transitions, forks, execs and exits.
    pub records: u64,
    /// Findings made, by (id, severity).
    pub findings: Vec<((&'static str, &'static str), u64)>,
    /// Records lost, by CPU.
    pub lost: Vec<(u32, u64)>,
    pub tracked_tasks: usize,
    pub tracked_namespaces: usize,
    /// The oldest record's age when it reached the outputs, the largest since the last
    /// publication, in ns.
    pub lag_ns: u64,
}

pub struct Metrics {
    registry: Registry,
    transitions: IntCounterVec,
    records: IntCounter,
    records_per_second: Gauge,
    findings: IntCounterVec,
    lost: IntCounterVec,
    drain_lag: Gauge,
    tasks: IntGauge,
    namespaces: IntGauge,
    ready: AtomicBool,
    /// The collector's last tick, CLOCK_MONOTONIC ns (0: none yet).
    heartbeat_ns: AtomicU64,
    /// The last publication's time and record count, for the rate.
    last: Mutex<Option<(Instant, u64)>>,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric name and labels");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

impl Metrics {
    /// `kernel`: `uname -r`; `node`: the node's name (see [`crate::origin`]).
    pub fn new(kernel: &str, node: &str) -> Arc<Self> {
        let registry = Registry::new_custom(Some("nstrace".into()), None).expect("a valid prefix");
        let info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "build_info",
                    "nstrace's version and the kernel it traces (always 1)",
                ),
                &["version", "kernel", "node"],
            )
            .expect("valid"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), kernel, node])
            .set(1);
        let transitions = counter_vec(
            &registry,
            "transitions_total",
            "Namespace transitions seen (every process, whatever the filters), by call",
            &["call"],
        );
        for call in Call::ALL {
            transitions.with_label_values(&[call.name()]);
        }
        let findings = counter_vec(
            &registry,
            "findings_total",
            "Findings made, by id and severity",
            &["id", "severity"],
        );
        let lost = counter_vec(
            &registry,
            "lost_records_total",
            "Records the kernel could not deliver (its buffer was full), by CPU",
            &["cpu"],
        );
        let gauge =
            |name: &str, help: &str| register(&registry, Gauge::new(name, help).expect("valid"));
        let int_gauge =
            |name: &str, help: &str| register(&registry, IntGauge::new(name, help).expect("valid"));
        Arc::new(Self {
            records: register(
                &registry,
                IntCounter::new(
                    "records_total",
                    "Records read from the kernel: transitions, forks, execs and exits",
                )
                .expect("valid"),
            ),
            records_per_second: gauge(
                "records_per_second",
                "Records read a second, over the last quarter second",
            ),
            drain_lag: gauge(
                "drain_lag_seconds",
                "Age of the oldest record when it reached the outputs, the largest over the last \
                 quarter second (0 when none came)",
            ),
            tasks: int_gauge("tracked_tasks", "Tasks the timeline follows now"),
            namespaces: int_gauge(
                "tracked_namespaces",
                "Namespaces the timeline holds now (alive, or kept for the summary)",
            ),
            transitions,
            findings,
            lost,
            registry,
            ready: AtomicBool::new(false),
            heartbeat_ns: AtomicU64::new(0),
            last: Mutex::new(None),
        })
    }

    /// Binds `addr` (an error says which address could not be had) and answers on a thread
    /// of its own; returns the address bound (port 0: the one the kernel chose).
    pub fn serve(self: &Arc<Self>, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "--metrics {addr}: cannot listen there ({e}); name a free address and port"
                ),
            )
        })?;
        let bound = listener.local_addr()?;
        let metrics = Arc::clone(self);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if let Err(e) = metrics.answer(stream) {
                        log::debug!("metrics: {e}");
                    }
                }
            })?;
        Ok(bound)
    }

    /// Tracing has begun on `cpus` CPUs' buffers: `/readyz` answers 200 from now on, and each
    /// CPU's losses are there to see, 0 until it loses any.
    pub fn set_ready(&self, cpus: usize) {
        for cpu in 0..cpus {
            self.lost.with_label_values(&[&cpu.to_string()]);
        }
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The collector's tick: alive.
    pub fn heartbeat(&self, now_ns: u64) {
        self.heartbeat_ns.store(now_ns, Ordering::Relaxed);
    }

    fn healthy(&self, now_ns: u64) -> bool {
        let beat = self.heartbeat_ns.load(Ordering::Relaxed);
        beat != 0 && now_ns.saturating_sub(beat) < STUCK_AFTER.as_nanos() as u64
    }

    /// Sets every metric to what the pipeline counted.
    pub fn publish(&self, counts: &Counts) {
        fn raise(counter: &IntCounter, to: u64) {
            counter.inc_by(to.saturating_sub(counter.get()));
        }
        for (call, n) in Call::ALL.iter().zip(counts.transitions) {
            raise(&self.transitions.with_label_values(&[call.name()]), n);
        }
        for ((id, severity), n) in &counts.findings {
            raise(&self.findings.with_label_values(&[id, severity]), *n);
        }
        for (cpu, n) in &counts.lost {
            raise(&self.lost.with_label_values(&[&cpu.to_string()]), *n);
        }
        raise(&self.records, counts.records);
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((then, records)) = *last {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                self.records_per_second
                    .set(counts.records.saturating_sub(records) as f64 / seconds);
            }
        }
        *last = Some((now, counts.records));
        self.drain_lag.set(counts.lag_ns as f64 / 1e9);
        self.tasks.set(counts.tracked_tasks as i64);
        self.namespaces.set(counts.tracked_namespaces as i64);
    }

    /// The metrics, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// One request, one answer, then the connection closes.
    fn answer(&self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut request = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && !request.ends_with(b"\n\n") {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
            if request.len() > REQUEST_LIMIT {
                respond(&mut stream, "431 Request Header Fields Too Large", "", b"")?;
                // What the client still sends is read (as much again, at most) before closing,
                // so that its answer is not lost to a reset.
                stream.shutdown(std::net::Shutdown::Write)?;
                let mut rest = 0;
                while rest < REQUEST_LIMIT {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rest += n,
                    }
                }
                return Ok(());
            }
        }
        let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut words = line.split(|&b| b == b' ');
        let (method, target) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        if method != b"GET" && method != b"HEAD" {
            return respond(&mut stream, "405 Method Not Allowed", "", b"GET only\n");
        }
        let path = target.split(|&b| b == b'?').next().unwrap_or_default();
        let body_of = |ok: bool, yes: &'static [u8], no: &'static [u8]| -> (&str, Vec<u8>) {
            if ok {
                ("200 OK", yes.to_vec())
            } else {
                ("503 Service Unavailable", no.to_vec())
            }
        };
        let (status, body, kind) = match path {
            b"/metrics" => (
                "200 OK",
                self.render(),
                TextEncoder::new().format_type().to_owned(),
            ),
            b"/readyz" => {
                let (s, b) = body_of(
                    self.ready.load(Ordering::Relaxed),
                    b"tracing\n",
                    b"not tracing yet\n",
                );
                (s, b, "text/plain".to_owned())
            }
            b"/healthz" => {
                let (s, b) = body_of(
                    self.healthy(monotonic_ns()),
                    b"collecting\n",
                    b"the collector has not drained for 10 s\n",
                );
                (s, b, "text/plain".to_owned())
            }
            _ => (
                "404 Not Found",
                b"/metrics, /readyz or /healthz\n".to_vec(),
                "text/plain".to_owned(),
            ),
        };
        let body = if method == b"HEAD" {
            &[][..]
        } else {
            &body[..]
        };
        respond(&mut stream, status, &kind, body)
    }
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &[u8]) -> io::Result<()> {
    let kind = if kind.is_empty() { "text/plain" } else { kind };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn scrapes_see_what_was_published_and_the_probes_follow_the_collector() {
        let m = Metrics::new("6.18.0", "node \"a\"\n");
        let addr = m.serve("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503"));
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503"));
        m.set_ready(2);
        m.heartbeat(monotonic_ns());
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        m.heartbeat(monotonic_ns() - STUCK_AFTER.as_nanos() as u64 - 1);
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503"));

        let mut counts = Counts {
            records: 10,
            findings: vec![(("NS-SHARES-HOST", "high"), 2)],
            lost: vec![(1, 7)],
            tracked_tasks: 3,
            tracked_namespaces: 4,
            lag_ns: 1_500_000,
            ..Counts::default()
        };
        counts.transitions[Call::Setns as usize] = 6;
        m.publish(&counts);
        counts.transitions[Call::Setns as usize] = 8;
        m.publish(&counts);
        let text = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        for line in [
            "nstrace_transitions_total{call=\"setns\"} 8",
            "nstrace_transitions_total{call=\"clone3\"} 0",
            "nstrace_findings_total{id=\"NS-SHARES-HOST\",severity=\"high\"} 2",
            "nstrace_lost_records_total{cpu=\"1\"} 7",
            "nstrace_lost_records_total{cpu=\"0\"} 0",
            "nstrace_records_total 10",
            "nstrace_tracked_tasks 3",
            "nstrace_tracked_namespaces 4",
            "nstrace_drain_lag_seconds 0.0015",
            "nstrace_build_info{kernel=\"6.18.0\",node=\"node \\\"a\\\"\\n\",version=\"",
            "# TYPE nstrace_records_total counter",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        // A client that sends nothing holds the server no longer than the timeout.
        let _idle = TcpStream::connect(addr).unwrap();
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }
}
