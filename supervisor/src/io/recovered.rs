//! Text recovered from the journal: what was said before the supervisor died, transcribed by a
//! later start. Kept (0600, one JSON object per line) until the user has seen it and clears it
//! (`swictation recovered --clear`), unless the configuration sends it to the output instead.
//! The same kind of file, a [`Store`], keeps the opt-in transcript history ([`History`]).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
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
pub type RecoveredStore = Store<Recovered>;

impl RecoveredStore {
    /// `$XDG_STATE_HOME/swictation/recovered.jsonl`.
    pub fn default_path() -> PathBuf {
        swictation_proto::paths::state_dir().join("recovered.jsonl")
    }
}

/// A file of records, one JSON object per line, 0600, appended durably: the recovered text and
/// the transcript history.
#[derive(Debug, Clone)]
pub struct Store<T> {
    path: PathBuf,
    _records: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// The store at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            _records: PhantomData,
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything kept, oldest first (a line that does not parse, a torn last write, is skipped).
    pub fn list(&self) -> Result<Vec<T>> {
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
    pub fn add(&self, r: &T) -> Result<()> {
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

    /// Keep only the newest `n` (rewritten atomically: a crash leaves the old file or the new).
    pub fn keep_newest(&self, n: usize) -> Result<()> {
        let all = self.list()?;
        if all.len() <= n {
            return Ok(());
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("opening {}", tmp.display()))?;
        for r in &all[all.len() - n..] {
            let mut line = serde_json::to_vec(r)?;
            line.push(b'\n');
            f.write_all(&line)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &self.path).with_context(|| format!("replacing {}", self.path.display()))
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

/// One transcript in the history.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// When it was delivered (or its delivery failed), Unix seconds.
    pub at_unix_s: u64,
    /// What was said (after replacements and spoken commands).
    pub text: String,
    /// Whether it reached the output (false: typing failed; this is where it is kept).
    pub delivered: bool,
}

/// Never the text.
impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("at_unix_s", &self.at_unix_s)
            .field("characters", &self.text.chars().count())
            .field("delivered", &self.delivered)
            .finish()
    }
}

/// The transcript history.
pub type HistoryStore = Store<History>;

impl HistoryStore {
    /// `$XDG_STATE_HOME/swictation/history.jsonl`.
    pub fn default_path() -> PathBuf {
        swictation_proto::paths::state_dir().join("history.jsonl")
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

    #[test]
    fn the_history_keeps_the_newest_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::new(&dir.path().join("history.jsonl"));
        for i in 0..5u64 {
            let h = History {
                at_unix_s: i,
                text: format!("said {i}"),
                delivered: i != 3,
            };
            store.add(&h).unwrap();
        }
        store.keep_newest(3).unwrap();
        let kept = store.list().unwrap();
        let at: Vec<u64> = kept.iter().map(|h| h.at_unix_s).collect();
        assert_eq!(at, [2, 3, 4]);
        assert!(!kept[1].delivered);
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!format!("{:?}", kept[0]).contains("said"));
    }
}
