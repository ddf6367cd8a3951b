#![no_std]

// This file exists so that nstrace can build-depend on this crate (cargo then rebuilds nstrace
// when the programs change); the programs themselves are the `nstrace` binary in main.rs.
