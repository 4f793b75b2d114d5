//! Text recovered from the journal: what was said before the supervisor died, transcribed by a
//! later start. Kept (0600, one JSON object per line) until the user has seen it and clears it
//! (`swictation recovered --clear`), unless the configuration sends it to the output instead.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One recovered transcript.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovered {
    /// The journal entry it came from (`RUN-SEQ.seg`): the same entry is never stored twice.
    pub entry: String,
    /// What was said.
    pub text: String,
    /// Seconds of audio.
    pub seconds: f64,
    /// When it was transcribed (Unix seconds).
    pub at_unix_s: u64,
}

/// Never the text (privacy: no transcript in Debug output).
impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("entry", &self.entry)
            .field("characters", &self.text.chars().count())
            .field("seconds", &self.seconds)
            .finish()
    }
}

/// The file of recovered transcripts.
#[derive(Debug, Clone)]
pub struct RecoveredStore {
    path: PathBuf,
}

impl RecoveredStore {
    /// `$XDG_STATE_HOME/swictation/recovered.jsonl`.
    pub fn default_path() -> PathBuf {
        swictation_proto::paths::state_dir().join("recovered.jsonl")
    }

    /// The store at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything kept, oldest first (a line that does not parse, a torn last write, is skipped).
    pub fn list(&self) -> Result<Vec<Recovered>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Append one, durably (fsync) before returning.
    pub fn add(&self, r: &Recovered) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_all()?;
        Ok(())
    }

    /// Forget everything kept; how many there were.
    pub fn clear(&self) -> Result<usize> {
        let n = self.list()?.len();
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_listed_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecoveredStore::new(&dir.path().join("recovered.jsonl"));
        assert!(store.list().unwrap().is_empty());
        let r = Recovered {
            entry: "a.seg".into(),
            text: "hello there".into(),
            seconds: 1.5,
            at_unix_s: 7,
        };
        store.add(&r).unwrap();
        assert_eq!(store.list().unwrap(), vec![r.clone()]);
        assert!(!format!("{r:?}").contains("hello"));
        assert_eq!(store.clear().unwrap(), 1);
        assert!(store.list().unwrap().is_empty());
    }
}
