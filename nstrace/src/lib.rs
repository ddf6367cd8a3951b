//! nstrace: which process entered which namespace, when, and how.
//!
//! The data flows one way: kernel programs (nstrace-ebpf) → wire records (nstrace-common) →
//! [`transport`] (per-CPU perf buffers, ordered by kernel time) → [`event`] (typed records) →
//! [`output`] sinks. [`load`] puts the programs in the kernel; [`collect`] drives the rest.
pub mod btf;
pub mod clock;
pub mod collect;
pub mod container;
pub mod event;
pub mod load;
pub mod ns;
pub mod output;
pub mod pipeline;
pub mod proc;
pub mod record;
pub mod ring;
pub mod timeline;
pub mod transport;
