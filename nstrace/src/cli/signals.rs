//! The signals that stop a trace: Ctrl-C, SIGTERM, and SIGHUP (a closed terminal or ssh
//! session).
use std::io;

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal or ssh session), listened for from the moment
/// they are installed.
pub(crate) struct StopSignals(Option<[tokio::signal::unix::Signal; 3]>);

impl StopSignals {
    pub(crate) fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self(
            (|| {
                Ok::<_, io::Error>([
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                ])
            })()
            .ok(),
        )
    }

    /// The next Ctrl-C, SIGTERM or SIGHUP (one received since `install` counts).
    pub(crate) async fn recv(&mut self) {
        let Some([int, term, hup]) = &mut self.0 else {
            // Without signal handlers the default action still ends the process.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}
