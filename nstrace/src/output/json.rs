//! JSON Lines: one object per transition, every field (the schema is [`crate::lines`]; the
//! fields are listed in docs/formats.md).
use std::io;

use serde::Serialize;

use super::Sink;
use crate::{
    clock::WallClock,
    event::Record,
    lines::{LifeLine, LossLine, TransitionLine},
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
        let clock = self.clock;
        match record {
            Record::Transition(t) => self.line(&TransitionLine::new(t, &clock)),
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
}
