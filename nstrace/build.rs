use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the kernel programs (nstrace-ebpf) for bpfel-unknown-none with nightly and bpf-linker,
/// so that a plain `cargo build` embeds them. `cargo xtask build` installs what this needs.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("nstrace has no parent directory"))?
        .join("nstrace-ebpf");
    let root = root.to_str().context("non-UTF-8 path to nstrace-ebpf")?;
    aya_build::build_ebpf(
        [Package {
            name: "nstrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs failed; `cargo xtask build` installs nightly's rust-src and bpf-linker")
}
