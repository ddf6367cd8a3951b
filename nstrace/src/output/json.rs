//! JSON Lines: one object per transition, every field (documented in the README).
use std::io;

use serde::{Serialize, Serializer, ser::SerializeMap};

use super::Sink;
use crate::{
    clock::WallClock,
    event::{NsSet, Record, Transition},
    ns::NsKind,
};

pub struct JsonSink<W: io::Write> {
    out: W,
    clock: WallClock,
    lifecycle: bool,
}

impl<W: io::Write> JsonSink<W> {
    /// `lifecycle`: also write forks, execs and exits (a record file needs them to rebuild the
    /// timeline; a live stream shows transitions only).
    pub fn new(out: W, clock: WallClock, lifecycle: bool) -> Self {
        Self {
            out,
            clock,
            lifecycle,
        }
    }

    /// Writes any serializable line (record-file headers and snapshots).
    pub fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }
}

impl<W: io::Write> Sink for JsonSink<W> {
    fn finding(&mut self, finding: &super::FindingView) -> io::Result<()> {
        // A record file keeps what happened; findings are made again when it is replayed.
        if self.lifecycle {
            return Ok(());
        }
        let mut value = serde_json::to_value(finding)?;
        value["time"] = rfc3339(&self.clock, finding.ts_ns).into();
        self.line(&value)
    }

    fn loss(&mut self, loss: &crate::event::Loss) -> io::Result<()> {
        let mut value = crate::record::loss_line(loss);
        value["time"] = rfc3339(&self.clock, loss.ts_ns).into();
        self.line(&value)
    }

    fn heal(&mut self, heal: &super::HealView<'_>) -> io::Result<()> {
        // A record file keeps what /proc showed; the healing is made again when it is replayed.
        if self.lifecycle {
            return Ok(());
        }
        let h = heal.heal;
        self.line(&serde_json::json!({
            "type": "resync",
            "time": rfc3339(&self.clock, h.ts_ns),
            "ts_ns": h.ts_ns,
            "pid": h.pid,
            "tid": h.tid,
            "comm": h.comm,
            "found": h.found,
            "changes": heal.changes.iter().map(|(slot, from, to)| serde_json::json!({
                "slot": slot, "from": from, "to": to,
            })).collect::<Vec<_>>(),
        }))
    }

    fn note(&mut self, line: &serde_json::Value) -> io::Result<()> {
        if self.lifecycle {
            self.line(line)?;
        }
        Ok(())
    }

    fn record(&mut self, record: &Record) -> io::Result<()> {
        let clock = self.clock;
        match record {
            Record::Transition(t) => self.line(&JsonTransition::new(t, &clock)),
            _ if !self.lifecycle => Ok(()),
            Record::Fork(f) => self.line(&JsonLifecycle {
                parent_pid: Some(f.parent_pid),
                parent_tid: Some(f.parent_tid),
                parent_start_boottime_ns: Some(f.parent_start_ns),
                ..JsonLifecycle::new("fork", &clock, f.ts_ns, f.pid, f.tid, &f.comm, f.start_ns)
            }),
            Record::Exec(e) => self.line(&JsonLifecycle {
                old_tid: Some(e.old_tid),
                filename: Some(&e.filename),
                ..JsonLifecycle::new("exec", &clock, e.ts_ns, e.pid, e.tid, &e.comm, e.start_ns)
            }),
            Record::Exit(x) => self.line(&JsonLifecycle {
                code: Some(x.code),
                group_dead: Some(x.group_dead),
                ..JsonLifecycle::new("exit", &clock, x.ts_ns, x.pid, x.tid, &x.comm, x.start_ns)
            }),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A namespace set as `{"mnt": inode, ...}` or `{"mnt": ns_id, ...}`.
struct Slots<'a>(&'a NsSet, bool);

impl Serialize for Slots<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(NsKind::ALL.len()))?;
        for kind in NsKind::ALL {
            let ns = self.0.get(kind);
            if self.1 {
                map.serialize_entry(kind.name(), &ns.id)?;
            } else {
                map.serialize_entry(kind.name(), &ns.inum)?;
            }
        }
        map.end()
    }
}

fn inodes(set: &NsSet) -> Slots<'_> {
    Slots(set, false)
}

fn ids(set: &NsSet) -> Option<Slots<'_>> {
    set.has_ids().then_some(Slots(set, true))
}

fn rfc3339(clock: &WallClock, ts_ns: u64) -> String {
    clock
        .to_utc(ts_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A fork, exec or exit.
#[derive(Serialize)]
struct JsonLifecycle<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    start_boottime_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_start_boottime_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_dead: Option<bool>,
}

impl<'a> JsonLifecycle<'a> {
    /// The fields every fork, exec and exit has; the rest absent.
    fn new(
        kind: &'static str,
        clock: &WallClock,
        ts_ns: u64,
        pid: u32,
        tid: u32,
        comm: &'a str,
        start_boottime_ns: u64,
    ) -> Self {
        Self {
            kind,
            time: rfc3339(clock, ts_ns),
            ts_ns,
            pid,
            tid,
            comm,
            start_boottime_ns,
            parent_pid: None,
            parent_tid: None,
            parent_start_boottime_ns: None,
            old_tid: None,
            filename: None,
            code: None,
            group_dead: None,
        }
    }
}

#[derive(Serialize)]
struct JsonChild<'a> {
    tid: u32,
    start_boottime_ns: u64,
    ns_tid: u32,
    moved: Vec<&'static str>,
    ns: Slots<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ns_id: Option<Slots<'a>>,
}

#[derive(Serialize)]
struct JsonTransition<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_ns: u64,
    call: &'static str,
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    comm: &'a str,
    ns_tid: u32,
    pid_level: u32,
    start_boottime_ns: u64,
    flags: u64,
    flag_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fd: Option<i32>,
    ret: i64,
    errno: Option<String>,
    changed: Vec<&'static str>,
    before: Slots<'a>,
    after: Slots<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before_id: Option<Slots<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after_id: Option<Slots<'a>>,
    child: Option<JsonChild<'a>>,
    /// Present (true) when `before` came from the collector's view of the task, not the kernel.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    before_inferred: bool,
}

impl<'a> JsonTransition<'a> {
    fn new(t: &'a Transition, clock: &WallClock) -> Self {
        let names = |kinds: crate::event::KindSet| kinds.into_iter().map(NsKind::name).collect();
        Self {
            kind: "transition",
            time: rfc3339(clock, t.ts_ns),
            ts_ns: t.ts_ns,
            call: t.call.name(),
            pid: t.pid,
            tid: t.tid,
            ppid: t.ppid,
            uid: t.uid,
            comm: &t.comm,
            ns_tid: t.ns_tid,
            pid_level: t.pid_level,
            start_boottime_ns: t.start_boottime_ns,
            flags: t.flags,
            flag_names: t.flag_names(),
            fd: t.fd,
            ret: t.ret,
            errno: t.errno_name(),
            changed: names(t.changed()),
            before: inodes(&t.before),
            after: inodes(&t.after),
            before_id: ids(&t.before),
            after_id: ids(&t.after),
            child: t.child.as_ref().map(|c| JsonChild {
                tid: c.tid,
                start_boottime_ns: c.start_ns,
                ns_tid: c.ns_tid,
                moved: names(t.child_moved()),
                ns: inodes(&c.ns),
                ns_id: ids(&c.ns),
            }),
            before_inferred: t.before_inferred,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Record, decode, encode, tests::setns_record};

    #[test]
    fn one_object_per_line_with_every_slot() {
        let Ok(Record::Transition(t)) = decode(&encode(&setns_record())) else {
            panic!("a transition")
        };
        let mut out = Vec::new();
        let mut sink = JsonSink::new(&mut out, WallClock::with_offset(0), false);
        let record = Record::Transition(t);
        sink.record(&record).unwrap();
        sink.record(&record).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["type"], "transition");
        assert_eq!(v["call"], "setns");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["tid"], 43);
        assert_eq!(v["fd"], 3);
        assert_eq!(v["flag_names"][0], "CLONE_NEWUTS");
        assert_eq!(v["errno"], serde_json::Value::Null);
        assert_eq!(v["changed"], serde_json::json!(["uts"]));
        assert_eq!(v["after"]["uts"], 4026532177u32);
        assert_eq!(v["before"].as_object().unwrap().len(), 10);
        assert_eq!(v["time"], "1970-01-01T00:00:00.000001000Z");
        assert!(
            v.get("before_id").is_none(),
            "no ids on the wire: none printed"
        );
        assert_eq!(v["child"], serde_json::Value::Null);
    }
}
