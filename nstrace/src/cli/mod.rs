//! The `nstrace` command's work, after main.rs has parsed its arguments: live tracing
//! ([`live`]), replay ([`report`]), the files it writes ([`outputs`]), `run`'s command
//! ([`command`]) and the signals that stop it ([`signals`]).
pub mod command;
pub mod live;
pub mod outputs;
pub mod report;
pub mod signals;
