//! The files nstrace writes (the record, the pictures), made so that no other user can read them
//! or steer where they go.
//!
//! nstrace runs as root and its paths are often in /tmp, where any user may have put a file or a
//! link first. So an output is always a new file of the caller's, mode 0600: it is created under a
//! name no one else can have (`O_EXCL`) in the named file's directory, then renamed over the
//! name, which replaces whatever was there (a file another user made, with its owner and mode)
//! without writing into it. Never through a link: a link as the name itself is refused, and so is
//! a link on the way to it that belongs to another user. A device (`/dev/null`) is written as it
//! is, and a FIFO or socket only when it is the caller's own.
use std::{
    fs::File,
    io,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Component, Path, PathBuf},
};

use rustix::fs::{AtFlags, Mode, OFlags};

/// An output file, open for writing.
#[derive(Debug)]
pub struct OutputFile {
    pub file: File,
    /// The path as the user gave it, for messages.
    pub path: PathBuf,
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

/// Creates `path` for writing as the module says; the error names the path and what to do.
pub fn create(path: &Path) -> io::Result<OutputFile> {
    let name = path
        .file_name()
        .filter(|_| !matches!(path.components().next_back(), Some(Component::ParentDir)))
        .ok_or_else(|| refuse(path, "not a file name"))?;
    check_links_on_the_way(path)?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(at(path, "reading", e)),
        Ok(meta) => {
            let ty = meta.file_type();
            if ty.is_symlink() {
                return Err(refuse(
                    path,
                    "is a symbolic link, and nstrace does not write through links: name the file \
                     itself",
                ));
            }
            if ty.is_dir() {
                return Err(refuse(path, "is a directory: name a file in it"));
            }
            if ty.is_char_device() || ty.is_block_device() {
                return open_existing(path);
            }
            if ty.is_fifo() || ty.is_socket() {
                if meta.uid() != euid() {
                    return Err(refuse(
                        path,
                        format_args!(
                            "is a FIFO or socket of uid {}, who would read everything nstrace \
                             writes: name a new file",
                            meta.uid()
                        ),
                    ));
                }
                return open_existing(path);
            }
            // A regular file: replaced below by a new one, whoever made it.
        }
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(parent, "opening the directory", e))?;
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let (temp, fd) = loop {
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(format!(".nstrace-{}-{n}", std::process::id()));
        match rustix::fs::openat(
            &dir,
            temp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => break (temp, fd),
            Err(rustix::io::Errno::EXIST) if n < 1000 => continue,
            Err(e) => return Err(at(path, "creating", e)),
        }
    };
    if let Err(e) = rustix::fs::renameat(&dir, temp.as_os_str(), &dir, name) {
        let _ = rustix::fs::unlinkat(&dir, temp.as_os_str(), AtFlags::empty());
        return Err(at(path, "creating", e));
    }
    Ok(OutputFile {
        file: File::from(fd),
        path: path.to_owned(),
    })
}

/// Opens a device, or the caller's own FIFO or socket, as it is.
fn open_existing(path: &Path) -> io::Result<OutputFile> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(path, "opening", e))?;
    Ok(OutputFile {
        file: File::from(fd),
        path: path.to_owned(),
    })
}

/// Refuses a path that passes through a symbolic link another user owns (one made in /tmp, say,
/// pointing where that user wants nstrace to write). Links of root's and the caller's own are
/// followed, as the kernel's `fs.protected_symlinks` would in a world-writable sticky directory.
fn check_links_on_the_way(path: &Path) -> io::Result<()> {
    let mut prefix = PathBuf::new();
    let components: Vec<Component<'_>> = path.components().collect();
    let Some((_, dirs)) = components.split_last() else {
        return Ok(());
    };
    for component in dirs {
        if matches!(component, Component::ParentDir) {
            // Past a `..` the lexical prefix no longer names what the kernel walks.
            break;
        }
        prefix.push(component);
        if matches!(component, Component::RootDir | Component::CurDir) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&prefix) else {
            // Missing: creating the file will say so.
            return Ok(());
        };
        if meta.file_type().is_symlink() && meta.uid() != 0 && meta.uid() != euid() {
            return Err(refuse(
                path,
                format_args!(
                    "{} is a symbolic link of uid {}, who would choose where nstrace writes: name \
                     the real directory",
                    prefix.display(),
                    meta.uid()
                ),
            ));
        }
    }
    Ok(())
}

/// What a path names, to tell two paths apart before either is written: its device and inode
/// when it exists, else its directory's real path and its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    Existing(u64, u64),
    New(PathBuf),
}

pub fn identity(path: &Path) -> Identity {
    if let Ok(meta) = std::fs::metadata(path) {
        return Identity::Existing(meta.dev(), meta.ino());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_owned());
    Identity::New(dir.join(path.file_name().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nstrace-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_output_is_the_callers_own_and_0600() {
        let dir = scratch("new");
        let path = dir.join("out");
        let out = create(&path).unwrap();
        let meta = out.file.metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), euid());
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_existing_file_is_replaced_not_written_into() {
        let dir = scratch("existing");
        let path = dir.join("out");
        std::fs::write(&path, "theirs").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let theirs = std::fs::File::open(&path).unwrap();
        let mut out = create(&path).unwrap();
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
    fn a_link_as_the_name_is_refused_and_its_target_untouched() {
        let dir = scratch("link");
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = create(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_or_a_missing_directory_is_refused_by_name() {
        let dir = scratch("dirs");
        let err = create(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let missing = dir.join("no/such/out");
        let err = create(&missing).unwrap_err().to_string();
        assert!(err.contains("no/such"), "{err}");
        assert_eq!(err.matches("No such file").count(), 1, "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dev_null_is_written_as_it_is() {
        let out = create(Path::new("/dev/null")).unwrap();
        assert!(out.file.metadata().unwrap().file_type().is_char_device());
    }

    #[test]
    fn the_same_file_by_two_names_is_one_identity() {
        let dir = scratch("identity");
        let a = dir.join("a");
        assert_eq!(identity(&a), identity(&dir.join(".").join("a")));
        std::fs::write(&a, "").unwrap();
        std::fs::hard_link(&a, dir.join("b")).unwrap();
        assert_eq!(identity(&a), identity(&dir.join("b")));
        assert_ne!(identity(&a), identity(&dir.join("c")));
        let _ = std::fs::remove_dir_all(dir);
    }
}
