//! The container engines the engine tests (and the bench's container storm) drive: Docker
//! (Debian's docker.io, with its containerd and runc) and Podman. No init system starts the
//! Docker daemon here, so one is started when none answers, and stopped again when the work is
//! done; the daemon that was already running is left alone.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{is_root, step, workspace_root};

/// Debian's docker CLI: another, newer one may come first in PATH and speak another API.
pub const DOCKER: &str = "/usr/bin/docker";

/// A Docker daemon this run started (stopped when dropped), or none when one was running.
pub struct Dockerd(Option<Child>);

/// Installs the engines when missing and makes sure a Docker daemon answers.
pub fn start() -> Result<Dockerd> {
    let missing: Vec<&str> = [("dockerd", "docker.io"), ("podman", "podman")]
        .into_iter()
        .filter(|(program, _)| !crate::bootstrap::have(program))
        .map(|(_, package)| package)
        .collect();
    if !missing.is_empty() {
        if !(is_root() && crate::bootstrap::is_debian()) {
            bail!(
                "the engine tests run Docker and Podman; install them (Debian/Ubuntu: `sudo \
                 apt-get install {}`)",
                missing.join(" ")
            );
        }
        crate::bootstrap::apt_install_recommended(&missing)?;
    }
    if answers() {
        return Ok(Dockerd(None));
    }
    let log = workspace_root()?.join("target/dockerd.log");
    std::fs::create_dir_all(log.parent().context("target dir")?)?;
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    step(&format!(
        "starting dockerd (no daemon answered; its log: {})",
        log.display()
    ));
    let child = Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("starting dockerd")?;
    let daemon = Dockerd(Some(child));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers() {
        if Instant::now() > deadline {
            bail!("dockerd did not answer within 60 s: see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(daemon)
}

/// Whether a Docker daemon answers `docker info`.
fn answers() -> bool {
    Command::new(DOCKER)
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let Some(child) = &mut self.0 else {
            return;
        };
        step("stopping the dockerd this run started");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
