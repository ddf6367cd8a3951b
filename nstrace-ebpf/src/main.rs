//! nstrace's kernel programs.
//!
//! `syscalls` stashes each clone/clone3/unshare/setns at entry and completes it at exit;
//! `lifecycle` watches fork and exec for the moves those syscalls set up; `task` reads a task's
//! namespace set; `maps` declares every map and global.
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
