//! Docker and Podman as the engine tests drive them: an image made offline from busybox-static
//! (there is no registry), containers started detached and removed at the end, and what the
//! engines themselves say of them (`inspect`).
//!
//! `cargo xtask test` installs the engines and starts a Docker daemon when none runs. Podman
//! runs with a configuration of the project's own (see [`Engine::podman`]): its default
//! runtime, crun, cannot set its default ulimits in this kind of VM.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde_json::Value;

/// The image both engines run: busybox-static alone.
pub const IMAGE: &str = "nstrace-bb:latest";

/// A container engine's command line.
#[derive(Clone, Debug)]
pub struct Engine {
    /// `docker` or `podman`, as nstrace names the runtime.
    pub runtime: &'static str,
    program: &'static str,
    conf: Option<PathBuf>,
}

impl Engine {
    /// Debian's docker CLI (another one may come first in PATH and speak another API).
    pub fn docker() -> Engine {
        Engine {
            runtime: "docker",
            program: "/usr/bin/docker",
            conf: None,
        }
    }

    /// Podman, with runc and ulimits the VM allows.
    pub fn podman() -> Engine {
        static CONF: OnceLock<PathBuf> = OnceLock::new();
        let conf = CONF.get_or_init(|| {
            let path = crate::bin_dir().join("nstrace-tests-containers.conf");
            std::fs::write(
                &path,
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\nruntime = \"runc\"\n",
            )
            .expect("writing podman's configuration");
            path
        });
        Engine {
            runtime: "podman",
            program: "podman",
            conf: Some(conf.clone()),
        }
    }

    /// The engine's command, with its configuration.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.program);
        if let Some(conf) = &self.conf {
            cmd.env("CONTAINERS_CONF", conf);
        }
        cmd
    }

    /// Runs `args`, which must succeed; its standard output, trimmed.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.program));
        assert!(
            out.status.success(),
            "{} {args:?}: {}\n{}",
            self.program,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Makes sure [`IMAGE`] is there: imported from a busybox-static root file system.
    pub fn image(&self) -> &'static str {
        let present = self
            .command()
            .args(["image", "inspect", IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            let tar = rootfs_tar();
            self.run(&["import", &tar.display().to_string(), IMAGE]);
        }
        IMAGE
    }

    /// `run -d --name NAME OPTIONS IMAGE CMD...`: a container removed when dropped.
    pub fn start(&self, name: &str, options: &[&str], cmd: &[&str]) -> Running {
        let name = format!("nstrace-{name}-{}", std::process::id());
        let _ = self
            .command()
            .args(["rm", "-f", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let image = self.image();
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(cmd);
        let id = self.run(&args);
        let inspect = self.inspect(&id);
        let pid = inspect["State"]["Pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no pid in {inspect}")) as u32;
        Running {
            engine: self.clone(),
            id,
            name,
            pid,
        }
    }

    /// What `inspect` says of a container.
    pub fn inspect(&self, id: &str) -> Value {
        let text = self.run(&["inspect", id]);
        let all: Value = serde_json::from_str(&text).expect("inspect's JSON");
        all[0].clone()
    }
}

/// A container this test started.
pub struct Running {
    pub engine: Engine,
    pub id: String,
    /// Its name, which the test chose.
    pub name: String,
    /// Its first process, as the engine says.
    pub pid: u32,
}

impl Running {
    /// How nstrace shows it: `NAME (runtime:0123456789ab)`.
    pub fn label(&self) -> String {
        format!("{} ({}:{})", self.name, self.engine.runtime, &self.id[..12])
    }

    /// `exec -d CONTAINER CMD...`.
    pub fn exec(&self, cmd: &[&str]) {
        let mut args = vec!["exec", "-d", &self.id];
        args.extend_from_slice(cmd);
        self.engine.run(&args);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Killed first: `rm -f` alone may wait out a stop timeout (sleep ignores SIGTERM as a
        // pid 1).
        for args in [&["kill", &self.id][..], &["rm", "-f", &self.id]] {
            let _ = self
                .engine
                .command()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A tar of a busybox-static root file system (made once, next to the test binaries).
fn rootfs_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = crate::bin_dir().join("nstrace-tests-rootfs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("busybox (Debian's busybox-static; cargo xtask test installs it)");
        std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
        let status = Command::new("chroot")
            .arg(&dir)
            .args(["/bin/busybox", "--install", "-s", "/bin"])
            .status()
            .expect("chroot");
        assert!(status.success(), "busybox --install");
        let tar = crate::bin_dir().join("nstrace-tests-rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success(), "tar of the root file system");
        tar
    })
    .clone()
}
