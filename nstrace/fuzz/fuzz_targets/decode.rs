//! Kernel records as the perf buffer hands them over: any bytes must decode or be refused,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = nstrace::event::decode(data) {
        // What decodes must also be usable by the model.
        let mut tl = nstrace::timeline::Timeline::new(nstrace::timeline::Scope::All);
        tl.apply(&record);
    }
});
