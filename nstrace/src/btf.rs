//! Kernel structure offsets from the running kernel's BTF.
//!
//! Rust eBPF programs get no CO-RE relocations, so every field they chase (task_struct.nsproxy,
//! ns_common.inum, ...) is looked up here and handed to them as the `OFFSETS` global. Nothing is
//! hard-coded: ns_common moved in Linux 6.18.
use std::path::Path;

use btf_rs::{Backend, Btf, Type};
use nstrace_common::{KernelOffsets, NS_SLOTS, slot};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "{path} is missing: this kernel exposes no BTF. nstrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (every major distribution kernel since 2021 is)"
    )]
    Missing { path: String },
    #[error("reading the kernel's BTF from {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("the kernel's BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("the kernel's BTF has no member {member} in struct {name}")]
    NoMember { name: String, member: String },
    #[error("inspecting the kernel's BTF for {what}: {source}")]
    Inspect { what: String, source: btf_rs::Error },
}

/// The kernel's BTF, parsed once.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing {
                path: path.display().to_string(),
            });
        }
        // Mapping the file (Linux 6.16+ lets vmlinux BTF be mapped) indexes only what is looked
        // up: a few dozen structs, instead of parsing 100k+ types. Older kernels: parse it.
        let btf = Btf::from_file_with_backend(path, Backend::Mmap)
            .or_else(|_| Btf::from_file(path))
            .map_err(|source| BtfError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { btf })
    }

    /// The struct named `name` (the first one with members, skipping forward declarations).
    fn structure(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoStruct { name: name.into() })?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct { name: name.into() })
    }

    /// Byte offset of `member` in struct `name`, looking through anonymous structs and unions.
    pub fn offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let s = self.structure(name)?;
        self.find_member(&s, member)?
            .ok_or_else(|| BtfError::NoMember {
                name: name.into(),
                member: member.into(),
            })
    }

    /// Like [`Self::offset`], but `None` when the member does not exist on this kernel.
    pub fn optional_offset(&self, name: &str, member: &str) -> Result<Option<u32>, BtfError> {
        let s = self.structure(name)?;
        self.find_member(&s, member)
    }

    fn find_member(&self, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>, BtfError> {
        let inspect = |source| BtfError::Inspect {
            what: member.into(),
            source,
        };
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return Ok(Some(m.bit_offset() / 8));
            }
            if name.is_empty() {
                // An anonymous struct or union: its members belong to the outer struct.
                let mut inner = self.btf.resolve_chained_type(m).map_err(inspect)?;
                // Anonymous members may hide behind qualifiers.
                for _ in 0..8 {
                    match inner {
                        Type::Volatile(ref v) | Type::Const(ref v) => {
                            inner = self.btf.resolve_chained_type(v).map_err(inspect)?;
                        }
                        _ => break,
                    }
                }
                if let Type::Struct(ref s) | Type::Union(ref s) = inner
                    && let Some(off) = self.find_member(s, member)?
                {
                    return Ok(Some(m.bit_offset() / 8 + off));
                }
            }
        }
        Ok(None)
    }

    /// Size of struct `name` in bytes.
    pub fn size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.structure(name)?.size() as u32)
    }

    /// Every offset the kernel programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let mut nsproxy = [u32::MAX; NS_SLOTS];
        let mut ns_common = [0; NS_SLOTS];
        // (slot, nsproxy member, namespace struct): ls /proc/PID/ns names on the left.
        let slots: [(usize, Option<&str>, &str); NS_SLOTS] = [
            (slot::MNT, Some("mnt_ns"), "mnt_namespace"),
            (slot::UTS, Some("uts_ns"), "uts_namespace"),
            (slot::IPC, Some("ipc_ns"), "ipc_namespace"),
            (slot::PID, None, "pid_namespace"),
            (
                slot::PID_FOR_CHILDREN,
                Some("pid_ns_for_children"),
                "pid_namespace",
            ),
            (slot::NET, Some("net_ns"), "net"),
            (slot::USER, None, "user_namespace"),
            (slot::CGROUP, Some("cgroup_ns"), "cgroup_namespace"),
            (slot::TIME, Some("time_ns"), "time_namespace"),
            (
                slot::TIME_FOR_CHILDREN,
                Some("time_ns_for_children"),
                "time_namespace",
            ),
        ];
        for (index, member, structure) in slots {
            if let Some(member) = member {
                nsproxy[index] = self.offset("nsproxy", member)?;
            }
            ns_common[index] = self.offset(structure, "ns")?;
        }
        let ns_id = self.optional_offset("ns_common", "ns_id")?;
        Ok(KernelOffsets {
            task_nsproxy: self.offset("task_struct", "nsproxy")?,
            task_real_cred: self.offset("task_struct", "real_cred")?,
            task_thread_pid: self.offset("task_struct", "thread_pid")?,
            task_real_parent: self.offset("task_struct", "real_parent")?,
            task_tgid: self.offset("task_struct", "tgid")?,
            task_pid: self.offset("task_struct", "pid")?,
            task_start_boottime: self.offset("task_struct", "start_boottime")?,
            task_exit_code: self.offset("task_struct", "exit_code")?,
            cred_user_ns: self.offset("cred", "user_ns")?,
            binprm_filename: self.offset("linux_binprm", "filename")?,
            nsproxy,
            ns_common,
            ns_common_inum: self.offset("ns_common", "inum")?,
            ns_common_ns_id: ns_id.unwrap_or(0),
            has_ns_id: u32::from(ns_id.is_some()),
            pid_level: self.offset("pid", "level")?,
            pid_numbers: self.offset("pid", "numbers")?,
            upid_size: self.size("upid")?,
            upid_nr: self.offset("upid", "nr")?,
            upid_ns: self.offset("upid", "ns")?,
        })
    }

    /// The parsed BTF, for loaders that need it too.
    pub fn inner(&self) -> &Btf {
        &self.btf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel: every offset must resolve, and the layout facts the
    /// programs rely on must hold.
    #[test]
    fn offsets_resolve_on_the_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("SKIP: {VMLINUX_BTF} is missing on this machine");
            return;
        }
        let btf = KernelBtf::load(path).expect("BTF loads");
        let o = btf.kernel_offsets().expect("offsets resolve");
        assert_ne!(o.task_nsproxy, 0);
        assert_eq!(o.nsproxy[slot::UTS], 8, "uts_ns follows nsproxy's refcount");
        assert_eq!(o.nsproxy[slot::PID], u32::MAX);
        assert_eq!(o.nsproxy[slot::USER], u32::MAX);
        assert!(o.upid_size >= 12);
        if o.has_ns_id == 1 {
            assert!(o.ns_common_ns_id > o.ns_common_inum);
        }
    }

    #[test]
    fn a_missing_file_names_the_kernel_option() {
        let err = KernelBtf::load(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
