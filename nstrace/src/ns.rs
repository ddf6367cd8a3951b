//! Namespace kinds and the flags that name them.
use std::fmt;

use nstrace_common::{NS_SLOTS, flags as f, slot};

/// One entry of `/proc/PID/ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsKind {
    Mnt,
    Uts,
    Ipc,
    Pid,
    PidForChildren,
    Net,
    User,
    Cgroup,
    Time,
    TimeForChildren,
}

impl NsKind {
    /// In `/proc/PID/ns` order of the wire record's slots.
    pub const ALL: [NsKind; NS_SLOTS] = [
        NsKind::Mnt,
        NsKind::Uts,
        NsKind::Ipc,
        NsKind::Pid,
        NsKind::PidForChildren,
        NsKind::Net,
        NsKind::User,
        NsKind::Cgroup,
        NsKind::Time,
        NsKind::TimeForChildren,
    ];

    /// The file name under `/proc/PID/ns`.
    pub const fn name(self) -> &'static str {
        match self {
            NsKind::Mnt => "mnt",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Pid => "pid",
            NsKind::PidForChildren => "pid_for_children",
            NsKind::Net => "net",
            NsKind::User => "user",
            NsKind::Cgroup => "cgroup",
            NsKind::Time => "time",
            NsKind::TimeForChildren => "time_for_children",
        }
    }

    /// The index of this kind in a wire `NsSet`.
    pub const fn slot(self) -> usize {
        match self {
            NsKind::Mnt => slot::MNT,
            NsKind::Uts => slot::UTS,
            NsKind::Ipc => slot::IPC,
            NsKind::Pid => slot::PID,
            NsKind::PidForChildren => slot::PID_FOR_CHILDREN,
            NsKind::Net => slot::NET,
            NsKind::User => slot::USER,
            NsKind::Cgroup => slot::CGROUP,
            NsKind::Time => slot::TIME,
            NsKind::TimeForChildren => slot::TIME_FOR_CHILDREN,
        }
    }

    /// The CLONE_NEW* flag of this kind's namespace type.
    pub const fn clone_flag(self) -> u64 {
        match self {
            NsKind::Mnt => f::CLONE_NEWNS,
            NsKind::Uts => f::CLONE_NEWUTS,
            NsKind::Ipc => f::CLONE_NEWIPC,
            NsKind::Pid | NsKind::PidForChildren => f::CLONE_NEWPID,
            NsKind::Net => f::CLONE_NEWNET,
            NsKind::User => f::CLONE_NEWUSER,
            NsKind::Cgroup => f::CLONE_NEWCGROUP,
            NsKind::Time | NsKind::TimeForChildren => f::CLONE_NEWTIME,
        }
    }

    pub fn from_name(name: &str) -> Option<NsKind> {
        NsKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for NsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A namespace type: what a namespace is, whichever slot points at it (`pid` and
/// `pid_for_children` both point at pid namespaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsType {
    Mnt,
    Uts,
    Ipc,
    Pid,
    Net,
    User,
    Cgroup,
    Time,
}

impl NsType {
    pub const ALL: [NsType; 8] = [
        NsType::Mnt,
        NsType::Uts,
        NsType::Ipc,
        NsType::Pid,
        NsType::Net,
        NsType::User,
        NsType::Cgroup,
        NsType::Time,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            NsType::Mnt => "mnt",
            NsType::Uts => "uts",
            NsType::Ipc => "ipc",
            NsType::Pid => "pid",
            NsType::Net => "net",
            NsType::User => "user",
            NsType::Cgroup => "cgroup",
            NsType::Time => "time",
        }
    }

    pub fn from_name(name: &str) -> Option<NsType> {
        NsType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The slot that holds a task's own namespace of this type.
    pub const fn own_slot(self) -> NsKind {
        match self {
            NsType::Mnt => NsKind::Mnt,
            NsType::Uts => NsKind::Uts,
            NsType::Ipc => NsKind::Ipc,
            NsType::Pid => NsKind::Pid,
            NsType::Net => NsKind::Net,
            NsType::User => NsKind::User,
            NsType::Cgroup => NsKind::Cgroup,
            NsType::Time => NsKind::Time,
        }
    }

    /// The inode of the kernel's initial namespace of this type, where it is fixed
    /// (include/linux/proc_ns.h); mnt and net have none.
    pub const fn initial_inode(self) -> Option<u32> {
        match self {
            NsType::Ipc => Some(0xEFFF_FFFF),
            NsType::Uts => Some(0xEFFF_FFFE),
            NsType::User => Some(0xEFFF_FFFD),
            NsType::Pid => Some(0xEFFF_FFFC),
            NsType::Cgroup => Some(0xEFFF_FFFB),
            NsType::Time => Some(0xEFFF_FFFA),
            NsType::Mnt | NsType::Net => None,
        }
    }
}

impl fmt::Display for NsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl NsKind {
    /// The type of namespace this slot points at.
    pub const fn ns_type(self) -> NsType {
        match self {
            NsKind::Mnt => NsType::Mnt,
            NsKind::Uts => NsType::Uts,
            NsKind::Ipc => NsType::Ipc,
            NsKind::Pid | NsKind::PidForChildren => NsType::Pid,
            NsKind::Net => NsType::Net,
            NsKind::User => NsType::User,
            NsKind::Cgroup => NsType::Cgroup,
            NsKind::Time | NsKind::TimeForChildren => NsType::Time,
        }
    }

    /// Whether the slot is where the task itself is (not where its children will go).
    pub const fn is_own(self) -> bool {
        !matches!(self, NsKind::PidForChildren | NsKind::TimeForChildren)
    }
}

/// Every clone flag with its name (include/uapi/linux/sched.h), lowest bit first.
const CLONE_FLAGS: &[(u64, &str)] = &[
    (0x0000_0080, "CLONE_NEWTIME"),
    (0x0000_0100, "CLONE_VM"),
    (0x0000_0200, "CLONE_FS"),
    (0x0000_0400, "CLONE_FILES"),
    (0x0000_0800, "CLONE_SIGHAND"),
    (0x0000_1000, "CLONE_PIDFD"),
    (0x0000_2000, "CLONE_PTRACE"),
    (0x0000_4000, "CLONE_VFORK"),
    (0x0000_8000, "CLONE_PARENT"),
    (0x0001_0000, "CLONE_THREAD"),
    (0x0002_0000, "CLONE_NEWNS"),
    (0x0004_0000, "CLONE_SYSVSEM"),
    (0x0008_0000, "CLONE_SETTLS"),
    (0x0010_0000, "CLONE_PARENT_SETTID"),
    (0x0020_0000, "CLONE_CHILD_CLEARTID"),
    (0x0040_0000, "CLONE_DETACHED"),
    (0x0080_0000, "CLONE_UNTRACED"),
    (0x0100_0000, "CLONE_CHILD_SETTID"),
    (0x0200_0000, "CLONE_NEWCGROUP"),
    (0x0400_0000, "CLONE_NEWUTS"),
    (0x0800_0000, "CLONE_NEWIPC"),
    (0x1000_0000, "CLONE_NEWUSER"),
    (0x2000_0000, "CLONE_NEWPID"),
    (0x4000_0000, "CLONE_NEWNET"),
    (0x8000_0000, "CLONE_IO"),
    (0x1_0000_0000, "CLONE_CLEAR_SIGHAND"),
    (0x2_0000_0000, "CLONE_INTO_CGROUP"),
];

/// Names the bits of a flags word. `exit_signal_byte`: the low byte is clone()'s exit signal
/// (so 0x80 is not CLONE_NEWTIME there). Unknown bits are kept as one hex number.
pub fn flag_names(flags: u64, exit_signal_byte: bool) -> Vec<String> {
    let mut names = Vec::new();
    for_each_flag_name(flags, exit_signal_byte, |name| names.push(name.to_string()));
    names
}

/// One name of [`for_each_flag_name`].
pub enum FlagName {
    Name(&'static str),
    Signal(i32),
    Unknown(u64),
}

impl std::fmt::Display for FlagName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagName::Name(name) => f.write_str(name),
            FlagName::Signal(signal) => f.write_str(&signal_name(*signal)),
            FlagName::Unknown(rest) => write!(f, "{rest:#x}"),
        }
    }
}

/// Appends the flags' names joined by `|`, as [`flag_names`] lists them, without allocating.
pub fn write_flag_names(out: &mut String, flags: u64, exit_signal_byte: bool) {
    use std::fmt::Write as _;
    // One flag, the usual case (setns's nstype, a one-type unshare): no walk of the table.
    if flags.is_power_of_two()
        && (flags > 0xff || !exit_signal_byte)
        && let Ok(at) = CLONE_FLAGS.binary_search_by_key(&flags, |&(bit, _)| bit)
    {
        out.push_str(CLONE_FLAGS[at].1);
        return;
    }
    let mut first = true;
    for_each_flag_name(flags, exit_signal_byte, |name| {
        if !first {
            out.push('|');
        }
        first = false;
        match name {
            FlagName::Name(name) => out.push_str(name),
            other => {
                let _ = write!(out, "{other}");
            }
        }
    });
}

pub fn for_each_flag_name(flags: u64, exit_signal_byte: bool, mut f: impl FnMut(FlagName)) {
    let mut rest = flags;
    if exit_signal_byte {
        let signal = (rest & 0xff) as i32;
        rest &= !0xff;
        if signal != 0 {
            f(FlagName::Signal(signal));
        }
    }
    for &(bit, name) in CLONE_FLAGS {
        if rest & bit != 0 {
            f(FlagName::Name(name));
            rest &= !bit;
        }
    }
    if rest != 0 {
        f(FlagName::Unknown(rest));
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGCHLD => "SIGCHLD".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        other => format!("signal {other}"),
    }
}

/// The name of an errno value (`EINVAL`), or its number when unknown.
pub fn errno_name(errno: i32) -> String {
    // libc's names, through nix: every errno the C library knows (EAGAIN for EWOULDBLOCK, as
    // strace prints it).
    match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::UnknownErrno => {}
        known => return format!("{known:?}"),
    }
    // What a syscall exit can return that never reaches userspace (include/linux/errno.h):
    // the restart codes a signal turns a call into, and their kin.
    use nstrace_common::errno::{
        ERESTART_RESTARTBLOCK, ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS,
    };
    let kernel = match i64::from(errno) {
        ERESTARTSYS => "ERESTARTSYS",
        ERESTARTNOINTR => "ERESTARTNOINTR",
        ERESTARTNOHAND => "ERESTARTNOHAND",
        515 => "ENOIOCTLCMD",
        ERESTART_RESTARTBLOCK => "ERESTART_RESTARTBLOCK",
        517 => "EPROBE_DEFER",
        518 => "EOPENSTALE",
        519 => "ENOPARAM",
        _ => return format!("errno {errno}"),
    };
    kernel.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flag_is_named_as_the_whole_table_names_it() {
        assert!(
            CLONE_FLAGS.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted by bit"
        );
        for bit in (0..40).map(|b| 1u64 << b) {
            for clone in [false, true] {
                let mut fast = String::new();
                write_flag_names(&mut fast, bit, clone);
                assert_eq!(fast, flag_names(bit, clone).join("|"), "{bit:#x} {clone}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in NsKind::ALL {
            assert_eq!(NsKind::from_name(kind.name()), Some(kind));
            assert_eq!(NsKind::ALL[kind.slot()], kind);
        }
        assert_eq!(NsKind::from_name("bogus"), None);
    }

    #[test]
    fn clone_flags_keep_the_exit_signal_apart_from_newtime() {
        let flags = f::CLONE_NEWUTS | f::CLONE_NEWNET | libc::SIGCHLD as u64;
        assert_eq!(
            flag_names(flags, true),
            ["SIGCHLD", "CLONE_NEWUTS", "CLONE_NEWNET"]
        );
        assert_eq!(flag_names(0x80, false), ["CLONE_NEWTIME"]);
        assert_eq!(flag_names(0x80, true), ["signal 128"]);
    }

    #[test]
    fn unknown_bits_stay_visible() {
        assert_eq!(
            flag_names(f::CLONE_NEWPID | 0x40_0000_0000, false),
            ["CLONE_NEWPID", "0x4000000000"]
        );
        assert!(flag_names(0, false).is_empty());
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EINVAL), "EINVAL");
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(4095), "errno 4095");
        // Every errno libc names, not a hand-kept few: a clone3 refused with E2BIG.
        assert_eq!(errno_name(libc::E2BIG), "E2BIG");
        assert_eq!(errno_name(libc::EUSERS), "EUSERS");
        assert_eq!(errno_name(libc::ENOSPC), "ENOSPC");
        assert_eq!(errno_name(libc::EHWPOISON), "EHWPOISON");
        assert_eq!(errno_name(libc::EWOULDBLOCK), "EAGAIN");
        assert_eq!(errno_name(513), "ERESTARTNOINTR");
        // 41 and 58 are unassigned on Linux (EWOULDBLOCK is EAGAIN, EDEADLOCK is EDEADLK).
        for errno in (1..=133).filter(|&e| e != 41 && e != 58) {
            assert!(
                !errno_name(errno).starts_with("errno"),
                "errno {errno} has a name in libc"
            );
        }
    }
}
