//! Kernel samples (batches of records) as the perf buffer hands them over: any bytes must
//! decode or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tl = nstrace::timeline::Timeline::new(nstrace::timeline::Scope::All);
    // A sample is a batch of records: each is split off by its length, then decoded.
    for record in nstrace::event::records(data).flatten() {
        if let Ok(record) = nstrace::event::decode(record) {
            // What decodes must also be usable by the model.
            tl.apply(&record);
        }
    }
});
