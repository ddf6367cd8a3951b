//! Record files, JSON Lines or binary: anything must parse or be refused with an error, never
//! panic, and what parses must be applied by the model without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nstrace::record::{Entry, read_entries};

fuzz_target!(|data: &[u8]| {
    let mut tl = nstrace::timeline::Timeline::new(nstrace::timeline::Scope::All);
    let _ = read_entries(data, &mut |_, entry| {
        match entry {
            Ok(Entry::Record(r)) => {
                tl.apply(&r);
            }
            Ok(Entry::Process(p)) => tl.snapshot(&[p], 0),
            Ok(Entry::Observation(pid, ts, cgroup, uid_map)) => {
                tl.observe(pid, ts, &cgroup, &uid_map)
            }
            Ok(Entry::Follow(pid)) => tl.follow(pid),
            Ok(Entry::Header(_)) | Err(_) => {}
        }
        true
    });
});
