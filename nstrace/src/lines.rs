//! The JSON Lines schema: one object per transition, fork, exec and exit, as `--json` prints
//! them and a record file keeps them (docs/formats.md lists every field). Each type here is both
//! written (by [`crate::output::json`]) and read (by [`crate::record`]): one definition a line.
//! What a reader can work out again (`time`, `flag_names`, `errno`, `changed`, `moved`) is
//! written for people and skipped when read.
use nstrace_common::NS_SLOTS;
use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap};

use crate::{
    clock::WallClock,
    event::{Call, Child, Comm, Exec, Exit, Fork, KindSet, Loss, NsSet, Transition},
    ns::NsKind,
};

/// A value per slot of a namespace set, `{"mnt": …, "uts": …, …}` in /proc order: inodes, or
/// the kernel's namespace ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots(pub [u64; NS_SLOTS]);

impl Slots {
    fn inodes(set: &NsSet) -> Self {
        Slots(set.inum.map(u64::from))
    }

    /// The ids, when the kernel told them (Linux 6.18+).
    fn ids(set: &NsSet) -> Option<Self> {
        set.has_ids().then_some(Slots(set.id))
    }

    /// The set these inodes and `ids` name.
    fn set(&self, ids: Option<&Slots>) -> NsSet {
        NsSet {
            inum: self.0.map(|v| v as u32),
            id: ids.map_or([0; NS_SLOTS], |ids| ids.0),
        }
    }
}

impl Serialize for Slots {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(NS_SLOTS))?;
        for kind in NsKind::ALL {
            map.serialize_entry(kind.name(), &self.0[kind.slot()])?;
        }
        map.end()
    }
}

/// [`Slots`] as read: every slot by name.
#[derive(Deserialize)]
struct SlotFields {
    mnt: u64,
    uts: u64,
    ipc: u64,
    pid: u64,
    pid_for_children: u64,
    net: u64,
    user: u64,
    cgroup: u64,
    time: u64,
    time_for_children: u64,
}

impl<'de> Deserialize<'de> for Slots {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let f = SlotFields::deserialize(deserializer)?;
        let mut v = [0; NS_SLOTS];
        for (kind, value) in [
            (NsKind::Mnt, f.mnt),
            (NsKind::Uts, f.uts),
            (NsKind::Ipc, f.ipc),
            (NsKind::Pid, f.pid),
            (NsKind::PidForChildren, f.pid_for_children),
            (NsKind::Net, f.net),
            (NsKind::User, f.user),
            (NsKind::Cgroup, f.cgroup),
            (NsKind::Time, f.time),
            (NsKind::TimeForChildren, f.time_for_children),
        ] {
            v[kind.slot()] = value;
        }
        Ok(Slots(v))
    }
}

fn rfc3339(clock: &WallClock, ts_ns: u64) -> String {
    clock
        .to_utc(ts_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn names(kinds: KindSet) -> Vec<&'static str> {
    kinds.into_iter().map(NsKind::name).collect()
}

/// A child of a clone, clone3 or fork transition.
#[derive(Serialize, Deserialize)]
pub struct ChildLine {
    pub tid: u32,
    #[serde(default)]
    pub start_boottime_ns: u64,
    pub ns_tid: u32,
    /// The kinds where the child is not where its parent is.
    #[serde(skip_deserializing)]
    pub moved: Vec<&'static str>,
    pub ns: Slots,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_id: Option<Slots>,
}

/// One transition (`"type": "transition"`).
#[derive(Serialize, Deserialize)]
pub struct TransitionLine {
    #[serde(rename = "type", skip_deserializing)]
    pub kind: &'static str,
    /// `ts_ns` as wall-clock time, RFC 3339 UTC.
    #[serde(skip_deserializing)]
    pub time: String,
    pub ts_ns: u64,
    pub call: Call,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: Comm,
    pub ns_tid: u32,
    pub pid_level: u32,
    pub start_boottime_ns: u64,
    pub flags: u64,
    #[serde(skip_deserializing)]
    pub flag_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    pub ret: i64,
    #[serde(skip_deserializing)]
    pub errno: Option<String>,
    #[serde(skip_deserializing)]
    pub changed: Vec<&'static str>,
    pub before: Slots,
    pub after: Slots,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_id: Option<Slots>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<Slots>,
    pub child: Option<ChildLine>,
    /// Present (true) when `before` came from the collector's view of the task, not the kernel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_inferred: bool,
}

impl TransitionLine {
    pub fn new(t: &Transition, clock: &WallClock) -> Self {
        Self {
            kind: "transition",
            time: rfc3339(clock, t.ts_ns),
            ts_ns: t.ts_ns,
            call: t.call,
            pid: t.pid,
            tid: t.tid,
            ppid: t.ppid,
            uid: t.uid,
            comm: t.comm.clone(),
            ns_tid: t.ns_tid,
            pid_level: t.pid_level,
            start_boottime_ns: t.start_boottime_ns,
            flags: t.flags,
            flag_names: t.flag_names(),
            fd: t.fd,
            ret: t.ret,
            errno: t.errno_name(),
            changed: names(t.changed()),
            before: Slots::inodes(&t.before),
            after: Slots::inodes(&t.after),
            before_id: Slots::ids(&t.before),
            after_id: Slots::ids(&t.after),
            child: t.child.as_ref().map(|c| ChildLine {
                tid: c.tid,
                start_boottime_ns: c.start_ns,
                ns_tid: c.ns_tid,
                moved: names(t.child_moved()),
                ns: Slots::inodes(&c.ns),
                ns_id: Slots::ids(&c.ns),
            }),
            before_inferred: t.before_inferred,
        }
    }
}

impl From<TransitionLine> for Transition {
    fn from(t: TransitionLine) -> Self {
        Transition {
            ts_ns: t.ts_ns,
            call: t.call,
            flags: t.flags,
            ret: t.ret,
            fd: t.fd,
            tid: t.tid,
            pid: t.pid,
            ppid: t.ppid,
            uid: t.uid,
            ns_tid: t.ns_tid,
            pid_level: t.pid_level,
            start_boottime_ns: t.start_boottime_ns,
            comm: t.comm,
            before: t.before.set(t.before_id.as_ref()),
            after: t.after.set(t.after_id.as_ref()),
            child: t.child.map(|c| {
                Box::new(Child {
                    tid: c.tid,
                    start_ns: c.start_boottime_ns,
                    ns_tid: c.ns_tid,
                    ns: c.ns.set(c.ns_id.as_ref()),
                })
            }),
            before_inferred: t.before_inferred,
        }
    }
}

/// A fork, exec or exit (`"type"` says which); each has the fields of its own kind.
#[derive(Serialize, Deserialize)]
pub struct LifeLine {
    #[serde(rename = "type", skip_deserializing)]
    pub kind: &'static str,
    #[serde(skip_deserializing)]
    pub time: String,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub start_boottime_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_tid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_start_boottime_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_tid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_dead: Option<bool>,
}

impl LifeLine {
    /// The fields every fork, exec and exit has; the rest absent.
    fn new(
        kind: &'static str,
        clock: &WallClock,
        ts_ns: u64,
        pid: u32,
        tid: u32,
        comm: &Comm,
        start_boottime_ns: u64,
    ) -> Self {
        Self {
            kind,
            time: rfc3339(clock, ts_ns),
            ts_ns,
            pid,
            tid,
            comm: comm.clone(),
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

    pub fn fork(f: &Fork, clock: &WallClock) -> Self {
        Self {
            parent_pid: Some(f.parent_pid),
            parent_tid: Some(f.parent_tid),
            parent_start_boottime_ns: Some(f.parent_start_ns),
            ..Self::new("fork", clock, f.ts_ns, f.pid, f.tid, &f.comm, f.start_ns)
        }
    }

    pub fn exec(e: &Exec, clock: &WallClock) -> Self {
        Self {
            old_tid: Some(e.old_tid),
            filename: Some(e.filename.clone()),
            ..Self::new("exec", clock, e.ts_ns, e.pid, e.tid, &e.comm, e.start_ns)
        }
    }

    pub fn exit(x: &Exit, clock: &WallClock) -> Self {
        Self {
            code: Some(x.code),
            group_dead: Some(x.group_dead),
            ..Self::new("exit", clock, x.ts_ns, x.pid, x.tid, &x.comm, x.start_ns)
        }
    }

    /// The fork this line tells of.
    pub fn into_fork(self) -> Result<Fork, String> {
        Ok(Fork {
            ts_ns: self.ts_ns,
            tid: self.tid,
            pid: self.pid,
            start_ns: self.start_boottime_ns,
            parent_tid: self.parent_tid.ok_or("a fork without parent_tid")?,
            parent_pid: self.parent_pid.ok_or("a fork without parent_pid")?,
            parent_start_ns: self.parent_start_boottime_ns.unwrap_or(0),
            comm: self.comm,
        })
    }

    /// The exec this line tells of.
    pub fn into_exec(self) -> Exec {
        Exec {
            ts_ns: self.ts_ns,
            tid: self.tid,
            pid: self.pid,
            old_tid: self.old_tid.unwrap_or(self.tid),
            start_ns: self.start_boottime_ns,
            comm: self.comm,
            filename: self.filename.unwrap_or_default(),
        }
    }

    /// The exit this line tells of.
    pub fn into_exit(self) -> Exit {
        Exit {
            ts_ns: self.ts_ns,
            tid: self.tid,
            pid: self.pid,
            start_ns: self.start_boottime_ns,
            code: self.code.unwrap_or(0),
            group_dead: self.group_dead.unwrap_or(self.tid == self.pid),
            comm: self.comm,
        }
    }
}

/// A loss (`"type": "loss"`): the fields of [`Loss`], and its time for people in live output.
/// Read back as a [`Loss`].
#[derive(Serialize)]
pub struct LossLine<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(flatten)]
    pub loss: &'a Loss,
}

impl<'a> LossLine<'a> {
    /// With its time when a clock is given (the record files go without: replay makes it again).
    pub fn new(loss: &'a Loss, clock: Option<&WallClock>) -> Self {
        Self {
            kind: "loss",
            time: clock.map(|c| rfc3339(c, loss.ts_ns)),
            loss,
        }
    }
}
