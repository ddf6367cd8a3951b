//! Loading and attaching the kernel programs, with an error that names the fix for every way it
//! can fail on a user's machine.
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{Program, RawTracePoint, TracePoint},
};
use log::debug;
use nstrace_common::{FLUSH_PROGRAM, OFFSETS_GLOBAL, OWN_TGID_GLOBAL};

use crate::btf::{BtfError, KernelBtf, VMLINUX_BTF};

/// Where tracefs lives, newest convention first.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// How one program attaches.
enum Hook {
    /// syscalls/<name> tracepoints (one program may serve several), then those of `optional`
    /// that this architecture has.
    Syscalls {
        names: &'static [&'static str],
        optional: &'static [&'static str],
    },
    /// A raw tracepoint (raw_tp/<name>): the tracepoint's own arguments, and no BTF to load.
    Raw(&'static str),
    /// A raw tracepoint program attached nowhere: the collector runs it when it needs it.
    OnDemand,
}

/// Every program and where it attaches. Program names are unique in their first 15 bytes, which
/// is all the kernel keeps.
const PROBES: [(&str, Hook); 6] = [
    // fork(2) and vfork(2) exist on x86_64, not on arm64: there their children learn their set
    // as a clone's do.
    (
        "clone_exit",
        Hook::Syscalls {
            names: &["sys_exit_clone", "sys_exit_clone3"],
            optional: &["sys_exit_fork", "sys_exit_vfork"],
        },
    ),
    (
        "ns_exit",
        Hook::Syscalls {
            names: &["sys_exit_unshare", "sys_exit_setns"],
            optional: &[],
        },
    ),
    ("sched_fork", Hook::Raw("sched_process_fork")),
    ("sched_exec", Hook::Raw("sched_process_exec")),
    ("sched_exit", Hook::Raw("sched_process_exit")),
    (FLUSH_PROGRAM, Hook::OnDemand),
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "nstrace needs root, or CAP_BPF and CAP_PERFMON with read access to tracefs: run it as \
         root (`sudo nstrace`)"
    )]
    NotPrivileged,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(
        "tracefs is not mounted and mounting it failed ({0}): run `mount -t tracefs nodev \
         /sys/kernel/tracing` as root; if /sys/kernel/tracing does not exist, this kernel was \
         built without tracing (CONFIG_FTRACE)"
    )]
    NoTracefs(std::io::Error),
    #[error(
        "this kernel has no tracepoint syscalls/{name} ({path} is missing): nstrace needs a kernel \
         built with CONFIG_FTRACE_SYSCALLS=y"
    )]
    NoTracepoint { name: String, path: PathBuf },
    #[error("loading nstrace's eBPF object")]
    Object(#[from] aya::EbpfError),
    #[error(
        "the kernel refused bpf() (Operation not permitted): nstrace needs CAP_BPF and \
         CAP_PERFMON (or CAP_SYS_ADMIN on kernels before 5.8, or where a container's seccomp \
         profile allows bpf() only with it). Run it as root on the host; in a container add the \
         capabilities (docker or podman run --cap-add BPF --cap-add PERFMON, or --cap-add \
         SYS_ADMIN on engines that do not know them; Kubernetes \
         securityContext.capabilities.add [BPF, PERFMON] with an Unconfined seccomp profile)"
    )]
    Refused(#[source] aya::EbpfError),
    #[error("the eBPF object has no program {0} (a build mismatch: rebuild nstrace)")]
    NoProgram(&'static str),
    #[error("loading program {program} into the kernel")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("attaching program {program} to {hook}")]
    Attach {
        program: &'static str,
        hook: String,
        source: aya::programs::ProgramError,
    },
}

/// The loaded, attached programs; detached when dropped.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// Every hook attached, as `category/name`.
    pub hooks: Vec<String>,
}

/// Whether loading failed because the kernel said EPERM (a missing capability, a seccomp
/// filter), somewhere in the error's chain.
fn refused(e: &aya::EbpfError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// True when the effective capabilities include `cap` (a `CAP_*` number).
pub fn has_capability(cap: u32) -> bool {
    own_status().is_some_and(|s| s.capeff & (1 << cap) != 0)
}

/// True when the effective capabilities include CAP_BPF and CAP_PERFMON.
fn has_bpf_capabilities() -> bool {
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    own_status()
        .is_some_and(|s| s.capeff & (1 << CAP_BPF) != 0 && s.capeff & (1 << CAP_PERFMON) != 0)
}

/// This process's /proc/self/status.
fn own_status() -> Option<procfs::process::Status> {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .ok()
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted anywhere.
pub fn tracefs() -> Result<PathBuf, LoadError> {
    if let Some(dir) = TRACEFS
        .iter()
        .map(Path::new)
        .find(|d| d.join("events").is_dir())
    {
        return Ok(dir.to_path_buf());
    }
    let target = Path::new(TRACEFS[0]);
    debug!(
        "tracefs is not mounted: mounting it at {}",
        target.display()
    );
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in a constant");
    let (source, dir, fstype) = (c("nodev"), c(TRACEFS[0]), c("tracefs"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::NoTracefs(std::io::Error::last_os_error()));
    }
    Ok(target.to_path_buf())
}

/// Checks what the programs need, then loads and attaches them.
pub fn load() -> Result<Loaded, LoadError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && !has_bpf_capabilities() {
        return Err(LoadError::NotPrivileged);
    }
    let began = std::time::Instant::now();
    let tracefs = tracefs()?;
    let syscalls = tracefs.join("events/syscalls");
    let mut optional = Vec::new();
    for (_, hook) in &PROBES {
        if let Hook::Syscalls {
            names,
            optional: maybe,
        } = hook
        {
            for name in *names {
                let path = syscalls.join(name);
                if !path.is_dir() {
                    return Err(LoadError::NoTracepoint {
                        name: (*name).into(),
                        path,
                    });
                }
            }
            optional.extend(maybe.iter().filter(|name| syscalls.join(name).is_dir()));
        }
    }
    raise_memlock();

    let (offsets, mut loader) = std::thread::scope(|scope| {
        let loader = scope.spawn(loader_without_btf);
        let offsets = KernelBtf::load(Path::new(VMLINUX_BTF)).and_then(|btf| btf.kernel_offsets());
        // A panic there is a bug in nstrace: it is raised here as it was.
        let loader = loader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (offsets, loader)
    });
    let offsets = offsets?;
    debug!(
        "kernel offsets ({:?}, peak RSS {} KiB): {offsets:?}",
        began.elapsed(),
        peak_rss_kib()
    );

    let own_tgid = std::process::id();
    // No BTF for the loader: the programs carry no CO-RE relocations and attach to raw
    // tracepoints.
    let mut ebpf = loader
        .btf(None)
        .override_global(OFFSETS_GLOBAL, &offsets, true)
        .override_global(OWN_TGID_GLOBAL, &own_tgid, true)
        .load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/nstrace"
        )))
        .map_err(|e| {
            if refused(&e) {
                LoadError::Refused(e)
            } else {
                LoadError::Object(e)
            }
        })?;
    debug!(
        "object loaded ({:?}, peak RSS {} KiB)",
        began.elapsed(),
        peak_rss_kib()
    );

    // Verifying the programs is most of the start-up: the fork, exec and clone programs are
    // verified on a thread of their own while unshare/setns's, about as long, is verified here.
    let mut programs: std::collections::HashMap<&str, &mut Program> = ebpf.programs_mut().collect();
    let (mut alone, mut rest) = (Vec::new(), Vec::new());
    for (program, hook) in &PROBES {
        let prog = programs
            .remove(program)
            .ok_or(LoadError::NoProgram(program))?;
        let group = if matches!(*program, "sched_fork" | "sched_exec" | "clone_exit") {
            &mut alone
        } else {
            &mut rest
        };
        group.push((*program, hook, prog));
    }
    let (here, there) = std::thread::scope(|scope| {
        let there = scope.spawn(|| attach_all(alone, &optional, began));
        (attach_all(rest, &optional, began), there.join())
    });
    let mut hooks = here?;
    // A panic there is a bug in nstrace: it is raised here as it was.
    hooks.extend(there.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?);
    drop(programs);
    Ok(Loaded { ebpf, hooks })
}

/// A loader that has not parsed the kernel's BTF.
///
/// aya 0.14's `EbpfLoader::new()` reads and parses all of /sys/kernel/btf/vmlinux (the longest
/// step of start-up, and most of its memory: docs/bench.md) for CO-RE relocations these programs
/// do not have,
/// whatever the loader is told afterwards. Made on a thread with a root of its own
/// (`unshare(CLONE_FS)`, then `chroot` to a directory without that path), it finds no file and
/// parses nothing. Nothing else runs on that thread. Without CAP_SYS_CHROOT the loader is made as
/// usual, parse and all.
fn loader_without_btf() -> EbpfLoader<'static> {
    // SAFETY: unshare(CLONE_FS) gives this thread alone its own root and working directory, and
    // chroot then changes only those; the thread ends when this function returns.
    let own_root = unsafe {
        libc::unshare(libc::CLONE_FS) == 0 && libc::chroot(c"/sys/kernel/btf".as_ptr()) == 0
    };
    if !own_root {
        debug!(
            "the loader parses the kernel's BTF: no root of its own ({})",
            std::io::Error::last_os_error()
        );
    }
    EbpfLoader::new()
}

/// Loads and attaches each program of `programs` to its hook (optional syscall tracepoints
/// only when in `present`); returns the hooks attached.
fn attach_all(
    programs: Vec<(&'static str, &Hook, &mut Program)>,
    present: &[&'static str],
    began: std::time::Instant,
) -> Result<Vec<String>, LoadError> {
    let mut hooks = Vec::new();
    for (program, hook, prog) in programs {
        match hook {
            Hook::Syscalls { names, optional } => {
                let tp: &mut TracePoint = prog
                    .try_into()
                    .map_err(|source| LoadError::Program { program, source })?;
                tp.load()
                    .map_err(|source| LoadError::Program { program, source })?;
                let present = optional.iter().filter(|name| present.contains(name));
                for name in names.iter().chain(present) {
                    tp.attach("syscalls", name)
                        .map_err(|source| LoadError::Attach {
                            program,
                            hook: format!("syscalls/{name}"),
                            source,
                        })?;
                    hooks.push(format!("syscalls/{name}"));
                }
            }
            Hook::Raw(_) | Hook::OnDemand => {
                let tp: &mut RawTracePoint = prog
                    .try_into()
                    .map_err(|source| LoadError::Program { program, source })?;
                tp.load()
                    .map_err(|source| LoadError::Program { program, source })?;
                if let Hook::Raw(name) = hook {
                    tp.attach(name).map_err(|source| LoadError::Attach {
                        program,
                        hook: format!("raw_tp/{name}"),
                        source,
                    })?;
                    hooks.push(format!("raw_tp/{name}"));
                }
            }
        }
        debug!("attached {program} ({:?})", began.elapsed());
    }
    Ok(hooks)
}

/// This process's peak resident memory so far (VmHWM), for -v.
pub fn peak_rss_kib() -> u64 {
    own_status().and_then(|s| s.vmhwm).unwrap_or(0)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones ignore it. A failure here
/// is only worth a warning.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK ({}); loading may fail on kernels before 5.11",
            std::io::Error::last_os_error()
        );
    }
}
