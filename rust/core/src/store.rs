//! The durable store: accepted gossip appended to a file in Core Lightning's
//! `gossip_store` format, so Core Lightning's own readers (pyln-client's
//! `Gossmap`, `devtools/dump-gossipstore`) open it.
//!
//! Layout (Core Lightning `common/gossip_store.h`): one version byte
//! ([`STORE_VERSION`]: major 0, minor 15), then records of a 12-byte header
//! and the raw message:
//!
//! ```text
//! flags      be16  0x8000 deleted, 0x2000 complete (written on every record)
//! len        be16  message length
//! crc        be32  CRC-32C of the message, seeded with `timestamp`
//! timestamp  be32  the message's `timestamp`; for a channel_announcement
//!                  the time it was accepted (seconds since the epoch)
//! ```
//!
//! No `channel_amount` (4101) record follows an announcement: without a
//! funding lookup the capacity is not known (readers leave it unset).
//!
//! # Durability policy
//! Each batch of accepted messages is written with one `write` when the
//! `process` call that accepted them ends, before it returns: a killed
//! process loses nothing that a returned `process` accepted (the bytes are
//! in the kernel). `fdatasync` runs at most every
//! [`DEFAULT_SYNC_INTERVAL_MS`] ms (and on [`Store::sync`] / drop), so an
//! operating-system crash or power loss loses at most that many
//! milliseconds of records. A superseded record is flagged deleted in place
//! after its replacement is written.
//!
//! # Damage
//! [`Store::open`] walks every record; at the first one that is torn
//! (header or message past the end of the file), not flagged complete, or
//! whose CRC does not match, it truncates the file there and reports the
//! bytes dropped ([`OpenReport`]). Nothing before the damage is lost.
//!
//! # Compaction
//! When dead (deleted) bytes pass half the file, [`Store::compact`] writes
//! the live records to `PATH.compact`, syncs it, renames it over `PATH`
//! (atomic on POSIX) and syncs the directory: a crash at any point leaves
//! the old store or the new one, never neither. A leftover `PATH.compact`
//! is removed on open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The version byte lngossip writes: major 0 (top three bits), minor 15,
/// as current Core Lightning stores.
pub const STORE_VERSION: u8 = 0x0f;
/// Record flag: the record is deleted (superseded or pruned).
pub const FLAG_DELETED: u16 = 0x8000;
/// Record flag: the record is complete (Core Lightning's readers skip, and
/// wait for, records without it).
pub const FLAG_COMPLETE: u16 = 0x2000;
/// Bytes of a record header.
pub const HEADER_LEN: usize = 12;
/// Default most milliseconds between `fdatasync`s of a store being written.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1000;

/// CRC of a record: CRC-32C of `msg` seeded with `timestamp` (Core Lightning).
pub fn record_crc(timestamp: u32, msg: &[u8]) -> u32 {
    crc32c::crc32c_append(timestamp, msg)
}

/// Append one complete record of `msg` (`flags` besides complete) to `out`.
pub fn encode_record(out: &mut Vec<u8>, extra_flags: u16, timestamp: u32, msg: &[u8]) {
    // Messages are at most 65535 bytes (BOLT #1); the pipeline never accepts longer.
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&(FLAG_COMPLETE | extra_flags).to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&record_crc(timestamp, msg).to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&msg[..usize::from(len)]);
}

/// Why an open stopped reading records before the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Fewer than 12 bytes of header left.
    TornHeader,
    /// The message runs past the end of the file.
    TornRecord,
    /// The complete flag (0x2000) is not set.
    Incomplete,
    /// The CRC does not match the message and timestamp.
    BadCrc,
}

impl Damage {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Damage::TornHeader => "torn_header",
            Damage::TornRecord => "torn_record",
            Damage::Incomplete => "incomplete",
            Damage::BadCrc => "bad_crc",
        }
    }
}

/// One record found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset of its header in the file.
    pub offset: u64,
    /// Header flags.
    pub flags: u16,
    /// Header timestamp.
    pub timestamp: u32,
    /// Where the message lies in the scanned buffer.
    pub start: usize,
    /// End of the message in the scanned buffer.
    pub end: usize,
}

/// What [`scan`] found in a store image.
#[derive(Debug)]
pub struct Scan {
    /// Every intact record, in file order.
    pub records: Vec<Record>,
    /// Length of the intact prefix (version byte and intact records).
    pub valid_len: u64,
    /// Why the scan stopped early, if it did.
    pub damage: Option<Damage>,
}

/// Errors of the store.
#[derive(Debug)]
pub enum StoreError {
    /// An I/O error, with what was being done.
    Io(String, io::Error),
    /// The version byte is not one this module reads (major version 0).
    Version(u8),
    /// Another process holds the store open.
    Locked(PathBuf),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(what, e) => write!(f, "{what}: {e}"),
            StoreError::Version(v) => write!(
                f,
                "gossip_store version byte 0x{v:02x}: only major version 0 is read"
            ),
            StoreError::Locked(p) => {
                write!(f, "{} is in use by another process", p.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::Io(what, e)
}

/// Walk the records of a whole store image `buf` (version byte first).
/// Never panics; stops at the first damaged record.
///
/// # Errors
/// [`StoreError::Version`] when the version byte's major version is not 0.
pub fn scan(buf: &[u8]) -> Result<Scan, StoreError> {
    let Some(&v) = buf.first() else {
        return Ok(Scan {
            records: Vec::new(),
            valid_len: 0,
            damage: None,
        });
    };
    if v >> 5 != 0 {
        return Err(StoreError::Version(v));
    }
    let mut records = Vec::new();
    let mut p = 1usize;
    let damage = loop {
        if p == buf.len() {
            break None;
        }
        let Some(h) = buf.get(p..p + HEADER_LEN) else {
            break Some(Damage::TornHeader);
        };
        let flags = u16::from_be_bytes([h[0], h[1]]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let timestamp = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let start = p + HEADER_LEN;
        let Some(msg) = buf.get(start..start + len) else {
            break Some(Damage::TornRecord);
        };
        if flags & FLAG_COMPLETE == 0 {
            break Some(Damage::Incomplete);
        }
        if record_crc(timestamp, msg) != crc {
            break Some(Damage::BadCrc);
        }
        records.push(Record {
            offset: p as u64,
            flags,
            timestamp,
            start,
            end: start + len,
        });
        p = start + len;
    };
    Ok(Scan {
        records,
        valid_len: p as u64,
        damage,
    })
}

/// What opening a store found and did.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// The file did not exist (or was empty) and was created.
    pub created: bool,
    /// Intact records read (deleted ones included).
    pub records: u64,
    /// Bytes dropped from a damaged tail.
    pub truncated_bytes: u64,
    /// Why the tail was dropped.
    pub damage: Option<Damage>,
    /// A leftover compaction file was removed.
    pub removed_compaction_file: bool,
}

/// Counters of a store.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    /// Records appended since open.
    pub records_written: u64,
    /// Records flagged deleted since open.
    pub records_deleted: u64,
    /// Compactions run since open.
    pub compactions: u64,
    /// `fdatasync` calls since open.
    pub syncs: u64,
}

/// An open store, appended to by the pipeline.
pub struct Store {
    path: PathBuf,
    file: File,
    /// File length (every byte written).
    len: u64,
    /// Bytes of deleted records (headers included).
    dead_bytes: u64,
    /// Records appended since the last write, and deletions to apply after it.
    pending: Vec<u8>,
    pending_deletes: Vec<u64>,
    last_sync: Instant,
    dirty: bool,
    sync_interval: Duration,
    stats: StoreStats,
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing directory {}", dir.display())))
}

fn compaction_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".compact");
    PathBuf::from(s)
}

impl Store {
    /// Open (or create) the store at `path`, lock it against other
    /// processes, drop a damaged tail, and return the whole intact image
    /// with its records for the caller to rebuild its state from.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be created, read, truncated
    /// or locked; [`StoreError::Version`] for a store of another major
    /// version; [`StoreError::Locked`] when another process has it open.
    pub fn open(path: &Path) -> Result<(Store, Vec<u8>, Scan, OpenReport), StoreError> {
        let mut report = OpenReport::default();
        let tmp = compaction_path(path);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_err(format!("removing {}", tmp.display())))?;
            report.removed_compaction_file = true;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(path.into())),
            Err(fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io(format!("locking {}", path.display()), e))
            }
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if buf.is_empty() {
            file.write_all(&[STORE_VERSION])
                .map_err(io_err(format!("writing {}", path.display())))?;
            file.sync_all()
                .map_err(io_err(format!("syncing {}", path.display())))?;
            sync_dir(path)?;
            buf.push(STORE_VERSION);
            report.created = true;
        }
        let scan = scan(&buf)?;
        report.records = scan.records.len() as u64;
        if scan.valid_len < buf.len() as u64 {
            report.truncated_bytes = buf.len() as u64 - scan.valid_len;
            report.damage = scan.damage;
            file.set_len(scan.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(io_err(format!("truncating {}", path.display())))?;
            buf.truncate(scan.valid_len as usize);
        }
        let dead_bytes = scan
            .records
            .iter()
            .filter(|r| r.flags & FLAG_DELETED != 0)
            .map(|r| (r.end - r.start + HEADER_LEN) as u64)
            .sum();
        let store = Store {
            path: path.into(),
            file,
            len: scan.valid_len,
            dead_bytes,
            pending: Vec::new(),
            pending_deletes: Vec::new(),
            last_sync: Instant::now(),
            dirty: false,
            sync_interval: Duration::from_millis(DEFAULT_SYNC_INTERVAL_MS),
            stats: StoreStats::default(),
        };
        Ok((store, buf, scan, report))
    }

    /// Set the most time between `fdatasync`s (0: after every write).
    pub fn set_sync_interval(&mut self, interval: Duration) {
        self.sync_interval = interval;
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File length in bytes, including what is pending.
    pub fn len(&self) -> u64 {
        self.len + self.pending.len() as u64
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Bytes of deleted records.
    pub fn dead_bytes(&self) -> u64 {
        self.dead_bytes
    }

    /// Counters since open.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Queue a record of `msg`; returns its offset.
    pub fn append(&mut self, timestamp: u32, msg: &[u8]) -> u64 {
        let off = self.len();
        encode_record(&mut self.pending, 0, timestamp, msg);
        self.stats.records_written += 1;
        off
    }

    /// Flag the record at `offset` (of a message of `len` bytes) deleted:
    /// in the pending buffer at once, in the file after the next write.
    pub fn delete(&mut self, offset: u64, len: usize) {
        self.dead_bytes += (len + HEADER_LEN) as u64;
        self.stats.records_deleted += 1;
        if offset >= self.len {
            let i = (offset - self.len) as usize;
            if let Some(f) = self.pending.get_mut(i..i + 2) {
                f.copy_from_slice(&(FLAG_COMPLETE | FLAG_DELETED).to_be_bytes());
            }
        } else {
            self.pending_deletes.push(offset);
        }
    }

    /// Write what is pending: the new records with one `write`, then the
    /// deleted flags; `fdatasync` when the sync interval has passed (or
    /// `force`).
    ///
    /// # Errors
    /// [`StoreError::Io`] when a write or sync fails (the pending records
    /// stay pending and are retried by the next flush).
    pub fn flush(&mut self, force: bool) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            self.file
                .write_all_at(&self.pending, self.len)
                .map_err(io_err(format!("appending to {}", self.path.display())))?;
            self.len += self.pending.len() as u64;
            self.pending.clear();
            self.dirty = true;
        }
        let flag = (FLAG_COMPLETE | FLAG_DELETED).to_be_bytes();
        for off in self.pending_deletes.drain(..) {
            self.file.write_all_at(&flag, off).map_err(io_err(format!(
                "flagging a record in {}",
                self.path.display()
            )))?;
            self.dirty = true;
        }
        if self.dirty && (force || self.last_sync.elapsed() >= self.sync_interval) {
            self.file
                .sync_data()
                .map_err(io_err(format!("syncing {}", self.path.display())))?;
            self.stats.syncs += 1;
            self.dirty = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Whether deleted records pass half the file.
    pub fn wants_compaction(&self) -> bool {
        self.dead_bytes > 0 && self.dead_bytes * 2 > self.len()
    }

    /// Replace the file with `image` (a version byte and the live records,
    /// built by the caller): write `PATH.compact`, sync it, rename it over
    /// the store, sync the directory, and go on appending to the new file.
    ///
    /// # Errors
    /// [`StoreError::Io`] on any failure; the old store is then still in
    /// place and in use.
    pub fn replace_with(&mut self, image: &[u8]) -> Result<(), StoreError> {
        self.flush(true)?;
        let tmp = compaction_path(&self.path);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(format!("creating {}", tmp.display())))?;
        f.write_all(image)
            .and_then(|()| f.sync_all())
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        f.try_lock().map_err(|_| StoreError::Locked(tmp.clone()))?;
        fs::rename(&tmp, &self.path).map_err(io_err(format!(
            "renaming {} to {}",
            tmp.display(),
            self.path.display()
        )))?;
        sync_dir(&self.path)?;
        self.file = f;
        self.len = image.len() as u64;
        self.dead_bytes = 0;
        self.stats.compactions += 1;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.flush(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_stops_at_damage() {
        let mut img = vec![STORE_VERSION];
        encode_record(&mut img, 0, 7, b"\x01\x02hello");
        encode_record(&mut img, FLAG_DELETED, 8, b"\x01\x02bye");
        let whole = img.len();
        let s = scan(&img).unwrap();
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.valid_len, whole as u64);
        assert_eq!(s.damage, None);
        for cut in 1..whole {
            let s = scan(&img[..cut]).unwrap();
            assert!(s.valid_len <= cut as u64);
            assert_eq!(s.damage.is_some(), s.valid_len != cut as u64);
        }
        let mut bad = img.clone();
        bad[whole - 1] ^= 1;
        let s = scan(&bad).unwrap();
        assert_eq!((s.records.len(), s.damage), (1, Some(Damage::BadCrc)));
        assert!(matches!(scan(&[0x20]), Err(StoreError::Version(0x20))));
    }
}
