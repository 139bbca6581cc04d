//! Segment administration: inspect any ipc-core segment, list those in
//! /dev/shm with their state, and find the orphaned ones.

use std::io::Read;
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
}

impl SegmentState {
    /// One word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            SegmentState::Live => "live",
            SegmentState::Idle => "idle",
            SegmentState::Orphaned => "orphaned",
            SegmentState::Corrupt(_) => "corrupt",
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
pub fn unlink_with_chain(name: &str) -> Result<(), SegmentError> {
    Segment::unlink(name)?;
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return Ok(());
    };
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if is_block_name(file)
            && file
                .rsplit_once(".b")
                .is_some_and(|(queue, _)| queue == name)
        {
            let _ = Segment::unlink(file);
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

fn has_our_magic(name: &str) -> bool {
    let mut word = [0u8; 8];
    std::fs::File::open(std::path::Path::new(SHM_DIR).join(name))
        .and_then(|mut f| f.read_exact(&mut word))
        .is_ok_and(|()| u64::from_le_bytes(word) == MAGIC)
}

/// Every ipc-core segment in /dev/shm (files without our magic number are
/// left out), sorted by name.
pub fn list() -> Vec<SegmentInfo> {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return Vec::new();
    };
    let mut out: Vec<SegmentInfo> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| validate_any_name(name).is_ok() && has_our_magic(name))
        .filter_map(|name| match inspect(&name) {
            // A chained block belongs to its queue's entry, unless the
            // queue is gone: then it is an orphan to clean.
            Ok(status) if status.block_index != 0 => {
                let parent = name.rsplit_once(".b").map_or("", |(p, _)| p);
                (!Segment::exists(parent)).then_some(SegmentInfo {
                    state: SegmentState::Orphaned,
                    status: Some(status),
                    name,
                })
            }
            Ok(status) => Some(SegmentInfo {
                state: state_of(&status),
                status: Some(status),
                name,
            }),
            Err(e) => Some(SegmentInfo {
                state: SegmentState::Corrupt(e.to_string()),
                status: None,
                name,
            }),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
