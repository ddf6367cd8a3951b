//! What people call a container: its engine's name for it, its image, its compose project and
//! service, and for Kubernetes its pod and the pod's namespace. Read from the engine's own
//! state on the host ([`read`]), once per container, off the collector's thread
//! ([`resolver`]); kept in the record file so that a replay names containers as the live run
//! did.
//!
//! Every name here was chosen by whoever made the container (a compose file, a pod spec): it is
//! escaped wherever it is printed, like a process's comm.
use serde::{Deserialize, Serialize};

use crate::container::Container;

pub mod read;
pub mod resolver;

pub use read::Roots;
pub use resolver::{NameSource, Resolver};

/// A container's names, each when the engine has it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Docker's and Podman's name (`web`); for Kubernetes, the container's name in its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image it was started from, as the engine names it (`nginx:1.27`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Docker Compose's project and service (its `com.docker.compose.*` labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    /// The Kubernetes pod and its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
}

impl Names {
    pub fn is_empty(&self) -> bool {
        *self == Names::default()
    }

    /// What people call it: the engine's name (`web`), or for Kubernetes
    /// `namespace/pod/container` (`namespace/pod` for the pod's sandbox).
    pub fn title(&self) -> Option<String> {
        let pod = match (&self.pod_namespace, &self.pod) {
            (Some(ns), Some(pod)) => Some(format!("{ns}/{pod}")),
            (None, Some(pod)) => Some(pod.clone()),
            _ => None,
        };
        match (pod, &self.name) {
            (Some(pod), Some(name)) => Some(format!("{pod}/{name}")),
            (Some(pod), None) => Some(pod),
            (None, name) => name.clone(),
        }
    }

    /// The rest, for a summary: `image nginx:1.27, compose shop/web`.
    pub fn details(&self) -> String {
        let mut out = Vec::new();
        if let Some(image) = &self.image {
            out.push(format!("image {image}"));
        }
        match (&self.compose_project, &self.compose_service) {
            (Some(p), Some(s)) => out.push(format!("compose {p}/{s}")),
            (Some(p), None) => out.push(format!("compose {p}")),
            _ => {}
        }
        out.join(", ")
    }

    /// Whether `what` is one of its names: the engine's name, or the pod's (`pod`,
    /// `namespace/pod`, `namespace/pod/container`).
    fn called(&self, what: &str) -> bool {
        self.name.as_deref() == Some(what)
            || self.pod.as_deref() == Some(what)
            || self.title().as_deref() == Some(what)
            || matches!((&self.pod_namespace, &self.pod), (Some(ns), Some(pod))
                if what.split_once('/') == Some((ns.as_str(), pod.as_str())))
    }
}

/// How a container is shown: `web (docker:0123456789ab)`, or its runtime and short id alone
/// when it has no name.
pub fn label(container: &Container, names: Option<&Names>) -> String {
    match names.and_then(Names::title) {
        Some(title) => format!("{title} ({})", container.short_id()),
        None => container.short(),
    }
}

/// Whether `what` (a `--container` argument) names this container: its id or an unambiguous
/// start of it (at least 3 characters, as docker takes), `runtime:id` as nstrace shows it, or
/// one of its [`Names`].
pub fn matches(container: &Container, names: Option<&Names>, what: &str) -> bool {
    let id = container.id.as_str();
    id == what
        || (what.len() >= 3 && id.starts_with(what))
        || container.short_id() == what
        || format!("{}:{id}", container.runtime) == what
        || names.is_some_and(|n| n.called(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker() -> Container {
        Container {
            runtime: "docker",
            id: "0123456789abcdef".repeat(4),
            pod: None,
        }
    }

    #[test]
    fn a_container_is_shown_by_its_name_and_its_short_id() {
        let names = Names {
            name: Some("web".into()),
            image: Some("nginx:1.27".into()),
            compose_project: Some("shop".into()),
            compose_service: Some("web".into()),
            ..Names::default()
        };
        assert_eq!(label(&docker(), Some(&names)), "web (docker:0123456789ab)");
        assert_eq!(names.details(), "image nginx:1.27, compose shop/web");
        assert_eq!(label(&docker(), None), "docker:0123456789ab");
        assert_eq!(
            label(&docker(), Some(&Names::default())),
            "docker:0123456789ab"
        );
    }

    #[test]
    fn a_kubernetes_container_is_namespace_pod_container() {
        let names = Names {
            name: Some("web".into()),
            pod: Some("shop-7d9f".into()),
            pod_namespace: Some("prod".into()),
            ..Names::default()
        };
        assert_eq!(names.title().as_deref(), Some("prod/shop-7d9f/web"));
        let sandbox = Names {
            name: None,
            ..names.clone()
        };
        assert_eq!(sandbox.title().as_deref(), Some("prod/shop-7d9f"));
        for what in ["web", "shop-7d9f", "prod/shop-7d9f", "prod/shop-7d9f/web"] {
            assert!(matches(&docker(), Some(&names), what), "{what}");
        }
        assert!(!matches(&docker(), Some(&names), "prod"));
        assert!(!matches(&docker(), Some(&names), "prod/web"));
    }

    #[test]
    fn a_container_is_matched_by_its_id_a_prefix_or_its_label() {
        let c = docker();
        for what in [
            c.id.as_str(),
            "0123",
            "012",
            "docker:0123456789ab",
            &format!("docker:{}", c.id),
        ] {
            assert!(matches(&c, None, what), "{what}");
        }
        for what in ["01", "", "1234", "web", "docker:"] {
            assert!(!matches(&c, None, what), "{what}");
        }
    }
}
