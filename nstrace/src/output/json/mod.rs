//! JSON Lines: one object per transition, every field (the schema is [`crate::lines`]; the
//! fields are listed in docs/formats.md).
use std::io;

use serde::Serialize;

use super::Sink;
use crate::{
    clock::WallClock,
    event::Record,
    lines::{LifeLine, LossLine},
};

pub mod write;

pub struct JsonSink<W: io::Write> {
    out: W,
    clock: WallClock,
    lifecycle: bool,
    /// Fields every object starts with (`"node":…,"boot_id":…,`), already JSON; empty in a
    /// record file, whose header says where it was made.
    origin: Vec<u8>,
    /// The line being written, reused.
    buf: Vec<u8>,
    writer: write::Writer,
}

impl<W: io::Write> JsonSink<W> {
    /// `lifecycle`: also write forks, execs and exits (a record file needs them to rebuild the
    /// timeline; a live stream shows transitions only).
    pub fn new(out: W, clock: WallClock, lifecycle: bool) -> Self {
        Self {
            out,
            clock,
            lifecycle,
            origin: Vec::new(),
            buf: Vec::with_capacity(1024),
            writer: write::Writer::default(),
        }
    }

    /// Starts every object with where it was seen (see [`crate::origin`]).
    pub fn with_origin(mut self, origin: &crate::origin::Origin) -> Self {
        self.origin = origin.fields();
        self
    }

    /// Writes any serializable line (record-file headers and snapshots), the origin first.
    pub fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, value)?;
        open_with(&mut self.buf, &self.origin);
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)
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
        let clock = self.clock;
        self.line(&LossLine::new(loss, Some(&clock)))
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
        self.record_in(record, None)
    }

    fn record_in(&mut self, record: &Record, container: Option<&str>) -> io::Result<()> {
        let clock = self.clock;
        match record {
            Record::Transition(t) => {
                self.buf.clear();
                self.writer
                    .transition(&mut self.buf, &clock, &self.origin, t);
                if let Some(container) = container {
                    // `…}` becomes `…,"container":"…"}`; the name is the engine's: escaped.
                    self.buf.pop();
                    self.buf.extend_from_slice(b",\"container\":");
                    serde_json::to_writer(&mut self.buf, container)?;
                    self.buf.push(b'}');
                }
                self.buf.push(b'\n');
                self.out.write_all(&self.buf)
            }
            _ if !self.lifecycle => Ok(()),
            Record::Fork(f) => self.line(&LifeLine::fork(f, &clock)),
            Record::Exec(e) => self.line(&LifeLine::exec(e, &clock)),
            Record::Exit(x) => self.line(&LifeLine::exit(x, &clock)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Puts `fields` (`"key":value,` …) first in the JSON object `object`.
pub fn open_with(object: &mut Vec<u8>, fields: &[u8]) {
    if fields.is_empty() || object.first() != Some(&b'{') {
        return;
    }
    object.splice(1..1, fields.iter().copied());
    // `{"node":…,"boot_id":…,}` for an empty object: no comma before its end.
    if object.ends_with(b",}") {
        let at = object.len() - 2;
        object.remove(at);
    }
}

fn rfc3339(clock: &WallClock, ts_ns: u64) -> String {
    clock
        .to_utc(ts_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
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

    /// The fast writer writes what serde writes for a [`TransitionLine`], byte for byte:
    /// children, ids, failures, inferred sets, odd flags and hostile names included.
    #[test]
    fn the_written_line_is_the_schemas_byte_for_byte() {
        use crate::{
            event::{Call, Child, Transition},
            lines::TransitionLine,
            ns::NsKind,
            output::fixture::set,
        };
        let Ok(Record::Transition(base)) = decode(&encode(&setns_record())) else {
            panic!("a transition")
        };
        let mut cases = vec![*base.clone()];
        let mut with_ids = *base.clone();
        with_ids.before.id = [7; 10];
        with_ids.after.id = [u64::MAX; 10];
        with_ids.before_inferred = true;
        cases.push(with_ids);
        let mut failed = *base.clone();
        failed.ret = -1;
        failed.fd = None;
        failed.comm = "a\"b\\c\n\u{1}\u{7f}é✓".into();
        cases.push(failed);
        let mut restart = *base.clone();
        restart.ret = -512;
        restart.call = Call::Unshare;
        restart.flags = 0x7000_0000_0000_0001;
        cases.push(restart);
        for call in [Call::Clone, Call::Clone3, Call::Fork] {
            let mut clone = *base.clone();
            clone.call = call;
            clone.flags = 0x2000_0000 | 0x11 | 0x8000_0000;
            clone.ret = 99;
            clone.fd = None;
            let mut ns = set(&[(NsKind::Pid, 5), (NsKind::Net, 6)]);
            ns.id[3] = 12;
            clone.child = Some(Box::new(Child {
                tid: 99,
                start_ns: u64::MAX,
                ns_tid: 1,
                ns,
            }));
            cases.push(clone);
        }
        let clock = WallClock::with_offset(1_764_000_000_123_456_789);
        let mut writer = write::Writer::default();
        for (i, t) in cases.iter().enumerate() {
            for ts in [0, 999_999_999, 1_000_000_000, 86_400_000_000_017] {
                let t = Transition {
                    ts_ns: ts,
                    ..t.clone()
                };
                let mut fast = Vec::new();
                writer.transition(&mut fast, &clock, b"", &t);
                let serde = serde_json::to_vec(&TransitionLine::new(&t, &clock)).unwrap();
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(serde).unwrap(),
                    "case {i} at {ts}"
                );
            }
        }
    }

    #[test]
    fn a_transition_in_a_container_names_it_escaped() {
        let Ok(Record::Transition(t)) = decode(&encode(&setns_record())) else {
            panic!("a transition")
        };
        let mut out = Vec::new();
        let mut sink = JsonSink::new(&mut out, WallClock::with_offset(0), false);
        let record = Record::Transition(t);
        sink.record_in(&record, Some("we\"b\n (docker:0123456789ab)"))
            .unwrap();
        sink.record_in(&record, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["container"], "we\"b\n (docker:0123456789ab)");
        assert_eq!(lines[0]["call"], "setns");
        assert!(lines[1].get("container").is_none(), "{}", lines[1]);
    }

    #[test]
    fn every_object_of_a_stream_carries_its_origin() {
        use crate::origin::Origin;
        let origin = Origin {
            node: "node-1".into(),
            boot_id: "b".into(),
        };
        let Ok(Record::Transition(t)) = decode(&encode(&setns_record())) else {
            panic!("a transition")
        };
        let mut out = Vec::new();
        let mut sink =
            JsonSink::new(&mut out, WallClock::with_offset(0), false).with_origin(&origin);
        sink.record(&Record::Transition(t)).unwrap();
        sink.line(&serde_json::json!({"type": "summary"})).unwrap();
        sink.line(&serde_json::json!({})).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                (&v["node"], &v["boot_id"]),
                (&"node-1".into(), &"b".into()),
                "{line}"
            );
        }
        assert_eq!(text.lines().count(), 3);
    }
}
