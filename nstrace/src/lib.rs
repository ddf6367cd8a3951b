//! nstrace: which process entered which namespace, when, and how.
//!
//! The data flows one way: kernel programs (nstrace-ebpf) → wire records (nstrace-common) →
//! [`transport`] (per-CPU perf buffers, ordered by kernel time) → [`event`] (typed records) →
//! [`output`] sinks. [`load`] puts the programs in the kernel; [`collect`] drives the rest;
//! [`pipeline`] feeds the [`timeline`] and the sinks, live or from a [`record`]. The `nstrace`
//! command itself is src/main.rs and src/cli/.

/// Says something on stderr, as `eprintln!` would, but never panics: stderr may be a closed
/// pipe (`nstrace run -- CMD 2>&1 | head`) or a terminal that hung up, and a trace that has
/// lost its listener still has a record to finish and a command to wait for.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}
pub mod btf;
pub mod clock;
pub mod collect;
pub mod container;
pub mod event;
pub mod lines;
pub mod load;
pub mod metrics;
pub mod names;
pub mod ns;
pub mod origin;
pub mod output;
pub mod pipeline;
pub mod proc;
pub mod record;
pub mod ring;
pub mod timeline;
pub mod transport;
