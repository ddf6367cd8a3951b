//! nstrace's container image and its Kubernetes manifests.
//!
//! - `cargo xtask image`: a static (musl) nstrace alone in an image, `nstrace:VERSION` and
//!   `nstrace:latest`, imported into the local Docker and Podman stores. There is no registry and
//!   no base image: the tar holds `/nstrace` and an empty `/tmp`.
//! - [`validate_manifests`], run by `cargo xtask test`: deploy/kubernetes validated offline
//!   against the Kubernetes API schemas, and its image tag checked against the workspace version.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{engines::DOCKER, run_cmd, step, workspace_root};

/// The target of the image's binary: static, so that the image needs nothing else.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The image's entry point, as `import --change` takes it.
const ENTRYPOINT: &str = r#"ENTRYPOINT ["/nstrace"]"#;

/// The label holding the binary's SHA-256: an image whose label matches is not imported again.
const DIGEST_LABEL: &str = "org.nstrace.binary.sha256";

/// The Kubernetes version the manifests are validated against: the oldest one they are meant for
/// (kubernetes-validate bundles the schemas of 1.25 and later).
const KUBERNETES_VERSION: &str = "1.30.0";

/// Where the manifests live, from the workspace root.
const MANIFESTS: &str = "deploy/kubernetes";

/// The workspace version, as cargo sees nstrace's (`cargo pkgid` prints
/// `path+file:///…/nstrace#0.1.0`).
pub fn workspace_version() -> Result<String> {
    let out = Command::new("cargo")
        .args(["pkgid", "--package", "nstrace"])
        .current_dir(workspace_root()?)
        .output()
        .context("starting `cargo pkgid --package nstrace`")?;
    if !out.status.success() {
        bail!(
            "`cargo pkgid --package nstrace` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let pkgid = String::from_utf8_lossy(&out.stdout);
    // `…#0.1.0`, or `…#nstrace@0.1.0` when the directory is not named after the package.
    pkgid
        .trim()
        .rsplit_once('#')
        .map(|(_, tail)| tail.rsplit_once('@').map_or(tail, |(_, v)| v).to_owned())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("no version in `cargo pkgid` output {pkgid:?}"))
}

/// `cargo xtask image`: builds the static nstrace, packs it and imports it into Docker and Podman
/// (a Docker daemon must answer: the caller starts one).
pub fn build() -> Result<()> {
    let root = workspace_root()?;
    let version = workspace_version()?;
    step(&format!(
        "building a static nstrace {version} (cargo build --release --target {MUSL_TARGET})"
    ));
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["build", "--release", "--target", MUSL_TARGET])
            .args(["--package", "nstrace"]),
    )?;
    let binary = root
        .join("target")
        .join(MUSL_TARGET)
        .join("release/nstrace");
    // What the binary says of itself must be the tag it gets.
    let said = stdout(Command::new(&binary).arg("--version"))?;
    if said.split_whitespace().last() != Some(version.as_str()) {
        bail!(
            "{} says {said:?}, but the workspace version is {version}: a stale build?",
            binary.display()
        );
    }
    let digest = stdout(Command::new("sha256sum").arg(&binary))?
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned();

    let dir = root.join("target/image");
    let tar = pack(&binary, &dir)?;
    let tags = [format!("nstrace:{version}"), "nstrace:latest".to_owned()];
    let changes = [
        ENTRYPOINT.to_owned(),
        format!("LABEL {DIGEST_LABEL}={digest}"),
        format!("LABEL org.opencontainers.image.version={version}"),
        "LABEL org.opencontainers.image.title=nstrace".to_owned(),
    ];
    let podman_conf = podman_conf(&dir)?;
    let engines = [
        Engine {
            name: "docker",
            program: DOCKER,
            conf: None,
            quiet: &[],
        },
        Engine {
            name: "podman",
            program: "podman",
            conf: Some(podman_conf),
            quiet: &["--quiet"],
        },
    ];
    for engine in &engines {
        engine.import(&tar, &tags, &changes, &digest)?;
    }
    let size =
        stdout(Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Size}}", &tags[0]]))?;
    let bytes: u64 = size
        .trim()
        .parse()
        .with_context(|| format!("docker's image size {size:?}"))?;
    step(&format!(
        "{} and nstrace:latest are in Docker's and Podman's stores: {:.1} MB ({bytes} bytes), \
         no base image",
        tags[0],
        bytes as f64 / 1e6
    ));
    Ok(())
}

/// A tar with `/nstrace` (0755) and an empty `/tmp` (1777), owned by root, with fixed times, so
/// that the same binary gives the same tar.
fn pack(binary: &Path, dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("removing {}", rootfs.display()))?;
    }
    std::fs::create_dir_all(rootfs.join("tmp"))
        .with_context(|| format!("creating {}", rootfs.display()))?;
    std::fs::copy(binary, rootfs.join("nstrace"))
        .with_context(|| format!("copying {} into {}", binary.display(), rootfs.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    for (path, mode) in [("nstrace", 0o755), ("tmp", 0o1777), ("", 0o755)] {
        let path = rootfs.join(path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    }
    let tar = dir.join("nstrace.tar");
    run_cmd(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner"])
            .args(["--sort=name", "--mtime=@0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .args(["nstrace", "tmp"]),
    )?;
    Ok(tar)
}

/// A container engine's command line.
struct Engine {
    name: &'static str,
    program: &'static str,
    /// Podman's CONTAINERS_CONF.
    conf: Option<PathBuf>,
    /// For `import`: podman reports its progress unless told not to.
    quiet: &'static [&'static str],
}

impl Engine {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.program);
        if let Some(conf) = &self.conf {
            cmd.env("CONTAINERS_CONF", conf);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// Imports `tar` as each of `tags`, unless the first tag already holds this binary (by
    /// [`DIGEST_LABEL`]).
    fn import(&self, tar: &Path, tags: &[String], changes: &[String], digest: &str) -> Result<()> {
        let format = format!("{{{{index .Config.Labels \"{DIGEST_LABEL}\"}}}}");
        let held = self
            .command(&["image", "inspect", "--format", &format, &tags[0]])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| {
                out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == digest
            });
        if held {
            step(&format!(
                "{}: {} already holds this binary",
                self.name, tags[0]
            ));
        } else {
            step(&format!(
                "{}: importing {} as {}",
                self.name,
                tar.display(),
                tags[0]
            ));
            let mut cmd = self.command(&["import"]);
            cmd.args(self.quiet);
            for change in changes {
                cmd.arg("--change").arg(change);
            }
            cmd.arg(tar).arg(&tags[0]).stdout(Stdio::null());
            run_cmd(&mut cmd).with_context(|| format!("importing the image into {}", self.name))?;
        }
        for tag in &tags[1..] {
            run_cmd(&mut self.command(&["tag", &tags[0], tag]))
                .with_context(|| format!("tagging {} as {tag} in {}", tags[0], self.name))?;
        }
        Ok(())
    }
}

/// Podman's configuration for this machine kind: runc rather than crun, and ulimits the VM
/// allows (see the engine tests' `Engine::podman`).
fn podman_conf(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("containers.conf");
    std::fs::write(
        &path,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs `cmd`, which must succeed; its standard output, trimmed.
fn stdout(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Validates deploy/kubernetes: every resource its kustomization lists (and no other file) against
/// the Kubernetes API's schemas, strictly (an unknown field is an error), offline; and the
/// DaemonSet's image tag against the workspace version.
pub fn validate_manifests() -> Result<()> {
    let dir = workspace_root()?.join(MANIFESTS);
    let kustomization = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization)
        .with_context(|| format!("reading {}", kustomization.display()))?;
    let listed = kustomization_resources(&text);
    if listed.is_empty() {
        bail!("{} lists no resources", kustomization.display());
    }
    // Every manifest in the directory is applied by `kubectl apply -k`: one left out of the
    // kustomization would be validated by nothing and deployed by nobody.
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    if present != sorted {
        bail!(
            "{} lists {sorted:?}, but the directory holds {present:?}: list each manifest once",
            kustomization.display()
        );
    }

    step(&format!(
        "validating {MANIFESTS} against Kubernetes {KUBERNETES_VERSION}'s schemas \
         (kubernetes-validate --strict)"
    ));
    run_cmd(
        Command::new("kubernetes-validate")
            .current_dir(&dir)
            .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
            .args(&listed),
    )
    .context("the Kubernetes manifests are not valid (kubernetes-validate says why, above)")?;

    let version = workspace_version()?;
    let daemonset = dir.join("daemonset.yaml");
    let text = std::fs::read_to_string(&daemonset)
        .with_context(|| format!("reading {}", daemonset.display()))?;
    let images = image_references(&text);
    let want = format!("nstrace:{version}");
    if images.is_empty() {
        bail!("{} names no image", daemonset.display());
    }
    if let Some(other) = images.iter().find(|image| **image != want) {
        bail!(
            "{} runs {other}, but the workspace version is {version}: make it {want} (the image \
             `cargo xtask image` builds)",
            daemonset.display()
        );
    }
    step(&format!("the manifests are valid and run {want}"));
    Ok(())
}

/// The file names under `resources:` in a kustomization.
fn kustomization_resources(text: &str) -> Vec<String> {
    let mut listed = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let content = line.split('#').next().unwrap_or_default().trim_end();
        if content.is_empty() {
            continue;
        }
        if !content.starts_with([' ', '-']) {
            inside = content == "resources:";
            continue;
        }
        if inside && let Some(item) = content.trim_start().strip_prefix("- ") {
            listed.push(item.trim().trim_matches(['"', '\'']).to_owned());
        }
    }
    listed
}

/// Every `image:` value in a manifest.
fn image_references(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            let content = line.split('#').next()?.trim();
            let content = content.strip_prefix("- ").unwrap_or(content);
            content.strip_prefix("image:")
        })
        .map(|image| image.trim().trim_matches(['"', '\'']))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{image_references, kustomization_resources};

    #[test]
    fn kustomization_resources_are_read_without_comments_or_other_keys() {
        let text = "# a comment\napiVersion: v1\nresources:\n  - a.yaml # why\n  - \"b.yaml\"\n\
                    images:\n  - name: x\n";
        assert_eq!(kustomization_resources(text), ["a.yaml", "b.yaml"]);
    }

    #[test]
    fn image_references_skip_comments_and_pull_policies() {
        let text = "  # image: old:1\n  - image: nstrace:0.1.0\n    imagePullPolicy: IfNotPresent\n\
                    \x20   image: \"busybox:1\"\n";
        assert_eq!(image_references(text), ["nstrace:0.1.0", "busybox:1"]);
    }
}
