//! Output held while a container's names are on their way.
//!
//! A container is named from its engine's files, off the collector's thread (see
//! [`crate::names`]). What is printed about its processes waits for the answer, briefly: a
//! finding then names the container as people know it, and `--container web` passes the
//! container's records once it is known as `web`. Everything printed waits in order, so the
//! output keeps the order of the records; nothing waits past [`NAME_WAIT`] or beyond
//! [`HOLD_LIMIT`] entries.
//!
//! `--container` also shows how the container was made and who came in: a transition passes
//! when its process is in the container, or when it entered or made a namespace the container
//! owns (the runtime's own processes making it, `docker exec`, a host `nsenter`). Which container
//! owns a new namespace is known only once a process of it is seen there, so a transition into
//! namespaces nobody owns yet waits for that, up to [`OWNER_WAIT_NS`] of kernel time.
//!
//! Live, each answer is kept in the record file as a `container` line where it came; a replay
//! applies those lines where they are, and so holds and names exactly as the live run did.
use std::{
    io,
    time::{Duration, Instant},
};

use super::{Pipeline, each_sink};
use crate::{
    container::Container,
    event::{Loss, Record, Transition},
    names::Names,
    ns::NsType,
    output::{FindingView, HealView},
    record::ContainerLine,
    timeline::Heal,
};

/// How long output waits for a container's names.
pub const NAME_WAIT: Duration = Duration::from_secs(2);

/// How many entries may wait; past that, all are let go, named or not.
pub const HOLD_LIMIT: usize = 50_000;

/// How long (kernel time) a transition into namespaces nobody owns yet waits, under
/// `--container`, for a container to be seen in them.
pub const OWNER_WAIT_NS: u64 = 2_000_000_000;

/// What becomes of a held entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Print,
    Drop,
    /// Not known yet: it and everything after it wait.
    Wait,
}

/// Something to print, with the container it is about (as it was when it happened).
pub(super) enum Out {
    Record {
        record: Record,
        pid: u32,
        container: Option<Container>,
        /// Under `--container`, for a transition: the namespaces (not the host's) its process
        /// or child entered or made.
        entered: Vec<(NsType, u32)>,
    },
    Finding {
        view: FindingView,
        container: Option<Container>,
    },
    Heal {
        heal: Heal,
        changes: Vec<(&'static str, Option<u32>, Option<u32>)>,
        container: Option<Container>,
    },
    Loss(Loss),
}

impl Pipeline<'_> {
    /// Whether output may go straight to the sinks: nothing waits, and no `--container` filter
    /// needs a record's container, which an exec's observation may only tell after it.
    pub(super) fn direct(&self) -> bool {
        self.held.is_empty() && self.pending.is_empty() && self.filter.container.is_none()
    }

    /// Prints `out`, or keeps it in line.
    pub(super) fn emit(&mut self, out: Out) -> io::Result<()> {
        let ts_ns = match &out {
            Out::Record { record, .. } => record.ts_ns(),
            Out::Finding { view, .. } => view.ts_ns,
            Out::Heal { heal, .. } => heal.ts_ns,
            Out::Loss(loss) => loss.ts_ns,
        };
        if !self.filter.in_window(ts_ns) {
            return Ok(());
        }
        if self.direct() {
            self.print(out)
        } else {
            self.held.push_back(out);
            Ok(())
        }
    }

    /// A record that passed the filter's own checks, about `pid`, which was in container
    /// `before` before it.
    pub(super) fn emit_record(
        &mut self,
        record: &Record,
        pid: u32,
        before: Option<Container>,
    ) -> io::Result<()> {
        if self.direct() {
            let label = match record {
                Record::Transition(_) => self
                    .timeline
                    .container_of(pid)
                    .map(|c| label_of(&self.timeline, &mut self.labels, c)),
                _ => None,
            };
            return self.write_record(record, label.as_deref());
        }
        let container = self.timeline.container_of(pid).cloned().or(before);
        let entered = match record {
            Record::Transition(t) if self.filter.container.is_some() => self.entered(t),
            _ => Vec::new(),
        };
        self.held.push_back(Out::Record {
            record: record.clone(),
            pid,
            container,
            entered,
        });
        Ok(())
    }

    /// The namespaces, not the host's, that a transition's caller or child entered or made.
    fn entered(&self, t: &Transition) -> Vec<(NsType, u32)> {
        let child = t.child.as_ref().map(|c| (t.child_moved(), &c.ns));
        t.changed()
            .into_iter()
            .map(|kind| (kind, &t.after))
            .chain(
                child
                    .into_iter()
                    .flat_map(|(moved, ns)| moved.into_iter().map(move |k| (k, ns))),
            )
            .map(|(kind, set)| (kind.ns_type(), set.get(kind).inum))
            .filter(|&(ty, inum)| {
                self.timeline
                    .namespace_of_inode(ty, inum)
                    .is_none_or(|idx| !self.timeline.namespace(idx).host)
            })
            .collect()
    }

    fn write_record(&mut self, record: &Record, container: Option<&str>) -> io::Result<()> {
        if matches!(record, Record::Transition(_)) {
            self.shown += 1;
        }
        each_sink(&mut self.sinks, &mut self.closed, |s| {
            s.record_in(record, container)
        })
    }

    /// Whether a held entry is printed, under `--container` (with `last`: nothing more will
    /// tell).
    fn verdict(&self, out: &Out, last: bool) -> Verdict {
        let filter = &self.filter;
        let tl = &self.timeline;
        let print = |yes: bool| if yes { Verdict::Print } else { Verdict::Drop };
        match out {
            Out::Record {
                record,
                pid,
                container,
                entered,
            } => {
                // An exec's process is attributed just after it.
                let container = container.clone().or_else(|| tl.container_of(*pid).cloned());
                if filter.in_container(tl, container.as_ref()) {
                    return Verdict::Print;
                }
                let Some(what) = &filter.container else {
                    return Verdict::Print;
                };
                let owners: Vec<Option<&Container>> = entered
                    .iter()
                    .map(|&(ty, inum)| {
                        tl.namespace_of_inode(ty, inum)
                            .and_then(|idx| tl.namespace(idx).owner.as_ref())
                    })
                    .collect();
                if owners
                    .iter()
                    .flatten()
                    .any(|c| tl.container_matches(c, what))
                {
                    return Verdict::Print;
                }
                let unowned = owners.iter().any(Option::is_none);
                if unowned && !last && self.now_ns < record.ts_ns().saturating_add(OWNER_WAIT_NS) {
                    Verdict::Wait
                } else {
                    Verdict::Drop
                }
            }
            Out::Finding { container, .. } | Out::Heal { container, .. } => {
                print(filter.in_container(tl, container.as_ref()))
            }
            Out::Loss(_) => Verdict::Print,
        }
    }

    /// Prints one entry.
    fn print(&mut self, out: Out) -> io::Result<()> {
        match out {
            Out::Record {
                record,
                pid,
                container,
                ..
            } => {
                let label = match record {
                    Record::Transition(_) => container
                        .as_ref()
                        .or_else(|| self.timeline.container_of(pid))
                        .map(|c| label_of(&self.timeline, &mut self.labels, c)),
                    _ => None,
                };
                self.write_record(&record, label.as_deref())?;
            }
            Out::Finding {
                mut view,
                container,
            } => {
                view.container = container.map(|c| self.timeline.container_label(&c));
                each_sink(&mut self.sinks, &mut self.closed, |s| s.finding(&view))?;
            }
            Out::Heal { heal, changes, .. } => {
                let view = HealView {
                    heal: &heal,
                    changes,
                };
                each_sink(&mut self.sinks, &mut self.closed, |s| s.heal(&view))?;
            }
            Out::Loss(loss) => {
                each_sink(&mut self.sinks, &mut self.closed, |s| s.loss(&loss))?;
            }
        }
        Ok(())
    }

    /// Prints what waits, unless names are still due (and not too much waits).
    pub(super) fn release(&mut self, all: bool) -> io::Result<()> {
        let full = self.held.len() >= HOLD_LIMIT;
        if !all && !full && !self.pending.is_empty() {
            return Ok(());
        }
        while let Some(out) = self.held.front() {
            let verdict = self.verdict(out, all || full);
            if verdict == Verdict::Wait {
                break;
            }
            let out = self.held.pop_front().expect("the front entry");
            if verdict == Verdict::Print {
                self.print(out)?;
            }
        }
        Ok(())
    }

    /// The kernel time now (live, at each drain): transitions waiting for an owner look at it.
    pub fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        self.now_ns = self.now_ns.max(now_ns);
        self.publish_metrics();
        self.poll_names(Duration::ZERO)
    }

    /// Asks for the names of the containers first seen since the last call.
    pub(super) fn ask_names(&mut self) {
        for container in self.timeline.take_new_containers() {
            if self.timeline.names_of(&container).is_some() {
                continue;
            }
            let deadline = match &mut self.names {
                Some(source) => {
                    source.request(&container);
                    Some(Instant::now() + self.name_wait)
                }
                // A replay: its `container` line is ahead.
                None => None,
            };
            self.pending.insert(container, deadline);
        }
    }

    /// Takes the answers ready, waiting up to `wait` for the first; gives up on names past
    /// their deadline. Then prints what no longer waits.
    pub(super) fn poll_names(&mut self, wait: Duration) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.take_answers(wait)?;
        }
        self.release(false)
    }

    fn take_answers(&mut self, wait: Duration) -> io::Result<()> {
        let mut wait = wait;
        while let Some((container, names)) = self.names.as_mut().and_then(|s| s.answer(wait)) {
            wait = Duration::ZERO;
            if self.pending.contains_key(&container) {
                self.named(container, names)?;
            }
        }
        let now = Instant::now();
        let late: Vec<Container> = self
            .pending
            .iter()
            .filter(|(_, deadline)| deadline.is_some_and(|d| now >= d))
            .map(|(c, _)| c.clone())
            .collect();
        for container in late {
            log::debug!("no names for {} in time", container.short());
            self.named(container, Names::default())?;
        }
        Ok(())
    }

    /// A container's names, live from its engine or from a record file's `container` line:
    /// kept in the record, given to the timeline; what waited for them is printed.
    pub fn named(&mut self, container: Container, names: Names) -> io::Result<()> {
        if let Some(archive) = &mut self.archive {
            let line = ContainerLine::new(&container, &names);
            crate::output::note_line(&mut **archive, &line)?;
        }
        self.pending.remove(&container);
        self.labels.remove(&container);
        self.timeline.name(container, names);
        self.release(false)
    }

    /// At the end: waits up to `wait` for the names still due, then prints everything.
    pub fn finish_names(&mut self, wait: Duration) -> io::Result<()> {
        let until = Instant::now() + wait;
        while !self.pending.is_empty() && self.names.is_some() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.poll_names(left.min(Duration::from_millis(50)))?;
        }
        if self.names.is_some() {
            // Live: what never came is kept as unnamed, so that a replay holds no longer.
            let unanswered: Vec<Container> = self.pending.keys().cloned().collect();
            for container in unanswered {
                self.named(container, Names::default())?;
            }
        }
        self.pending.clear();
        self.release(true)
    }
}

/// How many containers' labels are kept at most (a flood of cgroups named like containers
/// cannot grow it further: it starts again).
const LABELS_KEPT: usize = 4096;

/// A container's label as findings show it, made once (again when its names come).
fn label_of(
    timeline: &crate::timeline::Timeline,
    labels: &mut rustc_hash::FxHashMap<Container, std::rc::Rc<str>>,
    container: &Container,
) -> std::rc::Rc<str> {
    if let Some(label) = labels.get(container) {
        return label.clone();
    }
    if labels.len() >= LABELS_KEPT {
        labels.clear();
    }
    let label: std::rc::Rc<str> = timeline.container_label(container).into();
    labels.insert(container.clone(), label.clone());
    label
}
