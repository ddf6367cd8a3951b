//! `run`'s command: found before tracing starts, started once the buffers are open, waited for
//! through the signals that would stop a trace.
use std::{ffi::OsString, io, path::PathBuf};

use nstrace::pipeline::Pipeline;

use super::signals::StopSignals;

/// A command `run` could not start: the exit status shells and env(1) give (127: not found,
/// 126: found but not executable).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub(crate) struct NotStarted {
    pub(crate) code: u8,
    pub(crate) what: String,
}

impl NotStarted {
    pub(crate) fn new(cmd: &std::ffi::OsStr, e: &io::Error) -> Self {
        let code = match e.kind() {
            io::ErrorKind::NotFound => 127,
            _ => 126,
        };
        let name = cmd.to_string_lossy();
        let what = if code == 127 {
            format!("{name}: command not found")
        } else {
            format!("{name}: cannot be run: {e}")
        };
        Self { code, what }
    }
}

/// Where `run`'s command would be found, as execvp finds it: refused before tracing begins
/// when it is missing or not executable.
pub(crate) fn check_command(cmd: &std::ffi::OsStr) -> Result<(), NotStarted> {
    use std::os::unix::fs::PermissionsExt as _;
    let candidates: Vec<PathBuf> = if cmd.as_encoded_bytes().contains(&b'/') {
        vec![PathBuf::from(cmd)]
    } else {
        // Without PATH, execvp searches its default path.
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
        std::env::split_paths(&path).map(|d| d.join(cmd)).collect()
    };
    let mut found = None;
    for path in &candidates {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(());
            }
            found.get_or_insert(io::Error::from(io::ErrorKind::PermissionDenied));
        }
    }
    Err(NotStarted::new(
        cmd,
        &found.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
    ))
}

/// Starts `run`'s command (directly, not through a shell) and follows it from its birth.
pub(crate) fn start_command(
    cmd: &[OsString],
    pipeline: &mut Pipeline<'_>,
) -> io::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .kill_on_drop(false)
        .spawn()?;
    if let Some(pid) = child.id() {
        pipeline.timeline.follow(pid);
        if let Some(archive) = pipeline.archive.as_mut() {
            nstrace::output::note_line(
                &mut **archive,
                &serde_json::json!({"type": "follow", "pid": pid}),
            )?;
        }
    }
    Ok(child)
}

/// Waits for `run`'s command to end. A first Ctrl-C, SIGTERM or SIGHUP is passed on to it as
/// SIGTERM (Ctrl-C in a terminal reaches it already); a second says what is still running; a
/// third kills it.
pub(crate) async fn wait_for_command(
    mut child: tokio::process::Child,
    signals: &mut StopSignals,
) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    let name = std::cell::OnceCell::new();
    let mut received = 0;
    loop {
        tokio::select! {
            result = child.wait() => return result.ok(),
            () = signals.recv() => {
                received += 1;
                let Some(pid) = pid else { continue };
                let name = name.get_or_init(|| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| nstrace::output::escape::escape(c.trim_end()).into_owned())
                        .unwrap_or_default()
                });
                match received {
                    1 => {
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    2 => nstrace::say!(
                        "nstrace: still waiting for the command ({name}, pid {pid}), which has \
                         not ended on SIGTERM; tracing goes on until it does. Ctrl-C once more \
                         kills it (SIGKILL)"
                    ),
                    _ => {
                        nstrace::say!("nstrace: killing the command ({name}, pid {pid})");
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            }
        }
    }
}

/// The exit status of `run`: the command's, or 128 + the signal that ended it.
pub(crate) fn exit_code(status: Option<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        None => 0,
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(signal)) => 128u8.saturating_add(signal as u8),
            (None, None) => 1,
        },
    }
}
