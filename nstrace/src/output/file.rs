//! The files nstrace writes (the record, the pictures), made so that no other user can read them
//! or steer where they go.
//!
//! nstrace runs as root and its paths are often in /tmp, where any user may have put a file or a
//! link first. So:
//!
//! - The path is walked a component at a time from an open directory (`openat` with
//!   `O_NOFOLLOW`), never resolved again by name: what was checked is what is written. A link
//!   on the way is followed only when root or the caller owns it (another user's link in /tmp
//!   would choose where nstrace writes); the kernel's `fs.protected_symlinks` would refuse the
//!   same in a world-writable sticky directory, but it may be off.
//! - A new output is a file of the caller's, mode 0600, made under a name no one else can have
//!   (`O_EXCL`) in the final directory and renamed over the name given when it is
//!   [committed](PendingOutput::commit): whatever was there (a file another user made, with its
//!   owner and mode) is replaced, never written into, and a run that fails first leaves it as
//!   it was.
//! - A link as the name itself is refused unless root or the caller owns it; then (`/dev/stdout`,
//!   `/dev/fd/3`, a process substitution) what it leads to is written as it is. A device
//!   (`/dev/null`) is written as it is, and a FIFO or socket only when it is the caller's: the
//!   file opened is checked, not the name.
use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io,
    os::{fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::{Component, Path, PathBuf},
};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// An output file, open for writing.
#[derive(Debug)]
pub struct OutputFile {
    pub file: File,
    /// The path as the user gave it, for messages.
    pub path: PathBuf,
}

/// An output made but not yet in place: [`PendingOutput::commit`] puts it there; dropped
/// uncommitted, it leaves no trace.
#[derive(Debug)]
pub struct PendingOutput {
    out: OutputFile,
    /// The directory, the temporary name and the name given; None for a file opened in place.
    rename: Option<(OwnedFd, OsString, OsString)>,
}

impl PendingOutput {
    /// Renames the new file over the name given (nothing to do for a device or FIFO).
    pub fn commit(mut self) -> io::Result<OutputFile> {
        if let Some((dir, temp, name)) = self.rename.take()
            && let Err(e) = rustix::fs::renameat(&dir, temp.as_os_str(), &dir, name.as_os_str())
        {
            let _ = rustix::fs::unlinkat(&dir, temp.as_os_str(), AtFlags::empty());
            return Err(at(&self.out.path, "creating", e));
        }
        let out = OutputFile {
            file: self.out.file.try_clone()?,
            path: std::mem::take(&mut self.out.path),
        };
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.out.path
    }

    /// Commits a new file, keeping its directory to rotate it in (see [`Rotator`]). Only a
    /// file nstrace makes rotates: not a device, FIFO or link's target.
    pub fn commit_rotating(self) -> io::Result<(OutputFile, Rotator)> {
        let Some((dir, _, name)) = &self.rename else {
            return Err(refuse(
                &self.out.path,
                "is not a new file, and only a file nstrace makes can rotate: name one",
            ));
        };
        let rotator = Rotator {
            dir: dir.try_clone()?,
            name: name.clone(),
            path: self.out.path.clone(),
        };
        Ok((self.commit()?, rotator))
    }
}

/// A directory nstrace keeps files in (`--evidence DIR`): made 0700 when it does not exist,
/// reached as every output's directory is, and refused when another user owns it or may write
/// in it (they could remove or replace what is kept). Held open: never looked up again by name.
#[derive(Debug)]
pub struct Directory {
    dir: OwnedFd,
    path: PathBuf,
}

impl Directory {
    /// Opens (making it when it does not exist) the directory `path` names.
    pub fn open(path: &Path) -> io::Result<Self> {
        let Some(name) = path.file_name() else {
            return Err(refuse(path, "not a directory's name"));
        };
        let (mut walk, parent) = Walk::to_parent(path)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(at(path, "making the directory", e)),
        }
        let dir = walk.step(parent, name)?;
        let stat = rustix::fs::fstat(&dir).map_err(|e| at(path, "opening", e))?;
        if !trusted(stat.st_uid) {
            return Err(refuse(
                path,
                format_args!(
                    "is a directory of uid {}, who could remove or replace what nstrace keeps                      there: name a directory of your own (nstrace makes it, mode 0700)",
                    stat.st_uid
                ),
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(refuse(
                path,
                format_args!(
                    "is writable by other users (mode {:o}), who could remove or replace what                      nstrace keeps there: name a directory only you can write (nstrace makes a                      missing one, mode 0700), or chmod go-w it",
                    stat.st_mode & 0o7777
                ),
            ));
        }
        Ok(Self {
            dir,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new file `name` in the directory, 0600 and the caller's; never one that exists (a name
    /// taken is an `AlreadyExists` error, nothing replaced) nor a link. Made under its own name
    /// at once: no one else may write in the directory (see [`Directory::open`]), so no one
    /// can race for the name, and this works on every filesystem (NFS has no
    /// `RENAME_NOREPLACE`).
    pub fn create_new(&self, name: &str) -> io::Result<OutputFile> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => io::Error::from(io::ErrorKind::AlreadyExists),
            e => at(&path, "creating", e),
        })?;
        Ok(OutputFile {
            file: File::from(fd),
            path,
        })
    }
}

/// Where a file rotates: its directory, held open (never looked up again by name), and its
/// name in it.
#[derive(Debug)]
pub struct Rotator {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Rotator {
    /// `NAME.i` becomes `NAME.i+1` (the oldest, `NAME.keep`, is replaced and so gone), `NAME`
    /// becomes `NAME.1`, and a new `NAME` is made as every output is. Renames replace names,
    /// never write into what they named: a file or link another user put at one of those names
    /// is dropped, not followed.
    pub fn rotate(&self, keep: usize) -> io::Result<OutputFile> {
        let numbered = |i: usize| {
            let mut n = self.name.clone();
            n.push(format!(".{i}"));
            n
        };
        let rename =
            |from: &OsStr, to: &OsStr| match rustix::fs::renameat(&self.dir, from, &self.dir, to) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(at(&self.path, "rotating", e)),
            };
        if keep == 0 {
            match rustix::fs::unlinkat(&self.dir, self.name.as_os_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(at(&self.path, "rotating", e)),
            }
        } else {
            for i in (1..keep).rev() {
                rename(&numbered(i), &numbered(i + 1))?;
            }
            rename(&self.name, &numbered(1))?;
        }
        new_file(&self.path, self.dir.try_clone()?, &self.name)?.commit()
    }
}

impl Drop for PendingOutput {
    fn drop(&mut self) {
        if let Some((dir, temp, _)) = &self.rename {
            let _ = rustix::fs::unlinkat(dir, temp.as_os_str(), AtFlags::empty());
        }
    }
}

/// Why an output cannot be created.
fn refuse(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {why}", path.display()),
    )
}

/// Adds the path to an OS error, once.
fn at(path: &Path, what: &str, e: impl Into<io::Error>) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether a link owned by `uid` may be followed: root's and the caller's only.
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// Links followed at most on one walk, as the kernel's own limit (MAXSYMLINKS).
const MAX_LINKS: u32 = 40;

/// Where a walk stands: the directory it is in.
struct Walk<'a> {
    /// The path as given, for messages.
    path: &'a Path,
    links: u32,
}

impl<'a> Walk<'a> {
    /// The directory `path`'s last component is in (the working directory for a bare name),
    /// walked to from the working directory or /, and the walk, to go on from there.
    fn to_parent(path: &'a Path) -> io::Result<(Self, OwnedFd)> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut walk = Walk { path, links: 0 };
        let cwd = open_dir(rustix::fs::CWD, OsStr::new("."), path)?;
        let dir = walk.dir(cwd, parent)?;
        Ok((walk, dir))
    }

    /// Opens the directory `dir` names, component by component from `from` (or from / for an
    /// absolute `dir`), following only trusted links.
    fn dir(&mut self, from: OwnedFd, dir: &Path) -> io::Result<OwnedFd> {
        let mut fd = from;
        for component in dir.components() {
            fd = match component {
                Component::RootDir => open_dir(rustix::fs::CWD, OsStr::new("/"), self.path)?,
                Component::CurDir | Component::Prefix(_) => fd,
                Component::ParentDir => open_dir(&fd, OsStr::new(".."), self.path)?,
                Component::Normal(name) => self.step(fd, name)?,
            };
        }
        Ok(fd)
    }

    /// One name in `fd`: the directory it is, or where a trusted link to one leads.
    fn step(&mut self, fd: OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
        match open_dir(&fd, name, self.path) {
            Ok(next) => Ok(next),
            Err(e) => match self.link_target(&fd, name)? {
                Some(target) => self.dir(fd, &target),
                None => Err(e),
            },
        }
    }

    /// Where `name` in `fd` leads when it is a link root or the caller owns (None when it is
    /// not a link); another user's link is refused.
    fn link_target(&mut self, fd: &OwnedFd, name: &OsStr) -> io::Result<Option<PathBuf>> {
        // The link itself, held open: its owner and its target are read from what was opened.
        let link = match rustix::fs::openat(
            fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(link) => link,
            Err(e) => return Err(at(self.path, "opening", e)),
        };
        let stat = rustix::fs::fstat(&link).map_err(|e| at(self.path, "opening", e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Symlink {
            return Ok(None);
        }
        if !trusted(stat.st_uid) {
            return Err(refuse(
                self.path,
                format_args!(
                    "{} is a symbolic link of uid {}, who would choose where nstrace writes: name \
                     the real file",
                    Path::new(name).display(),
                    stat.st_uid
                ),
            ));
        }
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(refuse(self.path, "too many symbolic links on the way"));
        }
        let target = rustix::fs::readlinkat(&link, "", Vec::new())
            .map_err(|e| at(self.path, "reading the link on the way to", e))?;
        Ok(Some(PathBuf::from(OsStr::from_bytes(target.as_bytes()))))
    }
}

/// Opens a directory `name` in `fd` without following a link.
fn open_dir(fd: impl rustix::fd::AsFd, name: &OsStr, path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        fd,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        at(
            path,
            &format!(
                "opening the directory {} on the way to",
                Path::new(name).display()
            ),
            e,
        )
    })
}

/// Makes `path` ready for writing as the module says, not yet in place; the error names the
/// path and what to do.
pub fn create(path: &Path) -> io::Result<PendingOutput> {
    let bytes = path.as_os_str().as_bytes();
    let name = path
        .file_name()
        .filter(|_| !bytes.ends_with(b"/") && !bytes.ends_with(b"/.") && !bytes.ends_with(b"/.."));
    let Some(name) = name.filter(|n| *n != "." && *n != "..") else {
        return Err(refuse(path, "not a file name"));
    };
    let (_, dir) = Walk::to_parent(path)?;
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => new_file(path, dir, name),
        Err(e) => Err(at(path, "reading", e)),
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => new_file(path, dir, name),
            FileType::Directory => Err(refuse(path, "is a directory: name a file in it")),
            FileType::Symlink if !trusted(stat.st_uid) => Err(refuse(
                path,
                format_args!(
                    "is a symbolic link of uid {}, and nstrace does not write through another \
                     user's links: name the file itself",
                    stat.st_uid
                ),
            )),
            // A link of root's or the caller's (/dev/stdout, /dev/fd/N): what it leads to.
            _ => open_in_place(path, &dir, name),
        },
    }
}

/// A new file of the caller's in `dir`, under a name no one else can have.
fn new_file(path: &Path, dir: OwnedFd, name: &OsStr) -> io::Result<PendingOutput> {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    loop {
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut temp = OsString::from(".");
        temp.push(name);
        temp.push(format!(".nstrace-{}-{n}", std::process::id()));
        match rustix::fs::openat(
            &dir,
            temp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                return Ok(PendingOutput {
                    out: OutputFile {
                        file: File::from(fd),
                        path: path.to_owned(),
                    },
                    rename: Some((dir, temp, name.to_owned())),
                });
            }
            Err(rustix::io::Errno::EXIST) if n < 1000 => continue,
            Err(e) => return Err(at(path, "creating", e)),
        }
    }
}

/// What `name` in `dir` is or leads to, opened as it is: a device, or the caller's own FIFO or
/// socket. The file opened is what is checked.
fn open_in_place(path: &Path, dir: &OwnedFd, name: &OsStr) -> io::Result<PendingOutput> {
    // Not blocking on a FIFO with no reader, and never taking a terminal as ours.
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NXIO => {
            refuse(path, "is a FIFO that nothing reads: start its reader first")
        }
        e => at(path, "opening", e),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| at(path, "opening", e))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::CharacterDevice | FileType::BlockDevice => {}
        FileType::Fifo | FileType::Socket if stat.st_uid == euid() => {}
        // Reached through root's or the caller's own link (`--svg /dev/stdout > pic.svg`).
        FileType::RegularFile if name_is_link(dir, name) => {
            rustix::fs::ftruncate(&fd, 0).map_err(|e| at(path, "opening", e))?;
        }
        FileType::Fifo | FileType::Socket => {
            return Err(refuse(
                path,
                format_args!(
                    "is a FIFO or socket of uid {}, who would read everything nstrace writes: \
                     name a new file",
                    stat.st_uid
                ),
            ));
        }
        _ => {
            return Err(refuse(
                path,
                "leads to a file nstrace would write into rather than make: name the file itself",
            ));
        }
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| at(path, "opening", e))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| at(path, "opening", e))?;
    Ok(PendingOutput {
        out: OutputFile {
            file: File::from(fd),
            path: path.to_owned(),
        },
        rename: None,
    })
}

/// Whether `name` in `dir` is a symbolic link.
fn name_is_link(dir: &OwnedFd, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
}

/// What a path names, to tell two paths apart before either is written: its device and inode
/// when it exists, else its directory's real path and its name. A character device (`/dev/null`)
/// is any number of outputs at once, so it is told apart from everything.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    Existing(u64, u64),
    New(PathBuf),
    Device(PathBuf),
}

pub fn identity(path: &Path) -> Identity {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.file_type().is_char_device() {
            return Identity::Device(path.to_owned());
        }
        return Identity::Existing(meta.dev(), meta.ino());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_owned());
    Identity::New(dir.join(path.file_name().unwrap_or_default()))
}

impl Identity {
    /// Whether writing one would write the other.
    pub fn same(&self, other: &Identity) -> bool {
        !matches!(self, Identity::Device(_)) && self == other
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nstrace-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn made(path: &Path) -> OutputFile {
        create(path).and_then(PendingOutput::commit).unwrap()
    }

    #[test]
    fn a_new_output_is_the_callers_own_and_0600() {
        let dir = scratch("new");
        let path = dir.join("out");
        let out = made(&path);
        let meta = out.file.metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), euid());
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_uncommitted_output_leaves_what_was_there() {
        let dir = scratch("uncommitted");
        let path = dir.join("out");
        std::fs::write(&path, "before").unwrap();
        let pending = create(&path).unwrap();
        drop(pending);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "before");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_existing_file_is_replaced_not_written_into() {
        let dir = scratch("existing");
        let path = dir.join("out");
        std::fs::write(&path, "theirs").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let theirs = std::fs::File::open(&path).unwrap();
        let mut out = made(&path);
        io::Write::write_all(&mut out.file, b"ours").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ours");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // The old file, still open, holds what it held.
        assert_eq!(
            io::read_to_string(theirs).unwrap(),
            "theirs",
            "written into the other file"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn another_users_link_is_refused_as_the_name_or_on_the_way_even_past_dot_dot() {
        let dir = scratch("link");
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let inner = dir.join("inner");
        std::fs::create_dir(&inner).unwrap();
        let (link, dir_link) = (dir.join("link"), dir.join("dirlink"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::symlink(&inner, &dir_link).unwrap();
        for l in [&link, &dir_link] {
            std::os::unix::fs::lchown(l, Some(65534), Some(65534)).unwrap();
        }
        let via = |rest: &str| PathBuf::from(format!("{}/{rest}", dir.display()));
        for path in [
            link.clone(),
            dir_link.join("p.svg"),
            via("inner/../dirlink/p.svg"),
            via("dirlink/../dirlink/p.svg"),
        ] {
            let err = create(&path).unwrap_err().to_string();
            assert!(
                err.contains("symbolic link of uid 65534"),
                "{path:?}: {err}"
            );
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_dir(&inner).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_callers_own_links_are_followed() {
        let dir = scratch("own-link");
        let inner = dir.join("inner");
        std::fs::create_dir(&inner).unwrap();
        let dir_link = dir.join("dirlink");
        std::os::unix::fs::symlink("inner", &dir_link).unwrap();
        made(&dir_link.join("p.svg"));
        assert!(inner.join("p.svg").exists());
        // /dev/stdout is root's link to what the fd is.
        let out = create(Path::new("/dev/stdout")).map(PendingOutput::commit);
        assert!(!matches!(out, Err(ref e) if e.to_string().contains("symbolic link")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_a_missing_directory_or_no_file_name_is_refused_by_name() {
        let dir = scratch("dirs");
        let err = create(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let missing = dir.join("no/such/out");
        let err = create(&missing).unwrap_err().to_string();
        assert!(err.contains("no/such"), "{err}");
        assert_eq!(err.matches("No such file").count(), 1, "{err}");
        for name in ["out/", "out/.", "out/..", ".", ".."] {
            let err = create(&dir.join(name)).unwrap_err().to_string();
            assert!(
                err.contains("not a file name") || err.contains("is a directory"),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dev_null_is_written_as_it_is_and_is_no_one_file() {
        let out = made(Path::new("/dev/null"));
        assert!(out.file.metadata().unwrap().file_type().is_char_device());
        let null = identity(Path::new("/dev/null"));
        assert!(!null.same(&identity(Path::new("/dev/null"))));
    }

    #[test]
    fn the_same_file_by_two_names_is_one_identity() {
        let dir = scratch("identity");
        let a = dir.join("a");
        assert!(identity(&a).same(&identity(&dir.join(".").join("a"))));
        std::fs::write(&a, "").unwrap();
        std::fs::hard_link(&a, dir.join("b")).unwrap();
        assert!(identity(&a).same(&identity(&dir.join("b"))));
        assert!(!identity(&a).same(&identity(&dir.join("c"))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
