use which::which;

/// Rebuild the programs when bpf-linker changes: it is the linker for bpfel-unknown-none, and
/// cargo does not track linkers.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask build`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
