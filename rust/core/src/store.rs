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
//! Every record carries its own length and CRC, so damage costs only the
//! bytes it touched. [`scan`] checks each record: one that is torn (message
//! past the end of the file), not flagged complete, or whose CRC does not
//! match is damaged, and the scan searches byte by byte, from just after
//! the damaged header, for the next valid record header (complete flag
//! set, no flag outside [`KNOWN_FLAGS`], a length of at least 2 that fits
//! in the file, matching CRC: a false match has a chance of about 2^-32)
//! and goes on from there ([`Skipped`]). Damage with no valid record after
//! it is a damaged tail (what a crash while appending leaves).
//!
//! [`Store::open`] then:
//! - truncates a damaged tail in place, as a crash's torn last record
//!   needs (no copy is kept: a torn tail is the normal result of a crash);
//! - when damage was skipped in the middle, first keeps the damaged file
//!   beside the store as `PATH.damaged-<unix seconds>` (a hard link, or a
//!   copy where the file system has none; `-1`, `-2`, ... are appended
//!   rather than overwrite an earlier one), then rewrites the store without
//!   the damaged bytes (and without deleted records) through the
//!   compaction path below. [`OpenReport`] says what was skipped and where
//!   the original is.
//!
//! The records lost are simply absent: nothing of them reaches the graph or
//! the seen-set, so the channels and nodes they described are fetched again
//! like any missing gossip.
//!
//! # Trust
//! Records are loaded without verifying their signatures: the CRC detects
//! damage, not forgery. A store written by someone else is trusted as Core
//! Lightning trusts its own `gossip_store`.
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The version byte lngossip writes: major 0 (top three bits), minor 15,
/// as current Core Lightning stores.
pub const STORE_VERSION: u8 = 0x0f;
/// Record flag: the record is deleted (superseded or pruned).
pub const FLAG_DELETED: u16 = 0x8000;
/// Record flag: the record is complete (Core Lightning's readers skip, and
/// wait for, records without it).
pub const FLAG_COMPLETE: u16 = 0x2000;
/// Every record flag Core Lightning has defined (`common/gossip_store.h`):
/// deleted 0x8000, push / ratelimit 0x4000, complete 0x2000, zombie 0x1000,
/// dying 0x0800. A header with any other bit set is not taken as the next
/// record when resynchronising past damage.
pub const KNOWN_FLAGS: u16 = 0xf800;
/// Bytes of a record header.
pub const HEADER_LEN: usize = 12;
/// Smallest message a resynchronisation takes as a record: its 2-byte type.
pub const MIN_RECORD_MSG_LEN: usize = 2;
/// Damaged ranges an [`OpenReport`] lists one by one (the count and the
/// bytes cover all of them): enough to locate the damage, bounded whatever
/// the file holds.
pub const MAX_REPORTED_SKIPS: usize = 100;
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

/// Core Lightning's `channel_amount` record type (`gossip_store_channel_amount`):
/// the funding amount of the channel announced just before it.
pub const CHANNEL_AMOUNT: u16 = 4101;

/// A `channel_amount` message: type 4101, then `satoshis` (u64).
pub fn channel_amount(sat: u64) -> [u8; 10] {
    let mut m = [0u8; 10];
    m[..2].copy_from_slice(&CHANNEL_AMOUNT.to_be_bytes());
    m[2..].copy_from_slice(&sat.to_be_bytes());
    m
}

/// The satoshis of a `channel_amount` message, `None` for anything else.
pub fn parse_channel_amount(msg: &[u8]) -> Option<u64> {
    match msg {
        [a, b, rest @ ..] if u16::from_be_bytes([*a, *b]) == CHANNEL_AMOUNT => {
            Some(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?))
        }
        _ => None,
    }
}

/// Why a record was found damaged.
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

/// A damaged range that [`scan`] skipped: a valid record follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Offset in the file of the first damaged record's header.
    pub offset: u64,
    /// Bytes skipped, up to the next valid record.
    pub len: u64,
    /// What was wrong with the first record of the range.
    pub damage: Damage,
}

/// What [`scan`] found in a store image.
#[derive(Debug)]
pub struct Scan {
    /// Every intact record, in file order (those after skipped damage too).
    pub records: Vec<Record>,
    /// Where the damaged tail starts (the end of the image when there is
    /// none): the version byte, intact records and skipped ranges before it.
    pub valid_len: u64,
    /// What was wrong with the first record of the damaged tail, if any.
    pub damage: Option<Damage>,
    /// Damaged ranges followed by a valid record, in file order.
    pub skipped: Vec<Skipped>,
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

/// The record whose header is at `p` in `buf`, or what is wrong with it.
fn record_at(buf: &[u8], p: usize) -> Result<Record, Damage> {
    let Some(h) = buf.get(p..p.saturating_add(HEADER_LEN)) else {
        return Err(Damage::TornHeader);
    };
    let flags = u16::from_be_bytes([h[0], h[1]]);
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let timestamp = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    let start = p + HEADER_LEN;
    let Some(msg) = buf.get(start..start + len) else {
        return Err(Damage::TornRecord);
    };
    if flags & FLAG_COMPLETE == 0 {
        return Err(Damage::Incomplete);
    }
    if record_crc(timestamp, msg) != crc {
        return Err(Damage::BadCrc);
    }
    Ok(Record {
        offset: p as u64,
        flags,
        timestamp,
        start,
        end: start + len,
    })
}

/// The first offset after `from` where a valid record starts, taking only
/// headers with known flags and a message of at least
/// [`MIN_RECORD_MSG_LEN`] bytes (the cheap tests first, the CRC last).
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let last = buf.len().checked_sub(HEADER_LEN + MIN_RECORD_MSG_LEN)?;
    (from..=last).find(|&q| {
        let flags = u16::from_be_bytes([buf[q], buf[q + 1]]);
        let len = usize::from(u16::from_be_bytes([buf[q + 2], buf[q + 3]]));
        flags & FLAG_COMPLETE != 0
            && flags & !KNOWN_FLAGS == 0
            && len >= MIN_RECORD_MSG_LEN
            && q + HEADER_LEN + len <= buf.len()
            && record_at(buf, q).is_ok()
    })
}

/// Walk the records of a whole store image `buf` (version byte first).
/// A damaged record is skipped up to the next valid record (see the
/// module's "Damage"); damage with no valid record after it ends the scan
/// as the damaged tail. Never panics.
///
/// # Errors
/// [`StoreError::Version`] when the version byte's major version is not 0.
pub fn scan(buf: &[u8]) -> Result<Scan, StoreError> {
    let Some(&v) = buf.first() else {
        return Ok(Scan {
            records: Vec::new(),
            valid_len: 0,
            damage: None,
            skipped: Vec::new(),
        });
    };
    if v >> 5 != 0 {
        return Err(StoreError::Version(v));
    }
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    let mut p = 1usize;
    let damage = loop {
        if p == buf.len() {
            break None;
        }
        match record_at(buf, p) {
            Ok(r) => {
                p = r.end;
                records.push(r);
            }
            Err(d) => match resync(buf, p + 1) {
                Some(q) => {
                    skipped.push(Skipped {
                        offset: p as u64,
                        len: (q - p) as u64,
                        damage: d,
                    });
                    p = q;
                }
                None => break Some(d),
            },
        }
    };
    Ok(Scan {
        records,
        valid_len: p as u64,
        damage,
        skipped,
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
    /// Damaged ranges skipped in the middle of the file (each followed by a
    /// valid record).
    pub skipped_regions: u64,
    /// Bytes of those ranges.
    pub skipped_bytes: u64,
    /// The first [`MAX_REPORTED_SKIPS`] of those ranges, offsets in the
    /// damaged original.
    pub skipped: Vec<Skipped>,
    /// Where the damaged original was kept before the store was rewritten
    /// without the skipped ranges.
    pub kept_original: Option<PathBuf>,
    /// Every signature was verified on open
    /// (`Pipeline::open_store_verified`).
    pub verified: bool,
    /// Records not loaded because a signature failed (or, for a
    /// `channel_update`, because its channel had no valid announcement);
    /// flagged deleted. Only counted when `verified`.
    pub rejected_records: u64,
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
    /// Where the file ended when a compaction began (its image holds the
    /// live records before that point); `None` when none is in progress.
    compacting: Option<u64>,
}

/// The image of a compaction, written to `PATH.compact` and synced by
/// [`write_compaction`] while the pipeline goes on (no lock held).
#[derive(Debug)]
pub struct CompactionFile {
    file: File,
    len: u64,
}

/// Phase 2 of a compaction (see [`Store::begin_compaction`]): write
/// `image` to `tmp`, sync it, and lock it. Touches no [`Store`], so it runs
/// without the pipeline's lock.
///
/// # Errors
/// [`StoreError::Io`] when the file cannot be written or synced;
/// [`StoreError::Locked`] when another process holds it.
pub fn write_compaction(tmp: &Path, image: &[u8]) -> Result<CompactionFile, StoreError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))?;
    f.write_all(image)
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    f.try_lock().map_err(|_| StoreError::Locked(tmp.into()))?;
    Ok(CompactionFile {
        file: f,
        len: image.len() as u64,
    })
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

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn compaction_path(path: &Path) -> PathBuf {
    with_suffix(path, ".compact")
}

/// Keep the damaged store at `path` (whose bytes are `image`) as
/// `PATH.damaged-<unix seconds>[-N]`: a hard link to the same inode, or a
/// copy of `image` where hard links fail; never replaces an existing file.
fn keep_original(path: &Path, image: &[u8]) -> Result<PathBuf, StoreError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for n in 0..1000u32 {
        let dst = match n {
            0 => with_suffix(path, &format!(".damaged-{secs}")),
            n => with_suffix(path, &format!(".damaged-{secs}-{n}")),
        };
        let linked = match fs::hard_link(path, &dst) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => false,
        };
        if !linked {
            let mut f = match OpenOptions::new().write(true).create_new(true).open(&dst) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(StoreError::Io(format!("creating {}", dst.display()), e));
                }
            };
            f.write_all(image)
                .and_then(|()| f.sync_all())
                .map_err(io_err(format!("writing {}", dst.display())))?;
        }
        sync_dir(path)?;
        return Ok(dst);
    }
    Err(StoreError::Io(
        format!("keeping a copy of damaged {}", path.display()),
        io::Error::from(io::ErrorKind::AlreadyExists),
    ))
}

impl Store {
    /// Open (or create) the store at `path`, lock it against other
    /// processes, skip damaged records (keeping the damaged original and
    /// rewriting the store without them) or drop a damaged tail (see the
    /// module's "Damage"), and return the image as it now is on disk with
    /// its records for the caller to rebuild its state from.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be created, read, truncated,
    /// locked, kept or rewritten; [`StoreError::Version`] for a store of
    /// another major version; [`StoreError::Locked`] when another process
    /// has it open.
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
        let mut scan = scan(&buf)?;
        report.records = scan.records.len() as u64;
        report.skipped_regions = scan.skipped.len() as u64;
        report.skipped_bytes = scan.skipped.iter().map(|s| s.len).sum();
        report.skipped = scan
            .skipped
            .iter()
            .take(MAX_REPORTED_SKIPS)
            .copied()
            .collect();
        if scan.valid_len < buf.len() as u64 {
            report.truncated_bytes = buf.len() as u64 - scan.valid_len;
            report.damage = scan.damage;
        }
        let mut repaired = None;
        if !scan.skipped.is_empty() {
            report.kept_original = Some(keep_original(path, &buf)?);
            // the intact live records, as a compaction writes them
            let mut image = vec![buf[0]];
            for r in scan.records.iter().filter(|r| r.flags & FLAG_DELETED == 0) {
                image.extend_from_slice(&buf[r.offset as usize..r.end]);
            }
            scan = self::scan(&image)?;
            repaired = Some(image);
        } else if report.truncated_bytes > 0 {
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
        let mut store = Store {
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
            compacting: None,
        };
        if let Some(image) = repaired {
            store.swap_in(&image)?;
            buf = image;
        }
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

    /// Whether deleted records pass half the file (and no compaction is
    /// in progress).
    pub fn wants_compaction(&self) -> bool {
        self.compacting.is_none() && self.dead_bytes > 0 && self.dead_bytes * 2 > self.len()
    }

    /// Whether a compaction is in progress.
    pub fn compacting(&self) -> bool {
        self.compacting.is_some()
    }

    /// Phase 1 of a compaction that does not stall the pipeline: write what
    /// is pending and note where the file ends now; the caller builds the
    /// image of the live records (all before that point), has it written by
    /// [`write_compaction`] to the returned path without holding its lock,
    /// and ends with [`Store::finish_compaction`] (or
    /// [`Store::abort_compaction`]). Records appended meanwhile go on to
    /// this file and are carried over at the end.
    ///
    /// Returns `None` when a compaction is already in progress.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the pending records cannot be written.
    pub fn begin_compaction(&mut self) -> Result<Option<(u64, PathBuf)>, StoreError> {
        if self.compacting.is_some() {
            return Ok(None);
        }
        self.flush(false)?;
        self.compacting = Some(self.len);
        Ok(Some((self.len, compaction_path(&self.path))))
    }

    /// Give up a compaction begun by [`Store::begin_compaction`] (its image
    /// could not be written): remove the file, go on with this one.
    pub fn abort_compaction(&mut self) {
        if self.compacting.take().is_some() {
            let _ = fs::remove_file(compaction_path(&self.path));
        }
    }

    /// Phase 3: carry the records appended since phase 1 (every byte from
    /// where the file ended then) over to `new` after its image, flag
    /// `deleted` (offsets in `new` of image records superseded meanwhile,
    /// with their message lengths), sync, rename it over the store, and go
    /// on appending to it. A record at offset `o` of this file past where
    /// it ended at phase 1 is at `new.len + o - end` in the new one.
    ///
    /// # Errors
    /// [`StoreError::Io`] on any failure; the compaction is abandoned and
    /// the old store stays in place and in use.
    pub fn finish_compaction(
        &mut self,
        new: CompactionFile,
        deleted: &[(u64, usize)],
    ) -> Result<(), StoreError> {
        let Some(end) = self.compacting else {
            return Err(StoreError::Io(
                format!(
                    "finishing a compaction of {} never begun",
                    self.path.display()
                ),
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        };
        let r = self.carry_over(new, end, deleted);
        self.compacting = None;
        if r.is_err() {
            let _ = fs::remove_file(compaction_path(&self.path));
        }
        r
    }

    fn carry_over(
        &mut self,
        new: CompactionFile,
        end: u64,
        deleted: &[(u64, usize)],
    ) -> Result<(), StoreError> {
        self.flush(false)?;
        let tmp = compaction_path(&self.path);
        let mut tail = vec![0u8; (self.len - end) as usize];
        self.file
            .read_exact_at(&mut tail, end)
            .map_err(io_err(format!("reading {}", self.path.display())))?;
        // deleted records among those carried over stay dead bytes
        let mut dead = 0u64;
        let mut p = 0usize;
        while let Some(h) = tail.get(p..p + HEADER_LEN) {
            let flags = u16::from_be_bytes([h[0], h[1]]);
            let len = u16::from_be_bytes([h[2], h[3]]) as usize;
            if flags & FLAG_DELETED != 0 {
                dead += (HEADER_LEN + len) as u64;
            }
            p += HEADER_LEN + len;
        }
        let write = |buf: &[u8], at: u64| {
            new.file
                .write_all_at(buf, at)
                .map_err(io_err(format!("writing {}", tmp.display())))
        };
        write(&tail, new.len)?;
        let flag = (FLAG_COMPLETE | FLAG_DELETED).to_be_bytes();
        for &(off, len) in deleted {
            write(&flag, off)?;
            dead += (HEADER_LEN + len) as u64;
        }
        new.file
            .sync_all()
            .map_err(io_err(format!("syncing {}", tmp.display())))?;
        let len = new.len + tail.len() as u64;
        self.install(new.file, len, dead)?;
        self.stats.compactions += 1;
        Ok(())
    }

    /// Rename the synced `PATH.compact` (`file`, `len` bytes, `dead` of them
    /// deleted records) over the store and go on appending to it.
    fn install(&mut self, file: File, len: u64, dead: u64) -> Result<(), StoreError> {
        let tmp = compaction_path(&self.path);
        fs::rename(&tmp, &self.path).map_err(io_err(format!(
            "renaming {} to {}",
            tmp.display(),
            self.path.display()
        )))?;
        sync_dir(&self.path)?;
        self.file = file;
        self.len = len;
        self.dead_bytes = dead;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Replace the file with `image` (a version byte and the live records,
    /// built by the caller): write `PATH.compact`, sync it, rename it over
    /// the store, sync the directory, and go on appending to the new file.
    ///
    /// # Errors
    /// [`StoreError::Io`] on any failure; the old store is then still in
    /// place and in use.
    pub fn replace_with(&mut self, image: &[u8]) -> Result<(), StoreError> {
        self.swap_in(image)?;
        self.stats.compactions += 1;
        Ok(())
    }

    /// The atomic replacement behind [`Store::replace_with`] (compaction)
    /// and the repair of a damaged store on open.
    fn swap_in(&mut self, image: &[u8]) -> Result<(), StoreError> {
        self.flush(true)?;
        let new = write_compaction(&compaction_path(&self.path), image)?;
        self.install(new.file, new.len, 0)
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
            assert!(s.skipped.is_empty());
        }
        let mut bad = img.clone();
        bad[whole - 1] ^= 1;
        let s = scan(&bad).unwrap();
        assert_eq!((s.records.len(), s.damage), (1, Some(Damage::BadCrc)));
        assert!(s.skipped.is_empty());
        assert!(matches!(scan(&[0x20]), Err(StoreError::Version(0x20))));
    }

    /// A store image of `n` records of varied lengths (a gossip type first)
    /// and the offset of each record's header.
    fn image(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut img = vec![STORE_VERSION];
        let mut offs = Vec::new();
        for i in 0..n {
            offs.push(img.len());
            let mut msg = vec![0x01, 0x02];
            msg.extend((0..(40 + i * 37 % 300)).map(|j| (i * 7 + j) as u8));
            let flags = if i % 5 == 4 { FLAG_DELETED } else { 0 };
            encode_record(&mut img, flags, 1_700_000_000 + i as u32, &msg);
        }
        (img, offs)
    }

    /// The records `scan` kept, as offsets into `img`.
    fn kept(img: &[u8]) -> (Vec<usize>, Scan) {
        let s = scan(img).unwrap();
        (s.records.iter().map(|r| r.offset as usize).collect(), s)
    }

    #[test]
    fn damage_in_the_middle_costs_only_the_damaged_record() {
        let (img, offs) = image(21);
        let m = 10;
        let (at, next) = (offs[m], offs[m + 1]);
        let others: Vec<usize> = offs.iter().copied().filter(|&o| o != at).collect();
        let shapes: Vec<(&str, Vec<u8>, Damage)> = vec![
            (
                "bit flipped in the message",
                {
                    let mut b = img.clone();
                    b[at + HEADER_LEN + 20] ^= 0x10;
                    b
                },
                Damage::BadCrc,
            ),
            (
                "bit flipped in the CRC",
                {
                    let mut b = img.clone();
                    b[at + 5] ^= 0x01;
                    b
                },
                Damage::BadCrc,
            ),
            (
                "length one shorter",
                {
                    let mut b = img.clone();
                    b[at + 3] = b[at + 3].wrapping_sub(1);
                    b
                },
                Damage::BadCrc,
            ),
            (
                "length past the end of the file",
                {
                    let mut b = img.clone();
                    b[at + 2] = 0xff;
                    b
                },
                Damage::TornRecord,
            ),
            (
                "complete flag cleared",
                {
                    let mut b = img.clone();
                    b[at] &= !0x20;
                    b
                },
                Damage::Incomplete,
            ),
        ];
        for (what, bad, damage) in shapes {
            let (got, s) = kept(&bad);
            assert_eq!(got, others, "{what}");
            assert_eq!(s.damage, None, "{what}");
            assert_eq!(s.valid_len, bad.len() as u64, "{what}");
            let want = Skipped {
                offset: at as u64,
                len: (next - at) as u64,
                damage,
            };
            assert_eq!(s.skipped, vec![want], "{what}");
        }
    }

    #[test]
    fn zeroed_and_removed_ranges_are_skipped_up_to_the_next_record() {
        let (img, offs) = image(21);
        // zero 600 bytes from the middle of record 8: records 8.. up to the
        // first one starting after the range are lost
        let (lo, hi) = (offs[8] + 30, offs[8] + 630);
        let mut zeroed = img.clone();
        zeroed[lo..hi].fill(0);
        let first_after = *offs.iter().find(|&&o| o >= hi).unwrap();
        let (got, s) = kept(&zeroed);
        let want: Vec<usize> = offs
            .iter()
            .copied()
            .filter(|&o| o < offs[8] || o >= hi)
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(
            (s.skipped[0].offset, s.skipped[0].len),
            (offs[8] as u64, (first_after - offs[8]) as u64)
        );
        // 100 bytes removed from the middle of record 12
        let cut = offs[12] + 50;
        let mut removed = img[..cut].to_vec();
        removed.extend_from_slice(&img[cut + 100..]);
        let (got, s) = kept(&removed);
        let lost: Vec<usize> = offs
            .iter()
            .copied()
            .filter(|&o| o >= offs[12] && o < cut + 100)
            .collect();
        assert_eq!(got.len(), offs.len() - lost.len());
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(s.skipped[0].offset, offs[12] as u64);
        assert_eq!(s.damage, None);
    }

    #[test]
    fn a_damaged_tail_is_still_the_tail() {
        let (img, offs) = image(8);
        let last = *offs.last().unwrap();
        let mut bad = img.clone();
        bad[last + HEADER_LEN + 3] ^= 0x80;
        let (got, s) = kept(&bad);
        assert_eq!(got, offs[..offs.len() - 1]);
        assert!(s.skipped.is_empty());
        assert_eq!((s.valid_len, s.damage), (last as u64, Some(Damage::BadCrc)));
        // garbage after the last record
        let mut tail = img.clone();
        tail.extend_from_slice(&[0x20, 0x00, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let (got, s) = kept(&tail);
        assert_eq!(got, offs);
        assert!(s.skipped.is_empty());
        assert_eq!(s.valid_len, img.len() as u64);
        assert_eq!(s.damage, Some(Damage::TornRecord));
    }

    #[test]
    fn scan_of_arbitrary_bytes_never_panics_and_stays_inside() {
        let (img, _) = image(30);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..400 {
            let mut b = if round % 2 == 0 {
                img.clone()
            } else {
                (0..(next() % 3000) as usize)
                    .map(|_| next() as u8)
                    .collect()
            };
            if b.is_empty() {
                continue;
            }
            for _ in 0..(next() % 8) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            b[0] = STORE_VERSION;
            let s = scan(&b).unwrap();
            let mut p = 1u64;
            let (mut ri, mut si) = (0, 0);
            // records and skipped ranges tile the image up to valid_len
            while p < s.valid_len {
                if let Some(r) = s.records.get(ri).filter(|r| r.offset == p) {
                    assert!(r.start <= r.end && r.end <= b.len());
                    p = r.end as u64;
                    ri += 1;
                } else {
                    let k = s.skipped[si];
                    assert_eq!(k.offset, p);
                    assert!(k.len > 0);
                    p += k.len;
                    si += 1;
                }
            }
            assert_eq!((p, ri, si), (s.valid_len, s.records.len(), s.skipped.len()));
            assert!(s.valid_len as usize <= b.len());
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lngossip-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        for e in fs::read_dir(&dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(name) {
                let _ = fs::remove_file(e.path());
            }
        }
        p
    }

    #[test]
    fn open_keeps_the_damaged_original_and_rewrites_without_the_damage() {
        let (img, offs) = image(21);
        let path = temp("mid.gs");
        let mut bad = img.clone();
        bad[offs[10] + HEADER_LEN + 9] ^= 0x04;
        // and a torn tail
        bad.extend_from_slice(&img[offs[3]..offs[3] + 20]);
        fs::write(&path, &bad).unwrap();
        let (st, buf, s, rep) = Store::open(&path).unwrap();
        assert_eq!(rep.skipped_regions, 1);
        assert_eq!(rep.skipped_bytes, (offs[11] - offs[10]) as u64);
        assert_eq!(rep.skipped[0].offset, offs[10] as u64);
        assert_eq!(rep.truncated_bytes, 20);
        let kept = rep.kept_original.clone().unwrap();
        assert!(kept.to_string_lossy().contains("mid.gs.damaged-"));
        assert_eq!(fs::read(&kept).unwrap(), bad);
        // the store now holds the intact live records and nothing else
        let live: Vec<&[u8]> = offs
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 10 && i % 5 != 4)
            .map(|(i, &o)| &img[o..offs.get(i + 1).copied().unwrap_or(img.len())])
            .collect();
        let mut want = vec![STORE_VERSION];
        for r in &live {
            want.extend_from_slice(r);
        }
        assert_eq!(buf, want);
        assert_eq!(s.records.len(), live.len());
        assert!(s.skipped.is_empty() && s.damage.is_none());
        assert_eq!(st.len(), want.len() as u64);
        assert_eq!(st.stats().compactions, 0);
        drop(st);
        assert_eq!(fs::read(&path).unwrap(), want);
        // opened again: clean, nothing kept a second time
        let (_st, _, _, rep) = Store::open(&path).unwrap();
        assert_eq!((rep.skipped_regions, rep.truncated_bytes), (0, 0));
        assert!(rep.kept_original.is_none());
        // damage again: an earlier kept original is never replaced
        drop(_st);
        fs::write(&path, &bad).unwrap();
        let (_st, _, _, rep2) = Store::open(&path).unwrap();
        let kept2 = rep2.kept_original.unwrap();
        assert_ne!(kept2, kept);
        assert!(kept.exists() && kept2.exists());
    }
}
