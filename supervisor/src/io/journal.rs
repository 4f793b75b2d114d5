//! The speech journal: every segment's audio on disk, from the moment the segmenter closes it (and
//! the open segment's audio, flushed while it grows) until its transcript has been delivered, so a
//! supervisor that dies (SIGKILL, out of memory, a watchdog restart, a logout) loses nothing said.
//!
//! Mechanics only; when to append, flush and retire is the stages' and the daemon's decision.
//!
//! - One file per entry in `$XDG_STATE_HOME/swictation/journal` (directory 0700, files 0600),
//!   named `RUN-SEQ.seg` (a closed segment) or `RUN-SEQ.draft` (the open one), where `RUN` is the
//!   start time of the run in nanoseconds (fixed-width hex, so names sort in the order spoken and
//!   never repeat across runs) and `SEQ` counts entries within the run.
//! - Each file is a header (magic, version, sample positions, sample count, CRC-32 of the audio)
//!   and the audio as little-endian f32. It is written to a temporary name, fsync-ed, renamed and
//!   the directory fsync-ed: only then does it count as kept. A reader never sees half a file
//!   under an entry's name; one that does not parse anyway is moved to `journal/damaged/`.
//! - The disk work happens on one keeper thread: the audio path never waits on fsync.
//! - One daemon at a time: the journal is locked (`.lock`, an advisory lock held while the
//!   handle lives), so a second daemon (a file run beside the service) never replays or retires
//!   the first one's live entries.
//! - A size cap: an entry that would take the journal past it is not written, and that is
//!   reported ([`JournalHealth::problem`]); nothing already kept is ever deleted to make room.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{bail, Context, Result};

const MAGIC: &[u8; 4] = b"SWJ1";
const VERSION: u16 = 1;
/// Magic, version, flags, start, end, speech start, speech end, sample count, CRC.
const HEADER: usize = 4 + 2 + 2 + 8 * 4 + 4 + 4;
const FLAG_DRAFT: u16 = 1;

/// One journal entry's audio and where it lay in the stream of the run that recorded it.
#[derive(Clone, PartialEq)]
pub struct Entry {
    /// The entry's file name (`RUN-SEQ.seg` or `RUN-SEQ.draft`).
    pub id: String,
    /// The open segment's audio so far (the supervisor died before it closed).
    pub draft: bool,
    /// First sample, in the recording run's stream.
    pub start: u64,
    /// One past the last sample.
    pub end: u64,
    /// Where speech was detected, without the padding.
    pub speech_start: u64,
    /// Where the last speech ended, without the padding.
    pub speech_end: u64,
    /// 16 kHz mono.
    pub samples: Vec<f32>,
}

/// Never the audio itself (privacy: no audio in Debug output).
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("draft", &self.draft)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl Entry {
    /// Seconds of audio.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(swictation_proto::SAMPLE_RATE)
    }

    fn encode(&self) -> Vec<u8> {
        let mut audio = Vec::with_capacity(self.samples.len() * 4);
        for s in &self.samples {
            audio.extend_from_slice(&s.to_le_bytes());
        }
        let mut b = Vec::with_capacity(HEADER + audio.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if self.draft { FLAG_DRAFT } else { 0 };
        b.extend_from_slice(&flags.to_le_bytes());
        for v in [self.start, self.end, self.speech_start, self.speech_end] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.samples.len() as u32).to_le_bytes());
        b.extend_from_slice(&crc32(&audio).to_le_bytes());
        b.extend_from_slice(&audio);
        b
    }

    fn decode(id: &str, b: &[u8]) -> Result<Entry, String> {
        if b.len() < HEADER {
            return Err(format!("{} bytes, shorter than the header", b.len()));
        }
        if &b[..4] != MAGIC {
            return Err("not a journal entry (bad magic)".into());
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let version = u16_at(4);
        if version != VERSION {
            return Err(format!("version {version}, expected {VERSION}"));
        }
        let flags = u16_at(6);
        let n = u32_at(40) as usize;
        let crc = u32_at(44);
        let audio = &b[HEADER..];
        if audio.len() != n * 4 {
            return Err(format!(
                "torn: the header says {n} samples, the file holds {} bytes of audio",
                audio.len()
            ));
        }
        if crc32(audio) != crc {
            return Err("the audio does not match its checksum".into());
        }
        Ok(Entry {
            id: id.to_owned(),
            draft: flags & FLAG_DRAFT != 0,
            start: u64_at(8),
            end: u64_at(16),
            speech_start: u64_at(24),
            speech_end: u64_at(32),
            samples: audio
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }
}

/// An entry that could not be read at start, and where it was put aside.
#[derive(Debug, Clone)]
pub struct Damaged {
    /// Its file name.
    pub id: String,
    /// Why it could not be read.
    pub why: String,
    /// Where it is now (under `journal/damaged/`).
    pub moved_to: PathBuf,
}

/// What the journal holds and whether it can keep what it is given.
#[derive(Debug, Clone, Default)]
pub struct JournalHealth {
    /// Entries on disk, drafts included.
    pub entries: usize,
    /// Their audio, seconds.
    pub seconds: f64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Entries that could not be kept (disk full, the cap, an I/O error).
    pub not_kept: u64,
    /// The first reason an entry could not be kept in this run (kept until the daemon restarts:
    /// later failures are usually its consequences).
    pub problem: Option<String>,
}

enum Op {
    Put(Entry),
    Remove(String),
    Flush(mpsc::Sender<()>),
}

/// A handle on the journal (cheap to clone); the disk work happens on its keeper thread.
#[derive(Clone)]
pub struct Journal {
    dir: PathBuf,
    run: String,
    seq: Arc<AtomicU64>,
    tx: mpsc::Sender<Op>,
    health: Arc<Mutex<JournalHealth>>,
    /// Entries retired whose removal the keeper has not yet recorded; see [`Journal::retire`].
    gone: Gone,
    /// Held (locked) while any handle lives.
    _lock: Arc<File>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

/// Ids retired but not yet recorded by the keeper. Its lock is held only around a rename into
/// place and an unlink, so a retire never waits on an fsync and an entry retired while the keeper
/// is still writing it is never renamed back into place.
type Gone = Arc<Mutex<std::collections::BTreeSet<String>>>;

/// What [`Journal::open`] found: the entries to replay, in the order spoken, and the damaged.
pub struct Opened {
    /// The journal, ready for this run's entries.
    pub journal: Journal,
    /// Readable entries left by earlier runs, oldest first (a closed segment wins over a draft
    /// of the same segment).
    pub entries: Vec<Entry>,
    /// Entries put aside.
    pub damaged: Vec<Damaged>,
}

/// `$XDG_STATE_HOME/swictation/journal`.
pub fn default_dir() -> PathBuf {
    swictation_proto::paths::state_dir().join("journal")
}

impl Journal {
    /// Open (creating it 0700) the journal in `dir`, read what earlier runs left, and start the
    /// keeper; `cap_bytes` bounds what it holds.
    pub fn open(dir: &Path, cap_bytes: u64) -> Result<Opened> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the journal {}", dir.display()))?;
        let meta = fs::metadata(dir)?;
        if meta.uid() != nix::unistd::getuid().as_raw() {
            bail!(
                "the journal {} belongs to another user (uid {})",
                dir.display(),
                meta.uid()
            );
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(".lock"))
            .with_context(|| format!("opening the journal's lock in {}", dir.display()))?;
        if let Err(e) = lock.try_lock() {
            bail!(
                "the journal {} is in use by another swictation daemon ({e})",
                dir.display()
            );
        }
        let mut found: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
        for e in fs::read_dir(dir)? {
            let path = e?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(".seg") {
                found.entry(stem.to_owned()).or_default().0 = Some(path);
            } else if let Some(stem) = name.strip_suffix(".draft") {
                found.entry(stem.to_owned()).or_default().1 = Some(path);
            } else if name.ends_with(".tmp") {
                // A write the keeper never finished: it never counted as kept.
                let _ = fs::remove_file(&path);
            }
        }
        let (mut entries, mut damaged) = (Vec::new(), Vec::new());
        let mut health = JournalHealth::default();
        for (_, (seg, draft)) in found {
            // The closed segment was renamed into place before its draft was removed.
            let path = match (seg, draft) {
                (Some(s), Some(d)) => {
                    let _ = fs::remove_file(d);
                    s
                }
                (Some(s), None) | (None, Some(s)) => s,
                (None, None) => continue,
            };
            let id = file_name(&path);
            let read = fs::read(&path).map_err(|e| e.to_string());
            match read.and_then(|b| Entry::decode(&id, &b)) {
                Ok(entry) => {
                    health.entries += 1;
                    health.seconds += entry.seconds();
                    health.bytes += (HEADER + entry.samples.len() * 4) as u64;
                    entries.push(entry);
                }
                Err(why) => {
                    let aside = dir.join("damaged");
                    let moved_to = aside.join(&id);
                    let moved = fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&aside)
                        .and_then(|()| fs::rename(&path, &moved_to));
                    let why = match moved {
                        Ok(()) => why,
                        Err(e) => format!("{why} (and it could not be moved aside: {e})"),
                    };
                    damaged.push(Damaged { id, why, moved_to });
                }
            }
        }
        sync_dir(dir);
        let run = format!(
            "{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        );
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(Mutex::new(health));
        let gone = Gone::default();
        let keeper = Keeper {
            dir: dir.to_owned(),
            cap: cap_bytes,
            health: health.clone(),
            gone: gone.clone(),
            sizes: entries
                .iter()
                .map(|e| (e.id.clone(), (HEADER + e.samples.len() * 4) as u64))
                .collect(),
            seconds: entries
                .iter()
                .map(|e| (e.id.clone(), e.seconds()))
                .collect(),
        };
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || keeper.run(rx))
            .context("starting the journal thread")?;
        Ok(Opened {
            journal: Journal {
                dir: dir.to_owned(),
                run,
                seq: Arc::new(AtomicU64::new(0)),
                tx,
                health,
                gone,
                _lock: Arc::new(lock),
            },
            entries,
            damaged,
        })
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new entry stem, never used before (by this run or any other).
    pub fn next_stem(&self) -> String {
        format!(
            "{}-{:08}",
            self.run,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Keep a closed segment as `STEM.seg` (replacing the draft `STEM.draft`, if any); returns
    /// the entry's id. Returns at once: the keeper writes it.
    pub fn put(&self, stem: &str, draft: bool, span: Span, samples: Vec<f32>) -> String {
        let id = format!("{stem}.{}", if draft { "draft" } else { "seg" });
        let _ = self.tx.send(Op::Put(Entry {
            id: id.clone(),
            draft,
            start: span.start,
            end: span.end,
            speech_start: span.speech_start,
            speech_end: span.speech_end,
            samples,
        }));
        id
    }

    /// Retire an entry (its transcript has been delivered, or it was an abandoned draft).
    ///
    /// The file goes at once, on the caller's thread, not behind the keeper's queue of fsyncs:
    /// the time between a transcript's delivery and its entry leaving the disk is the one moment
    /// in which a supervisor killed would deliver that transcript again on replay, so it is kept
    /// to one unlink. (Without the directory's fsync, which the keeper does after: a SIGKILL does
    /// not undo an unlink; only a power loss could.)
    pub fn retire(&self, id: &str) {
        if let Ok(mut gone) = self.gone.lock() {
            gone.insert(id.to_owned());
            match fs::remove_file(self.dir.join(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    crate::log_warn!("cannot retire journal entry {id}: {e}");
                }
                _ => {}
            }
        }
        let _ = self.tx.send(Op::Remove(id.to_owned()));
    }

    /// Wait until everything sent so far is on disk (or has failed and been reported).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// What the journal holds now.
    pub fn health(&self) -> JournalHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// Where an entry's audio lay in the recording run's stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    /// First sample.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// Speech start, without padding.
    pub speech_start: u64,
    /// Speech end, without padding.
    pub speech_end: u64,
}

struct Keeper {
    dir: PathBuf,
    cap: u64,
    health: Arc<Mutex<JournalHealth>>,
    sizes: BTreeMap<String, u64>,
    seconds: BTreeMap<String, f64>,
    gone: Gone,
}

impl Keeper {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        for op in rx {
            match op {
                Op::Put(e) => self.put(e),
                Op::Remove(id) => self.remove(&id),
                Op::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut JournalHealth)) {
        if let Ok(mut h) = self.health.lock() {
            f(&mut h);
            h.entries = self.sizes.len();
            h.bytes = self.sizes.values().sum();
            h.seconds = self.seconds.values().sum();
        }
    }

    fn put(&mut self, e: Entry) {
        let stem = e.id.rsplit_once('.').map_or(e.id.as_str(), |(s, _)| s);
        let draft_id = format!("{stem}.draft");
        let bytes = e.encode();
        let others: u64 = self
            .sizes
            .iter()
            .filter(|(id, _)| **id != e.id && **id != draft_id)
            .map(|(_, s)| s)
            .sum();
        if others + bytes.len() as u64 > self.cap {
            let why = format!(
                "the journal is full (cap {} MB): {:.1} s of speech not kept on disk (it is still transcribed while the daemon runs)",
                self.cap / 1_000_000,
                e.seconds()
            );
            self.not_kept(why);
            return;
        }
        match write_atomically(&self.dir, &e.id, &bytes, &self.gone) {
            // Retired (delivered) while it was being written: nothing to keep.
            Ok(false) => {}
            Ok(true) => {
                self.sizes.insert(e.id.clone(), bytes.len() as u64);
                self.seconds.insert(e.id.clone(), e.seconds());
                if !e.draft && self.sizes.contains_key(&draft_id) {
                    self.remove(&draft_id);
                }
                self.update(|_| {});
            }
            Err(err) => self.not_kept(format!(
                "cannot keep {:.1} s of speech in the journal {}: {err}",
                e.seconds(),
                self.dir.display()
            )),
        }
    }

    fn problem_open(&self) -> bool {
        self.health.lock().is_ok_and(|h| h.problem.is_some())
    }

    fn not_kept(&self, why: String) {
        let first = !self.problem_open();
        if first {
            crate::log_error!("{why}");
        }
        self.update(|h| {
            h.not_kept += 1;
            // The first problem is the one to fix; later ones are usually its consequences.
            h.problem.get_or_insert(why);
        });
    }

    fn remove(&mut self, id: &str) {
        // Every put of this id was queued before its retire, so none can follow: forget it.
        if let Ok(mut gone) = self.gone.lock() {
            gone.remove(id);
        }
        self.seconds.remove(id);
        if self.sizes.remove(id).is_none() {
            // Never kept (or already retired): nothing on disk to remove.
            return;
        }
        // `retire` removed the file already (or it is a draft its segment replaced).
        match fs::remove_file(self.dir.join(id)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => sync_dir(&self.dir),
            Err(e) => crate::log_warn!("cannot retire journal entry {id}: {e}"),
        }
        self.update(|_| {});
    }
}

/// Writes `bytes` as `dir/id`: to a temporary file, fsync-ed, renamed into place (unless `id` was
/// retired meanwhile: then `Ok(false)`), and the directory fsync-ed.
fn write_atomically(dir: &Path, id: &str, bytes: &[u8], gone: &Gone) -> std::io::Result<bool> {
    let tmp = dir.join(format!("{id}.tmp"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        {
            let gone = gone
                .lock()
                .map_err(|_| std::io::Error::other("journal lock poisoned"))?;
            if gone.contains(id) {
                fs::remove_file(&tmp)?;
                return Ok(false);
            }
            fs::rename(&tmp, dir.join(id))?;
        }
        File::open(dir)?.sync_all()?;
        Ok(true)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// CRC-32 (IEEE 802.3, as zlib and PNG use it), bitwise: entries are written once a second at
/// most, so speed does not matter.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            start: 10,
            end: 20,
            speech_start: 12,
            speech_end: 18,
        }
    }

    #[test]
    fn crc_is_the_standard_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_retire() {
        let dir = tempfile::tempdir().unwrap();
        let o = Journal::open(dir.path(), 1 << 30).unwrap();
        assert!(o.entries.is_empty());
        let j = o.journal;
        let a = j.next_stem();
        let b = j.next_stem();
        j.put(&a, true, span(), vec![0.1; 100]);
        let a_id = j.put(&a, false, span(), vec![0.25; 160]);
        let b_id = j.put(&b, true, span(), vec![-0.5; 32]);
        j.flush();
        let mode = fs::metadata(dir.path().join(&a_id)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o700);
        assert_eq!(j.health().entries, 2, "the draft of {a} was replaced");
        drop(j);
        let o2 = Journal::open(dir.path(), 1 << 30).unwrap();
        let ids: Vec<_> = o2.entries.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, vec![a_id.clone(), b_id.clone()]);
        assert_eq!(o2.entries[0].samples, vec![0.25; 160]);
        assert!(o2.entries[1].draft);
        assert_ne!(o2.journal.next_stem(), a, "stems never repeat across runs");
        o2.journal.retire(&a_id);
        o2.journal.flush();
        assert!(!dir.path().join(&a_id).exists());
    }

    #[test]
    fn a_retire_unlinks_at_once_and_wins_over_a_write_still_queued() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1 << 30).unwrap().journal;
        let a = j.put(&j.next_stem(), false, span(), vec![0.1; 100]);
        j.flush();
        // Gone before the keeper has even seen the retire: no flush needed.
        j.retire(&a);
        assert!(!dir.path().join(&a).exists());
        // Retired before the keeper wrote it (a delivery faster than the disk): never on disk.
        let mut ids = Vec::new();
        for _ in 0..20 {
            let id = j.put(&j.next_stem(), false, span(), vec![0.2; 16_000]);
            j.retire(&id);
            ids.push(id);
        }
        j.flush();
        for id in &ids {
            assert!(!dir.path().join(id).exists(), "{id} came back");
        }
        assert_eq!(j.health().entries, 0);
        drop(j);
        assert!(Journal::open(dir.path(), 1 << 30)
            .unwrap()
            .entries
            .is_empty());
    }

    #[test]
    fn one_daemon_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Journal::open(dir.path(), 1 << 30).unwrap().journal;
        let second = Journal::open(dir.path(), 1 << 30)
            .err()
            .map(|e| e.to_string());
        assert!(second.is_some_and(|e| e.contains("in use")));
        drop(first);
        assert!(Journal::open(dir.path(), 1 << 30).is_ok());
    }

    #[test]
    fn a_torn_entry_is_put_aside_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1 << 30).unwrap().journal;
        let good = j.put(&j.next_stem(), false, span(), vec![0.5; 64]);
        let torn = j.put(&j.next_stem(), false, span(), vec![0.5; 64]);
        j.flush();
        drop(j);
        let p = dir.path().join(&torn);
        let b = fs::read(&p).unwrap();
        fs::write(&p, &b[..b.len() - 7]).unwrap();
        fs::write(dir.path().join("0-0.seg"), b"garbage").unwrap();
        let o = Journal::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(o.entries.len(), 1);
        assert_eq!(o.entries[0].id, good);
        assert_eq!(o.damaged.len(), 2, "{:?}", o.damaged);
        assert!(
            o.damaged.iter().any(|d| d.why.contains("torn")),
            "{:?}",
            o.damaged
        );
        assert!(dir.path().join("damaged").join(&torn).exists());
    }

    #[test]
    fn the_cap_refuses_new_entries_and_says_so_without_deleting() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 700).unwrap().journal;
        let kept = j.put(&j.next_stem(), false, span(), vec![0.0; 100]);
        let refused = j.put(&j.next_stem(), false, span(), vec![0.0; 100]);
        j.flush();
        assert!(dir.path().join(&kept).exists());
        assert!(!dir.path().join(&refused).exists());
        let h = j.health();
        assert_eq!((h.entries, h.not_kept), (1, 1));
        assert!(h.problem.is_some_and(|p| p.contains("full")));
    }
}
