//! Reading a container's names from its engine's state on the host.
//!
//! - Docker: `containers/<id>/config.v2.json` under its data root (`Name`, `Config.Image`,
//!   `Config.Labels`).
//! - Podman: `overlay-containers/containers.json` under its storage root (`names`, and the image
//!   name in `metadata`); its labels (compose) only reach the host's files through its event log,
//!   read from its end.
//! - Kubernetes and plain OCI runtimes: the annotations that CRI runtimes write into the OCI
//!   bundle's `config.json` (`io.kubernetes.cri.*` by containerd, `io.kubernetes.*` by cri-o),
//!   the bundle found in containerd's task directory, cri-o's storage, or the runtime's state
//!   (`<root>/<id>/state.json`, whose `bundle=` label names it).
//!
//! Only root-owned state of the engines is read, and defensively: an id becomes a path
//! component only when it is one, files are opened without following a final link and without
//! blocking, only regular files are read, and at most [`MAX_FILE`] bytes of each.
use std::{
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

use rustix::fs::{Mode, OFlags};
use serde_json::Value;

use super::Names;
use crate::container::Container;

/// The largest state file read (a busy host's podman containers.json is a few MiB).
const MAX_FILE: u64 = 16 << 20;

/// How much of the end of podman's event log is searched for a container's labels.
const EVENTS_TAIL: u64 = 4 << 20;

/// The longest name kept, in bytes; longer ones are cut (at a character) and end in `…`.
const MAX_NAME: usize = 256;

/// Where the engines keep their state.
#[derive(Clone, Debug)]
pub struct Roots {
    /// Docker's data root.
    pub docker: PathBuf,
    /// Podman's (containers/storage) storage root.
    pub podman: PathBuf,
    /// Podman's event log (the `file` events logger).
    pub podman_events: PathBuf,
    /// containerd's v2 task directories: `<dir>/<namespace>/<id>/config.json`.
    pub containerd_tasks: Vec<PathBuf>,
    /// cri-o's run storage: `<dir>/<id>/userdata/config.json`.
    pub crio: PathBuf,
    /// OCI runtimes' state roots: `<dir>/<id>/state.json`, and with `true`,
    /// `<dir>/<namespace>/<id>/state.json`.
    pub runtime_states: Vec<(PathBuf, bool)>,
}

impl Default for Roots {
    /// The engines' defaults.
    fn default() -> Self {
        Self {
            docker: "/var/lib/docker".into(),
            podman: "/var/lib/containers/storage".into(),
            podman_events: "/run/libpod/events/events.log".into(),
            containerd_tasks: vec![
                "/run/containerd/io.containerd.runtime.v2.task".into(),
                "/run/docker/containerd/daemon/io.containerd.runtime.v2.task".into(),
            ],
            crio: "/run/containers/storage/overlay-containers".into(),
            runtime_states: vec![
                ("/run/runc".into(), false),
                ("/run/crun".into(), false),
                ("/run/containerd/runc".into(), true),
                ("/run/docker/runtime-runc".into(), true),
            ],
        }
    }
}

/// A container's names, from its engine's state; empty when none is found.
pub fn read(container: &Container, roots: &Roots) -> Names {
    try_read(container, roots).unwrap_or_default()
}

/// [`read`], or None when its engine's state was not found: the engine may not have written it
/// yet (runc saves its state after its init has started).
pub fn try_read(container: &Container, roots: &Roots) -> Option<Names> {
    let id = container.id.as_str();
    if !is_component(id) {
        return Some(Names::default());
    }
    match container.runtime {
        "docker" => docker(roots, id).or_else(|| bundle(roots, id)),
        "podman" => podman(roots, id),
        // A machine's name is its id.
        "nspawn" => Some(Names::default()),
        _ => bundle(roots, id),
    }
}

/// The OCI runtime whose state root has a container (runc, crun), for a container its cgroup
/// names without its runtime.
pub fn runtime_with_state(id: &str, roots: &Roots) -> Option<&'static str> {
    if !is_component(id) {
        return None;
    }
    roots
        .runtime_states
        .iter()
        .filter(|(_, nested)| !nested)
        // runc keeps state.json, crun status.
        .find(|(root, _)| {
            let dir = root.join(id);
            dir.join("state.json").is_file() || dir.join("status").is_file()
        })
        .and_then(|(root, _)| {
            let name = root.file_name()?.to_str()?;
            crate::container::runtime_named(name).filter(|r| !r.is_empty())
        })
}

/// Whether `id` can name a file in a directory: not empty, no `/`, not `.`/`..` or hidden.
fn is_component(id: &str) -> bool {
    !id.is_empty() && !id.starts_with('.') && !id.contains(['/', '\0'])
}

/// A name as kept: at most [`MAX_NAME`] bytes; empty is none.
fn kept(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    if s.len() <= MAX_NAME {
        return Some(s.to_owned());
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}…", &s[..end]))
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).and_then(kept)
}

/// Opens a regular file for reading, without following a final link or blocking (a FIFO put
/// in its place would hang the reader).
fn open(path: &Path) -> Option<std::fs::File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    file.metadata().ok()?.is_file().then_some(file)
}

/// A JSON state file, when it is one.
fn json(path: &Path) -> Option<Value> {
    let mut bytes = Vec::new();
    open(path)?.take(MAX_FILE).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The compose labels among a container's labels.
fn compose(names: &mut Names, labels: &Value) {
    names.compose_project = string(labels, "com.docker.compose.project");
    names.compose_service = string(labels, "com.docker.compose.service");
}

fn docker(roots: &Roots, id: &str) -> Option<Names> {
    let config = json(
        &roots
            .docker
            .join("containers")
            .join(id)
            .join("config.v2.json"),
    )?;
    let mut names = Names {
        name: config
            .get("Name")
            .and_then(Value::as_str)
            .and_then(|n| kept(n.trim_start_matches('/'))),
        image: config.get("Config").and_then(|c| string(c, "Image")),
        ..Names::default()
    };
    if let Some(labels) = config.get("Config").and_then(|c| c.get("Labels")) {
        compose(&mut names, labels);
    }
    Some(names)
}

fn podman(roots: &Roots, id: &str) -> Option<Names> {
    let all = json(
        &roots
            .podman
            .join("overlay-containers")
            .join("containers.json"),
    )?;
    let this = all
        .as_array()?
        .iter()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?;
    let metadata: Option<Value> = this
        .get("metadata")
        .and_then(Value::as_str)
        .and_then(|m| serde_json::from_str(m).ok());
    let mut names = Names {
        name: this
            .get("names")
            .and_then(|n| n.get(0))
            .and_then(Value::as_str)
            .and_then(kept),
        image: metadata.as_ref().and_then(|m| string(m, "image-name")),
        ..Names::default()
    };
    if let Some(labels) = podman_labels(&roots.podman_events, id) {
        compose(&mut names, &labels);
    }
    Some(names)
}

/// A podman container's labels, from the last event about it in the end of the event log.
fn podman_labels(log: &Path, id: &str) -> Option<Value> {
    let mut file = open(log)?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(EVENTS_TAIL)))
        .ok()?;
    let mut bytes = Vec::new();
    file.take(EVENTS_TAIL).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let needle = format!("\"ID\":\"{id}\"");
    text.lines()
        .rev()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event.get("ID").and_then(Value::as_str) == Some(id))?
        .get("Attributes")
        .cloned()
}

/// Names from an OCI bundle's annotations, as the CRI runtimes write them.
pub fn annotations(config: &Value) -> Names {
    let Some(a) = config.get("annotations") else {
        return Names::default();
    };
    let first = |keys: &[&str]| keys.iter().find_map(|k| string(a, k));
    let sandbox = first(&[
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri-o.ContainerType",
    ])
    .is_some_and(|t| t == "sandbox");
    Names {
        name: if sandbox {
            None
        } else {
            first(&[
                "io.kubernetes.cri.container-name",
                "io.kubernetes.container.name",
            ])
        },
        image: first(&[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
        ]),
        pod: first(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]),
        pod_namespace: first(&[
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ]),
        ..Names::default()
    }
}

/// Names from the container's OCI bundle, wherever its runtime keeps it.
fn bundle(roots: &Roots, id: &str) -> Option<Names> {
    let config = bundle_config(roots, id)?;
    Some(annotations(&config))
}

fn bundle_config(roots: &Roots, id: &str) -> Option<Value> {
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    for tasks in &roots.containerd_tasks {
        for namespace in subdirs(tasks) {
            if let Some(config) = json(&namespace.join(id).join("config.json")) {
                return Some(config);
            }
        }
    }
    if let Some(config) = json(&roots.crio.join(id).join("userdata").join("config.json")) {
        return Some(config);
    }
    for (root, nested) in &roots.runtime_states {
        let dirs = if *nested {
            subdirs(root)
        } else {
            vec![root.clone()]
        };
        for dir in dirs {
            let Some(state) = json(&dir.join(id).join("state.json")) else {
                continue;
            };
            let bundle = state
                .get("config")
                .and_then(|c| c.get("labels"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find_map(|l| l.strip_prefix("bundle="))?;
            return json(&Path::new(bundle).join("config.json"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("nstrace-names-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn put(&self, path: &str, text: &str) -> PathBuf {
            let path = self.0.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn roots(&self) -> Roots {
            Roots {
                docker: self.0.join("docker"),
                podman: self.0.join("storage"),
                podman_events: self.0.join("events.log"),
                containerd_tasks: vec![self.0.join("tasks")],
                crio: self.0.join("crio"),
                runtime_states: vec![(self.0.join("runc"), false), (self.0.join("ns-runc"), true)],
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const ID: &str = "705e277164dedd7697dc00d132aae94c59435b80aac3d0712435c408a1782d5f";

    fn container(runtime: &'static str, id: &str) -> Container {
        Container {
            runtime,
            id: id.into(),
            pod: None,
        }
    }

    #[test]
    fn docker_names_its_container_image_and_compose_service() {
        let s = Scratch::new("docker");
        s.put(
            &format!("docker/containers/{ID}/config.v2.json"),
            r#"{"Name":"/shop-web-1","Config":{"Image":"nginx:1.27","Labels":{
                "com.docker.compose.project":"shop","com.docker.compose.service":"web"}}}"#,
        );
        let names = read(&container("docker", ID), &s.roots());
        assert_eq!(names.name.as_deref(), Some("shop-web-1"));
        assert_eq!(names.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(names.compose_project.as_deref(), Some("shop"));
        assert_eq!(names.compose_service.as_deref(), Some("web"));
    }

    #[test]
    fn podman_names_come_from_its_storage_and_its_labels_from_its_event_log() {
        let s = Scratch::new("podman");
        s.put(
            "storage/overlay-containers/containers.json",
            &format!(
                r#"[{{"id":"other","names":["x"]}},{{"id":"{ID}","names":["pweb"],
                "metadata":"{{\"image-name\":\"localhost/bb:latest\",\"name\":\"pweb\"}}"}}]"#
            ),
        );
        s.put(
            "events.log",
            &format!(
                "{{\"ID\":\"{ID}\",\"Status\":\"create\",\"Attributes\":{{\"com.docker.compose.project\":\"old\"}}}}\n\
                 not json\n\
                 {{\"ID\":\"{ID}\",\"Status\":\"start\",\"Attributes\":{{\"com.docker.compose.project\":\"shop\",\"com.docker.compose.service\":\"web\"}}}}\n"
            ),
        );
        let names = read(&container("podman", ID), &s.roots());
        assert_eq!(names.name.as_deref(), Some("pweb"));
        assert_eq!(names.image.as_deref(), Some("localhost/bb:latest"));
        assert_eq!(
            names.compose_project.as_deref(),
            Some("shop"),
            "the last event"
        );
        assert_eq!(names.compose_service.as_deref(), Some("web"));
    }

    const CONTAINERD: &str = r#"{"annotations":{
        "io.kubernetes.cri.container-type":"container",
        "io.kubernetes.cri.container-name":"web",
        "io.kubernetes.cri.image-name":"docker.io/library/nginx:1.27",
        "io.kubernetes.cri.sandbox-name":"shop-7d9f",
        "io.kubernetes.cri.sandbox-namespace":"prod"}}"#;

    #[test]
    fn kubernetes_names_come_from_the_bundle_wherever_the_runtime_keeps_it() {
        let s = Scratch::new("k8s");
        // containerd's task directory.
        s.put(&format!("tasks/k8s.io/{ID}/config.json"), CONTAINERD);
        let names = read(&container("containerd", ID), &s.roots());
        assert_eq!(names.title().as_deref(), Some("prod/shop-7d9f/web"));
        assert_eq!(names.image.as_deref(), Some("docker.io/library/nginx:1.27"));
        // runc's state names the bundle.
        let bundle = s.put("bundles/b1/config.json", CONTAINERD);
        let state = format!(
            r#"{{"config":{{"labels":["bundle={}"]}}}}"#,
            bundle.parent().unwrap().display()
        );
        s.put("runc/abc123/state.json", &state);
        assert_eq!(
            read(&container("runc", "abc123"), &s.roots())
                .pod
                .as_deref(),
            Some("shop-7d9f")
        );
        s.put("ns-runc/k8s.io/def456/state.json", &state);
        assert_eq!(
            read(&container("containerd", "def456"), &s.roots())
                .name
                .as_deref(),
            Some("web")
        );
        // cri-o's keys, and a sandbox (the pod's pause container) has no container name.
        s.put(
            "crio/c1/userdata/config.json",
            r#"{"annotations":{"io.kubernetes.cri-o.ContainerType":"sandbox",
                "io.kubernetes.container.name":"POD","io.kubernetes.pod.name":"api-0",
                "io.kubernetes.pod.namespace":"default"}}"#,
        );
        assert_eq!(
            read(&container("cri-o", "c1"), &s.roots())
                .title()
                .as_deref(),
            Some("default/api-0")
        );
    }

    #[test]
    fn a_runtime_is_known_by_the_state_it_keeps() {
        let s = Scratch::new("state");
        let roots = Roots {
            runtime_states: vec![
                (s.0.join("runc"), false),
                (s.0.join("crun"), false),
                (s.0.join("nested"), true),
            ],
            ..s.roots()
        };
        s.put("runc/web/state.json", "{}");
        s.put("crun/db/status", "");
        assert_eq!(runtime_with_state("web", &roots), Some("runc"));
        assert_eq!(runtime_with_state("db", &roots), Some("crun"));
        assert_eq!(runtime_with_state("gone", &roots), None);
        assert_eq!(runtime_with_state("..", &roots), None);
    }

    #[test]
    fn hostile_ids_links_fifos_and_huge_names_are_refused_or_cut() {
        let s = Scratch::new("hostile");
        let roots = s.roots();
        for id in ["", ".", "..", "../../etc", ".hidden", "a/b"] {
            assert_eq!(
                read(&container("runc", id), &roots),
                Names::default(),
                "{id:?}"
            );
        }
        // A link in place of the config is not followed.
        let real = s.put("elsewhere.json", r#"{"Name":"/linked"}"#);
        let dir = s.0.join(format!("docker/containers/{ID}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&real, dir.join("config.v2.json")).unwrap();
        assert_eq!(read(&container("docker", ID), &roots), Names::default());
        // A FIFO is not read (nor waited on).
        std::fs::remove_file(dir.join("config.v2.json")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("config.v2.json"),
            rustix::fs::FileType::Fifo,
            Mode::RWXU,
            0,
        )
        .unwrap();
        assert_eq!(read(&container("docker", ID), &roots), Names::default());
        std::fs::remove_file(dir.join("config.v2.json")).unwrap();
        // A name longer than any engine allows is cut.
        let long = "x".repeat(10_000);
        s.put(
            &format!("docker/containers/{ID}/config.v2.json"),
            &format!(r#"{{"Name":"/{long}"}}"#),
        );
        let name = read(&container("docker", ID), &roots).name.unwrap();
        assert_eq!(name.len(), MAX_NAME + "…".len());
        assert!(name.ends_with('…'));
    }
}
