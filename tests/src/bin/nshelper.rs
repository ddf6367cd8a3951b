//! A namespace-hopping helper for the integration tests: it performs the namespace calls named on
//! its command line, in order, so that the tests (and the collector) never change namespaces
//! themselves.
//!
//! Actions:
//!   unshare TYPES          unshare(2) with the CLONE_NEW* flags of TYPES (e.g. uts,net)
//!   setns PATH TYPE        setns(open(PATH), TYPE); TYPE is a type name or 0
//!   try-setns PATH TYPE    the same, but a failure prints `errno NAME` and goes on
//!   setns-pidfd PID TYPES  setns(pidfd_open(PID), flags of TYPES)
//!   clone3 TYPES           clone3(2) with those flags; the child goes on with the next actions,
//!                          the parent waits for it and exits with its status
//!   try-clone3 TYPES       clone3(2) with those flags and an exit signal the kernel refuses
//!                          (EINVAL): prints `errno NAME` and goes on
//!   try-clone3-big TYPES   clone3(2) with those flags and a struct larger than the kernel's
//!                          with a non-zero byte past its end (E2BIG); prints `errno NUMBER`
//!   comm HEX               set this task's comm to the bytes HEX spells (any but NUL)
//!   fork                   fork(2), likewise
//!   vfork-unshare TYPES ACTIONS...
//!                          vfork(2) (x86_64): the child unshares TYPES and execs this helper
//!                          with the remaining actions; the parent waits for it and exits with
//!                          its status
//!   exec-self ACTIONS...   execve this helper with the remaining actions
//!   pause                  print `paused PID` and wait for a line on stdin, then go on
//!   hold                   print `ready PID` (PID as /proc names it) and wait for stdin to
//!                          close, then exit 0
//!
//! TYPES: mnt, uts, ipc, net, pid, user, cgroup, time, comma-separated.
use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    process::exit,
};

fn flag(name: &str) -> u64 {
    (match name {
        "mnt" => libc::CLONE_NEWNS,
        "uts" => libc::CLONE_NEWUTS,
        "ipc" => libc::CLONE_NEWIPC,
        "net" => libc::CLONE_NEWNET,
        "pid" => libc::CLONE_NEWPID,
        "user" => libc::CLONE_NEWUSER,
        "cgroup" => libc::CLONE_NEWCGROUP,
        "time" => 0x80,
        "0" => 0,
        other => fail(&format!("unknown namespace type {other}")),
    }) as u64
}

fn flags(types: &str) -> u64 {
    types.split(',').map(flag).fold(0, |a, b| a | b)
}

fn fail(what: &str) -> ! {
    eprintln!("nshelper: {what}: {}", std::io::Error::last_os_error());
    exit(101)
}

fn errno_name() -> String {
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EBADF) => "EBADF".into(),
        Some(other) => format!("{other}"),
        None => "none".into(),
    }
}

fn wait_and_exit(child: libc::pid_t) -> ! {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        fail("waitpid");
    }
    exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        102
    })
}

/// The pid as the test sees it: getpid() answers in our own pid namespace, while /proc (the
/// test's mount) answers in the test's.
fn proc_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or_else(std::process::id)
}

/// This helper's path and an argv that runs it with `actions`.
struct SelfArgv {
    exe: CString,
    argv: Vec<CString>,
}

impl SelfArgv {
    /// The NULL-terminated pointer array execve wants; it borrows `self`.
    fn pointers(&self) -> Vec<*const libc::c_char> {
        let mut ptrs: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        ptrs
    }
}

fn self_argv(actions: &[String]) -> SelfArgv {
    let cstring = |s: &str| CString::new(s).unwrap_or_else(|_| fail("an argument holds a NUL"));
    let mut argv = vec![cstring("nshelper")];
    argv.extend(actions.iter().map(|a| cstring(a)));
    SelfArgv {
        exe: cstring("/proc/self/exe"),
        argv,
    }
}

/// vfork(2), the syscall itself: the child runs in this process's memory until it execs, so
/// it makes its three calls (unshare, execve, and _exit if either fails) from registers, without
/// touching the stack it shares with its parent. The parent waits for the child and exits with
/// its status.
#[cfg(target_arch = "x86_64")]
fn vfork_unshare_exec(flags: u64, argv: &SelfArgv) -> ! {
    let ptrs = argv.pointers();
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let ret: i64;
    // SAFETY: the child only makes syscalls from registers; every pointer it passes outlives the
    // parent's wait, which starts only once the child has exec'd or exited.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov eax, {unshare}",
            "mov rdi, r8",
            "syscall",
            "test rax, rax",
            "jnz 3f",
            "mov eax, {execve}",
            "mov rdi, r9",
            "mov rsi, r10",
            "mov rdx, r12",
            "syscall",
            "3:",
            "mov eax, {exit}",
            "mov edi, 101",
            "syscall",
            "2:",
            unshare = const libc::SYS_unshare,
            execve = const libc::SYS_execve,
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_vfork => ret,
            in("r8") flags,
            in("r9") argv.exe.as_ptr(),
            in("r10") ptrs.as_ptr(),
            in("r12") envp.as_ptr(),
            out("rcx") _,
            out("r11") _,
            out("rdi") _,
            out("rsi") _,
            out("rdx") _,
            options(nostack),
        );
    }
    if ret < 0 {
        fail("vfork");
    }
    wait_and_exit(ret as libc::pid_t)
}

#[cfg(not(target_arch = "x86_64"))]
fn vfork_unshare_exec(_flags: u64, _argv: &SelfArgv) -> ! {
    fail("vfork-unshare: vfork(2) exists on x86_64 only")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let next = |i: &mut usize| -> String {
        let a = args
            .get(*i)
            .cloned()
            .unwrap_or_else(|| fail("missing argument"));
        *i += 1;
        a
    };
    while i < args.len() {
        let action = next(&mut i);
        match action.as_str() {
            "unshare" => {
                let f = flags(&next(&mut i));
                // SAFETY: plain syscall.
                if unsafe { libc::unshare(f as i32) } != 0 {
                    fail("unshare");
                }
            }
            "setns" | "try-setns" => {
                let path = next(&mut i);
                let nstype = flag(&next(&mut i));
                let file = std::fs::File::open(&path)
                    .unwrap_or_else(|e| fail(&format!("open {path}: {e}")));
                // SAFETY: a valid fd.
                if unsafe { libc::setns(file.as_raw_fd(), nstype as i32) } != 0 {
                    if action == "setns" {
                        fail(&format!("setns {path}"));
                    }
                    println!("errno {}", errno_name());
                    let _ = std::io::stdout().flush();
                }
            }
            "setns-pidfd" => {
                let pid: i32 = next(&mut i).parse().unwrap_or_else(|_| fail("bad pid"));
                let f = flags(&next(&mut i));
                // SAFETY: plain syscalls.
                let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                if pidfd < 0 {
                    fail("pidfd_open");
                }
                if unsafe { libc::setns(pidfd as i32, f as i32) } != 0 {
                    fail("setns pidfd");
                }
            }
            "clone3" => {
                // struct clone_args, version 0 (64 bytes): flags, pidfd, child_tid, parent_tid,
                // exit_signal, stack, stack_size, tls.
                let mut clone_args = [0u64; 8];
                clone_args[0] = flags(&next(&mut i));
                clone_args[4] = libc::SIGCHLD as u64;
                // SAFETY: no CLONE_VM: the child gets a copy of this single-threaded process.
                let ret =
                    unsafe { libc::syscall(libc::SYS_clone3, clone_args.as_mut_ptr(), 64usize) };
                match ret {
                    r if r < 0 => fail("clone3"),
                    0 => {}
                    child => wait_and_exit(child as libc::pid_t),
                }
            }
            "try-clone3" => {
                let mut clone_args = [0u64; 8];
                clone_args[0] = flags(&next(&mut i));
                // Not a signal: clone3 refuses it before it makes anything.
                clone_args[4] = 0xff;
                // SAFETY: the call fails before any child exists.
                let ret =
                    unsafe { libc::syscall(libc::SYS_clone3, clone_args.as_mut_ptr(), 64usize) };
                if ret >= 0 {
                    fail("try-clone3 made a child");
                }
                println!("errno {}", errno_name());
                let _ = std::io::stdout().flush();
            }
            "try-clone3-big" => {
                // 128 bytes: the known 88 and a non-zero word past them.
                let mut clone_args = [0u64; 16];
                clone_args[0] = flags(&next(&mut i));
                clone_args[4] = libc::SIGCHLD as u64;
                clone_args[15] = 1;
                // SAFETY: the kernel refuses the struct before any child exists.
                let ret =
                    unsafe { libc::syscall(libc::SYS_clone3, clone_args.as_mut_ptr(), 128usize) };
                if ret >= 0 {
                    fail("try-clone3-big made a child");
                }
                println!("errno {}", errno_name());
                let _ = std::io::stdout().flush();
            }
            "comm" => {
                let hex = next(&mut i);
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|at| {
                        u8::from_str_radix(hex.get(at..at + 2).unwrap_or("zz"), 16)
                            .unwrap_or_else(|_| fail("comm: not hex"))
                    })
                    .collect();
                let name = CString::new(bytes).unwrap_or_else(|_| fail("comm: a NUL"));
                // SAFETY: a NUL-terminated name; the kernel keeps its first 15 bytes.
                if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
                    fail("prctl(PR_SET_NAME)");
                }
            }
            "fork" => {
                // SAFETY: single-threaded process.
                match unsafe { libc::fork() } {
                    r if r < 0 => fail("fork"),
                    0 => {}
                    child => wait_and_exit(child),
                }
            }
            "vfork-unshare" => {
                let f = flags(&next(&mut i));
                let argv = self_argv(&args[i..]);
                vfork_unshare_exec(f, &argv);
            }
            "exec-self" => {
                let argv = self_argv(&args[i..]);
                let ptrs = argv.pointers();
                // SAFETY: NUL-terminated argv; environ is inherited.
                unsafe { libc::execv(argv.exe.as_ptr(), ptrs.as_ptr()) };
                fail("exec");
            }
            "pause" => {
                println!("paused {}", proc_pid());
                let _ = std::io::stdout().flush();
                let mut byte = [0u8];
                let _ = std::io::stdin().read(&mut byte);
            }
            "hold" => {
                println!("ready {}", proc_pid());
                let _ = std::io::stdout().flush();
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
                exit(0);
            }
            other => fail(&format!("unknown action {other}")),
        }
    }
}
