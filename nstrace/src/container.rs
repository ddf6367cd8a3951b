//! Which container a process belongs to, from its cgroup (`/proc/PID/cgroup`).
//!
//! Pure parsing: cgroup v1, v2 and hybrid layouts, for docker (cgroupfs and systemd drivers),
//! containerd and Kubernetes (pod and container), cri-o, podman/libpod, systemd-nspawn machines
//! and plain runc/crun. An unknown layout is no container, but its path is kept for display.

/// A container, as its cgroup names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Container {
    /// docker, containerd, cri-o, podman, nspawn, runc, crun; empty when the cgroup does not
    /// say (see [`runtime_of`]).
    pub runtime: &'static str,
    pub id: String,
    /// The Kubernetes pod uid, when there is one.
    pub pod: Option<String>,
}

impl Container {
    /// A short name for tables: `docker:0123456789ab`, and the pod uid when it has no other
    /// name (see [`crate::names::label`]).
    pub fn short(&self) -> String {
        match &self.pod {
            Some(pod) => format!("{} (pod {pod})", self.short_id()),
            None => self.short_id(),
        }
    }

    /// `runtime:id`, a long hex id cut to 12 characters as docker does.
    pub fn short_id(&self) -> String {
        let id = if self.id.len() == 64 && self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            &self.id[..12]
        } else {
            &self.id
        };
        format!("{}:{id}", self.runtime)
    }
}

/// What a process's cgroup says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    Container(Container),
    /// Not a container layout this knows: the path (the v2 one when there is one).
    Path(String),
}

impl Attribution {
    pub fn container(&self) -> Option<&Container> {
        match self {
            Attribution::Container(c) => Some(c),
            Attribution::Path(_) => None,
        }
    }
}

fn is_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `prefix<ID>suffix` → ID.
fn between<'a>(s: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)?.strip_suffix(suffix)
}

/// The Kubernetes pod uid in a path component (`pod<uid>` or `kubepods-...-pod<uid_with_underscores>.slice`).
fn pod_of(component: &str) -> Option<String> {
    let rest = component.strip_suffix(".slice").unwrap_or(component);
    let uid = if let Some(uid) = rest.strip_prefix("pod") {
        uid
    } else if rest.starts_with("kubepods") {
        &rest[rest.rfind("-pod")? + 4..]
    } else {
        return None;
    };
    (uid.len() >= 32).then(|| uid.replace('_', "-"))
}

/// Reads one cgroup path.
pub fn from_path(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let last = *parts.last()?;
    let pod = parts.iter().find_map(|p| pod_of(p));
    let kube = parts.iter().any(|p| p.starts_with("kubepods"));
    let found = |runtime, id: &str| {
        Some(Container {
            runtime,
            id: id.to_owned(),
            pod: pod.clone(),
        })
    };
    if let Some(id) = between(last, "docker-", ".scope") {
        return found("docker", id);
    }
    if let Some(id) = between(last, "cri-containerd-", ".scope") {
        return found("containerd", id);
    }
    if let Some(id) = between(last, "crio-", ".scope").filter(|id| !id.starts_with("conmon-")) {
        return found("cri-o", id);
    }
    if let Some(id) = between(last, "libpod-", ".scope")
        .or_else(|| last.strip_prefix("libpod-").filter(|id| is_id(id)))
    {
        return found("podman", id);
    }
    if let Some(name) = between(last, "machine-", ".scope")
        && parts.first() == Some(&"machine.slice")
    {
        return found("nspawn", &name.replace("\\x2d", "-"));
    }
    if parts.len() >= 2 && parts[parts.len() - 2] == "docker" && is_id(last) {
        return found("docker", last);
    }
    if kube && is_id(last) {
        return found("containerd", last);
    }
    // runc and crun without a cgroupsPath, a systemd-nspawn --keep-unit payload: one level
    // under the root, named by the container. Which runtime made it the cgroup does not say:
    // the timeline asks what made its namespaces (`runtime_of`). `ctr` (containerd):
    // <namespace>/<id>.
    if parts.len() == 1 && !last.ends_with(".slice") && !last.ends_with(".scope") {
        return found("", last);
    }
    if parts.len() == 2 && matches!(parts[0], "default" | "k8s.io" | "moby") {
        return found("containerd", last);
    }
    None
}

/// Every runtime a [`Container`] names, and the empty one (not known yet).
const RUNTIMES: [&str; 8] = [
    "docker",
    "containerd",
    "cri-o",
    "podman",
    "nspawn",
    "runc",
    "crun",
    "",
];

/// A runtime by its name (as a record file's `container` line has it).
pub fn runtime_named(name: &str) -> Option<&'static str> {
    RUNTIMES.into_iter().find(|r| *r == name)
}

/// The runtime whose process is called `comm` (what made a container's namespaces), when it is
/// one: runc's and crun's children, systemd-nspawn.
pub fn runtime_of(comm: &str) -> Option<&'static str> {
    [
        ("runc", "runc"),
        ("crun", "crun"),
        ("systemd-nspawn", "nspawn"),
        ("conmon", "podman"),
    ]
    .into_iter()
    .find_map(|(prefix, runtime)| comm.starts_with(prefix).then_some(runtime))
}

/// Whether an exec by a task (a runtime's when `was_runtime`) starts a runtime rather than a
/// container's program: a runtime's name, or a runtime re-executing itself (runc's init runs
/// `/proc/self/exe`, then its sealed copy from a `/dev/fd/N`). Another program re-executing
/// itself (busybox's shell running an applet) is not one.
pub fn runtime_exec(was_runtime: bool, comm: &str, filename: &str) -> bool {
    let self_exec = filename == "/proc/self/exe"
        || (filename.starts_with("/proc/") && filename.ends_with("/exe"))
        || filename.starts_with("/dev/fd/")
        || filename.starts_with("/proc/self/fd/")
        || filename.starts_with("memfd:");
    runtime_of(comm).is_some() || (was_runtime && self_exec)
}

/// Reads the text of `/proc/PID/cgroup`: the v2 line (`0::PATH`) when there is one, else the v1
/// lines (a container shows in any controller's path).
pub fn attribute(cgroup_file: &str) -> Option<Attribution> {
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in cgroup_file.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else {
            v1.push(path);
        }
    }
    let container = v2
        .and_then(from_path)
        .or_else(|| v1.iter().find_map(|p| from_path(p)));
    match container {
        Some(c) => Some(Attribution::Container(c)),
        None => v2
            .or(v1.first().copied())
            .map(|p| Attribution::Path(p.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c9d0e5b7a41c2a8e6f0d9b4c3a2e1f0d9c8b7a6e5f4d3c2b1a0f9e8d7c6b5";

    fn c(runtime: &'static str, id: &str, pod: Option<&str>) -> Option<Attribution> {
        Some(Attribution::Container(Container {
            runtime,
            id: id.into(),
            pod: pod.map(str::to_owned),
        }))
    }

    #[test]
    fn docker_with_either_driver_on_v1_v2_and_hybrid() {
        assert_eq!(
            attribute(&format!("0::/system.slice/docker-{ID}.scope\n")),
            c("docker", ID, None)
        );
        assert_eq!(
            attribute(&format!("0::/docker/{ID}\n")),
            c("docker", ID, None)
        );
        let v1 =
            format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        assert_eq!(attribute(&v1), c("docker", ID, None));
        let hybrid = format!("12:pids:/docker/{ID}\n0::/\n");
        assert_eq!(attribute(&hybrid), c("docker", ID, None));
    }

    #[test]
    fn kubernetes_pods_under_containerd_and_cri_o() {
        let uid = "0d8c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid.replace('-', "_")
        );
        assert_eq!(attribute(&systemd), c("containerd", ID, Some(uid)));
        let cgroupfs = format!("0::/kubepods/besteffort/pod{uid}/{ID}\n");
        assert_eq!(attribute(&cgroupfs), c("containerd", ID, Some(uid)));
        let crio = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope\n",
            uid.replace('-', "_")
        );
        assert_eq!(attribute(&crio), c("cri-o", ID, Some(uid)));
        // conmon, cri-o's monitor, is not the container.
        assert_eq!(
            attribute(&format!("0::/machine.slice/crio-conmon-{ID}.scope\n")),
            Some(Attribution::Path(format!(
                "/machine.slice/crio-conmon-{ID}.scope"
            )))
        );
    }

    #[test]
    fn podman_nspawn_runc_and_ctr() {
        assert_eq!(
            attribute(&format!("0::/machine.slice/libpod-{ID}.scope\n")),
            c("podman", ID, None)
        );
        assert_eq!(
            attribute(&format!("0::/libpod_parent/libpod-{ID}\n")),
            c("podman", ID, None)
        );
        assert_eq!(
            attribute("0::/machine.slice/machine-web\\x2d1.scope\n"),
            c("nspawn", "web-1", None)
        );
        // Whose it is, the cgroup does not say (see `runtime_of`).
        assert_eq!(attribute("0::/mycontainer\n"), c("", "mycontainer", None));
        assert_eq!(runtime_of("runc:[1:CHILD]"), Some("runc"));
        assert_eq!(runtime_of("crun"), Some("crun"));
        assert_eq!(runtime_of("systemd-nspawn"), Some("nspawn"));
        assert_eq!(runtime_of("bash"), None);
        // runc's init: forked from runc, re-executing itself.
        assert!(runtime_exec(true, "exe", "/proc/self/exe"));
        assert!(runtime_exec(true, "runc", "/dev/fd/6"));
        assert!(runtime_exec(false, "crun", "/usr/bin/crun"));
        assert!(!runtime_exec(true, "sleep", "/bin/sleep"));
        // busybox's shell running an applet in a container.
        assert!(!runtime_exec(false, "exe", "/proc/self/exe"));
        assert!(!runtime_exec(true, "exe", "/usr/local/bin/exe"));
        assert_eq!(
            attribute("0::/default/redis\n"),
            c("containerd", "redis", None)
        );
    }

    #[test]
    fn ordinary_cgroups_are_paths_not_containers() {
        assert_eq!(
            attribute("0::/user.slice/user-1000.slice/session-2.scope\n"),
            Some(Attribution::Path(
                "/user.slice/user-1000.slice/session-2.scope".into()
            ))
        );
        assert_eq!(
            attribute("0::/init.scope\n"),
            Some(Attribution::Path("/init.scope".into()))
        );
        assert_eq!(attribute("0::/\n"), Some(Attribution::Path("/".into())));
        assert_eq!(attribute(""), None);
        assert_eq!(attribute("garbage"), None);
    }

    #[test]
    fn short_names_cut_long_ids() {
        let c = Container {
            runtime: "docker",
            id: ID.into(),
            pod: None,
        };
        assert_eq!(c.short(), "docker:3f1c9d0e5b7a");
    }
}
