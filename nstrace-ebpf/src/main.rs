//! nstrace's kernel programs.
//!
//! `syscalls` reports clone, clone3, unshare and setns at their exits; `lifecycle` watches fork
//! (where a clone with CLONE_NEW* is reported), exec and exit; `task` reads a task's namespace
//! set; `maps` declares every map and global.
#![no_std]
#![no_main]

mod lifecycle;
mod maps;
mod syscalls;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
