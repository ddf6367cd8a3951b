//! Where a stream was seen: the node's name and its boot. Every object of a `--json` stream
//! carries both, so that a pipeline merging many nodes' streams keeps each line's source, and
//! tells a node's boots apart (pids, inodes and the kernel's clock start again at each).
use std::path::Path;

/// The kernel's id of this boot: random at each boot, the same in every namespace.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// The hostname of nstrace's own UTS namespace: the node's, unless it runs in a pod (where the
/// pod's name is there instead: a DaemonSet names the node with `--node` or `NSTRACE_NODE`).
const HOSTNAME: &str = "/proc/sys/kernel/hostname";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub node: String,
    /// Empty when the kernel does not tell it.
    pub boot_id: String,
}

fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_default()
}

impl Origin {
    /// This machine's, named `node` when given (else by its hostname).
    pub fn here(node: Option<&str>) -> Self {
        Self {
            node: node.map_or_else(|| first_line(Path::new(HOSTNAME)), str::to_owned),
            boot_id: first_line(Path::new(BOOT_ID)),
        }
    }

    /// `"node":…,"boot_id":…,` as JSON, to open every object with. The node's name comes from
    /// the command line or the environment: escaped like any string.
    pub fn fields(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        out.extend_from_slice(b"\"node\":");
        let _ = serde_json::to_writer(&mut out, &self.node);
        out.extend_from_slice(b",\"boot_id\":");
        let _ = serde_json::to_writer(&mut out, &self.boot_id);
        out.push(b',');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_id_is_the_kernels_and_a_hostile_node_name_is_escaped() {
        let here = Origin::here(None);
        assert_eq!(here.boot_id.len(), 36, "a UUID: {here:?}");
        assert_eq!(here.node, first_line(Path::new(HOSTNAME)));
        let odd = Origin::here(Some("n\"1\n"));
        let object = format!("{{{}\"x\":1}}", String::from_utf8(odd.fields()).unwrap());
        let v: serde_json::Value = serde_json::from_str(&object).unwrap();
        assert_eq!(v["node"], "n\"1\n");
        assert_eq!(v["boot_id"], here.boot_id.as_str());
    }
}
