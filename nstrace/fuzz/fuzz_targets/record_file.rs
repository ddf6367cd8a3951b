//! Record files, JSON Lines or binary, read as a stream (a pipe hands them over a few bytes at a
//! time): anything must parse or be refused with an error, never panic or hold more than a
//! bounded amount, and what parses must be applied by the model without panicking.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use nstrace::record::{Entry, read_entries};

/// A stream that hands over at most `step` bytes a read, as a pipe may.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let stream = Trickle {
        data: data.to_vec(),
        at: 0,
        // From the length, so that the corpus keeps its meaning.
        step: data.len() % 7 + 1,
    };
    let mut tl = nstrace::timeline::Timeline::new(nstrace::timeline::Scope::All);
    let mut resync: Option<(u64, u64, Vec<nstrace::timeline::ProcEntry>)> = None;
    let _ = read_entries(Box::new(stream), &mut |_, entry| {
        if let Ok(Entry::Process(p)) = entry {
            match &mut resync {
                Some((_, _, entries)) => entries.push(p),
                None => tl.snapshot(&[p], 0),
            }
            return true;
        }
        if let Some((read_from, ts, entries)) = resync.take() {
            tl.resync(&entries, read_from, ts);
        }
        match entry {
            Ok(Entry::Record(r)) => {
                tl.apply(&r);
            }
            Ok(Entry::Observation(pid, ts, cgroup, uid_map, runtime)) => {
                tl.observe_in(pid, ts, &cgroup, &uid_map, runtime)
            }
            Ok(Entry::Container(container, names)) => {
                // Names of a container: shown by its label and matched by `--container`.
                let label = tl.container_label(&container);
                let _ = tl.container_matches(&container, &label);
                tl.name(container, names);
            }
            Ok(Entry::Follow(pid)) => tl.follow(pid),
            Ok(Entry::Loss(loss)) => tl.lost(&loss),
            Ok(Entry::Resync { read_from, ts }) => resync = Some((read_from, ts, Vec::new())),
            Ok(Entry::Header(_) | Entry::Process(_) | Entry::Evidence(_)) | Err(_) => {}
        }
        true
    });
    if let Some((read_from, ts, entries)) = resync {
        tl.resync(&entries, read_from, ts);
    }
});
