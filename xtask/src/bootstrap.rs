//! Installs what building and testing need, idempotently: quick when everything is there.
//!
//! - nightly with rust-src: the eBPF crate is built with `-Z build-std=core`.
//! - bpf-linker built against the LLVM major that nightly uses (it links the LLVM bitcode rustc
//!   emits, so the two must agree): LLVM from Debian's llvm-N-dev when we are root on Debian,
//!   otherwise a message that says exactly what to install.
//! - For the tests: util-linux (unshare, nsenter), iproute2 (ip netns), bubblewrap (bwrap), runc
//!   busybox-static (a container's root file system) and prometheus (promtool and the server
//!   that scrape --metrics).
//! - For the image and the manifests: the musl target (a static nstrace) and kubernetes-validate
//!   (pip3), which checks deploy/kubernetes offline.
use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{is_root, run_cmd, step};

/// The bpf-linker release this project builds with.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The LLVM major version of nightly's rustc (`LLVM version: 22.1.4`).
fn nightly_llvm_major() -> Result<u32> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("`rustc +nightly -vV` failed")?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.trim().parse().ok())
        .context("`rustc +nightly -vV` names no LLVM version")
}

pub fn toolchain() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed (https://rustup.rs) and `rustup toolchain list` failed")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("installing the nightly toolchain with rust-src (rustup)");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed")?;
    if !Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        step("adding rust-src to nightly (rustup component add rust-src --toolchain nightly)");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    let major = nightly_llvm_major()?;
    if bpf_linker_matches(major) {
        return Ok(());
    }
    let prefix = format!("/usr/lib/llvm-{major}");
    // llvm-config alone is not enough: linking needs the development files (libLLVM.so and the
    // C headers), which only llvm-N-dev ships.
    let dev_files = ["bin/llvm-config", "lib/libLLVM.so", "include/llvm-c/Core.h"];
    if !dev_files
        .iter()
        .all(|f| Path::new(&prefix).join(f).exists())
    {
        install_llvm(major)?;
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} ({prefix}); about a minute"
    ));
    run_cmd(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}")),
    )
}

/// True when bpf-linker runs and links the LLVM major nightly uses.
fn bpf_linker_matches(major: u32) -> bool {
    if output(Command::new("bpf-linker").arg("--version")).is_none() {
        return false;
    }
    let Some(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let Some(libs) = output(Command::new("ldd").arg(path.trim())) else {
        return false;
    };
    // A dynamically linked bpf-linker names its LLVM; a static one cannot be checked: trust it.
    let linked: Vec<&str> = libs.lines().filter(|l| l.contains("libLLVM")).collect();
    linked.is_empty()
        || linked.iter().any(|l| {
            l.contains(&format!("libLLVM.so.{major}")) || l.contains(&format!("libLLVM-{major}"))
        })
}

pub fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && have("apt-get")
}

fn apt_install(packages: &[&str]) -> Result<()> {
    apt_get_install(packages, &["--no-install-recommends"])
}

/// [`apt_install`] with the packages' recommendations (an engine needs its runtime's helpers).
pub fn apt_install_recommended(packages: &[&str]) -> Result<()> {
    apt_get_install(packages, &[])
}

fn apt_get_install(packages: &[&str], options: &[&str]) -> Result<()> {
    step("refreshing the package lists (apt-get update)");
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["update", "-q"]),
    )?;
    step(&format!(
        "installing {} (apt-get install)",
        packages.join(" ")
    ));
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q"])
            .args(options)
            .args(packages),
    )
}

fn install_llvm(major: u32) -> Result<()> {
    let dev = format!("llvm-{major}-dev");
    let polly = format!("libpolly-{major}-dev");
    let packages = [dev.as_str(), polly.as_str(), "libzstd-dev", "zlib1g-dev"];
    if !(is_root() && is_debian()) {
        bail!(
            "bpf-linker must be built against LLVM {major}, the LLVM of nightly's rustc, and \
             LLVM {major}'s development files are missing from /usr/lib/llvm-{major}. Install LLVM {major}'s development files (on \
             Debian/Ubuntu: `sudo apt-get install {}`; elsewhere from https://apt.llvm.org or your \
             distribution), then run this command again",
            packages.join(" ")
        );
    }
    apt_install(&packages)
}

/// The real tools the integration tests run.
pub fn test_tools() -> Result<()> {
    let wanted = [
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
        ("bwrap", "bubblewrap"),
        ("runc", "runc"),
        ("busybox", "busybox-static"),
        // --metrics is checked by promtool and scraped by a real server.
        ("promtool", "prometheus"),
        ("prometheus", "prometheus"),
        // The manual page is rendered once to check it.
        ("groff", "groff-base"),
        // The SVG picture is rendered to PNG, as a report would.
        ("rsvg-convert", "librsvg2-bin"),
    ];
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|&(_, package)| package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !(is_root() && is_debian()) {
        bail!(
            "the integration tests run {}; install them (Debian/Ubuntu: `sudo apt-get install {}`)",
            wanted.map(|(p, _)| p).join(", "),
            missing.join(" ")
        );
    }
    apt_install(&missing)
}

/// bpftrace, the peer `cargo xtask bench` runs beside nstrace, where the distribution has it.
/// Without it (not Debian, not root, or the install fails) the bench says "not installed".
pub fn bench_peer() {
    if have("bpftrace") || !(is_root() && is_debian()) {
        return;
    }
    if let Err(e) = apt_install(&["bpftrace"]) {
        step(&format!(
            "bpftrace could not be installed ({e}); benching nstrace alone"
        ));
    }
}

/// cargo-fuzz, for `cargo xtask fuzz` (and the brief fuzzing in `cargo xtask test`).
pub fn cargo_fuzz() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    step("installing cargo-fuzz (cargo install cargo-fuzz --locked); about a minute");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// The musl target, for the image's static nstrace (`cargo xtask image`).
pub fn musl_target() -> Result<()> {
    let target = crate::image::MUSL_TARGET;
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("`rustup target list --installed` failed")?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    step(&format!(
        "adding the {target} target, for a static nstrace (rustup target add {target})"
    ));
    run_cmd(Command::new("rustup").args(["target", "add", target]))
}

/// The kubernetes-validate release installed when it is missing: it bundles the Kubernetes API's
/// schemas (1.25 and later) and validates offline.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// kubernetes-validate, which checks deploy/kubernetes in `cargo xtask test`.
pub fn manifest_validator() -> Result<()> {
    if output(Command::new("kubernetes-validate").arg("--version")).is_some() {
        return Ok(());
    }
    let package = format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}");
    if !have("pip3") {
        bail!(
            "checking the Kubernetes manifests needs kubernetes-validate, and pip3 is missing: \
             install Python's pip (Debian/Ubuntu: `sudo apt-get install python3-pip`) or run \
             `pipx install {package}`"
        );
    }
    step(&format!("installing {package} (pip3 install)"));
    run_cmd(Command::new("pip3").args(["install", "--quiet", &package])).with_context(|| {
        format!(
            "installing kubernetes-validate; where pip refuses a system-wide install \
             (externally-managed-environment), run `pipx install {package}`"
        )
    })?;
    // pyenv installs scripts behind shims that appear only after a rehash.
    if have("pyenv") {
        let _ = Command::new("pyenv").arg("rehash").status();
    }
    if output(Command::new("kubernetes-validate").arg("--version")).is_none() {
        bail!(
            "kubernetes-validate was installed but does not run: is pip's script directory on \
             PATH (e.g. ~/.local/bin)?"
        );
    }
    Ok(())
}
