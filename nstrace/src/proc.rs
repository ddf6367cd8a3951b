//! The processes (and threads) that exist when tracing begins, from /proc.
//!
//! procfs reads each task's stat; the namespace links are read one by one, because a single
//! unreadable link (pid_for_children of a pid namespace that has no process yet) must not hide
//! the others. A process that vanishes mid-walk is skipped quietly.
use std::path::Path;

use nstrace_common::NS_SLOTS;

use crate::{ns::NsKind, timeline::ProcEntry};

/// Nanoseconds per clock tick: /proc's start times are in ticks since boot.
pub fn tick_ns() -> u64 {
    1_000_000_000 / procfs::ticks_per_second().max(1)
}

/// The inode of one `/proc/.../ns/KIND` link (`uts:[4026531838]`).
pub fn ns_inode(dir: &Path, kind: NsKind) -> Option<u32> {
    let link = std::fs::read_link(dir.join(kind.name())).ok()?;
    let link = link.to_str()?;
    let start = link.find('[')? + 1;
    let end = link.rfind(']')?;
    link.get(start..end)?.parse().ok()
}

/// Every task on the machine, threads included.
pub fn snapshot() -> Vec<ProcEntry> {
    let tick = tick_ns();
    let mut entries = Vec::new();
    let Ok(processes) = procfs::process::all_processes() else {
        return entries;
    };
    for process in processes.flatten() {
        let Ok(tasks) = process.tasks() else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(stat) = task.stat() else {
                continue;
            };
            let dir = Path::new("/proc")
                .join(task.pid.to_string())
                .join("task")
                .join(task.tid.to_string())
                .join("ns");
            let mut inodes = [None; NS_SLOTS];
            for kind in NsKind::ALL {
                inodes[kind.slot()] = ns_inode(&dir, kind);
            }
            if inodes.iter().all(Option::is_none) {
                // Gone, or a kernel thread whose links we may not read: nothing to model.
                continue;
            }
            entries.push(ProcEntry {
                tid: task.tid as u32,
                pid: task.pid as u32,
                ppid: stat.ppid as u32,
                comm: stat.comm.into(),
                start_ns: stat.starttime * tick,
                inodes,
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_holds_this_process_with_all_its_namespaces() {
        let me = std::process::id();
        let entries = snapshot();
        let mine = entries
            .iter()
            .find(|e| e.tid == me)
            .expect("this process is in the snapshot");
        assert_eq!(mine.pid, me);
        let dir = Path::new("/proc/self/ns");
        for kind in NsKind::ALL {
            assert_eq!(mine.inodes[kind.slot()], ns_inode(dir, kind), "{kind}");
        }
        assert!(mine.inodes[NsKind::Net.slot()].is_some());
        assert!(
            entries.iter().any(|e| e.tid == 1 || e.tid == 2),
            "init or kthreadd"
        );
    }
}
