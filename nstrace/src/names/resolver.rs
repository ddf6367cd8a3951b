//! Reading names off the collector's thread: a reader thread takes containers, one request
//! each, and answers with their names. The collector never waits on the engines' files; it
//! asks, goes on, and takes the answers when it next looks.
use std::{
    collections::VecDeque,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    time::{Duration, Instant},
};

use super::{Names, Roots, read};
use crate::container::Container;

/// Where names come from: asked once per container, answered later.
pub trait NameSource {
    fn request(&mut self, container: &Container);
    /// An answer, if one is ready (or comes within `wait`).
    fn answer(&mut self, wait: Duration) -> Option<(Container, Names)>;
}

/// The reader thread, and the two ends of its channels. Dropping it ends the thread once it has
/// answered what it was asked.
pub struct Resolver {
    requests: Option<Sender<Container>>,
    answers: Receiver<(Container, Names)>,
}

impl Resolver {
    /// Starts the reader thread over the engines' state in `roots`.
    pub fn spawn(roots: Roots) -> std::io::Result<Self> {
        let (requests, asked) = mpsc::channel::<Container>();
        let (answer, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("nstrace-names".into())
            .spawn(move || reader(&roots, &asked, &answer))?;
        Ok(Self {
            requests: Some(requests),
            answers,
        })
    }
}

/// When a container's state is looked for again, after each miss: the engine may be writing it
/// (a second in all, within [`crate::pipeline::NAME_WAIT`]).
const RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(600),
];

/// The reader thread: answers each container, looking again a few times for state not there
/// yet, until nobody asks any more.
fn reader(roots: &Roots, asked: &Receiver<Container>, answer: &Sender<(Container, Names)>) {
    let mut again: VecDeque<(Instant, Container, usize)> = VecDeque::new();
    loop {
        let wait = again.front().map_or(Duration::from_secs(3600), |(at, ..)| {
            at.saturating_duration_since(Instant::now())
        });
        let (container, tries) = match asked.recv_timeout(wait) {
            Ok(container) => (container, 0),
            Err(RecvTimeoutError::Timeout) => match again.pop_front() {
                Some((_, container, tries)) => (container, tries),
                None => continue,
            },
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let names = match read::try_read(&container, roots) {
            Some(names) => names,
            None if tries < RETRIES.len() => {
                again.push_back((Instant::now() + RETRIES[tries], container, tries + 1));
                again.make_contiguous().sort_by_key(|(at, ..)| *at);
                continue;
            }
            None => Names::default(),
        };
        if answer.send((container, names)).is_err() {
            return;
        }
    }
}

impl NameSource for Resolver {
    fn request(&mut self, container: &Container) {
        if let Some(requests) = &self.requests {
            // The thread is gone only if it panicked: the container then stays unnamed.
            let _ = requests.send(container.clone());
        }
    }

    fn answer(&mut self, wait: Duration) -> Option<(Container, Names)> {
        // Timed out, or the thread is gone (it panicked): no answer.
        self.answers.recv_timeout(wait).ok()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // Closing the requests ends the thread's loop; it is not joined (a read stuck on a
        // hung file system must not hold nstrace's exit).
        self.requests = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_by_the_thread() {
        let mut resolver = Resolver::spawn(Roots {
            docker: "/nonexistent".into(),
            ..Roots::default()
        })
        .unwrap();
        let c = Container {
            runtime: "docker",
            id: "abc".into(),
            pod: None,
        };
        resolver.request(&c);
        let (answered, names) = resolver.answer(Duration::from_secs(10)).expect("an answer");
        assert_eq!(answered, c);
        assert!(names.is_empty());
        assert!(resolver.answer(Duration::ZERO).is_none());
    }
}
