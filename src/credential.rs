//! Credentials read from files (mounted Secrets) that are re-read when they change, so a
//! rotated token, GitHub App key or webhook secret is used without restarting the operator.
//!
//! The kubelet updates a mounted Secret by swapping a `..data` symlink, so a file's new content
//! appears at once, whole. Rather than watch the file, each use re-reads it when the last read
//! is older than [`RECHECK`]: no background task to keep alive, at most one small read per
//! credential every few seconds, and a credential nobody uses is never read. A file that is
//! briefly missing or empty (mid-rotation, a broken mount) keeps the last good value.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use crate::sync::lock;

/// How old a credential's last read may be before a use reads its file again.
pub const RECHECK: Duration = Duration::from_secs(10);

/// A credential: a fixed value, or a file's content re-read at most every `recheck` on use.
/// Clones share the value. Trailing newlines are ignored; empty means unset.
#[derive(Clone)]
pub struct Credential(Arc<Inner>);

struct Inner {
    /// What the logs call it: the flag that names the file.
    name: String,
    /// The file to re-read, or none for a fixed value.
    file: Option<PathBuf>,
    recheck: Duration,
    current: Mutex<Current>,
}

struct Current {
    value: Arc<str>,
    /// Counts the changes seen, so holders of derived state (a client built with the key)
    /// know when to rebuild it.
    version: u64,
    checked: Instant,
    /// Whether the last read failed, so a missing file is warned about once, not on every
    /// check.
    failing: bool,
}

/// A credential's value and the version it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub version: u64,
    pub value: Arc<str>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value.
        write!(f, "Credential({})", self.0.name)
    }
}

impl From<&str> for Credential {
    fn from(value: &str) -> Credential {
        Credential::fixed(value)
    }
}

impl From<String> for Credential {
    fn from(value: String) -> Credential {
        Credential::fixed(&value)
    }
}

impl Credential {
    /// A value that never changes (given as a flag or an environment variable, or in tests).
    pub fn fixed(value: &str) -> Credential {
        Credential::new("a fixed value", None, RECHECK, value.into())
    }

    /// The content of `file`, re-read on use when older than `recheck`. Fails when the file
    /// cannot be read or is empty now: a start-up without the credential should stop loudly.
    pub fn from_file(name: &str, file: &Path, recheck: Duration) -> anyhow::Result<Credential> {
        let value = read(file)?;
        Ok(Credential::new(name, Some(file.into()), recheck, value))
    }

    /// A credential from a file (preferred: it stays out of the process environment) or a
    /// value, as the flags give them; `None` when neither is set or the value is empty.
    pub fn load(
        name: &str,
        file: Option<&Path>,
        value: Option<&str>,
    ) -> anyhow::Result<Option<Credential>> {
        match (file, value) {
            (Some(file), _) => match Credential::from_file(name, file, RECHECK) {
                Ok(credential) => Ok(Some(credential)),
                // Empty at start-up means unset, as it always has.
                Err(e) if e.downcast_ref::<Empty>().is_some() => Ok(None),
                Err(e) => Err(e),
            },
            (None, Some(value)) if !value.is_empty() => Ok(Some(Credential::fixed(value))),
            (None, _) => Ok(None),
        }
    }

    fn new(name: &str, file: Option<PathBuf>, recheck: Duration, value: Arc<str>) -> Credential {
        Credential(Arc::new(Inner {
            name: name.to_string(),
            file,
            recheck,
            current: Mutex::new(Current {
                value,
                version: 0,
                checked: Instant::now(),
                failing: false,
            }),
        }))
    }

    /// The value now: re-read from the file first when the last read is older than the
    /// recheck interval.
    pub fn current(&self) -> Arc<str> {
        self.versioned().value
    }

    /// The value now and its version, which changes whenever the value does.
    pub fn versioned(&self) -> Versioned {
        let Some(file) = self.due() else {
            return self.snapshot();
        };
        // A read of a small file on a tmpfs mount, once per interval: cheaper than handing
        // it to a blocking thread, and outside the lock so other users are not held up.
        let read = read(&file);
        let mut current = lock(&self.0.current);
        match read {
            Ok(value) if value != current.value => {
                current.value = value;
                current.version += 1;
                current.failing = false;
                info!(credential = %self.0.name, file = %file.display(), "credential reloaded");
            }
            Ok(_) => current.failing = false,
            Err(e) if !current.failing => {
                current.failing = true;
                warn!(credential = %self.0.name, error = %format!("{e:#}"),
                      "credential file unreadable or empty; keeping the last good value");
            }
            Err(_) => {}
        }
        Versioned {
            version: current.version,
            value: current.value.clone(),
        }
    }

    /// The file to re-read, when a check is due; marks the check as done so concurrent users
    /// do not read it too.
    fn due(&self) -> Option<PathBuf> {
        let file = self.0.file.as_ref()?;
        let mut current = lock(&self.0.current);
        if current.checked.elapsed() < self.0.recheck {
            return None;
        }
        current.checked = Instant::now();
        Some(file.clone())
    }

    fn snapshot(&self) -> Versioned {
        let current = lock(&self.0.current);
        Versioned {
            version: current.version,
            value: current.value.clone(),
        }
    }
}

/// A credential file with nothing in it but newlines.
#[derive(Debug, thiserror::Error)]
#[error("{0} is empty")]
struct Empty(String);

fn read(file: &Path) -> anyhow::Result<Arc<str>> {
    let content = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read {}", file.display()))?;
    let value = trimmed(&content);
    if value.is_empty() {
        return Err(Empty(file.display().to_string()).into());
    }
    Ok(value.into())
}

fn trimmed(value: &str) -> &str {
    value.trim_end_matches(['\n', '\r'])
}

#[cfg(test)]
mod tests;
