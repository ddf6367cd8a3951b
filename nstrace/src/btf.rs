//! Kernel structure offsets from the running kernel's BTF.
//!
//! Rust eBPF programs get no CO-RE relocations, so every field they chase (task_struct.nsproxy,
//! ns_common.inum, ...) is looked up here and handed to them as the `OFFSETS` global. Nothing is
//! hard-coded: ns_common moved in Linux 6.18.
use std::path::Path;

use btf_rs::{Backend, Btf, Type};
use nstrace_common::{KernelOffsets, NS_SLOTS, NSPROXY_MAX, WINDOW, slot};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "{path} is missing: this kernel exposes no BTF. nstrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (every major distribution kernel since 2021 is)"
    )]
    Missing { path: String },
    #[error("reading the kernel's BTF from {path}")]
    Read { path: String, source: btf_rs::Error },
    #[error("the kernel's BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("the kernel's BTF has no member {member} in struct {name}")]
    NoMember { name: String, member: String },
    #[error("inspecting the kernel's BTF for {what}")]
    Inspect { what: String, source: btf_rs::Error },
    #[error(
        "this kernel's {what} has a layout nstrace does not know; please report it with the \
         output of `uname -r`"
    )]
    Layout { what: String },
}

/// Where the programs' one 16-byte read of `ns_common` starts, and the words of it that hold
/// `inum` and `ns_id`: `(window, inum_word, ns_id_word, has_ns_id)`. A kernel whose `ns_id` does
/// not fit in the window beside `inum` is read without ids, as kernels before 6.18 are.
fn ns_common_window(inum: u32, ns_id: Option<u32>) -> (u32, u32, u32, u32) {
    let fits = |lo: u32, hi_end: u32| hi_end - lo <= WINDOW as u32;
    match ns_id {
        Some(id) if id >= inum && (id - inum).is_multiple_of(4) && fits(inum, id + 8) => {
            (inum, 0, (id - inum) / 4, 1)
        }
        Some(id) if id < inum && (inum - id).is_multiple_of(4) && fits(id, inum + 4) => {
            (id, (inum - id) / 4, 0, 1)
        }
        _ => (inum, 0, 0, 0),
    }
}

/// The kernel's BTF, parsed once.
pub struct KernelBtf {
    btf: Btf,
}

/// A struct of the kernel's BTF, with its name for messages.
struct Structure {
    name: String,
    s: btf_rs::Struct,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing {
                path: path.display().to_string(),
            });
        }
        // Mapping the file (Linux 6.16+ lets vmlinux BTF be mapped) indexes only what is looked
        // up, instead of parsing 100k+ types. Older kernels: parse it.
        let btf = Btf::from_file_with_backend(path, Backend::Mmap)
            .or_else(|_| Btf::from_file(path))
            .map_err(|source| BtfError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { btf })
    }

    /// The struct named `name` (the first one with members, skipping forward declarations).
    /// With the mapped file each lookup by name walks every type (about a millisecond here), so
    /// only the roots are looked up by name; the rest are reached through their members' types.
    fn structure(&self, name: &str) -> Result<Structure, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoStruct { name: name.into() })?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(Structure {
                    name: name.into(),
                    s,
                }),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct { name: name.into() })
    }

    /// The struct that member `member` of `outer` is, points to or holds an array of, through
    /// typedefs, qualifiers and type tags: the very type the kernel's code uses there.
    fn member_struct(&self, outer: &Structure, member: &str) -> Result<Structure, BtfError> {
        let (_, m) = self.required_member(outer, member)?;
        let inspect = |source| BtfError::Inspect {
            what: format!("{}.{member}", outer.name),
            source,
        };
        let mut t = self.btf.resolve_chained_type(&m).map_err(inspect)?;
        for _ in 0..8 {
            t = match t {
                Type::Struct(s) | Type::Union(s) => {
                    let name = self.btf.resolve_name(&s).unwrap_or_default();
                    if s.members.is_empty() {
                        // Declared, not defined, here: the definition is found by name.
                        return self.structure(&name);
                    }
                    return Ok(Structure { name, s });
                }
                Type::Fwd(f) => {
                    return self.structure(&self.btf.resolve_name(&f).unwrap_or_default());
                }
                Type::Ptr(ref x) => self.btf.resolve_chained_type(x),
                Type::Array(ref x) => self.btf.resolve_chained_type(x),
                Type::Typedef(ref x) => self.btf.resolve_chained_type(x),
                Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                    self.btf.resolve_chained_type(x)
                }
                Type::TypeTag(ref x) => self.btf.resolve_chained_type(x),
                _ => break,
            }
            .map_err(inspect)?;
        }
        Err(BtfError::Layout {
            what: format!(
                "struct {} (its member {member} leads to no struct)",
                outer.name
            ),
        })
    }

    /// Byte offset of `member` in `s`, looking through anonymous structs and unions.
    fn offset(&self, s: &Structure, member: &str) -> Result<u32, BtfError> {
        self.required_member(s, member).map(|(offset, _)| offset)
    }

    fn required_member(
        &self,
        s: &Structure,
        member: &str,
    ) -> Result<(u32, btf_rs::Member), BtfError> {
        self.find_member(&s.s, member)?
            .ok_or_else(|| BtfError::NoMember {
                name: s.name.clone(),
                member: member.into(),
            })
    }

    /// Where `struct pt_regs` keeps a syscall's first two arguments and its number.
    fn syscall_regs(&self) -> Result<(u32, u32, u32), BtfError> {
        let regs = self.structure("pt_regs")?;
        let member = |m| self.optional_offset(&regs, m);
        match (
            member("di")?,
            member("si")?,
            member("orig_ax")?,
            member("orig_x0")?,
            member("regs")?,
            member("syscallno")?,
        ) {
            // x86_64: the argument registers survive the call.
            (Some(di), Some(si), Some(orig_ax), ..) => Ok((di, si, orig_ax)),
            // arm64: x0 holds the return value, its argument is kept in orig_x0.
            (.., Some(orig_x0), Some(regs), Some(nr)) => Ok((orig_x0, regs + 8, nr)),
            _ => Err(BtfError::Layout {
                what: "struct pt_regs (syscall arguments on this architecture)".into(),
            }),
        }
    }

    /// Like [`Self::offset`], but `None` when the member does not exist on this kernel.
    fn optional_offset(&self, s: &Structure, member: &str) -> Result<Option<u32>, BtfError> {
        Ok(self.find_member(&s.s, member)?.map(|(offset, _)| offset))
    }

    /// The offset of `member` in `s` and the member itself.
    fn find_member(
        &self,
        s: &btf_rs::Struct,
        member: &str,
    ) -> Result<Option<(u32, btf_rs::Member)>, BtfError> {
        let inspect = |source| BtfError::Inspect {
            what: member.into(),
            source,
        };
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return Ok(Some((m.bit_offset() / 8, m.clone())));
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
                    && let Some((off, found)) = self.find_member(s, member)?
                {
                    return Ok(Some((m.bit_offset() / 8 + off, found)));
                }
            }
        }
        Ok(None)
    }

    /// Every offset the kernel programs need. Three structs are looked up by name (task_struct,
    /// linux_binprm, pt_regs); every other is the type of a member that leads to it.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let task = self.structure("task_struct")?;
        let nsproxy_struct = self.member_struct(&task, "nsproxy")?;
        let cred = self.member_struct(&task, "real_cred")?;
        let pid = self.member_struct(&task, "thread_pid")?;
        let upid = self.member_struct(&pid, "numbers")?;
        let mut nsproxy = [u32::MAX; NS_SLOTS];
        let mut ns_common = [0; NS_SLOTS];
        // (slot, where its namespace struct is found: a member of nsproxy or of cred), in the
        // order `ls /proc/PID/ns` names them. The task's own pid namespace is not in nsproxy; its
        // struct is pid_ns_for_children's.
        let slots: [(usize, &Structure, &str, bool); NS_SLOTS] = [
            (slot::MNT, &nsproxy_struct, "mnt_ns", true),
            (slot::UTS, &nsproxy_struct, "uts_ns", true),
            (slot::IPC, &nsproxy_struct, "ipc_ns", true),
            (slot::PID, &nsproxy_struct, "pid_ns_for_children", false),
            (
                slot::PID_FOR_CHILDREN,
                &nsproxy_struct,
                "pid_ns_for_children",
                true,
            ),
            (slot::NET, &nsproxy_struct, "net_ns", true),
            (slot::USER, &cred, "user_ns", false),
            (slot::CGROUP, &nsproxy_struct, "cgroup_ns", true),
            (slot::TIME, &nsproxy_struct, "time_ns", true),
            (
                slot::TIME_FOR_CHILDREN,
                &nsproxy_struct,
                "time_ns_for_children",
                true,
            ),
        ];
        for (index, holder, member, in_nsproxy) in slots {
            if in_nsproxy {
                nsproxy[index] = self.offset(holder, member)?;
            }
            let ns = self.member_struct(holder, member)?;
            ns_common[index] = self.offset(&ns, "ns")?;
        }
        // Every namespace struct embeds the same struct ns_common as `ns`.
        let common = self.member_struct(&self.member_struct(&nsproxy_struct, "uts_ns")?, "ns")?;
        let ns_id = self.optional_offset(&common, "ns_id")?;
        let inum = self.offset(&common, "inum")?;
        let (ns_common_window, inum_word, ns_id_word, has_ns_id) = ns_common_window(inum, ns_id);
        if ns_id.is_some() && has_ns_id == 0 {
            log::debug!("ns_common.ns_id is not beside inum: namespace ids are not read");
        }
        let layout = |what: &str| BtfError::Layout { what: what.into() };
        let nsproxy_size = nsproxy_struct.s.size() as u32;
        if nsproxy_size as usize > NSPROXY_MAX
            || nsproxy
                .iter()
                .any(|&o| o != u32::MAX && (o % 8 != 0 || o + 8 > nsproxy_size))
        {
            return Err(layout("struct nsproxy"));
        }
        let (upid_size, upid_nr, upid_ns) = (
            upid.s.size() as u32,
            self.offset(&upid, "nr")?,
            self.offset(&upid, "ns")?,
        );
        if upid_size as usize > WINDOW || upid_nr % 4 != 0 || upid_ns % 4 != 0 || upid_ns + 8 > 16 {
            return Err(layout("struct upid"));
        }
        let (regs_arg0, regs_arg1, regs_nr) = self.syscall_regs()?;
        let binprm = self.structure("linux_binprm")?;
        Ok(KernelOffsets {
            task_nsproxy: self.offset(&task, "nsproxy")?,
            task_real_cred: self.offset(&task, "real_cred")?,
            task_thread_pid: self.offset(&task, "thread_pid")?,
            task_real_parent: self.offset(&task, "real_parent")?,
            task_tgid: self.offset(&task, "tgid")?,
            task_pid: self.offset(&task, "pid")?,
            task_start_boottime: self.offset(&task, "start_boottime")?,
            task_exit_code: self.offset(&task, "exit_code")?,
            cred_user_ns: self.offset(&cred, "user_ns")?,
            cred_uid: self.offset(&cred, "uid")?,
            task_comm: self.offset(&task, "comm")?,
            regs_arg0,
            regs_arg1,
            regs_nr,
            nr_clone: libc::SYS_clone as u32,
            nr_clone3: libc::SYS_clone3 as u32,
            nr_setns: libc::SYS_setns as u32,
            binprm_filename: self.offset(&binprm, "filename")?,
            nsproxy,
            ns_common,
            nsproxy_size,
            ns_common_window,
            inum_word,
            ns_id_word,
            has_ns_id,
            pid_level: self.offset(&pid, "level")?,
            pid_numbers: self.offset(&pid, "numbers")?,
            upid_size,
            upid_nr_word: upid_nr / 4,
            upid_ns_word: upid_ns / 4,
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
        assert_eq!(o.nsproxy_size, 72);
        assert_eq!(o.has_ns_id, 1, "Linux 6.18 has ns_common.ns_id beside inum");
        assert_ne!(o.inum_word, o.ns_id_word);
    }

    #[test]
    fn the_ns_common_window_covers_inum_and_ns_id() {
        // Linux 6.18: inum at 24, ns_id at 32.
        assert_eq!(ns_common_window(24, Some(32)), (24, 0, 2, 1));
        assert_eq!(ns_common_window(16, None), (16, 0, 0, 0));
        // ns_id first, then inum.
        assert_eq!(ns_common_window(40, Some(32)), (32, 2, 0, 1));
        // Too far apart: no ids rather than a wrong read.
        assert_eq!(ns_common_window(16, Some(64)), (16, 0, 0, 0));
        // The last word of the window cannot start an 8-byte id.
        assert_eq!(ns_common_window(16, Some(28)), (16, 0, 0, 0));
    }

    #[test]
    fn a_missing_file_names_the_kernel_option() {
        let err = KernelBtf::load(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
