//! The bridge's own state files in shared memory (`/dev/shm/ipc-bridge/`):
//! a mapping of a regular file that outlives the process, so a bridge
//! killed with SIGKILL and started again finds what it had taken and
//! delivered. Only the bridge maps these files; every word read from one
//! is validated by its user before use.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// Where the bridge keeps its state: beside the segments, in a folder of
/// its own so that `ipcctl list` and `clean` do not take the files for
/// foreign segments.
pub fn state_dir() -> PathBuf {
    Path::new(ipc_core::segment::SHM_DIR).join("ipc-bridge")
}

/// Creates the state folder (mode 0700) if it is missing.
pub fn ensure_state_dir() -> io::Result<PathBuf> {
    let dir = state_dir();
    match std::fs::create_dir(&dir) {
        Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} exists and is not a folder",
            dir.display()
        )));
    }
    Ok(dir)
}

/// A shared mapping of a whole state file.
pub struct StateFile {
    ptr: NonNull<u8>,
    len: usize,
    path: PathBuf,
    _file: File,
}

// SAFETY: the mapping is plain memory owned by this value; the bridge
// touches it from one thread at a time (the value is moved, not shared).
unsafe impl Send for StateFile {}

impl StateFile {
    /// Creates `path` (it must not exist) of `len` bytes, zeroed.
    pub fn create(path: &Path, len: usize) -> io::Result<StateFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        if let Err(e) = file.set_len(len as u64) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Self::map(file, path, len)
    }

    /// Opens an existing state file; it must be a regular file of at least
    /// `min_len` bytes (a FIFO, a link or a short file is refused).
    pub fn open(path: &Path, min_len: usize) -> io::Result<StateFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let len = usize::try_from(meta.len()).map_err(io::Error::other)?;
        if len < min_len {
            return Err(io::Error::other(format!(
                "{} holds {len} bytes, fewer than the {min_len} a state file has",
                path.display()
            )));
        }
        Self::map(file, path, len)
    }

    fn map(file: File, path: &Path, len: usize) -> io::Result<StateFile> {
        let size = std::num::NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty"))?;
        // SAFETY: a fresh shared mapping of a file we hold open; nothing
        // else in this process aliases it.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(StateFile {
            ptr: ptr.cast(),
            len,
            path: path.to_owned(),
            _file: file,
        })
    }

    /// Takes an exclusive lock on the file (`flock`), held until this
    /// value is dropped or the process dies: one bridge per state file.
    pub fn lock_exclusive(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(self._file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is mapped (never: files are at least a page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 8-byte word at `offset` (a multiple of 8 inside the mapping).
    pub fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "word {offset}"
        );
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned);
        // AtomicU64 has the layout of u64 and any bit pattern is valid.
        unsafe { &*(self.ptr.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// Loads the word at `offset`.
    pub fn load(&self, offset: usize) -> u64 {
        self.word(offset).load(Ordering::Acquire)
    }

    /// Stores the word at `offset`; later loads by a restarted bridge see
    /// it after every store made before it.
    pub fn store(&self, offset: usize, value: u64) {
        self.word(offset).store(value, Ordering::Release)
    }

    /// Copies `bytes` to `offset`.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "write at {offset}");
        // SAFETY: in bounds; `&mut self` means no slice of the mapping
        // handed out by `read` is alive.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    /// The bytes at `offset..offset + len`.
    pub fn read(&self, offset: usize, len: usize) -> &[u8] {
        assert!(
            offset.checked_add(len).is_some_and(|e| e <= self.len),
            "read at {offset}"
        );
        // SAFETY: in bounds; only this process writes the file, through
        // `&mut self`, so the bytes do not change while borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Eight random bytes from the kernel, never zero.
pub fn random_u64() -> io::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b).max(1))
}
