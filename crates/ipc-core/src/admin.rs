//! Segment administration: inspect any ipc-core segment, list those in
//! /dev/shm with their state, and find the orphaned ones.
//!
//! Listing never follows a symlink and never blocks on a planted FIFO or
//! device: each entry is opened by this module with `O_NONBLOCK |
//! O_NOFOLLOW`, checked with `fstat` to be a regular file, and only then
//! handed to the library's open. An entry that cannot be inspected (out of
//! descriptors, out of memory, an I/O error) is listed as
//! [`SegmentState::Unreadable`], never mistaken for corrupt or absent.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Duration;

use crate::error::{OpenError, SegmentError};
use crate::layout::MAGIC;
use crate::queue::{Queue, Status};
use crate::segment::{is_block_name, validate_any_name, Segment, SHM_DIR};

/// What a listed segment looks like from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentState {
    /// At least one live process is attached.
    Live,
    /// Nobody ever attached (freshly created, waiting for a pipeline).
    Idle,
    /// Processes attached once, none of them lives now.
    Orphaned,
    /// Carries our magic number but cannot be opened.
    Corrupt(String),
    /// Left without its magic number by a creator that died while setting
    /// it up (its initialization lock is free and it is over a second
    /// old); nothing was ever sent through it.
    HalfCreated,
    /// Could not be inspected (the cause: out of descriptors, I/O error,
    /// permission to map it refused, ...): it may or may not be ours.
    Unreadable(String),
}

impl SegmentState {
    /// One word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            SegmentState::Live => "live",
            SegmentState::Idle => "idle",
            SegmentState::Orphaned => "orphaned",
            SegmentState::Corrupt(_) => "corrupt",
            SegmentState::HalfCreated => "half-created",
            SegmentState::Unreadable(_) => "unreadable",
        }
    }
}

/// A segment found in /dev/shm.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: SegmentState,
    /// Its status, when it could be opened.
    pub status: Option<Status>,
}

/// Opens any ipc-core segment (buffer or mailbox) and reports its status,
/// reaping dead peers first.
pub fn inspect(name: &str) -> Result<Status, OpenError> {
    Ok(Queue::open(name, None, Duration::from_millis(200))?.status())
}

/// Removes a segment's name and the names of its chained blocks
/// (`NAME.b1`, `NAME.b2`, ... of an unbounded queue; names of that form are
/// reserved for blocks, so no other segment can match). Blocks outside the
/// queue's current span, left by a sender killed while adding one, go too.
///
/// Processes still streaming through the queue go on renaming its blocks
/// (a drained block becomes a spare, a spare the next block): a block
/// renamed during a scan may be missed, so the scan is repeated while it
/// finds something (a few times at most; handles that go on streaming
/// after the removal keep making blocks under these names, see README).
pub fn unlink_with_chain(name: &str) -> Result<(), SegmentError> {
    Segment::unlink(name)?;
    for _ in 0..4 {
        let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
            return Ok(());
        };
        let mut removed = false;
        for entry in dir.flatten() {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            if is_block_name(file)
                && file
                    .rsplit_once(".b")
                    .is_some_and(|(queue, _)| queue == name)
            {
                removed |= Segment::unlink(file).is_ok();
            }
        }
        if !removed {
            break;
        }
    }
    Ok(())
}

/// The state a status implies.
pub fn state_of(status: &Status) -> SegmentState {
    if status.peers.iter().any(|p| p.alive) {
        SegmentState::Live
    } else if status.producers_total + status.consumers_total == 0 {
        SegmentState::Idle
    } else {
        SegmentState::Orphaned
    }
}

/// What a first look at a /dev/shm entry found, before the library opens
/// it.
enum Probe {
    /// Not a regular file, a symlink, not ours, or gone: not listed.
    Skip,
    /// A regular file with our magic number.
    Ours,
    /// A regular file a creator left unpublished.
    HalfCreated,
    /// Could not be looked at.
    Unreadable(String),
}

/// Bytes of the header looked at to recognise a half-created segment:
/// magic (8), version (4), six u32 geometry fields, then total size (8).
const PROBE_LEN: usize = 48;

/// Opens `name` without following a symlink and without blocking (a FIFO
/// or device planted in /dev/shm would block an ordinary open), checks it
/// is a regular file, and reads the start of its header.
fn probe(name: &str) -> Probe {
    let path = std::path::Path::new(SHM_DIR).join(name);
    // lstat needs no descriptor, so non-files are skipped even when
    // descriptors run out.
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return Probe::Skip,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Skip,
        Err(e) => return Probe::Unreadable(e.to_string()),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) => {
            return match e.raw_os_error() {
                // Gone, or replaced by a symlink since the lstat.
                Some(libc::ENOENT | libc::ELOOP) => Probe::Skip,
                // Another user's file: not ours to inspect or clean.
                Some(libc::EACCES | libc::EPERM) => Probe::Skip,
                _ => Probe::Unreadable(e.to_string()),
            };
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Probe::Unreadable(e.to_string()),
    };
    if !meta.file_type().is_file() {
        return Probe::Skip;
    }
    let len = meta.size();
    let mut head = [0u8; PROBE_LEN];
    let got = match (&mut file).take(PROBE_LEN as u64).read(&mut head) {
        Ok(n) => n,
        Err(e) => return Probe::Unreadable(e.to_string()),
    };
    if got >= 8 && u64::from_le_bytes(head[..8].try_into().unwrap_or_default()) == MAGIC {
        return Probe::Ours;
    }
    drop(file);
    if looks_unpublished(&head[..got], len) && Segment::abandoned_unpublished(name) {
        Probe::HalfCreated
    } else {
        Probe::Skip
    }
}

/// True if a header start could be one a creator had not yet published:
/// an empty file (killed before sizing it), or a page-multiple size with a
/// zero magic word and either nothing written yet or our layout version
/// and the file's own size in the header.
fn looks_unpublished(head: &[u8], len: u64) -> bool {
    if len == 0 {
        return true;
    }
    if !len.is_multiple_of(4096) || head.len() < PROBE_LEN || head[..8] != [0; 8] {
        return false;
    }
    let version = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
    let total = u64::from_le_bytes(head[40..48].try_into().unwrap_or_default());
    head[8..].iter().all(|&b| b == 0) || (version == crate::layout::LAYOUT_VERSION && total == len)
}

/// Whether an open error says something about the segment (corrupt) or
/// only about this process's situation (unreadable).
fn is_local_trouble(e: &OpenError) -> bool {
    use nix::errno::Errno;
    match e {
        OpenError::Segment(SegmentError::PermissionDenied(_)) => true,
        OpenError::Segment(SegmentError::Os { source, .. }) => matches!(
            source,
            Errno::EMFILE
                | Errno::ENFILE
                | Errno::ENOMEM
                | Errno::EAGAIN
                | Errno::EIO
                | Errno::EINTR
        ),
        _ => false,
    }
}

/// Every ipc-core segment in /dev/shm (files without our magic number are
/// left out, except those a dead creator left half-created), sorted by
/// name. Empty if /dev/shm cannot be read; see [`list_checked`].
pub fn list() -> Vec<SegmentInfo> {
    list_checked().unwrap_or_default()
}

/// [`list`], failing if /dev/shm itself cannot be read. Symlinks, FIFOs,
/// devices and other non-regular entries are skipped without being
/// followed or opened in a blocking way; entries that cannot be inspected
/// are listed as [`SegmentState::Unreadable`].
pub fn list_checked() -> std::io::Result<Vec<SegmentInfo>> {
    let dir = std::fs::read_dir(SHM_DIR)?;
    let mut out = Vec::new();
    for entry in dir {
        let name = match entry {
            Ok(e) => match e.file_name().into_string() {
                Ok(n) => n,
                Err(_) => continue,
            },
            Err(e) => return Err(e),
        };
        if validate_any_name(&name).is_err() {
            continue;
        }
        let info = match probe(&name) {
            Probe::Skip => continue,
            Probe::HalfCreated => SegmentInfo {
                name,
                state: SegmentState::HalfCreated,
                status: None,
            },
            Probe::Unreadable(cause) => SegmentInfo {
                name,
                state: SegmentState::Unreadable(cause),
                status: None,
            },
            Probe::Ours => match inspect(&name) {
                // A chained block belongs to its queue's entry, unless the
                // queue is gone: then it is an orphan to clean.
                Ok(status) if status.block_index != 0 => {
                    let parent = name.rsplit_once(".b").map_or("", |(p, _)| p);
                    if Segment::exists(parent) {
                        continue;
                    }
                    SegmentInfo {
                        state: SegmentState::Orphaned,
                        status: Some(status),
                        name,
                    }
                }
                Ok(status) => SegmentInfo {
                    state: state_of(&status),
                    status: Some(status),
                    name,
                },
                Err(OpenError::Segment(SegmentError::NotFound(_))) => continue,
                Err(e) if is_local_trouble(&e) => SegmentInfo {
                    state: SegmentState::Unreadable(e.to_string()),
                    status: None,
                    name,
                },
                Err(e) => SegmentInfo {
                    state: SegmentState::Corrupt(e.to_string()),
                    status: None,
                    name,
                },
            },
        };
        out.push(info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
