//! Named POSIX shared-memory segments: create (exclusive), open, unlink.
//!
//! Built on `shm_open`/`mmap` through `nix` rather than the `shared_memory`
//! crate: we need the file descriptor for `posix_fallocate` (so that a full
//! /dev/shm fails at creation instead of raising SIGBUS later), an explicit
//! mode for group sharing, handles that are `Send`, and a segment that
//! outlives the process that created it (the CLI creates, then exits).

use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::sys::stat::{self, Mode};

use crate::error::SegmentError;
use crate::sys;

/// Longest segment name we accept (NAME_MAX is 255 for /dev/shm; we keep
/// room for the suffixes of chained segments, `.b` and up to 20 digits).
pub const MAX_NAME_LEN: usize = 200;

/// Longest name of any segment, chained blocks included: NAME_MAX.
const MAX_ANY_NAME_LEN: usize = 255;

/// Where Linux keeps POSIX shared memory objects.
pub const SHM_DIR: &str = "/dev/shm";

/// Default permission bits of a new segment: owner only.
pub const DEFAULT_MODE: u32 = 0o600;

/// Checks that `name` is a plain segment name: 1 to [`MAX_NAME_LEN`] bytes of
/// ASCII letters, digits, `.`, `_` or `-`, not `.` or `..`, not starting
/// with `-`, and not ending in `.b` and a number (those names belong to the
/// extra segments of unbounded queues).
///
/// ```
/// assert!(ipc_core::segment::validate_name("demo-1.buf").is_ok());
/// assert!(ipc_core::segment::validate_name("../etc").is_err());
/// assert!(ipc_core::segment::validate_name("").is_err());
/// assert!(ipc_core::segment::validate_name("jobs.b3").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), SegmentError> {
    validate_any_name(name)?;
    if is_block_name(name) {
        return Err(SegmentError::InvalidName {
            name: name.to_owned(),
            reason: "names ending in '.b' and a number are reserved for the extra segments of unbounded queues".to_owned(),
        });
    }
    Ok(())
}

/// True for a name of the form `QUEUE.b<number>`: a chained block.
pub fn is_block_name(name: &str) -> bool {
    name.rsplit_once(".b").is_some_and(|(queue, k)| {
        !queue.is_empty() && !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())
    })
}

/// [`validate_name`] without the reservation of block names: what any
/// segment's name, chained blocks included, must satisfy.
pub(crate) fn validate_any_name(name: &str) -> Result<(), SegmentError> {
    let bad = |reason: &str| {
        Err(SegmentError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    let limit = if is_block_name(name) {
        MAX_ANY_NAME_LEN
    } else {
        MAX_NAME_LEN
    };
    if name.len() > limit {
        return bad(&format!("longer than {limit} bytes"));
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not segment names");
    }
    if name.starts_with('-') {
        return bad("a name may not start with '-' (it would read as an option)");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (use letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

fn shm_path(name: &str) -> String {
    format!("/{name}")
}

fn map_errno(name: &str, op: &'static str, e: Errno) -> SegmentError {
    match e {
        Errno::ENOENT => SegmentError::NotFound(name.to_owned()),
        Errno::EEXIST => SegmentError::AlreadyExists(name.to_owned()),
        Errno::EACCES | Errno::EPERM => SegmentError::PermissionDenied(name.to_owned()),
        _ => SegmentError::Os {
            name: name.to_owned(),
            op,
            source: e,
        },
    }
}

/// A mapped, named shared-memory segment. Unmapped on drop; never unlinked
/// implicitly (see [`Segment::unlink`]).
#[derive(Debug)]
pub struct Segment {
    name: String,
    ptr: NonNull<u8>,
    len: usize,
    mode: u32,
    /// The segment's descriptor (until [`Segment::take_fd`]). The
    /// creator's holds an exclusive `flock` until [`Segment::finish_init`]:
    /// while it is held, the segment is being initialized by a live
    /// process.
    fd: Option<OwnedFd>,
    init_locked: bool,
    /// The file's group (for a segment we created: our effective group or
    /// the one asked for).
    gid: u32,
    /// The file's device and inode: which file this mapping is, whatever
    /// name it has now (chain blocks are renamed when recycled).
    file_id: (u64, u64),
}

// SAFETY: the mapping is process-wide memory, valid until drop; every access
// to its contents goes through atomics or raw copies guarded by the ring
// protocol, never through Rust references with aliasing guarantees.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out the base pointer and length.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a new segment of `len` bytes, exclusively (fails if the name
    /// exists), with permission bits `mode`, all pages reserved, zero-filled.
    ///
    /// A segment of that name that its creator left half-initialized (it
    /// died before publishing) is removed and made anew.
    pub fn create(name: &str, len: usize, mode: u32) -> Result<Segment, SegmentError> {
        Self::create_in_group(name, len, mode, None)
    }

    /// [`Segment::create`], the file then given to group `gid` (the chained
    /// blocks of a group-shared queue belong to the queue's group, so that
    /// every member can read and remove them).
    pub(crate) fn create_in_group(
        name: &str,
        len: usize,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<Segment, SegmentError> {
        match Self::create_once(name, len, mode, gid) {
            Err(SegmentError::AlreadyExists(_)) if Self::remove_if_abandoned(name) => {
                log::info!("{name}: replaced a segment its creator left half-initialized");
                Self::create_once(name, len, mode, gid)
            }
            other => other,
        }
    }

    fn create_once(
        name: &str,
        len: usize,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<Segment, SegmentError> {
        validate_any_name(name)?;
        if len == 0 {
            return Err(SegmentError::InvalidSize { len });
        }
        let fd = mman::shm_open(
            shm_path(name).as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| map_errno(name, "shm_open", e))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let _ = mman::shm_unlink(shm_path(name).as_str());
            return Err(map_errno(name, "flock", Errno::last()));
        }
        match Self::size_and_map(name, fd, len, mode, gid) {
            Ok(seg) => Ok(seg),
            Err(e) => {
                let _ = mman::shm_unlink(shm_path(name).as_str());
                Err(e)
            }
        }
    }

    fn size_and_map(
        name: &str,
        fd: OwnedFd,
        len: usize,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<Segment, SegmentError> {
        if let Some(gid) = gid {
            // SAFETY: fchown on a descriptor we own; -1 keeps the owner.
            if unsafe { libc::fchown(fd.as_raw_fd(), u32::MAX, gid) } != 0 {
                return Err(map_errno(name, "fchown", Errno::last()));
            }
        }
        // The umask may have cleared bits the caller asked for explicitly.
        stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| map_errno(name, "fchmod", e))?;
        let off_len = i64::try_from(len).map_err(|_| SegmentError::InvalidSize { len })?;
        nix::unistd::ftruncate(&fd, off_len).map_err(|e| map_errno(name, "ftruncate", e))?;
        match nix::fcntl::posix_fallocate(fd.as_raw_fd(), 0, off_len) {
            Ok(()) => {}
            Err(Errno::ENOSPC) | Err(Errno::EFBIG) => {
                return Err(SegmentError::NoSpace {
                    name: name.to_owned(),
                    requested: len as u64,
                    available: sys::free_bytes(SHM_DIR),
                })
            }
            Err(e) => return Err(map_errno(name, "posix_fallocate", e)),
        }
        let mut seg = Self::map(name, fd, len, mode)?;
        seg.init_locked = true;
        if let Some(gid) = gid {
            seg.gid = gid;
        }
        Ok(seg)
    }

    /// Ends the creator's initialization: releases the lock that tells
    /// openers a live process is still setting the segment up.
    pub fn finish_init(&mut self) {
        if std::mem::take(&mut self.init_locked) {
            if let Some(fd) = &self.fd {
                // SAFETY: flock on a descriptor we own; no memory involved.
                unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
            }
        }
    }

    /// Hands the segment's descriptor over (for the liveness locks); the
    /// mapping stays. `None` if taken already.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.finish_init();
        self.fd.take()
    }

    /// Removes segment `name` if its creator left it half-initialized
    /// ([`Segment::abandoned_unpublished`]). The check and the removal
    /// hold the file's `flock`, and the name is checked to still be the
    /// same file just before the unlink, so two processes doing this at
    /// once never remove a segment that a third has just made anew.
    pub fn remove_if_abandoned(name: &str) -> bool {
        let Some((_locked, st)) = Self::open_abandoned(name) else {
            return false;
        };
        let same = stat::stat(std::path::Path::new(SHM_DIR).join(name).as_path())
            .is_ok_and(|now| now.st_ino == st.st_ino && now.st_dev == st.st_dev);
        same && mman::shm_unlink(shm_path(name).as_str()).is_ok()
    }

    /// Opens segment `name` and takes its `flock` if it is abandoned and
    /// unpublished ([`Segment::abandoned_unpublished`]): the descriptor
    /// (holding the lock until dropped) and what `fstat` said.
    fn open_abandoned(name: &str) -> Option<(OwnedFd, libc::stat)> {
        validate_any_name(name).ok()?;
        let fd = mman::shm_open(
            shm_path(name).as_str(),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .ok()?;
        // SAFETY: flock on a descriptor we own; closing it releases it.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return None;
        }
        let st = stat::fstat(fd.as_raw_fd()).ok()?;
        Self::unpublished_and_old(&fd, &st).then_some((fd, st))
    }

    /// A regular file nobody is initializing (the caller holds its flock)
    /// that looks like what a creator killed mid-way leaves, and only that:
    /// empty (killed before sizing it), or sized to whole pages (as every
    /// segment is) with its first word (the magic) never published; and
    /// unchanged for more than a second. Any other file of that name is
    /// someone else's and is never taken for one.
    fn unpublished_and_old(fd: &OwnedFd, st: &libc::stat) -> bool {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return false;
        }
        let page_sized = st.st_size >= 4096 && st.st_size % 4096 == 0;
        if st.st_size != 0 && !page_sized {
            return false;
        }
        let mut magic = [0u8; 8];
        // SAFETY: pread into an 8-byte buffer we own.
        let read = unsafe { libc::pread(fd.as_raw_fd(), magic.as_mut_ptr().cast(), 8, 0) };
        let published = st.st_size >= 8 && read == 8 && magic != [0u8; 8];
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(st.st_ctime.max(0) as u64, st.st_ctime_nsec as u32);
        let old = changed
            .elapsed()
            .is_ok_and(|age| age > std::time::Duration::from_secs(1));
        !published && old
    }

    /// True if segment `name` was left half-initialized by a creator that
    /// died: nobody holds its initialization lock and it was last changed
    /// more than a second ago (a live creator takes the lock microseconds
    /// after creating the file). Such a segment can be removed and made
    /// again.
    pub fn abandoned_unpublished(name: &str) -> bool {
        Self::open_abandoned(name).is_some()
    }

    /// Opens and maps an existing segment at its current size.
    pub fn open(name: &str) -> Result<Segment, SegmentError> {
        validate_any_name(name)?;
        // O_NONBLOCK | O_NOFOLLOW: a FIFO or a link planted in /dev/shm
        // must neither block us nor lead us elsewhere.
        let fd = mman::shm_open(
            shm_path(name).as_str(),
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => SegmentError::NotASegment(name.to_owned()),
            e => map_errno(name, "shm_open", e),
        })?;
        let st = stat::fstat(fd.as_raw_fd()).map_err(|e| map_errno(name, "fstat", e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(SegmentError::NotASegment(name.to_owned()));
        }
        let len = usize::try_from(st.st_size).map_err(|_| SegmentError::InvalidSize { len: 0 })?;
        if len == 0 {
            return Err(SegmentError::Empty(name.to_owned()));
        }
        let mut seg = Self::map(name, fd, len, st.st_mode & 0o777)?;
        seg.gid = st.st_gid;
        Ok(seg)
    }

    fn map(name: &str, fd: OwnedFd, len: usize, mode: u32) -> Result<Segment, SegmentError> {
        let nz = NonZeroUsize::new(len).ok_or(SegmentError::InvalidSize { len })?;
        // SAFETY: a fresh shared mapping of a descriptor we hold; no existing
        // Rust object lives at the address the kernel picks.
        let ptr = unsafe {
            mman::mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| map_errno(name, "mmap", e))?;
        let file_id = match stat::fstat(fd.as_raw_fd()) {
            Ok(st) => (st.st_dev, st.st_ino),
            Err(e) => {
                // SAFETY: we just mapped exactly (ptr, len); nothing uses it.
                let _ = unsafe { mman::munmap(ptr, len) };
                return Err(map_errno(name, "fstat", e));
            }
        };
        Ok(Segment {
            file_id,
            name: name.to_owned(),
            ptr: ptr.cast(),
            len,
            mode,
            fd: Some(fd),
            init_locked: false,
            // SAFETY: getegid cannot fail.
            gid: unsafe { libc::getegid() },
        })
    }

    /// Removes the name from /dev/shm. Processes that have it mapped keep
    /// their mapping until they drop it.
    pub fn unlink(name: &str) -> Result<(), SegmentError> {
        validate_any_name(name)?;
        mman::shm_unlink(shm_path(name).as_str()).map_err(|e| map_errno(name, "shm_unlink", e))
    }

    /// Device and inode of the file segment `name` is now, without mapping
    /// it (a symlink or non-file is refused as not a segment).
    pub(crate) fn file_id_of(name: &str) -> Result<(u64, u64), SegmentError> {
        Self::file_stat_of(name).map(|(id, _)| id)
    }

    /// Device and inode of the file segment `name` is now, and its size in
    /// bytes, from `fstat` of a descriptor opened by that name (a symlink
    /// or non-file is refused as not a segment).
    pub(crate) fn file_stat_of(name: &str) -> Result<((u64, u64), u64), SegmentError> {
        validate_any_name(name)?;
        let fd = mman::shm_open(
            shm_path(name).as_str(),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => SegmentError::NotASegment(name.to_owned()),
            e => map_errno(name, "shm_open", e),
        })?;
        let st = stat::fstat(fd.as_raw_fd()).map_err(|e| map_errno(name, "fstat", e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(SegmentError::NotASegment(name.to_owned()));
        }
        Ok(((st.st_dev, st.st_ino), st.st_size.max(0) as u64))
    }

    /// What `lstat` says of `name` in /dev/shm, without opening it: its
    /// (device, inode), its size, and whether it is a regular file (a
    /// symlink is not followed). `None` if it cannot be looked at.
    pub(crate) fn lstat_of(name: &str) -> Option<((u64, u64), u64, bool)> {
        use std::os::unix::fs::MetadataExt;
        validate_any_name(name).ok()?;
        let m = std::fs::symlink_metadata(std::path::Path::new(SHM_DIR).join(name)).ok()?;
        Some(((m.dev(), m.ino()), m.size(), m.file_type().is_file()))
    }

    /// Removes `name` if it is still the file `id` (device, inode). True
    /// if it was removed.
    pub(crate) fn unlink_if_same(name: &str, id: (u64, u64)) -> bool {
        Self::lstat_of(name).is_some_and(|(now, _, _)| now == id) && Self::unlink(name).is_ok()
    }

    /// Renames segment `from` to `to`, atomically, failing with
    /// `AlreadyExists` if `to` exists (`RENAME_NOREPLACE`) and `NotFound`
    /// if `from` does not. Mappings of the file are unaffected.
    pub(crate) fn rename_noreplace(from: &str, to: &str) -> Result<(), SegmentError> {
        validate_any_name(from)?;
        validate_any_name(to)?;
        let path = |n: &str| {
            std::ffi::CString::new(format!("{SHM_DIR}/{n}")).map_err(|_| {
                SegmentError::InvalidName {
                    name: n.to_owned(),
                    reason: "contains a NUL byte".to_owned(),
                }
            })
        };
        let (src, dst) = (path(from)?, path(to)?);
        // SAFETY: two NUL-terminated paths that live across the call; no
        // memory of ours is written.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                src.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(map_errno(from, "renameat2", Errno::last()))
        }
    }

    /// True if a segment (or any file) of that name exists in /dev/shm.
    pub fn exists(name: &str) -> bool {
        validate_any_name(name).is_ok() && std::path::Path::new(SHM_DIR).join(name).exists()
    }

    /// The segment's name (without the leading `/`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Base address of the mapping in this process.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The file's (device, inode), read when it was mapped.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        self.file_id
    }

    /// The segment file's group.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Permission bits of the segment file.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// Always false: a segment is never empty once mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly (ptr, len) and nothing borrows from the
        // mapping beyond the lifetime of the handles that own this segment.
        let _ = unsafe { mman::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", "a/b", "/x", "..", ".", "sp ace", "é", "-x"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(validate_name("ok.name_1-2").is_ok());
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "shm_open/mmap of /dev/shm: foreign functions Miri does not support"
    )]
    fn create_open_unlink_round_trip() {
        let name = format!("ipc-core-seg-test-{}", std::process::id());
        let a = Segment::create(&name, 4096, DEFAULT_MODE).unwrap();
        assert!(matches!(
            Segment::create(&name, 4096, DEFAULT_MODE),
            Err(SegmentError::AlreadyExists(_))
        ));
        let b = Segment::open(&name).unwrap();
        assert_eq!(b.len(), 4096);
        // SAFETY: both mappings are 4096 bytes long.
        unsafe {
            a.as_ptr().write(42);
            assert_eq!(b.as_ptr().read(), 42);
        }
        Segment::unlink(&name).unwrap();
        assert!(matches!(
            Segment::open(&name),
            Err(SegmentError::NotFound(_))
        ));
    }
}
