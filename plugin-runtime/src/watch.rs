//! Watches a drop-in directory and reloads it when files change, so adding,
//! replacing or removing a plugin takes effect without a restart.

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use crate::directory::PluginDirectory;

/// Quiet time after the last change before reloading, so a copy in progress
/// is read once it is complete.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Keeps the watch alive; dropping it stops watching.
pub struct DirectoryWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl PluginDirectory {
    /// Starts reloading this directory whenever its files change.
    pub fn watch(self: &Arc<Self>) -> notify::Result<DirectoryWatcher> {
        let (tx, rx) = channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // A send fails only once the reload thread has ended.
                let _ = tx.send(event);
            })?;
        watcher.watch(self.path(), RecursiveMode::NonRecursive)?;
        let directory = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("plugin-watch".into())
            .spawn(move || {
                loop {
                    // Wait for a change, then for the directory to settle.
                    match rx.recv() {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "Plugin directory watch reported an error.");
                            continue;
                        }
                        Err(_) => return,
                    }
                    loop {
                        match rx.recv_timeout(SETTLE) {
                            Ok(_) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let Some(directory) = directory.upgrade() else {
                        return;
                    };
                    directory.reload();
                }
            })
            .map_err(notify::Error::io)?;
        Ok(DirectoryWatcher { _watcher: watcher })
    }
}
