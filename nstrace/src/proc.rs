//! The processes (and threads) that exist when tracing begins, from /proc.
//!
//! procfs reads each task's stat; the namespace links are read one by one, because a single
//! unreadable link (pid_for_children of a pid namespace that has no process yet) must not hide
//! the others. A process that vanishes mid-walk is skipped quietly.
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use nstrace_common::NS_SLOTS;

use crate::{ns::NsKind, timeline::ProcEntry};

/// Nanoseconds per clock tick: /proc's start times are in ticks since boot.
pub fn tick_ns() -> u64 {
    1_000_000_000 / procfs::ticks_per_second().max(1)
}

/// The inode of one `/proc/.../ns/KIND` link (`uts:[4026531838]`).
pub fn ns_inode(dir: &Path, kind: NsKind) -> Option<u32> {
    inode_of_link(std::fs::read_link(dir.join(kind.name())).ok()?.to_str()?)
}

/// Every task on the machine, threads included, read on up to one thread a CPU (at most eight):
/// the snapshot is taken after the programs attach, and start-up waits for it, and the kernel
/// takes a while over ten links a task (docs/bench.md).
pub fn snapshot() -> Vec<ProcEntry> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let processes: Vec<_> = processes.flatten().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunk = processes.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let mut chunks = processes.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks.map(|c| scope.spawn(|| tasks_of(c))).collect();
        let mut entries = tasks_of(first);
        for other in others {
            // A panic there is a bug in nstrace: it is raised here as it was.
            entries.extend(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        entries
    })
}

/// Processes (not kernel threads) whose namespace links this process may not read: without
/// CAP_SYS_PTRACE, those of other users and of processes with more capabilities (reading them is
/// a ptrace access check).
pub fn unreadable_namespaces() -> usize {
    const PF_KTHREAD: u32 = 0x0020_0000;
    let Ok(processes) = procfs::process::all_processes() else {
        return 0;
    };
    processes
        .flatten()
        .filter(|p| p.stat().is_ok_and(|s| s.flags & PF_KTHREAD == 0))
        .filter(|p| {
            matches!(
                std::fs::read_link(format!("/proc/{}/ns/mnt", p.pid)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied
            )
        })
        .count()
}

/// The tasks of `processes` with their namespaces.
fn tasks_of(processes: &[procfs::process::Process]) -> Vec<ProcEntry> {
    let tick = tick_ns();
    let mut entries = Vec::new();
    for process in processes {
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
            let inodes = ns_inodes(&dir);
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

/// The inode of each namespace link in `dir` (a /proc/.../ns directory), each read on its own:
/// one that cannot be read is `None`. The links are read relative to the directory, opened once:
/// a path from /proc costs a walk through seven directories a link.
fn ns_inodes(dir: &Path) -> [Option<u32>; NS_SLOTS] {
    let mut inodes = [None; NS_SLOTS];
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::open(dir, flags, Mode::empty()) else {
        return inodes;
    };
    for kind in NsKind::ALL {
        inodes[kind.slot()] = rustix::fs::readlinkat(&dir, kind.name(), Vec::new())
            .ok()
            .and_then(|link| link.into_string().ok())
            .and_then(|link| inode_of_link(&link));
    }
    inodes
}

/// The inode of a namespace link's target, `uts:[4026531838]`.
fn inode_of_link(link: &str) -> Option<u32> {
    let start = link.find('[')? + 1;
    let end = link.rfind(']')?;
    link.get(start..end)?.parse().ok()
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
