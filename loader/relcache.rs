//! The relocation cache: relocated pages shared between processes.
//!
//! With text and read-only data shared, what every process still pays for
//! a library is the pages relocation writes: for libcrypto about 400 KiB,
//! almost all of it RELRO (`.data.rel.ro`, `.got`) filled with pointers
//! that are the same in every process that loads the library *at the same
//! address*. This module (opt-in, [`crate::Options::relocation_cache`])
//! makes them the same physical pages:
//!
//! 1. **Placement** ([`place`]). The library is mapped at a deterministic
//!    address derived from its identity (the `NT_GNU_BUILD_ID` note, or
//!    device, inode, size and mtime): one of 4096 slots of 4 GiB in
//!    `[0x2000_0000_0000, 0x3000_0000_0000)`, reserved with
//!    `MAP_FIXED_NOREPLACE` (span plus a stub area, below). A taken slot is
//!    probed past (up to 8 slots); if none is free, or the kernel does not
//!    honour `MAP_FIXED_NOREPLACE`, the library is placed as usual and the
//!    cache is simply not used for it.
//! 2. **Classification** (the first load, "cold", [`Session`]). While
//!    relocating normally, every value relocation writes is classified:
//!    *fixed* when it depends only on this load's base — `RELATIVE`/`RELR`,
//!    symbols that resolve to this object (or to another library this
//!    cache placed, whose base is part of the fingerprint below), undefined
//!    weak symbols (0), stub addresses — or *varying*: the address of a
//!    host object (libc under ASLR), of a library placed elsewhere, of one
//!    of soloader's own functions, an IFUNC result, `IRELATIVE`, anything
//!    TLS. A page of a writable segment with only fixed values is cached
//!    and shared; one with varying values too is still cached (the varying
//!    words zeroed in the file), and every load redoes just its varying
//!    relocations, which makes it a private copy again: no memory saved
//!    there, but the work is. A varying `DT_REL` relocation (its addend is
//!    read from the page) keeps its page out of the cache. `.bss` tail
//!    pages (zeroed by the loader) are cacheable too.
//! 3. **Stubs**. A `JUMP_SLOT` is only ever called, never compared, so an
//!    external one (libc's `memcpy`, an IFUNC result) points at a stub of
//!    this library at a fixed address right after its span — `endbr64;
//!    jmp *disp32(%rip)` — that jumps through a per-process table holding
//!    the real targets. The GOT pages then hold the same bytes in every
//!    process. (A `GLOB_DAT` or `R_X86_64_64` keeps the real address: it
//!    may be compared as a pointer.) The table is made read-only once
//!    filled, like RELRO.
//! 4. **The cache file**, written once by the cold load:
//!    `DIR/<build-id>-<base>-<scope>.relcache` holds a header (format,
//!    library identity, base, page list, stub table, scope fingerprint,
//!    checksums), the relocated contents of the cacheable pages and the
//!    stub code. It is written to a temporary file in `DIR` and renamed
//!    into place (`RENAME_NOREPLACE` when there was no file: the first
//!    writer wins, so concurrent first loads are safe and readers only
//!    ever see whole files). The cold process then maps its own pages from
//!    the file too.
//! 5. **Later loads** ("warm") at the same base with a valid file whose
//!    identity and scope fingerprint match map the cached pages from the
//!    file with `MAP_PRIVATE | MAP_FIXED` — shared until written, RELRO
//!    read-only, data copy-on-write — resolve only the stubbed symbols to
//!    fill the table, and apply only the relocation entries the header
//!    lists: the varying ones and those whose targets are not cached. The
//!    other entries are not even read.
//!
//! # Forked workers: host addresses too
//!
//! Under ASLR the host's libraries (libc …) are somewhere else in every
//! process started by `exec`, so a page holding a pointer to one of their
//! functions or data (`GLOB_DAT`, `R_X86_64_64`) is MIXED: libsqlite3 has
//! four such pages. Processes forked from one parent without `exec` (a
//! pre-fork server's workers, a zygote's children) all inherit its layout.
//! With [`crate::Options::relocation_cache_forked`] the fingerprint also
//! holds every host object's base and where soloader's own code is, and
//! values bound to them count as fixed: those pages are cached and shared
//! too, and external `JUMP_SLOT`s to them need no stub. The file is then
//! keyed by the layout, so a process with another layout never uses it
//! (it writes its own). IFUNC results, `STB_GNU_UNIQUE` and TLS values stay
//! varying: they depend on more than where things are.
//!
//! # Why a matching fingerprint is enough
//!
//! The scope fingerprint hashes, in lookup order, the identity of every
//! module a symbol lookup may visit — the host's global scope (the
//! executable and its dependencies: the build-id of each as mapped, read
//! once per process, or its file's device, inode, size, mtime and ctime if
//! it has none) and the libraries soloader loaded (their files' identity,
//! and their base when this cache placed them) — plus the loader's own
//! binary and this format's version. (The library being relocated is left
//! out: its own identity is in the header, so that a changed library finds
//! its stale file and replaces it.) Same files in the same order means
//! every lookup finds the same definition in the same module, so a value
//! that depended only on the base is still right. Values that differ from
//! process to process are redone by every load.
//!
//! # Integrity
//!
//! The directory must be owned by the user and not writable by group or
//! others (a checksum cannot stop someone who can write the directory):
//! otherwise the load is refused with [`crate::Error::Unsupported`]
//! (checked by every load, on the directory its path names then). Every
//! file operation is relative to the directory's descriptor, opened once
//! per process and reused while the path still names that same directory
//! and it has not been removed. A cache file must be a regular file owned
//! by the user and not writable by others; its header is checked field by
//! field against the library being loaded, and a checksum of the header
//! and one of the page contents are verified before anything is mapped
//! (the pages are read with `pread`, so a corrupt file never reaches the
//! library's memory). The header is checked by every load; the contents
//! by the first load in each process of each file: the process remembers
//! a file it verified by device, inode, size, mtime and ctime (a write
//! changes the ctime, which only the kernel sets; a file is remembered
//! only once its ctime is a second old, as timestamps come from a coarse
//! clock) and later loads of the same unchanged file re-check only its
//! header. A file that fails any check is
//! ignored with a trace event
//! ([`crate::Event::RelocationCache`]) and rewritten by this load: a bad
//! file is never a reason to fail a load. (A load can still fail after a
//! good file was accepted: if the kernel refuses one of the `MAP_FIXED`
//! mappings, which may leave a hole, or if a stubbed symbol no longer
//! resolves to an address, which a matching fingerprint rules out; the
//! library is then unmapped, as for any failed load.)
//!
//! The pages of a file in use are `MAP_PRIVATE`: as for any mapped file,
//! writing the file in place (its owner, or root) would show through in
//! every process that maps it. soloader itself never writes a cache file
//! in place; it creates them read-only (0444) and replaces them by
//! `rename`.
//!
//! # Housekeeping
//!
//! Each write tidies the directory ([`Dir::tidy`]): temporary files of
//! writers that died, the oldest files of the same library and place
//! beyond [`VARIANTS`], the oldest beyond [`FILES`] in all.
//!
//! # The trade-offs
//!
//! - **ASLR.** A cached library's address is a function of its build-id:
//!   predictable, the same in every process and every run. That is what
//!   makes the pages shareable, and it is exactly what address-space layout
//!   randomisation exists to prevent for that library. Use the cache for
//!   trusted workloads where memory matters more than this hardening
//!   (many worker processes of one program), not for code that parses
//!   hostile input.
//! - **Stubs** add one indirect jump to each call from the library into
//!   another object. They are not described by unwind information (like a
//!   PLT entry, they are a tail jump that pushes no frame).
//! - The directory keeps one file per library, base and scope (for example
//!   per executable); old files are not removed. It is a cache: deleting
//!   it at any time is safe.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use goblin::elf::program_header::{PF_W, PT_NOTE};

use crate::elf::dynamic::RelocTable;
use crate::elf::{page_down, page_size, page_up, LoadPlan};
use crate::error::{Error, Result};
use crate::map::Sys;
use crate::object::{Module, Object, Scope};
use crate::trace::{Event, Tracer};

/// Version of the file format (and of the classification rules).
const FORMAT_VERSION: u32 = 1;
/// The first bytes of every cache file.
const MAGIC: [u8; 8] = *b"SOLRELC\0";
/// The address range deterministic placements use.
const REGION: Range<usize> = 0x2000_0000_0000..0x3000_0000_0000;
/// One placement slot: span and stub area must fit.
const SLOT: usize = 1 << 32;
/// Slots tried, from the library's own, when a slot is taken.
const PROBES: usize = 8;
/// Stubs at most per library (`JUMP_SLOT` symbols beyond this stay
/// private).
const MAX_STUBS: usize = 16384;
/// Bytes per stub: `endbr64` (4), `jmp *disp32(%rip)` (6), `int3` padding.
const STUB_SIZE: usize = 16;
/// The stub code part of the stub area, right after the span.
const CODE_BYTES: usize = MAX_STUBS * STUB_SIZE;
/// The table part, right after the code: one target per stub.
const TABLE_BYTES: usize = MAX_STUBS * 8;
/// The whole stub area.
const STUB_AREA: usize = CODE_BYTES + TABLE_BYTES;
/// A build-id longer than this is ignored (they are 20 bytes in practice).
const MAX_BUILD_ID: usize = 64;
/// A header longer than this is refused.
const MAX_HEADER: u64 = 16 << 20;
/// Bytes read at a time while verifying the page checksum.
const READ_CHUNK: usize = 1 << 16;

// ---------------------------------------------------------------------------
// The public outcome

/// What the relocation cache did for one library (see
/// [`crate::Library::relocation_cache`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUse {
    /// The cache file used, or written (or that could not be written).
    pub file: PathBuf,
    /// `true`: a valid cache file was found and its pages mapped ("warm");
    /// `false`: the library was relocated and the file written ("cold").
    pub hit: bool,
    /// Cold loads: whether this load wrote the file (`false` when another
    /// process won the race, there was nothing to cache, or writing
    /// failed; the trace says which).
    pub written: bool,
    /// The cacheable pages (page-aligned addresses): on a hit, those mapped
    /// from the file; on a cold load, those saved to it.
    pub pages: Vec<usize>,
    /// The part of `pages` now mapped from the cache file and never
    /// written, physically shared with every other process that maps it
    /// (the rest held values that differ between processes, which this
    /// load wrote: private copies).
    pub shared: Vec<usize>,
    /// Whether the stub code is mapped from the cache file (shared): on a
    /// hit, unless the file cannot be mapped executable (`noexec`); on a
    /// cold load, also only when this load wrote the file and no IFUNC
    /// resolver of the library ran in between.
    pub mapped: bool,
    /// How many `JUMP_SLOT` symbols go through stubs.
    pub stubs: usize,
    /// The stub code in use (read-only, executable; from the cache file
    /// when possible).
    pub stub_code: Range<usize>,
    /// The per-process table of stub targets (anonymous, read-only once
    /// filled).
    pub stub_table: Range<usize>,
}

// ---------------------------------------------------------------------------
// The directory

/// An open cache directory, checked to be safe to trust.
pub(crate) struct Dir {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    /// This process's effective uid, which must own the cache files.
    uid: libc::uid_t,
}

/// Cache files kept for one library at one place (one per scope
/// fingerprint: hosts with different global scopes load it too).
pub(crate) const VARIANTS: usize = 4;
/// Cache files kept in one directory.
pub(crate) const FILES: usize = 256;
/// Age after which a temporary file is a dead writer's leftover.
const TMP_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// The cache directories this process has opened, by path: a later load
/// with the same directory reuses the descriptor (one `stat` of the path
/// and one `fstat` instead of `open`, `fstat` and `close`) while the path
/// still names that same, undeleted directory.
static OPENED: Mutex<Vec<(PathBuf, Arc<OwnedFd>)>> = Mutex::new(Vec::new());

impl Dir {
    /// Opens (creating it, mode 0700, if missing) and checks the cache
    /// directory: it must be a directory owned by this user and not
    /// writable by group or others. The check is made on every call, on
    /// the directory the path names now.
    pub(crate) fn open(path: &Path) -> Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            Error::unsupported(path, "relocation cache directory name contains a NUL byte")
        })?;
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((st, fd)) = Self::reuse(&opened, path, &c) {
            return Self::checked(path, fd, &st);
        }
        let open = || {
            // SAFETY: a valid C string; the returned descriptor is owned below.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: `fd` was just opened and is owned by nobody else.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        let fd = match open() {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| Error::io(path, "create relocation cache directory", e))?;
                open().map_err(|e| Error::io(path, "open relocation cache directory", e))?
            }
            Err(e) => return Err(Error::io(path, "open relocation cache directory", e)),
        };
        let st = fstat(fd.as_raw_fd())
            .map_err(|e| Error::io(path, "fstat relocation cache directory", e))?;
        let fd = Arc::new(fd);
        let dir = Self::checked(path, Arc::clone(&fd), &st)?;
        opened.retain(|(p, _)| p != path);
        opened.push((path.to_path_buf(), fd));
        Ok(dir)
    }

    /// The descriptor of a directory opened earlier at `path` (`c`), and
    /// the path's `stat`, if the path still names that directory and it
    /// has not been removed (an inode number can be reused).
    fn reuse(
        opened: &[(PathBuf, Arc<OwnedFd>)],
        path: &Path,
        c: &CStr,
    ) -> Option<(libc::stat, Arc<OwnedFd>)> {
        let (_, fd) = opened.iter().find(|(p, _)| p == path)?;
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and out-pointer.
        if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        let held = fstat(fd.as_raw_fd()).ok()?;
        let same = st.st_mode & libc::S_IFMT == libc::S_IFDIR
            && (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
            && held.st_nlink > 0;
        same.then(|| (st, Arc::clone(fd)))
    }

    /// `fd` as the cache directory, if `st` (its status) shows it is owned
    /// by this user and not writable by group or others.
    fn checked(path: &Path, fd: Arc<OwnedFd>, st: &libc::stat) -> Result<Dir> {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if st.st_uid != me {
            return Err(Error::unsupported(
                path,
                format!(
                    "relocation cache directory is owned by uid {}, not by this user (uid {me}): refusing to trust it",
                    st.st_uid
                ),
            ));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(Error::unsupported(
                path,
                format!(
                    "relocation cache directory is writable by {} (mode {:03o}): refusing to trust it; `chmod go-w` it",
                    if st.st_mode & 0o002 != 0 { "others" } else { "its group" },
                    st.st_mode & 0o777
                ),
            ));
        }
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
            uid: me,
        })
    }

    fn openat(&self, name: &str, flags: i32, mode: libc::mode_t) -> io::Result<File> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid directory descriptor and C string; the result is
        // owned by the File.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                libc::c_uint::from(mode),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn unlink(&self, name: &str) {
        if let Ok(c) = CString::new(name) {
            // SAFETY: a valid directory descriptor and C string.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        }
    }

    /// Keeps the directory from growing without end, after `keep` was
    /// written: removes temporary files older than [`TMP_AGE`] (left by a
    /// writer that died), the oldest files of `keep`'s library and place
    /// beyond [`VARIANTS`] (one per scope seen: a host that changed leaves
    /// its old ones behind), and the oldest files beyond [`FILES`] in all
    /// (a library that changed leaves its old build-id's behind). Only
    /// regular files owned by this user, and never `keep`. Removing a file
    /// another process has mapped is safe: its mapping keeps the pages. A
    /// process about to open it finds none and writes it again. Returns the
    /// names removed.
    fn tidy(&self, keep: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
        else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now();
        let mut removed = Vec::new();
        let mut files: Vec<(std::time::SystemTime, String)> = Vec::new();
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Not following links: the entry itself.
            let Ok(m) = e.metadata() else { continue };
            if !m.file_type().is_file() || m.uid() != self.uid || name == keep {
                continue;
            }
            let Ok(mtime) = m.modified() else { continue };
            if name.starts_with('.') && name.ends_with(".tmp") {
                if now.duration_since(mtime).is_ok_and(|age| age > TMP_AGE) {
                    self.unlink(&name);
                    removed.push(name);
                }
            } else if name.ends_with(".relcache") {
                files.push((mtime, name));
            }
        }
        files.sort();
        // The part naming the library and its place: up to the scope.
        let group = |n: &str| n.rsplit_once('-').map(|(g, _)| g.to_owned());
        let mine = group(keep);
        let mut same = files.iter().filter(|(_, n)| group(n) == mine).count();
        files.retain(|(_, n)| {
            if same + 1 > VARIANTS && group(n) == mine {
                same -= 1;
                self.unlink(n);
                removed.push(n.clone());
                false
            } else {
                true
            }
        });
        let extra = (files.len() + 1).saturating_sub(FILES);
        for (_, n) in files.into_iter().take(extra) {
            self.unlink(&n);
            removed.push(n);
        }
        removed
    }

    /// Renames `from` to `to` in the directory; with `replace` false, fails
    /// with `EEXIST` if `to` exists.
    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        let (f, t) = match (CString::new(from), CString::new(to)) {
            (Ok(f), Ok(t)) => (f, t),
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        let d = self.fd.as_raw_fd();
        if replace {
            // SAFETY: valid descriptor and C strings.
            return match unsafe { libc::renameat(d, f.as_ptr(), d, t.as_ptr()) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            };
        }
        // SAFETY: renameat2 through syscall(2), with valid descriptor and C
        // strings (glibc's wrapper may be missing on older systems).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                d,
                f.as_ptr(),
                d,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // No RENAME_NOREPLACE here: link(2) also refuses to replace.
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                // SAFETY: valid descriptor and C strings.
                if unsafe { libc::linkat(d, f.as_ptr(), d, t.as_ptr(), 0) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                self.unlink(from);
                Ok(())
            }
            _ => Err(e),
        }
    }
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

// ---------------------------------------------------------------------------
// Identity and placement

/// What makes a library file the one a cache file was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `NT_GNU_BUILD_ID`, empty if the file has none.
    build_id: Vec<u8>,
    /// `st_dev, st_ino, st_size, st_mtime, st_mtime_nsec, st_ctime,
    /// st_ctime_nsec`.
    stat: [u64; 7],
}

impl Identity {
    /// From what `fstat` said when the library was opened.
    fn of_info(info: &crate::object::FileInfo, build_id: Vec<u8>) -> Identity {
        let (size, mtime, mtime_nsec, ctime, ctime_nsec) = info.stamp;
        Identity {
            build_id,
            stat: [
                info.id.0,
                info.id.1,
                size,
                mtime as u64,
                mtime_nsec as u64,
                ctime as u64,
                ctime_nsec as u64,
            ],
        }
    }

    fn of_metadata(m: &std::fs::Metadata, build_id: Vec<u8>) -> Identity {
        Identity {
            build_id,
            stat: [
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
            ],
        }
    }

    /// The part of a cache file's name naming the library: the build-id in
    /// hex, or a hash of the file's identity.
    fn key(&self) -> String {
        if self.build_id.is_empty() {
            format!("file-{:016x}", hash_words(&self.stat[..5]))
        } else {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut s = String::with_capacity(2 * self.build_id.len());
            for &b in &self.build_id {
                s.push(char::from(HEX[usize::from(b >> 4)]));
                s.push(char::from(HEX[usize::from(b & 15)]));
            }
            s
        }
    }

    /// Which slot the library prefers.
    fn slot_hash(&self) -> u64 {
        if self.build_id.is_empty() {
            hash_words(&self.stat[..5])
        } else {
            let mut h = Hasher::new(1);
            h.update(&self.build_id);
            h.finish()
        }
    }
}

/// A library mapped at its deterministic place, with its stub area.
pub(crate) struct Placed {
    identity: Identity,
    /// The reserved start of the span.
    pub(crate) start: usize,
    /// The stub area: code (`CODE_BYTES`), then the table.
    area: Range<usize>,
    /// What this load did with the cache.
    outcome: OnceLock<CacheUse>,
}

impl Placed {
    /// Unmaps the stub area (the span is unmapped by its owner).
    pub(crate) fn release(&self, sys: &Sys) {
        sys.munmap(
            self.area.start,
            self.area.end - self.area.start,
            "relocation cache: stub area",
        );
    }

    /// The stub area (right after the span).
    pub(crate) fn area(&self) -> Range<usize> {
        self.area.clone()
    }

    /// What the cache did for this library, once linked.
    pub(crate) fn outcome(&self) -> Option<CacheUse> {
        self.outcome.get().cloned()
    }
}

fn trace(
    tracer: &Tracer,
    path: &Path,
    what: &'static str,
    file: Option<PathBuf>,
    detail: impl FnOnce() -> String,
    pages: impl FnOnce() -> Vec<usize>,
) {
    tracer.emit(|| Event::RelocationCache {
        path: path.to_path_buf(),
        what,
        file,
        detail: detail(),
        pages: pages(),
    });
}

/// Reserves the library's deterministic place: `plan`'s span followed by
/// the stub area. `None` (traced) if it cannot: then the library is placed
/// as usual and the cache is not used for it.
/// `info` is what `fstat` said of `file`, `head` its first bytes as read
/// for the headers (the build-id note is usually in them).
pub(crate) fn place(
    sys: &Sys,
    file: &File,
    plan: &LoadPlan,
    info: &crate::object::FileInfo,
    head: &[u8],
) -> Option<Placed> {
    let path = sys.path;
    let not = |why: String| {
        trace(sys.tracer, path, "not placed", None, || why, Vec::new);
        None
    };
    let span = (plan.max_vaddr - plan.min_vaddr) as usize;
    let Some(total) = span.checked_add(STUB_AREA).filter(|&t| t <= SLOT) else {
        return not(format!(
            "span of {span:#x} bytes is too large for a {SLOT:#x}-byte slot"
        ));
    };
    if plan.align as usize > SLOT {
        return not(format!("p_align {:#x} is larger than a slot", plan.align));
    }
    let identity = Identity::of_info(info, build_id(file, plan, info.size, head));
    let slots = (REGION.end - REGION.start) / SLOT;
    let first = (identity.slot_hash() % slots as u64) as usize;
    let flags =
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
    for probe in 0..PROBES {
        let start = REGION.start + ((first + probe) % slots) * SLOT;
        match sys.mmap(start, total, libc::PROT_NONE, flags, -1, 0, || {
            "relocation cache: reserve span and stubs at a fixed place".into()
        }) {
            Ok(got) if got == start => {
                trace(
                    sys.tracer,
                    path,
                    "placed",
                    None,
                    || {
                        format!(
                            "slot {} (probe {probe}) at {start:#x}, keyed by {}",
                            (first + probe) % slots,
                            if identity.build_id.is_empty() {
                                "file identity (no build-id)"
                            } else {
                                "build-id"
                            }
                        )
                    },
                    Vec::new,
                );
                return Some(Placed {
                    identity,
                    start,
                    area: start + span..start + total,
                    outcome: OnceLock::new(),
                });
            }
            Ok(got) => {
                // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
                sys.munmap(got, total, "relocation cache: misplaced reservation");
                return not("MAP_FIXED_NOREPLACE is not supported by this kernel".into());
            }
            Err(_) => continue,
        }
    }
    not(format!("all {PROBES} slots from {first} are taken"))
}

/// The descriptor of the `NT_GNU_BUILD_ID` note in `notes` (a `PT_NOTE`'s
/// bytes, aligned to `align`), if any (and 1 to 64 bytes long).
fn parse_build_id(notes: &[u8], align: u64) -> Option<Vec<u8>> {
    let align = if align == 8 { 8 } else { 4 };
    let pad = |n: usize| n.checked_next_multiple_of(align);
    let word = |o: usize| {
        notes
            .get(o..o + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
    };
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let desc_at = (at + 12).checked_add(pad(namesz)?)?;
        let end = desc_at.checked_add(pad(descsz)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == 3 && namesz == 4 && notes.get(at + 12..at + 16) == Some(b"GNU\0") {
            return (1..=MAX_BUILD_ID).contains(&descsz).then(|| desc.to_vec());
        }
        at = end;
    }
    None
}

/// The `NT_GNU_BUILD_ID` note's descriptor, read from the file's
/// `PT_NOTE`s (empty if none).
fn build_id(file: &File, plan: &LoadPlan, size: u64, head: &[u8]) -> Vec<u8> {
    for ph in plan.phdrs.iter().filter(|p| p.p_type == PT_NOTE) {
        if ph.p_filesz == 0
            || ph.p_filesz > 1 << 16
            || ph
                .p_offset
                .checked_add(ph.p_filesz)
                .is_none_or(|e| e > size)
        {
            continue;
        }
        let (at, len) = (ph.p_offset as usize, ph.p_filesz as usize);
        // In the bytes already read for the headers, or read now.
        let read;
        let notes = match head.get(at..at + len) {
            Some(b) => b,
            None => {
                let mut buf = vec![0u8; len];
                if file.read_exact_at(&mut buf, ph.p_offset).is_err() {
                    continue;
                }
                read = buf;
                &read[..]
            }
        };
        if let Some(id) = parse_build_id(notes, ph.p_align) {
            return id;
        }
    }
    Vec::new()
}

// ---------------------------------------------------------------------------
// The scope fingerprint

/// Identities of host objects by (name, base), found once per process.
static HOST_IDS: Mutex<Vec<HostId>> = Mutex::new(Vec::new());

/// A host object's (name, base), and its file's identity if it has one.
type HostId = ((String, usize), Option<[u64; 7]>);

fn stat_identity(path: &Path) -> Option<[u64; 7]> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity::of_metadata(&m, Vec::new()).stat)
}

/// A host object's identity: the build-id of the object as mapped (exactly
/// what is in memory, even if its file was replaced since), else its
/// file's (`stat` of `name`).
fn host_identity(name: &str, base: usize) -> Option<[u64; 7]> {
    let mut ids = HOST_IDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, id)) = ids.iter().find(|(k, _)| k.0 == name && k.1 == base) {
        return *id;
    }
    let id = match mapped_build_id(base) {
        Some(b) => {
            let mut h = Hasher::new(6);
            h.update(&b);
            Some([u64::MAX, h.finish(), b.len() as u64, 0, 0, 0, 0])
        }
        None => (!name.is_empty())
            .then(|| stat_identity(Path::new(name)))
            .flatten(),
    };
    ids.push(((name.to_string(), base), id));
    id
}

/// The `NT_GNU_BUILD_ID` of the host object whose load bias is `base`,
/// read from its mapped `PT_NOTE`s (only those inside a readable
/// `PT_LOAD`).
fn mapped_build_id(base: usize) -> Option<Vec<u8>> {
    struct Find {
        base: usize,
        id: Option<Vec<u8>>,
    }
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid info whose phdr array has dlpi_phnum
        // entries, alive for the callback; `data` is our `Find`. A note is
        // read only where a readable PT_LOAD of the same object maps it.
        unsafe {
            let f = &mut *(data as *mut Find);
            let info = &*info;
            if info.dlpi_addr as usize != f.base || info.dlpi_phdr.is_null() {
                return 0;
            }
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let loaded = |v: u64, n: u64| {
                phdrs.iter().any(|l| {
                    l.p_type == goblin::elf::program_header::PT_LOAD
                        && l.p_flags & goblin::elf::program_header::PF_R != 0
                        && l.p_vaddr <= v
                        && v.checked_add(n)
                            .is_some_and(|e| e <= l.p_vaddr + l.p_filesz)
                })
            };
            for ph in phdrs {
                if ph.p_type == PT_NOTE && ph.p_memsz <= 1 << 16 && loaded(ph.p_vaddr, ph.p_memsz) {
                    let at = f.base.wrapping_add(ph.p_vaddr as usize) as *const u8;
                    let notes = std::slice::from_raw_parts(at, ph.p_memsz as usize);
                    if let Some(id) = parse_build_id(notes, ph.p_align) {
                        f.id = Some(id);
                        break;
                    }
                }
            }
            1
        }
    }
    let mut f = Find { base, id: None };
    // SAFETY: the callback only writes `f`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(cb), &mut f as *mut Find as *mut libc::c_void) };
    f.id
}

/// The identity of the file holding soloader's own code (the executable,
/// or a library it was linked into): the functions it provides to its
/// libraries (`dlopen`, `__tls_get_addr` …) take part in lookups.
fn loader_identity() -> [u64; 7] {
    static ID: OnceLock<[u64; 7]> = OnceLock::new();
    *ID.get_or_init(|| {
        // SAFETY: an all-zero Dl_info is valid to be overwritten; dladdr
        // only reads the address.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let me = loader_identity as fn() -> [u64; 7] as *const libc::c_void;
        // SAFETY: `info` is a valid out-pointer.
        let ok = unsafe { libc::dladdr(me, &mut info) } != 0 && !info.dli_fname.is_null();
        let name = if ok {
            // SAFETY: dladdr returned a NUL-terminated name.
            unsafe { CStr::from_ptr(info.dli_fname) }
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let path = if name.is_empty() {
            PathBuf::from("/proc/self/exe")
        } else {
            PathBuf::from(name)
        };
        stat_identity(&path).unwrap_or([0; 7])
    })
}

/// Whether resolving to `o` gives the same address in every process with
/// the same scope fingerprint: it is the object being relocated, or a
/// library this cache placed (its base is in the fingerprint).
pub(crate) fn stable(o: &Object, relocating: &Object) -> bool {
    o.id == relocating.id || o.relcache.is_some()
}

/// The scope, identified module by module (see the module docs); each
/// object relocated in it hashes it with itself left out (its own identity
/// is in the cache file's header, so that a changed library finds, and
/// replaces, its stale file).
pub(crate) struct Fingerprint {
    /// Per module in scope order: soloader's object id (0 for host
    /// objects) and a hash of its identity.
    modules: Vec<(u64, u64)>,
    /// Forked mode ([`crate::Options::relocation_cache_forked`]): the
    /// module hashes include host objects' bases, and the fingerprint
    /// soloader's own, so host addresses count as fixed.
    forked: bool,
}

impl Fingerprint {
    /// The fingerprint as seen by `obj`.
    fn for_object(&self, obj: &Object) -> u64 {
        let mut h = Hasher::new(2);
        h.word(u64::from(FORMAT_VERSION));
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        for w in loader_identity() {
            h.word(w);
        }
        if self.forked {
            // Where soloader's own code is: the functions it provides
            // (`dlopen` …) are bound to addresses in it.
            h.word(u64::MAX);
            h.word(fingerprint as *const () as usize as u64);
        }
        h.word(self.modules.len() as u64);
        for &(id, m) in &self.modules {
            h.word(if id == obj.id { 0 } else { m });
        }
        h.finish()
    }
}

/// Identifies every module of `scope`, or says why it cannot; with
/// `forked`, host objects by where they are too.
pub(crate) fn fingerprint(scope: &Scope, forked: bool) -> std::result::Result<Fingerprint, String> {
    let mut modules = Vec::with_capacity(scope.modules.len());
    for m in &scope.modules {
        let mut h = Hasher::new(5);
        let id = match m {
            Module::Host(o) => {
                let Some(id) = host_identity(&o.name, o.base) else {
                    return Err(format!(
                        "cannot identify host object {:?} (stat failed)",
                        o.name
                    ));
                };
                // (Its build-id or file identifies it: its symbol tables,
                // read only when a lookup needs them, are not asked.)
                h.word(1);
                for w in id {
                    h.word(w);
                }
                if forked {
                    h.word(o.base as u64);
                }
                0
            }
            Module::Loaded(o) => {
                h.word(2);
                for w in [
                    o.file_id.0,
                    o.file_id.1,
                    o.stamp.0,
                    o.stamp.1 as u64,
                    o.stamp.2 as u64,
                ] {
                    h.word(w);
                }
                match &o.relcache {
                    Some(p) => {
                        h.word(o.mapping.base as u64);
                        for w in p.identity.stat {
                            h.word(w);
                        }
                    }
                    None => h.word(0),
                }
                o.id
            }
        };
        modules.push((id, h.finish()));
    }
    Ok(Fingerprint { modules, forked })
}

// ---------------------------------------------------------------------------
// Files verified by this process

/// A cache file's identity as far as its contents go: device, inode,
/// size, mtime and ctime (with nanoseconds).
type VerifiedKey = [i64; 7];

/// At most this many verified files are remembered.
const VERIFIED_FILES: usize = 64;

/// Cache files whose whole contents this process has checked, with their
/// header bytes, most recent last.
static VERIFIED: Mutex<Vec<(VerifiedKey, Arc<[u8]>)>> = Mutex::new(Vec::new());

fn verified_key(st: &libc::stat) -> VerifiedKey {
    [
        st.st_dev as i64,
        st.st_ino as i64,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
    ]
}

/// The header bytes of a file verified before with this identity.
fn verified(key: &VerifiedKey) -> Option<Arc<[u8]>> {
    let v = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    v.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, b)| Arc::clone(b))
}

/// How long before its verification a file must have last changed for
/// its identity to vouch for its contents.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

/// Remembers that the file `key` names was verified, unless it changed
/// too recently for that to hold: file timestamps come from a coarse
/// clock (a few milliseconds a tick on older kernels), so a write in the
/// same tick as the change before it can leave mtime and ctime as they
/// were. A file whose ctime is at least [`SETTLED`] old when it is
/// verified cannot change again without a later ctime. (Git's "racy
/// clean" entries are the same problem.)
fn remember_verified(key: VerifiedKey, header: Vec<u8>) {
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(key[5].max(0) as u64, key[6].clamp(0, 999_999_999) as u32);
    let settled = std::time::SystemTime::now()
        .duration_since(changed)
        .is_ok_and(|age| age >= SETTLED);
    if !settled {
        return;
    }
    let mut v = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|(k, _)| *k != key);
    if v.len() >= VERIFIED_FILES {
        v.remove(0);
    }
    v.push((key, header.into()));
}

// ---------------------------------------------------------------------------
// The session: one object's relocation with the cache

/// A page the cache may not hold (not in a writable segment, or shared by
/// two segments).
const INELIGIBLE: u8 = 0;
/// Eligible, not written by the load.
const UNTOUCHED: u8 = 1;
/// Written by the load with values that depend only on the base: cached,
/// and physically shared by every hit.
const FIXED: u8 = 2;
/// Written with some values that differ between processes, each by a
/// relocation every load redoes (a hit maps the page from the file and
/// applies only those, which makes it a private copy: no memory saved, but
/// the other relocations' work is).
const MIXED: u8 = 3;
/// Not cached: written by a relocation whose input is the page itself (a
/// `DT_REL` addend) with a value that differs between processes.
const PRIVATE: u8 = 4;
/// Mapped from the cache file (hits).
const CACHED: u8 = 5;
/// Mapped from the cache file, then written by a relocation that redoes a
/// varying value (hits): a private copy.
const PATCHED: u8 = 6;

/// Stubs assigned so far.
#[derive(Default)]
struct Stubs {
    /// Symbol index → stub number + 1 (0: none), cold loads only.
    by_sym: Vec<u32>,
    /// Stub number → symbol index.
    syms: Vec<u32>,
    /// Table pages made writable so far.
    table_pages: usize,
}

/// One object's relocation pass with the cache: created by [`Session::begin`]
/// before relocation, consulted by the relocation engine, closed by
/// [`Session::finish`] before RELRO is protected.
pub(crate) struct Session<'a> {
    obj: &'a Object,
    placed: &'a Placed,
    dir: &'a Dir,
    sys: Sys<'a>,
    /// The cache file's name in the directory.
    name: String,
    scope: u64,
    /// Forked mode: host objects' and soloader's addresses are part of
    /// `scope`, so values bound to them are fixed.
    host_fixed: bool,
    page: usize,
    /// Per page of the span: INELIGIBLE, UNTOUCHED, FIXED, PRIVATE, CACHED.
    pages: Box<[Cell<u8>]>,
    /// A valid cache file was mapped.
    warm: bool,
    /// A cache file exists but is unusable: the new one replaces it.
    replace: bool,
    stubs: RefCell<Stubs>,
    /// On a hit: per relocation table, the entries to process.
    residual: Option<Vec<Vec<Range<usize>>>>,
    /// On a hit: one more than the highest symbol index it resolves.
    symbols: Option<usize>,
    /// Cold loads: per relocation table, a bit per entry that wrote a value
    /// that differs between processes (every load must redo it).
    varying: RefCell<Vec<Vec<u64>>>,
    /// Cold loads: where those values were written (zeroed in the file).
    varying_at: RefCell<Vec<usize>>,
    /// The stub code could not be mapped from the file (a private copy).
    code_private: Cell<bool>,
    /// Contents of the FIXED pages before this object's IFUNC resolvers
    /// ran (they may write anywhere), in page order; cold loads with IFUNC
    /// work only.
    snapshot: RefCell<Option<Vec<u8>>>,
}

/// The parsed, checked header of a cache file.
struct Header {
    len: u64,
    pages: Vec<u64>,
    stubs: Vec<u32>,
    /// Per relocation table, the ranges of entries whose targets are not
    /// in cached pages: all a hit has to look at.
    residual: Vec<Vec<Range<usize>>>,
    data_hash: u64,
}

impl<'a> Session<'a> {
    /// Starts relocating `obj` with the cache: maps its pages from a valid
    /// cache file (a hit), or prepares to record which pages can be cached
    /// (a miss). `Ok(None)` when `obj` was not placed by the cache or the
    /// scope cannot be fingerprinted (`fingerprint`). Errors only when
    /// mapping a valid file fails half-way (the load then fails, leaving
    /// nothing mapped).
    pub(crate) fn begin(
        obj: &'a Object,
        fingerprint: &std::result::Result<Fingerprint, String>,
        dir: &'a Dir,
        sys: Sys<'a>,
    ) -> Result<Option<Session<'a>>> {
        let Some(placed) = obj.relcache.as_ref() else {
            return Ok(None);
        };
        let (scope, host_fixed) = match fingerprint {
            Ok(f) => (f.for_object(obj), f.forked),
            Err(why) => {
                trace(
                    sys.tracer,
                    &obj.path,
                    "not used",
                    None,
                    || why.clone(),
                    Vec::new,
                );
                return Ok(None);
            }
        };
        let page = page_size();
        let start = obj.mapping.start;
        let n = obj.mapping.len / page;
        let pages: Box<[Cell<u8>]> = (0..n).map(|_| Cell::new(INELIGIBLE)).collect();
        // Eligible: pages of writable segments that no other segment shares.
        let range_of = |l: &crate::elf::LoadSegment| {
            let s = obj.addr(page_down(l.vaddr)).wrapping_sub(start) / page;
            let e = obj.addr(page_up(l.vaddr + l.memsz)).wrapping_sub(start) / page;
            s.min(n)..e.min(n)
        };
        for l in obj.plan.loads.iter().filter(|l| l.flags & PF_W != 0) {
            for p in range_of(l) {
                pages[p].set(UNTOUCHED);
            }
        }
        for (i, a) in obj.plan.loads.iter().enumerate() {
            for b in &obj.plan.loads[i + 1..] {
                let (ra, rb) = (range_of(a), range_of(b));
                for p in ra.start.max(rb.start)..ra.end.min(rb.end) {
                    pages[p].set(INELIGIBLE);
                }
            }
        }
        let name = format!(
            "{}-{:x}-{scope:016x}.relcache",
            placed.identity.key(),
            obj.mapping.base
        );
        let mut s = Session {
            obj,
            placed,
            dir,
            sys,
            name,
            scope,
            host_fixed,
            page,
            pages,
            warm: false,
            replace: false,
            stubs: RefCell::new(Stubs::default()),
            residual: None,
            symbols: None,
            varying: RefCell::new(Vec::new()),
            varying_at: RefCell::new(Vec::new()),
            code_private: Cell::new(false),
            snapshot: RefCell::new(None),
        };
        match s.open() {
            Ok(Some((file, header))) => {
                s.map(&file, &header)?;
                s.symbols = Some(s.symbols_used(&header));
                s.residual = Some(header.residual);
                s.warm = true;
            }
            Ok(None) => s.cold(),
            Err(why) => {
                s.ignore("ignored", why);
                s.replace = true;
                s.cold();
            }
        }
        Ok(Some(s))
    }

    fn file_path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }

    fn ignore(&self, what: &'static str, why: String) {
        trace(
            self.sys.tracer,
            &self.obj.path,
            what,
            Some(self.file_path()),
            || why,
            Vec::new,
        );
    }

    /// Prepares a cold load: the loader-zeroed `.bss` tail pages are
    /// written with fixed values too.
    fn cold(&mut self) {
        self.stubs.get_mut().by_sym = vec![0; self.obj.tables.symtab.len()];
        *self.varying.get_mut() = self
            .obj
            .tables
            .relocs
            .iter()
            .map(|t| vec![0u64; t.len().div_ceil(64)])
            .collect();
        for l in &self.obj.plan.loads {
            let data_end = l.vaddr + l.filesz;
            if l.flags & PF_W != 0
                && l.memsz > l.filesz
                && l.filesz > 0
                && data_end % self.page as u64 != 0
            {
                self.mark(self.obj.addr(page_down(data_end)), FIXED);
            }
        }
    }

    /// Page index of `addr` in the span, if inside.
    #[inline]
    fn index(&self, addr: usize) -> Option<usize> {
        let i = addr.wrapping_sub(self.obj.mapping.start) / self.page;
        (i < self.pages.len()).then_some(i)
    }

    /// Raises the page at `addr` to at least `state` (FIXED < MIXED <
    /// PRIVATE); ineligible pages stay so.
    #[inline]
    fn mark(&self, addr: usize, state: u8) {
        if let Some(i) = self.index(addr) {
            let c = &self.pages[i];
            if c.get() != INELIGIBLE && c.get() < state {
                c.set(state);
            }
        }
    }

    /// Whether the 8 bytes at `t` straddle two pages.
    #[inline]
    fn straddles(&self, t: usize) -> bool {
        (t ^ t.wrapping_add(7)) & !(self.page - 1) != 0
    }

    /// Marks the pages of the 8 bytes at `t` (two when they straddle).
    #[inline]
    fn mark8(&self, t: usize, state: u8) {
        self.mark(t, state);
        if self.straddles(t) {
            self.mark(t.wrapping_add(7), state);
        }
    }

    /// Whether the 8 bytes at `t` lie in pages mapped from the cache (hits):
    /// the `DT_RELR` relocation writing them is skipped.
    #[inline]
    pub(crate) fn cached(&self, t: usize) -> bool {
        let cached = |a: usize| {
            self.index(a)
                .is_some_and(|i| matches!(self.pages[i].get(), CACHED | PATCHED))
        };
        self.warm && cached(t) && cached(t.wrapping_add(7))
    }

    /// Records (cold loads) a `DT_RELR` write at `t`: always a fixed value,
    /// but computed from the word in the page (`+= base`), so a word that
    /// straddles two pages keeps both out of the cache (a hit could find
    /// one of them already relocated).
    #[inline]
    pub(crate) fn wrote(&self, t: usize) {
        if !self.warm {
            let state = if self.straddles(t) { PRIVATE } else { FIXED };
            self.mark8(t, state);
        }
    }

    /// Records (cold loads) that relocation `entry` (table, index) wrote 8
    /// bytes at `t`; `fixed`: the value is the same in every process with
    /// this base and scope. A varying value makes its pages MIXED (every
    /// hit redoes the relocation), or PRIVATE if the relocation reads its
    /// addend from the page (`DT_REL`).
    #[inline]
    pub(crate) fn entry(&self, entry: (usize, usize), t: usize, fixed: bool) {
        if self.warm {
            for a in [t, t.wrapping_add(7)] {
                if let Some(i) = self.index(a) {
                    if self.pages[i].get() == CACHED {
                        self.pages[i].set(PATCHED);
                    }
                }
            }
            return;
        }
        let (table, i) = entry;
        let rel = matches!(self.obj.tables.relocs.get(table), Some(RelocTable::Rel(_)));
        if fixed {
            // A DT_REL entry reads its addend from the page: one that
            // straddles two pages keeps both out of the cache (a hit may
            // redo it with one of them already relocated).
            let state = if rel && self.straddles(t) {
                PRIVATE
            } else {
                FIXED
            };
            self.mark8(t, state);
            return;
        }
        if let Some(bits) = self.varying.borrow_mut().get_mut(table) {
            if let Some(w) = bits.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        }
        self.varying_at.borrow_mut().push(t);
        self.mark8(t, if rel { PRIVATE } else { MIXED });
    }

    /// Whether values bound to host objects (and to soloader's own
    /// functions) are fixed: forked mode.
    pub(crate) fn host_fixed(&self) -> bool {
        self.host_fixed
    }

    /// The value symbol relocation `entry` writes at `t`: `v` itself, or
    /// for an external `JUMP_SLOT` on a cold load, the address of the
    /// symbol's stub (whose table entry gets `v`).
    pub(crate) fn value(
        &self,
        entry: (usize, usize),
        t: usize,
        jump_slot: bool,
        fixed: bool,
        sym: usize,
        v: usize,
    ) -> Result<usize> {
        if self.warm || fixed || !jump_slot {
            self.entry(entry, t, fixed);
            return Ok(v);
        }
        match self.stub(sym, v)? {
            Some(stub) => {
                self.entry(entry, t, true);
                Ok(stub)
            }
            None => {
                self.entry(entry, t, false);
                Ok(v)
            }
        }
    }

    /// The stub for `sym` (cold loads), created if needed, its table entry
    /// set to `v`. `None` when every stub is taken.
    fn stub(&self, sym: usize, v: usize) -> Result<Option<usize>> {
        let mut st = self.stubs.borrow_mut();
        let Some(&known) = st.by_sym.get(sym) else {
            return Ok(None);
        };
        let n = if known != 0 {
            known as usize - 1
        } else {
            if st.syms.len() >= MAX_STUBS {
                return Ok(None);
            }
            let n = st.syms.len();
            st.syms.push(sym as u32);
            st.by_sym[sym] = n as u32 + 1;
            n
        };
        self.table_writable(&mut st, n + 1)?;
        self.set_table(n, v);
        Ok(Some(self.stub_addr(n)))
    }

    fn stub_addr(&self, n: usize) -> usize {
        self.placed.area.start + n * STUB_SIZE
    }

    fn table_addr(&self, n: usize) -> usize {
        self.placed.area.start + CODE_BYTES + n * 8
    }

    fn set_table(&self, n: usize, v: usize) {
        // SAFETY: entry `n` lies in the table part of the stub area this
        // object reserved, made readable and writable (`table_writable`)
        // for at least `n + 1` entries; nothing reads it concurrently (the
        // object is not visible to other threads before it is linked).
        unsafe { (self.table_addr(n) as *mut usize).write(v) }
    }

    /// Makes the table pages holding `count` entries writable.
    fn table_writable(&self, st: &mut Stubs, count: usize) -> Result<()> {
        let need = (count * 8).div_ceil(self.page);
        if need > st.table_pages {
            let from = self.table_addr(0) + st.table_pages * self.page;
            self.sys.mprotect(
                from,
                (need - st.table_pages) * self.page,
                libc::PROT_READ | libc::PROT_WRITE,
                || "relocation cache: stub table".into(),
            )?;
            st.table_pages = need;
        }
        Ok(())
    }

    /// The stubs a hit must fill (stub number, symbol index) before
    /// relocating: their `JUMP_SLOT`s in cached pages are skipped.
    pub(crate) fn stub_symbols(&self) -> Vec<(usize, usize)> {
        if !self.warm {
            return Vec::new();
        }
        let st = self.stubs.borrow();
        st.syms
            .iter()
            .enumerate()
            .map(|(n, &s)| (n, s as usize))
            .collect()
    }

    /// Sets stub `n`'s target (hits).
    pub(crate) fn fill_stub(&self, n: usize, v: usize) {
        if n < self.stubs.borrow().syms.len() {
            self.set_table(n, v);
        }
    }

    /// A stubbed symbol did not resolve to an address on a hit: impossible
    /// with a matching fingerprint; the load fails rather than run with a
    /// wrong table.
    pub(crate) fn inconsistent(&self, sym: usize) -> Error {
        Error::Runtime {
            path: self.obj.path.clone(),
            what: format!(
                "relocation cache {}: stubbed symbol #{sym} no longer resolves to an address; delete the cache file",
                self.file_path().display()
            ),
        }
    }

    /// Called once every relocation but the IFUNC work is done: writes the
    /// stub code (cold loads; resolvers may call through it) and, if IFUNC
    /// resolvers are about to run, keeps a copy of the cacheable pages
    /// first (a resolver may write anywhere; the file must hold what
    /// relocation alone wrote).
    pub(crate) fn before_ifunc(&self, ifunc_work: bool) -> Result<()> {
        if self.warm {
            return Ok(());
        }
        let n = self.stubs.borrow().syms.len();
        if n > 0 {
            self.write_stub_code(n)?;
        }
        if ifunc_work {
            let mut copy = Vec::new();
            for p in self.fixed_pages() {
                // SAFETY: a page of a writable segment of this object,
                // mapped readable.
                copy.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(p as *const u8, self.page)
                });
            }
            *self.snapshot.borrow_mut() = Some(copy);
        }
        Ok(())
    }

    /// The pages a cold load saves: FIXED and MIXED.
    /// Writes the code of `n` stubs into fresh anonymous pages at the start
    /// of the stub area (a private copy).
    fn write_stub_code(&self, n: usize) -> Result<()> {
        let (code, _) = self.stub_range(n);
        let (at, len) = (code.start, code.end - code.start);
        self.sys.mmap(
            at,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
            || "relocation cache: stub code (private copy)".into(),
        )?;
        let bytes = stub_code(at, len);
        // SAFETY: [at, at + len) is the start of the stub area this object
        // reserved, just mapped writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, len) };
        self.sys
            .mprotect(at, len, libc::PROT_READ | libc::PROT_EXEC, || {
                "relocation cache: stub code".into()
            })
    }

    /// Maps the code of `n` stubs from the cache file at `off`; if the file
    /// cannot be mapped executable (a `noexec` file system), writes a
    /// private copy instead.
    fn map_stub_code(&self, file: &File, off: u64, n: usize) -> Result<()> {
        let (code, _) = self.stub_range(n);
        let mapped = self.sys.mmap(
            code.start,
            code.end - code.start,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            off,
            || "relocation cache: stub code, from the cache file".into(),
        );
        if let Err(e) = mapped {
            self.code_private.set(true);
            self.ignore(
                "stub code private",
                format!("the stub code cannot be mapped from the cache file ({e}); a private copy is used"),
            );
            self.write_stub_code(n)?;
        }
        Ok(())
    }

    fn fixed_pages(&self) -> Vec<usize> {
        let start = self.obj.mapping.start;
        (0..self.pages.len())
            .filter(|&i| matches!(self.pages[i].get(), FIXED | MIXED))
            .map(|i| start + i * self.page)
            .collect()
    }

    fn stub_range(&self, n: usize) -> (Range<usize>, Range<usize>) {
        let code = self.placed.area.start;
        let table = self.table_addr(0);
        (
            code..code + (n * STUB_SIZE).div_ceil(self.page) * self.page,
            table..table + (n * 8).div_ceil(self.page) * self.page,
        )
    }

    /// Ends the relocation pass (before RELRO is protected): protects the
    /// stub table, and on a cold load writes the cache file and maps the
    /// pages from it. Failing to write is traced, never an error.
    pub(crate) fn finish(self) -> Result<()> {
        let (n, table_pages) = {
            let st = self.stubs.borrow();
            (st.syms.len(), st.table_pages)
        };
        if table_pages > 0 {
            self.sys.mprotect(
                self.table_addr(0),
                table_pages * self.page,
                libc::PROT_READ,
                || "relocation cache: stub table filled, read-only".into(),
            )?;
        }
        let (stub_code, stub_table) = self.stub_range(n);
        let with = |states: &[u8]| -> Vec<usize> {
            (0..self.pages.len())
                .filter(|&i| states.contains(&self.pages[i].get()))
                .map(|i| self.obj.mapping.start + i * self.page)
                .collect()
        };
        if self.warm {
            let _ = self.placed.outcome.set(CacheUse {
                file: self.file_path(),
                hit: true,
                written: false,
                pages: with(&[CACHED, PATCHED]),
                shared: with(&[CACHED]),
                mapped: !self.code_private.get(),
                stubs: n,
                stub_code,
                stub_table,
            });
            return Ok(());
        }
        let pages = self.fixed_pages();
        let (written, mapped) = if pages.is_empty() && n == 0 {
            self.ignore("not written", "no page is the same in every process".into());
            (false, false)
        } else {
            match self.write(&pages, n) {
                Ok(Some((file, header_len))) => {
                    // Shared from now on, unless an IFUNC resolver may have
                    // changed the pages since they were copied.
                    let same = self.snapshot.borrow().is_none();
                    if same {
                        self.adopt(&file, header_len, &pages, n)?;
                    }
                    (true, same)
                }
                Ok(None) => (false, false),
                Err(e) => {
                    self.ignore("not written", format!("writing the cache file failed: {e}"));
                    (false, false)
                }
            }
        };
        let shared = if mapped { with(&[FIXED]) } else { Vec::new() };
        let mapped = mapped && !self.code_private.get();
        let _ = self.placed.outcome.set(CacheUse {
            file: self.file_path(),
            hit: false,
            written,
            pages,
            shared,
            mapped,
            stubs: n,
            stub_code,
            stub_table,
        });
        Ok(())
    }

    /// Writes the cache file. `Ok(Some(..))`: it is now the directory's
    /// (the file, open, and its header length); `Ok(None)`: another process
    /// wrote one first.
    fn write(&self, pages: &[usize], stubs: usize) -> io::Result<Option<(File, u64)>> {
        let snapshot = self.snapshot.borrow();
        let page = self.page;
        let start = self.obj.mapping.start;
        let (code, _) = self.stub_range(stubs);
        let code_bytes = stub_code(code.start, code.end - code.start);
        let indexes: Vec<u64> = pages.iter().map(|&p| ((p - start) / page) as u64).collect();
        // The pages as stored: from the copy taken before IFUNC resolvers
        // ran, or from memory; with the varying values (this process's
        // addresses, which every hit rewrites) zeroed.
        let mut data = match snapshot.as_ref() {
            Some(s) => s.clone(),
            None => {
                let mut d = Vec::with_capacity(pages.len() * page);
                for &p in pages {
                    // SAFETY: a page of a writable segment of this object,
                    // mapped readable; nothing else writes it during the
                    // load.
                    d.extend_from_slice(unsafe {
                        std::slice::from_raw_parts(p as *const u8, page)
                    });
                }
                d
            }
        };
        for &a in self.varying_at.borrow().iter() {
            for b in a..a.wrapping_add(8) {
                if let Ok(k) = pages.binary_search(&(b & !(page - 1))) {
                    data[k * page + (b - pages[k])] = 0;
                }
            }
        }
        let mut data_hash = Hasher::new(3);
        data_hash.update(&data);
        data_hash.update(&code_bytes);
        let header = self.header(
            &indexes,
            &self.stubs.borrow().syms,
            &self.residual(),
            data_hash.finish(),
        );

        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = format!(
            ".{}.{}.{now}.{}.tmp",
            self.name,
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let file = self
            .dir
            .openat(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o444)?;
        let result = (|| -> io::Result<bool> {
            file.write_all_at(&header, 0)?;
            let off = header.len() as u64;
            file.write_all_at(&data, off)?;
            file.write_all_at(&code_bytes, off + data.len() as u64)?;
            // On disk before it has its name: after a crash the name holds
            // a whole file or nothing; and clean page-cache pages are what
            // every process then shares.
            file.sync_data()?;
            match self.dir.rename(&tmp, &self.name, self.replace) {
                Ok(()) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
                Err(e) => Err(e),
            }
        })();
        match result {
            Ok(true) => {}
            Ok(false) => {
                self.dir.unlink(&tmp);
                self.ignore(
                    "not written",
                    "another process wrote the cache file first".into(),
                );
                return Ok(None);
            }
            Err(e) => {
                self.dir.unlink(&tmp);
                return Err(e);
            }
        }
        trace(
            self.sys.tracer,
            &self.obj.path,
            "written",
            Some(self.file_path()),
            || format!("{} pages, {stubs} stubs", pages.len()),
            || pages.to_vec(),
        );
        let removed = self.dir.tidy(&self.name);
        if !removed.is_empty() {
            trace(
                self.sys.tracer,
                &self.obj.path,
                "tidied",
                None,
                || format!("removed {}", removed.join(", ")),
                Vec::new,
            );
        }
        Ok(Some((file, header.len() as u64)))
    }

    /// Maps the FIXED pages just written (identical to memory: no IFUNC
    /// resolver ran since) and the stub code from the new file, so that
    /// this process shares them too. A failed `MAP_FIXED` may leave a hole,
    /// so it fails the load.
    fn adopt(&self, file: &File, header_len: u64, pages: &[usize], stubs: usize) -> Result<()> {
        let page = self.page;
        let start = self.obj.mapping.start;
        let indexes: Vec<u64> = pages.iter().map(|&p| ((p - start) / page) as u64).collect();
        for r in runs(&indexes) {
            let fixed = |p: u64| self.pages[p as usize].get() == FIXED;
            if !(r.start..r.start + r.count as u64).all(fixed) {
                // Split around the MIXED pages, which stay private.
                for (j, p) in (r.start..r.start + r.count as u64).enumerate() {
                    if fixed(p) {
                        self.sys.mmap(
                            start + p as usize * page,
                            page,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_FIXED,
                            file.as_raw_fd(),
                            header_len + ((r.first + j) * page) as u64,
                            || "relocation cache: page just written, from the cache file".into(),
                        )?;
                    }
                }
                continue;
            }
            self.sys.mmap(
                start + r.start as usize * page,
                r.count * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                header_len + (r.first * page) as u64,
                || "relocation cache: pages just written, from the cache file".into(),
            )?;
        }
        if stubs > 0 {
            self.map_stub_code(file, header_len + (pages.len() * page) as u64, stubs)?;
        }
        Ok(())
    }

    fn header(&self, pages: &[u64], stubs: &[u32], residual: &[u32], data_hash: u64) -> Vec<u8> {
        let mut h = Vec::new();
        let put = |h: &mut Vec<u8>, v: u64| h.extend_from_slice(&v.to_le_bytes());
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        h.extend_from_slice(&(self.page as u32).to_le_bytes());
        let len_at = h.len();
        put(&mut h, 0); // header length, set below
        for v in self.fixed_fields() {
            put(&mut h, v);
        }
        let id = &self.placed.identity.build_id;
        put(&mut h, id.len() as u64);
        let mut padded = [0u8; MAX_BUILD_ID];
        padded[..id.len()].copy_from_slice(id);
        h.extend_from_slice(&padded);
        put(&mut h, pages.len() as u64);
        put(&mut h, stubs.len() as u64);
        put(&mut h, residual.len() as u64);
        put(&mut h, data_hash);
        for &p in pages {
            put(&mut h, p);
        }
        for &s in stubs.iter().chain(residual) {
            h.extend_from_slice(&s.to_le_bytes());
        }
        let len = (h.len() + 8).div_ceil(self.page) * self.page;
        h[len_at..len_at + 8].copy_from_slice(&(len as u64).to_le_bytes());
        let mut hh = Hasher::new(4);
        hh.update(&h);
        put(&mut h, hh.finish());
        h.resize(len, 0);
        h
    }

    /// The header fields that must equal this load's.
    fn fixed_fields(&self) -> [u64; 11] {
        let s = &self.placed.identity.stat;
        [
            self.obj.mapping.base as u64,
            self.obj.mapping.start as u64,
            self.obj.mapping.len as u64,
            self.scope,
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            s[5],
            s[6],
        ]
    }

    /// Opens and checks the cache file. `Ok(None)`: there is none; `Err`:
    /// there is one, unusable for the reason given.
    fn open(&self) -> std::result::Result<Option<(File, Header)>, String> {
        let file = match self.dir.openat(&self.name, libc::O_RDONLY, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                trace(
                    self.sys.tracer,
                    &self.obj.path,
                    "miss",
                    Some(self.file_path()),
                    || "no cache file yet".into(),
                    Vec::new,
                );
                return Ok(None);
            }
            Err(e) => return Err(format!("open: {e}")),
        };
        let st = fstat(file.as_raw_fd()).map_err(|e| format!("fstat: {e}"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err("not a regular file".into());
        }
        if st.st_uid != self.dir.uid || st.st_mode & 0o022 != 0 {
            return Err(format!(
                "owned by uid {} with mode {:03o}: not this user's read-only file",
                st.st_uid,
                st.st_mode & 0o777
            ));
        }
        let size = st.st_size as u64;
        let stub_len = |header: &Header| {
            let (code, _) = self.stub_range(header.stubs.len());
            code.end - code.start
        };
        // A file this process verified before, unchanged since (the same
        // inode, size, mtime and ctime: soloader never writes a cache file
        // in place, and writing one changes its mtime): its header is
        // checked against this load again, its contents are not re-read.
        let key = verified_key(&st);
        if let Some(bytes) = verified(&key) {
            let header = self.parse(&file, size, &bytes)?;
            if size == header.len + (header.pages.len() * self.page + stub_len(&header)) as u64 {
                return Ok(Some((file, header)));
            }
        }
        // The first chunk (for small libraries, the whole file) in one read.
        let mut first = vec![0u8; size.min(READ_CHUNK as u64) as usize];
        file.read_exact_at(&mut first, 0)
            .map_err(|e| format!("read: {e}"))?;
        let header = self.parse(&file, size, &first)?;
        // The page contents: read (never mapped) until they check out.
        let stub_len = stub_len(&header);
        let want = header.len + (header.pages.len() * self.page + stub_len) as u64;
        if size != want {
            return Err(format!("corrupt: {size} bytes, the header says {want}"));
        }
        let mut hasher = Hasher::new(3);
        let data_end = header.len + (header.pages.len() * self.page) as u64;
        // From the first chunk, then chunk by chunk.
        let mut off = header.len;
        let from_first = data_end.min(first.len() as u64);
        if off < from_first {
            hasher.update(&first[off as usize..from_first as usize]);
            off = from_first;
        }
        let mut buf = Vec::new();
        while off < data_end {
            let n = (data_end - off).min(READ_CHUNK as u64) as usize;
            buf.resize(n, 0);
            file.read_exact_at(&mut buf[..n], off)
                .map_err(|e| format!("read: {e}"))?;
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        let code = if size <= first.len() as u64 {
            first[data_end as usize..].to_vec()
        } else {
            let mut code = vec![0u8; stub_len];
            file.read_exact_at(&mut code, data_end)
                .map_err(|e| format!("read: {e}"))?;
            code
        };
        let (range, _) = self.stub_range(header.stubs.len());
        if code != stub_code(range.start, stub_len) {
            return Err("corrupt: the stub code is not what it should be".into());
        }
        hasher.update(&code);
        if hasher.finish() != header.data_hash {
            return Err("corrupt: the page checksum does not match".into());
        }
        let bytes = if header.len <= first.len() as u64 {
            first[..header.len as usize].to_vec()
        } else {
            let mut v = vec![0u8; header.len as usize];
            file.read_exact_at(&mut v, 0)
                .map_err(|e| format!("read: {e}"))?;
            v
        };
        remember_verified(key, bytes);
        Ok(Some((file, header)))
    }

    /// Checks the header (its start is `first`, read from `file`) against
    /// this load.
    fn parse(&self, file: &File, size: u64, first: &[u8]) -> std::result::Result<Header, String> {
        let fixed = 8 + 4 + 4 + 8 + 11 * 8 + 8 + MAX_BUILD_ID + 4 * 8;
        if size < fixed as u64 || first.len() < fixed {
            return Err(format!("corrupt: {size} bytes, too short for a header"));
        }
        let head = &first[..fixed];
        if head[..8] != MAGIC {
            return Err("corrupt: bad magic".into());
        }
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |b: &[u8], o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        if u32_at(head, 8) != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this loader writes {FORMAT_VERSION})",
                u32_at(head, 8)
            ));
        }
        if u32_at(head, 12) as usize != self.page {
            return Err("written with another page size".into());
        }
        let len = u64_at(head, 16);
        if len < fixed as u64 + 8 || len > MAX_HEADER || len > size || len % self.page as u64 != 0 {
            return Err(format!("corrupt: header length {len}"));
        }
        let long;
        let h: &[u8] = if len as usize <= first.len() {
            &first[..len as usize]
        } else {
            let mut v = vec![0u8; len as usize];
            file.read_exact_at(&mut v, 0)
                .map_err(|e| format!("read: {e}"))?;
            long = v;
            &long
        };
        let mut at = 24;
        let mut next = || {
            let v = u64_at(h, at);
            at += 8;
            v
        };
        let fields: Vec<u64> = (0..11).map(|_| next()).collect();
        let id_len = next() as usize;
        let id_at = at;
        at += MAX_BUILD_ID;
        let mut next = || {
            let v = u64_at(h, at);
            at += 8;
            v
        };
        let (npages, nstubs, nres, data_hash) = (next(), next(), next(), next());
        let span_pages = self.pages.len() as u64;
        if npages > span_pages
            || nstubs > MAX_STUBS as u64
            || nres > MAX_HEADER / 4
            || id_len > MAX_BUILD_ID
        {
            return Err("corrupt: page, stub or entry count out of range".into());
        }
        let table_end = at + npages as usize * 8 + (nstubs + nres) as usize * 4;
        if table_end + 8 > h.len() {
            return Err("corrupt: header tables overflow the header".into());
        }
        let mut hh = Hasher::new(4);
        hh.update(&h[..table_end]);
        if u64_at(h, table_end) != hh.finish() {
            return Err("corrupt: the header checksum does not match".into());
        }
        if h[table_end + 8..].iter().any(|&b| b != 0) {
            return Err("corrupt: the header padding is not zero".into());
        }
        // Checked, now compared.
        let want = self.fixed_fields();
        let names = [
            "base",
            "span start",
            "span length",
            "scope fingerprint",
            "device",
            "inode",
            "size",
            "mtime",
            "mtime_nsec",
            "ctime",
            "ctime_nsec",
        ];
        for (i, (got, want)) in fields.iter().zip(want).enumerate() {
            if *got != want {
                return Err(format!(
                    "stale: made for another {} ({got:#x}, now {want:#x})",
                    names[i]
                ));
            }
        }
        if h[id_at..id_at + id_len] != self.placed.identity.build_id[..] {
            return Err("stale: made for another build-id".into());
        }
        let mut pages = Vec::with_capacity(npages as usize);
        for k in 0..npages as usize {
            let p = u64_at(h, at + k * 8);
            if pages.last().is_some_and(|&q| p <= q) || p >= span_pages {
                return Err("corrupt: page list is not sorted or leaves the span".into());
            }
            if self.pages[p as usize].get() != UNTOUCHED {
                return Err(format!("corrupt: page {p} is not in a writable segment"));
            }
            pages.push(p);
        }
        at += npages as usize * 8;
        let symbols = self.obj.tables.symtab.len() as u64;
        let mut stubs = Vec::with_capacity(nstubs as usize);
        for k in 0..nstubs as usize {
            let s = u32_at(h, at + k * 4);
            if s == 0 || u64::from(s) >= symbols {
                return Err(format!("corrupt: stub {k} names symbol #{s}"));
            }
            stubs.push(s);
        }
        at += nstubs as usize * 4;
        let words: Vec<u32> = (0..nres as usize).map(|k| u32_at(h, at + k * 4)).collect();
        let residual = self
            .parse_residual(&words)
            .ok_or("corrupt: the relocation entry ranges do not fit the relocation tables")?;
        Ok(Header {
            len,
            pages,
            stubs,
            residual,
            data_hash,
        })
    }

    /// Decodes the residual entry ranges: the number of relocation tables,
    /// then per table the number of ranges and each `[lo, hi)`, sorted,
    /// disjoint and inside the table.
    fn parse_residual(&self, words: &[u32]) -> Option<Vec<Vec<Range<usize>>>> {
        let tables = &self.obj.tables.relocs;
        let mut it = words.iter().map(|&w| w as usize);
        if it.next()? != tables.len() {
            return None;
        }
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let n = it.next()?;
            let mut ranges: Vec<Range<usize>> = Vec::with_capacity(n.min(words.len()));
            for _ in 0..n {
                let (lo, hi) = (it.next()?, it.next()?);
                if lo >= hi || hi > t.len() || ranges.last().is_some_and(|r| lo < r.end) {
                    return None;
                }
                ranges.push(lo..hi);
            }
            out.push(ranges);
        }
        it.next().is_none().then_some(out)
    }

    /// Encodes the entries a hit must process (see `parse_residual`): those
    /// that wrote a varying value, and those whose target is not in a
    /// cached page.
    fn residual(&self) -> Vec<u32> {
        let tables = &self.obj.tables.relocs;
        let varying = self.varying.borrow();
        let saved = |a: usize| {
            self.index(a)
                .is_some_and(|p| matches!(self.pages[p].get(), FIXED | MIXED))
        };
        let mut words = vec![tables.len() as u32];
        for (ti, t) in tables.iter().enumerate() {
            let mut ranges: Vec<(u32, u32)> = Vec::new();
            for i in 0..t.len() {
                let off = match t {
                    RelocTable::Rela(t) => t.get(i).map(|r| r.r_offset),
                    RelocTable::Rel(t) => t.get(i).map(|r| r.r_offset),
                };
                let varies = varying
                    .get(ti)
                    .and_then(|b| b.get(i / 64))
                    .is_some_and(|w| w & (1 << (i % 64)) != 0);
                let skip = !varies
                    && off.is_some_and(|o| {
                        let a = self.obj.addr(o);
                        saved(a) && saved(a.wrapping_add(7))
                    });
                if skip {
                    continue;
                }
                match ranges.last_mut() {
                    Some(r) if r.1 as usize == i => r.1 += 1,
                    _ => ranges.push((i as u32, i as u32 + 1)),
                }
            }
            words.push(ranges.len() as u32);
            for (lo, hi) in ranges {
                words.extend([lo, hi]);
            }
        }
        words
    }

    /// One more than the highest symbol index a hit resolves: its stubs'
    /// and its entries' (see [`Session::symbols`]).
    fn symbols_used(&self, header: &Header) -> usize {
        let mut max = header.stubs.iter().map(|&s| s as usize).max().unwrap_or(0);
        for (t, ranges) in self.obj.tables.relocs.iter().zip(&header.residual) {
            for i in ranges.iter().cloned().flatten() {
                let info = match t {
                    RelocTable::Rela(t) => t.get(i).map(|r| r.r_info),
                    RelocTable::Rel(t) => t.get(i).map(|r| r.r_info),
                };
                max = max.max(info.map_or(0, |x| (x >> 32) as usize));
            }
        }
        max + 1
    }

    /// On a hit, how many symbols the relocation pass may resolve (the
    /// per-symbol tables need no more entries); `None`: all of them.
    pub(crate) fn symbols(&self) -> Option<usize> {
        self.symbols
    }

    /// On a hit, the entries of relocation table `table` to process: those
    /// whose target page is not cached. `None`: all of them.
    pub(crate) fn entries(&self, table: usize) -> Option<&[Range<usize>]> {
        self.residual
            .as_ref()
            .and_then(|r| r.get(table))
            .map(Vec::as_slice)
    }

    /// Maps a checked file's pages over the object's, and its stub code.
    fn map(&mut self, file: &File, header: &Header) -> Result<()> {
        let page = self.page;
        let start = self.obj.mapping.start;
        for r in runs(&header.pages) {
            self.sys.mmap(
                start + r.start as usize * page,
                r.count * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                header.len + (r.first * page) as u64,
                || "relocation cache: relocated pages, from the cache file".into(),
            )?;
            for p in r.start..r.start + r.count as u64 {
                self.pages[p as usize].set(CACHED);
            }
        }
        let n = header.stubs.len();
        if n > 0 {
            self.map_stub_code(file, header.len + (header.pages.len() * page) as u64, n)?;
            let mut st = self.stubs.borrow_mut();
            st.syms = header.stubs.clone();
            self.table_writable(&mut st, n)?;
        }
        let pages: Vec<usize> = header
            .pages
            .iter()
            .map(|&p| start + p as usize * page)
            .collect();
        let count = pages.len();
        trace(
            self.sys.tracer,
            &self.obj.path,
            "hit",
            Some(self.file_path()),
            || format!("{count} pages mapped from the cache file, {n} stubs"),
            || pages,
        );
        Ok(())
    }
}

/// A run of consecutive page indexes stored consecutively in the file.
struct Run {
    /// First page index in the span.
    start: u64,
    /// Its position among the file's pages.
    first: usize,
    count: usize,
}

fn runs(pages: &[u64]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (k, &p) in pages.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.start + r.count as u64 == p => r.count += 1,
            _ => out.push(Run {
                start: p,
                first: k,
                count: 1,
            }),
        }
    }
    out
}

/// The stub code for the `len` bytes at `at` (the start of a stub area):
/// stub `n` is `endbr64; jmp *table[n](%rip)`, padded with `int3`.
fn stub_code(at: usize, len: usize) -> Vec<u8> {
    let mut code = vec![0xcc_u8; len];
    for (n, stub) in code.chunks_exact_mut(STUB_SIZE).enumerate() {
        let next = at + n * STUB_SIZE + 10;
        let target = at + CODE_BYTES + n * 8;
        let disp = (target - next) as u32;
        stub[..4].copy_from_slice(&[0xf3, 0x0f, 0x1e, 0xfa]);
        stub[4..6].copy_from_slice(&[0xff, 0x25]);
        stub[6..10].copy_from_slice(&disp.to_le_bytes());
    }
    code
}

// ---------------------------------------------------------------------------
// Hashing

/// A fast 64-bit hash (four xxHash64-style lanes), for integrity checks
/// against corruption (not against an attacker: the directory's ownership
/// is what keeps those out).
struct Hasher {
    lanes: [u64; 4],
    buf: [u8; 32],
    fill: usize,
    total: u64,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

impl Hasher {
    fn new(seed: u64) -> Hasher {
        Hasher {
            lanes: [
                seed.wrapping_add(P1).wrapping_add(P2),
                seed.wrapping_add(P2),
                seed,
                seed.wrapping_sub(P1),
            ],
            buf: [0; 32],
            fill: 0,
            total: 0,
        }
    }

    #[inline]
    fn round(acc: u64, w: u64) -> u64 {
        acc.wrapping_add(w.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }

    #[inline]
    fn block(&mut self, b: &[u8]) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *lane = Hasher::round(*lane, u64::from_le_bytes(w));
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.fill > 0 {
            let take = (32 - self.fill).min(data.len());
            self.buf[self.fill..self.fill + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill < 32 {
                return;
            }
            let b = self.buf;
            self.block(&b);
            self.fill = 0;
        }
        let mut chunks = data.chunks_exact(32);
        for c in &mut chunks {
            self.block(c);
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.fill = rest.len();
    }

    fn word(&mut self, w: u64) {
        self.update(&w.to_le_bytes());
    }

    fn finish(&self) -> u64 {
        let [a, b, c, d] = self.lanes;
        let mut h = a
            .rotate_left(1)
            .wrapping_add(b.rotate_left(7))
            .wrapping_add(c.rotate_left(12))
            .wrapping_add(d.rotate_left(18));
        for lane in self.lanes {
            h = (h ^ Hasher::round(0, lane))
                .wrapping_mul(P1)
                .wrapping_add(P3);
        }
        h = h.wrapping_add(self.total);
        for &byte in &self.buf[..self.fill] {
            h = (h ^ u64::from(byte).wrapping_mul(P3))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

fn hash_words(words: &[u64]) -> u64 {
    let mut h = Hasher::new(0);
    for &w in words {
        h.word(w);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_streams_and_differs() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut one = Hasher::new(9);
        one.update(&data);
        for split in [0, 1, 31, 32, 33, 500, 999, 1000] {
            let mut two = Hasher::new(9);
            two.update(&data[..split]);
            two.update(&data[split..]);
            assert_eq!(one.finish(), two.finish(), "split at {split}");
        }
        let mut flipped = data.clone();
        flipped[500] ^= 1;
        let mut three = Hasher::new(9);
        three.update(&flipped);
        assert_ne!(one.finish(), three.finish());
        let mut shorter = Hasher::new(9);
        shorter.update(&data[..999]);
        assert_ne!(one.finish(), shorter.finish());
    }

    #[test]
    fn stubs_jump_through_their_table_entry() {
        let at = 0x2000_1000_0000usize;
        let code = stub_code(at, 4096);
        for n in [0usize, 1, 255] {
            let s = &code[n * STUB_SIZE..(n + 1) * STUB_SIZE];
            assert_eq!(&s[..6], &[0xf3, 0x0f, 0x1e, 0xfa, 0xff, 0x25]);
            let disp = u32::from_le_bytes([s[6], s[7], s[8], s[9]]) as usize;
            assert_eq!(at + n * STUB_SIZE + 10 + disp, at + CODE_BYTES + n * 8);
        }
    }

    #[test]
    fn build_id_notes_parse_and_reject_garbage() {
        let mut notes = Vec::new();
        // An unrelated note first (name "Go\0" padded to 4, 8-byte desc).
        notes.extend_from_slice(&[3, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0]);
        notes.extend_from_slice(b"Go\0\0");
        notes.extend_from_slice(&[7; 8]);
        notes.extend_from_slice(&[4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0]);
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0xab; 20]);
        assert_eq!(parse_build_id(&notes, 4), Some(vec![0xab; 20]));
        // Truncated, or a descriptor size running off the end.
        assert_eq!(parse_build_id(&notes[..notes.len() - 1], 4), None);
        let mut bad = notes.clone();
        bad[24] = 0xff;
        assert_eq!(parse_build_id(&bad, 4), None);
        assert_eq!(parse_build_id(&[], 4), None);
        // Sizes that overflow.
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0];
        assert_eq!(parse_build_id(&huge, 8), None);
    }

    #[test]
    fn only_settled_files_are_remembered_as_verified() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let key = |ino: i64, age: u64| {
            let t = now - std::time::Duration::from_secs(age);
            [
                -7,
                ino,
                4096,
                t.as_secs() as i64,
                0,
                t.as_secs() as i64,
                i64::from(t.subsec_nanos()),
            ]
        };
        // Changed just now: a write in the same clock tick could leave
        // these timestamps as they are, so the contents are checked again.
        remember_verified(key(1, 0), vec![1]);
        assert!(verified(&key(1, 0)).is_none());
        // Changed two seconds ago: any change from now on has a later ctime.
        remember_verified(key(2, 2), vec![2]);
        assert_eq!(verified(&key(2, 2)).as_deref(), Some(&[2u8][..]));
        let mut other = key(2, 2);
        other[6] += 1;
        assert!(verified(&other).is_none(), "another ctime is another file");
    }

    #[test]
    fn runs_group_consecutive_pages() {
        let r = runs(&[1, 2, 3, 7, 9, 10]);
        let v: Vec<(u64, usize, usize)> = r.iter().map(|r| (r.start, r.first, r.count)).collect();
        assert_eq!(v, vec![(1, 0, 3), (7, 3, 1), (9, 4, 2)]);
    }
}
