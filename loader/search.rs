//! Finding a library by name, the way glibc 2.36's `dlopen` does.
//!
//! A name with a `/` in it is a path and is used as it is. Any other name
//! is tried, in order, in the `DT_RPATH` directories, the `LD_LIBRARY_PATH`
//! directories, the `DT_RUNPATH` directories, `/etc/ld.so.cache`, and the
//! system directories: `/lib/x86_64-linux-gnu`, `/usr/lib/x86_64-linux-gnu`,
//! `/lib`, `/usr/lib` (what `ld.so --help` lists on Debian 12; there is no
//! `/lib64` among them).
//!
//! In every directory glibc 2.36 first probes subdirectories: the
//! `glibc-hwcaps/x86-64-v4`, `-v3`, `-v2` ones the CPU supports, best
//! first, then the legacy hwcap ones (`tls`, the platform, `x86_64`, and
//! their combinations, e.g. `tls/x86_64/x86_64`), then the directory itself.
//! So does this module; it only drops the combinations that repeat a path
//! (glibc tries `tls/x86_64` twice when the platform and the hwcap are both
//! `x86_64`).
//!
//! A candidate counts when it is a regular file that starts with an ELF64
//! little-endian x86-64 header; otherwise the search goes on. glibc does
//! that for a wrong class or machine only: any other bad header (a text
//! file, a file too short) fails its whole `dlopen` with "invalid ELF
//! header". Here such files are skipped too, and the loader reports what is
//! wrong with the file it finally opens.

use std::ffi::{CStr, OsStr};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::error::Error;

/// What `fstat` says about a library file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileInfo {
    /// `(st_dev, st_ino)`.
    pub id: (u64, u64),
    /// `st_size`.
    pub size: u64,
    /// `(st_size, st_mtime, st_mtime_nsec, st_ctime, st_ctime_nsec)`: a file
    /// rewritten in place with its mtime restored still changes ctime.
    pub stamp: (u64, i64, i64, i64, i64),
}

impl FileInfo {
    /// `fstat` of the opened `file`, which must be a regular file.
    pub(crate) fn of(path: &Path, file: &File) -> Result<FileInfo, Error> {
        let m = file.metadata().map_err(|e| Error::io(path, "fstat", e))?;
        if !m.is_file() {
            return Err(Error::malformed(path, "not a regular file", None));
        }
        Ok(FileInfo {
            id: (m.dev(), m.ino()),
            size: m.size(),
            stamp: (
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ),
        })
    }
}

/// The file a search found, opened, with what checking it learnt, which
/// the loader uses instead of asking again: a candidate searched by name
/// was `fstat`ed and its first `min(4096, size)` bytes read (one `pread`)
/// to check its ELF header. A name given as a path is only opened: the
/// loader's own `fstat` ([`Opened::info`]) and read (`read_plan`) then
/// happen once, as for a file the search did not check.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The open file (`O_RDONLY | O_NONBLOCK | O_CLOEXEC`).
    pub file: File,
    /// What `fstat` said; `None` until asked.
    pub info: Option<FileInfo>,
    /// The file's first bytes, as far as read (empty: none read yet).
    pub head: Vec<u8>,
}

impl Opened {
    /// What `fstat` says of the file: the search's answer, else asked now
    /// (and kept). Fails for a file that is not a regular file.
    pub(crate) fn info(&mut self, path: &Path) -> Result<FileInfo, Error> {
        if let Some(info) = self.info {
            return Ok(info);
        }
        let info = FileInfo::of(path, &self.file)?;
        self.info = Some(info);
        Ok(info)
    }
}

/// The cache `ldconfig` writes.
const LD_SO_CACHE: &str = "/etc/ld.so.cache";
/// glibc's system search path on Debian 12 x86-64, in order.
const SYSTEM_DIRS: [&str; 4] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
];
/// What `$LIB` expands to in Debian's glibc.
const DST_LIB: &str = "lib/x86_64-linux-gnu";

/// Where directories come from, in glibc's order: `DT_RPATH`,
/// `LD_LIBRARY_PATH`, `DT_RUNPATH`, then `ld.so.cache` and the system
/// directories.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchPath<'a> {
    /// `DT_RPATH` directories, already expanded: the requesting object's,
    /// then its loaders', then the executable's. glibc ignores them all when
    /// the requesting object has a `DT_RUNPATH`; the caller passes none then.
    pub rpath: &'a [PathBuf],
    /// `LD_LIBRARY_PATH` directories.
    pub library_path: &'a [PathBuf],
    /// The requesting object's `DT_RUNPATH` directories, already expanded.
    pub runpath: &'a [PathBuf],
    /// The requesting object has `DF_1_NODEFLIB`: skip the system
    /// directories, and cache entries that lie in them.
    pub nodeflib: bool,
}

/// Environment-derived configuration, computed once per load.
#[derive(Debug, Clone)]
pub(crate) struct SearchConfig {
    /// `LD_LIBRARY_PATH` directories: from `Options`, else from the
    /// environment; empty in secure-execution mode unless given by `Options`.
    pub library_path: Vec<PathBuf>,
    /// The `ld.so.cache` to consult; `None` consults none.
    pub cache: Option<PathBuf>,
    /// The system directories, searched last.
    pub system_dirs: Vec<PathBuf>,
    /// Subdirectories probed in every directory, best first; the last one,
    /// `""`, is the directory itself. `None`: this host's, worked out on
    /// first use (a load that searches no directory never needs them).
    pub subdirs: Option<Vec<String>>,
}

impl SearchConfig {
    /// `explicit`: Options' library path if the caller gave one; otherwise
    /// `LD_LIBRARY_PATH` from the environment, unless the process is in
    /// secure-execution mode (`getauxval(AT_SECURE) != 0`), which ignores it.
    ///
    /// `LD_LIBRARY_PATH` is read as glibc reads it: `:` and `;` separate
    /// entries, an empty entry is the current directory, `$ORIGIN` is the
    /// executable's directory, and repeated directories are dropped.
    pub(crate) fn new(explicit: Option<&[PathBuf]>) -> SearchConfig {
        let library_path = match explicit {
            Some(dirs) => dirs.iter().fold(Vec::new(), |mut v, d| {
                push_dir(&mut v, d.as_os_str().as_bytes());
                v
            }),
            None if secure() => Vec::new(),
            None => env_library_path(),
        };
        SearchConfig {
            library_path,
            cache: Some(PathBuf::from(LD_SO_CACHE)),
            system_dirs: SYSTEM_DIRS.iter().map(PathBuf::from).collect(),
            subdirs: None,
        }
    }

    /// The subdirectories probed in every directory (see `subdirs`).
    pub(crate) fn subdirs(&self) -> &[String] {
        match &self.subdirs {
            Some(s) => s,
            None => &host().subdirs,
        }
    }
}

/// Find `name`. A name containing '/' is used as a path as-is (after
/// checking it is a regular file). Otherwise try, in order: `rpath` dirs,
/// `LD_LIBRARY_PATH`, `runpath` dirs, `/etc/ld.so.cache`, the system dirs.
/// Each candidate tried is reported through `on_try(path, source, found)`.
/// Returns the path found, or `Error::NotFound` listing every path tried.
pub(crate) fn find_library(
    name: &str,
    needed_by: Option<&Path>,
    rpath: &[PathBuf],
    runpath: &[PathBuf],
    config: &SearchConfig,
    on_try: &mut dyn FnMut(&Path, &'static str, bool),
) -> Result<(PathBuf, Opened), Error> {
    let path = SearchPath {
        rpath,
        library_path: &config.library_path,
        runpath,
        nodeflib: false,
    };
    search(name, needed_by, &path, config, on_try)
}

/// [`find_library`] with every source spelled out.
///
/// When `needed_by` is given, `name` is a `DT_NEEDED` entry and its dynamic
/// string tokens are expanded first against `needed_by`'s directory, as
/// glibc does; a name whose expansion is refused is not found.
pub(crate) fn search(
    name: &str,
    needed_by: Option<&Path>,
    path: &SearchPath<'_>,
    config: &SearchConfig,
    on_try: &mut dyn FnMut(&Path, &'static str, bool),
) -> Result<(PathBuf, Opened), Error> {
    let mut p = Prober {
        on_try,
        tried: Vec::new(),
    };
    let expanded = match needed_by {
        Some(by) if name.contains('$') => expand_needed(name, by),
        _ => Some(name.as_bytes().to_vec()),
    };
    let found = expanded.filter(|n| !n.is_empty()).and_then(|n| {
        if n.contains(&b'/') {
            p.try_file(bytes_to_path(&n), "path", open_path)
        } else {
            search_dirs(&n, path, config, &mut p)
        }
    });
    found.ok_or_else(|| Error::NotFound {
        name: name.to_string(),
        needed_by: needed_by.map(Path::to_path_buf),
        tried: p.tried,
    })
}

/// Expand $ORIGIN / ${ORIGIN}, $LIB / ${LIB} (`lib/x86_64-linux-gnu`, as
/// Debian's glibc), $PLATFORM / ${PLATFORM} (glibc's platform name:
/// `AT_PLATFORM`, "x86_64", except that glibc 2.36 calls Intel CPUs with
/// AVX2 "haswell" and Xeon Phi "xeon_phi") in one RPATH/RUNPATH entry;
/// `origin` is the directory of the object that carries the entry.
///
/// `None` when the entry must be dropped: it uses `$ORIGIN` in a
/// secure-execution process, `$PLATFORM` without a platform, or expands to
/// nothing. Unknown `$NAME`s stay as they are. An empty entry stays empty:
/// the current directory.
#[allow(dead_code)] // The loader expands whole lists with `split_path_list`.
pub(crate) fn expand_dst(entry: &str, origin: &Path) -> Option<PathBuf> {
    let origin = Some(origin.as_os_str().as_bytes());
    expand_here(entry.as_bytes(), origin).map(|e| bytes_to_path(&e))
}

/// Split a colon-separated DT_RPATH/DT_RUNPATH string and expand each
/// entry. Entries that expand to nothing are dropped, an empty entry is the
/// current directory, trailing slashes go, and repeats are dropped, as in
/// glibc's `fillin_rpath`.
pub(crate) fn split_path_list(list: &str, origin: &Path) -> Vec<PathBuf> {
    let origin = Some(origin.as_os_str().as_bytes());
    split_dirs(list.as_bytes(), b":", |e| expand_here(e, origin))
}

/// Tries candidates, reporting each and remembering the misses.
struct Prober<'a> {
    /// The caller's report.
    on_try: &'a mut dyn FnMut(&Path, &'static str, bool),
    /// Every candidate that was not usable, in order.
    tried: Vec<PathBuf>,
}

impl Prober<'_> {
    /// Tries one candidate with `usable`.
    fn try_file(
        &mut self,
        path: PathBuf,
        source: &'static str,
        usable: fn(&Path) -> Option<Opened>,
    ) -> Option<(PathBuf, Opened)> {
        let found = usable(&path);
        (self.on_try)(&path, source, found.is_some());
        if let Some(f) = found {
            return Some((path, f));
        }
        self.tried.push(path);
        None
    }

    /// Tries `name` in every subdirectory of every directory of `dirs`.
    fn try_dirs(
        &mut self,
        name: &[u8],
        dirs: &[PathBuf],
        subdirs: &[String],
        source: &'static str,
    ) -> Option<(PathBuf, Opened)> {
        for dir in dirs {
            for sub in subdirs {
                let candidate = dir.join(sub).join(OsStr::from_bytes(name));
                if let Some(found) = self.try_file(candidate, source, is_elf_x86_64) {
                    return Some(found);
                }
            }
        }
        None
    }
}

/// glibc's `_dl_map_object` search for a name without a `/`.
fn search_dirs(
    name: &[u8],
    path: &SearchPath<'_>,
    config: &SearchConfig,
    p: &mut Prober<'_>,
) -> Option<(PathBuf, Opened)> {
    let lists = [
        (path.rpath, "RPATH"),
        (path.library_path, "LD_LIBRARY_PATH"),
        (path.runpath, "RUNPATH"),
    ];
    // (An empty list asks nothing: the subdirectories depend on the CPU,
    // detected only when a directory is searched.)
    for (dirs, source) in lists.into_iter().filter(|(d, _)| !d.is_empty()) {
        if let Some(found) = p.try_dirs(name, dirs, config.subdirs(), source) {
            return Some(found);
        }
    }
    let cached = config.cache.as_deref().and_then(|c| cache_lookup(c, name));
    let cached =
        cached.filter(|f| !(path.nodeflib && config.system_dirs.iter().any(|d| f.starts_with(d))));
    if let Some(found) = cached.and_then(|f| p.try_file(f, "ld.so.cache", is_elf_x86_64)) {
        return Some(found);
    }
    if path.nodeflib {
        return None;
    }
    p.try_dirs(name, &config.system_dirs, config.subdirs(), "default")
}

/// A `DT_NEEDED` name with its dynamic string tokens expanded against the
/// directory of the object that needs it.
fn expand_needed(name: &str, needed_by: &Path) -> Option<Vec<u8>> {
    let origin = needed_by.parent().map(|d| d.as_os_str().as_bytes());
    expand_here(name.as_bytes(), origin)
}

/// Opens `path` for reading. `O_NONBLOCK` keeps a FIFO planted in a
/// search directory from hanging the search.
fn open(path: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()
}

/// `path` opened, for a name given as a path: whether it is a regular
/// file is checked by the loader's own `fstat`, which also gives it the
/// file's identity (one `fstat` per load).
fn open_path(path: &Path) -> Option<Opened> {
    Some(Opened {
        file: open(path)?,
        info: None,
        head: Vec::new(),
    })
}

/// `path` opened, if it is a regular file that starts with an ELF64
/// little-endian header for x86-64 (`EM_X86_64`, 62). The loader goes on
/// with this descriptor, what `fstat` said and the bytes read for the
/// check (the first 4 KiB, where the program headers usually are): the
/// file is opened, `fstat`ed and read once per load, as in glibc.
fn is_elf_x86_64(path: &Path) -> Option<Opened> {
    let file = open(path)?;
    let info = FileInfo::of(path, &file).ok()?;
    let mut head = vec![0u8; info.size.min(4096) as usize];
    file.read_exact_at(&mut head, 0).ok()?;
    let h = &head;
    let ok = h.len() >= 64
        && h.starts_with(b"\x7fELF")
        && h[4] == 2
        && h[5] == 1
        && u16::from_le_bytes([h[18], h[19]]) == 62;
    ok.then_some(Opened {
        file,
        info: Some(info),
        head,
    })
}

/// Bytes as a path.
fn bytes_to_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// Whether the process is in secure-execution mode (set-user-ID and the like).
fn secure() -> bool {
    // SAFETY: getauxval has no preconditions; it returns 0 for an absent entry.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// `LD_LIBRARY_PATH` from the environment, as glibc's `_dl_init_paths` reads it.
fn env_library_path() -> Vec<PathBuf> {
    let Some(value) = std::env::var_os("LD_LIBRARY_PATH") else {
        return Vec::new();
    };
    // The executable's path (a `readlink` of /proc/self/exe) only if an
    // entry may use `$ORIGIN`.
    let names_origin = value.as_bytes().windows(6).any(|w| w == b"ORIGIN");
    let exe = names_origin
        .then(std::env::current_exe)
        .and_then(|e| e.ok());
    let origin = exe
        .as_deref()
        .and_then(Path::parent)
        .map(|d| d.as_os_str().as_bytes());
    split_dirs(value.as_bytes(), b":;", |e| expand_here(e, origin))
}

/// Splits `list` at any of `seps`, expands each entry with `expand` and
/// keeps each directory once. An empty list has no entries (not one empty
/// entry).
fn split_dirs(list: &[u8], seps: &[u8], expand: impl Fn(&[u8]) -> Option<Vec<u8>>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if list.is_empty() {
        return dirs;
    }
    for entry in list.split(|c| seps.contains(c)) {
        if let Some(dir) = expand(entry) {
            push_dir(&mut dirs, &dir);
        }
    }
    dirs
}

/// Appends `dir` without its trailing slashes, unless it is there already.
fn push_dir(dirs: &mut Vec<PathBuf>, mut dir: &[u8]) {
    while dir.len() > 1 && dir.ends_with(b"/") {
        dir = &dir[..dir.len() - 1];
    }
    let dir = bytes_to_path(dir);
    if !dirs.contains(&dir) {
        dirs.push(dir);
    }
}

/// [`expand`] with this process's secure-execution mode and platform (the
/// platform is worked out only for an entry that may name it).
fn expand_here(entry: &[u8], origin: Option<&[u8]>) -> Option<Vec<u8>> {
    let platform = if entry.windows(8).any(|w| w == b"PLATFORM") {
        host().platform.as_deref()
    } else {
        None
    };
    expand(entry, origin, secure(), platform)
}

/// glibc's `_dl_dst_substitute`. `origin` is `None` when unknown.
fn expand(
    entry: &[u8],
    origin: Option<&[u8]>,
    secure: bool,
    platform: Option<&str>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(entry.len());
    let mut rest = entry;
    while let Some(at) = rest.iter().position(|&c| c == b'$') {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + 1..];
        let (value, len) = if let Some(len) = dst_len(rest, b"ORIGIN") {
            (origin.filter(|_| !secure), len)
        } else if let Some(len) = dst_len(rest, b"PLATFORM") {
            (platform.map(str::as_bytes), len)
        } else if let Some(len) = dst_len(rest, b"LIB") {
            (Some(DST_LIB.as_bytes()), len)
        } else {
            out.push(b'$');
            continue;
        };
        out.extend_from_slice(value?);
        rest = &rest[len..];
    }
    out.extend_from_slice(rest);
    (entry.is_empty() || !out.is_empty()).then_some(out)
}

/// glibc's `is_dst`: the length of `NAME` or `{NAME}` at the start of `s`
/// (just after a `$`), if that is what is there.
fn dst_len(s: &[u8], name: &[u8]) -> Option<usize> {
    if let Some(inner) = s.strip_prefix(b"{") {
        let after = inner.strip_prefix(name)?;
        return (after.first() == Some(&b'}')).then_some(name.len() + 2);
    }
    match s.strip_prefix(name)?.first() {
        Some(&c) if c.is_ascii_alphanumeric() || c == b'_' => None,
        _ => Some(name.len()),
    }
}

// ---------------------------------------------------------------------------
// What glibc derives from the CPU and the auxiliary vector.

/// glibc's `HWCAP_X86_64` bit of `dl_hwcap`.
const HWCAP_X86_64: u64 = 1 << 1;
/// glibc's `HWCAP_X86_AVX512_1` bit of `dl_hwcap`.
const HWCAP_AVX512_1: u64 = 1 << 2;
/// The platform bits of a cache entry's hwcap (`_DL_HWCAP_PLATFORM`: four
/// platforms from bit 48: i586, i686, haswell, xeon_phi).
const HWCAP_PLATFORMS: u64 = 0xf << 48;
/// The `tls` bit of a cache entry's hwcap.
const HWCAP_TLS: u64 = 1 << 63;
/// `GNU_PROPERTY_X86_ISA_1_*`: baseline, v2, v3, v4.
const ISA_BASELINE: u32 = 1;
/// x86-64-v2.
const ISA_V2: u32 = 2;
/// x86-64-v3.
const ISA_V3: u32 = 4;
/// x86-64-v4.
const ISA_V4: u32 = 8;

/// What glibc 2.36 derives from the CPU and the auxiliary vector.
#[derive(Debug, Clone)]
struct Host {
    /// Supported `glibc-hwcaps` subdirectory names, best first.
    hwcaps: Vec<&'static str>,
    /// The CPU's `ISA_*` bits.
    isa: u32,
    /// `dl_hwcap & HWCAP_IMPORTANT`.
    hwcap: u64,
    /// glibc's `dl_platform`.
    platform: Option<String>,
    /// Subdirectories probed in every search directory, best first.
    subdirs: Vec<String>,
}

/// The host, computed once.
fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(Host::detect)
}

impl Host {
    /// glibc's `init_cpu_features` and `_dl_important_hwcaps`, for x86-64.
    fn detect() -> Host {
        Host::with(&Cpu::detect())
    }

    /// The host as glibc sees it with these CPU features.
    fn with(cpu: &Cpu) -> Host {
        let isa = isa_level(cpu);
        let mut hwcap = HWCAP_X86_64;
        let mut platform = at_platform();
        if is_intel() {
            intel_platform(cpu, &mut hwcap, &mut platform);
        }
        Host::new(isa, hwcap, platform)
    }

    /// A host with these features.
    fn new(isa: u32, hwcap: u64, platform: Option<String>) -> Host {
        let levels = [
            (ISA_V4, "x86-64-v4"),
            (ISA_V3, "x86-64-v3"),
            (ISA_V2, "x86-64-v2"),
        ];
        let hwcaps: Vec<&str> = levels
            .iter()
            .filter(|l| isa & l.0 != 0)
            .map(|l| l.1)
            .collect();
        let mut host = Host {
            hwcaps,
            isa,
            hwcap,
            platform,
            subdirs: Vec::new(),
        };
        host.subdirs = host.probe_subdirs();
        host
    }

    /// The `glibc-hwcaps` subdirectories, then every combination of the
    /// legacy names in glibc's order (`tls`, then the platform, then the
    /// hwcap names, most first), each once, ending with `""`.
    fn probe_subdirs(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.hwcap & HWCAP_X86_64 != 0 {
            names.push("x86_64");
        }
        if self.hwcap & HWCAP_AVX512_1 != 0 {
            names.push("avx512_1");
        }
        names.extend(self.platform.as_deref());
        names.push("tls");
        let mut out: Vec<String> = self
            .hwcaps
            .iter()
            .map(|l| format!("glibc-hwcaps/{l}"))
            .collect();
        for mask in (0..1u32 << names.len()).rev() {
            let parts: Vec<&str> = (0..names.len())
                .rev()
                .filter(|i| mask >> i & 1 != 0)
                .map(|i| names[i])
                .collect();
            let dir = parts.join("/");
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        out
    }
}

/// `cpuid(leaf)`, subleaf 0.
#[allow(unused_unsafe)] // `__cpuid` is an `unsafe fn` in older Rust releases.
fn cpuid(leaf: u32) -> std::arch::x86_64::CpuidResult {
    // SAFETY: every x86-64 CPU has `cpuid`; it only reads identification data.
    unsafe { std::arch::x86_64::__cpuid(leaf) }
}

/// Whether the CPU is "GenuineIntel".
fn is_intel() -> bool {
    let r = cpuid(0);
    (r.ebx, r.edx, r.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
}

/// Whether LAHF/SAHF work in 64-bit mode (`CPUID.80000001H:ECX[0]`).
fn has_lahf_sahf() -> bool {
    cpuid(0x8000_0000).eax >= 0x8000_0001 && cpuid(0x8000_0001).ecx & 1 != 0
}

/// glibc's `CPUID_INDEX_1`: `cpuid(1)`.
const LEAF_1: u32 = 0;
/// glibc's `CPUID_INDEX_7`: `cpuid(7, 0)`.
const LEAF_7: u32 = 1;
/// glibc's `CPUID_INDEX_80000001`: `cpuid(0x80000001)`.
const LEAF_80000001: u32 = 2;
/// `cpuid_register_index_ebx`.
const EBX: usize = 1;
/// `cpuid_register_index_ecx`.
const ECX: usize = 2;

/// The CPU features the search depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    Cmpxchg16b,
    LahfSahf,
    Popcnt,
    Sse3,
    Ssse3,
    Sse41,
    Sse42,
    Avx,
    Avx2,
    Bmi1,
    Bmi2,
    F16c,
    Fma,
    Lzcnt,
    Movbe,
    Xsave,
    Avx512f,
    Avx512bw,
    Avx512cd,
    Avx512dq,
    Avx512vl,
    Avx512er,
    Avx512pf,
}

impl Feature {
    /// Every feature, for tests.
    #[cfg(test)]
    const ALL: [Feature; 23] = [
        Feature::Cmpxchg16b,
        Feature::LahfSahf,
        Feature::Popcnt,
        Feature::Sse3,
        Feature::Ssse3,
        Feature::Sse41,
        Feature::Sse42,
        Feature::Avx,
        Feature::Avx2,
        Feature::Bmi1,
        Feature::Bmi2,
        Feature::F16c,
        Feature::Fma,
        Feature::Lzcnt,
        Feature::Movbe,
        Feature::Xsave,
        Feature::Avx512f,
        Feature::Avx512bw,
        Feature::Avx512cd,
        Feature::Avx512dq,
        Feature::Avx512vl,
        Feature::Avx512er,
        Feature::Avx512pf,
    ];

    /// Where the feature's bit is: glibc's CPUID index, register, bit.
    fn location(self) -> (u32, usize, u32) {
        use Feature::*;
        match self {
            Cmpxchg16b => (LEAF_1, ECX, 13),
            LahfSahf => (LEAF_80000001, ECX, 0),
            Popcnt => (LEAF_1, ECX, 23),
            Sse3 => (LEAF_1, ECX, 0),
            Ssse3 => (LEAF_1, ECX, 9),
            Sse41 => (LEAF_1, ECX, 19),
            Sse42 => (LEAF_1, ECX, 20),
            Avx => (LEAF_1, ECX, 28),
            Avx2 => (LEAF_7, EBX, 5),
            Bmi1 => (LEAF_7, EBX, 3),
            Bmi2 => (LEAF_7, EBX, 8),
            F16c => (LEAF_1, ECX, 29),
            Fma => (LEAF_1, ECX, 12),
            Lzcnt => (LEAF_80000001, ECX, 5),
            Movbe => (LEAF_1, ECX, 22),
            Xsave => (LEAF_1, ECX, 26),
            Avx512f => (LEAF_7, EBX, 16),
            Avx512bw => (LEAF_7, EBX, 30),
            Avx512cd => (LEAF_7, EBX, 28),
            Avx512dq => (LEAF_7, EBX, 17),
            Avx512vl => (LEAF_7, EBX, 31),
            Avx512er => (LEAF_7, EBX, 27),
            Avx512pf => (LEAF_7, EBX, 26),
        }
    }

    /// Whether the CPU has it and the OS enabled it, by `cpuid` (Rust's
    /// feature detection).
    fn by_cpuid(self) -> bool {
        use std::arch::is_x86_feature_detected as has;
        use Feature::*;
        match self {
            Cmpxchg16b => has!("cmpxchg16b"),
            LahfSahf => has_lahf_sahf(),
            Popcnt => has!("popcnt"),
            Sse3 => has!("sse3"),
            Ssse3 => has!("ssse3"),
            Sse41 => has!("sse4.1"),
            Sse42 => has!("sse4.2"),
            Avx => has!("avx"),
            Avx2 => has!("avx2"),
            Bmi1 => has!("bmi1"),
            Bmi2 => has!("bmi2"),
            F16c => has!("f16c"),
            Fma => has!("fma"),
            Lzcnt => has!("lzcnt"),
            Movbe => has!("movbe"),
            Xsave => has!("xsave"),
            Avx512f => has!("avx512f"),
            Avx512bw => has!("avx512bw"),
            Avx512cd => has!("avx512cd"),
            Avx512dq => has!("avx512dq"),
            Avx512vl => has!("avx512vl"),
            Avx512er => has!("avx512er"),
            Avx512pf => has!("avx512pf"),
        }
    }
}

/// glibc's `struct cpuid_feature` (`<sys/platform/x86.h>`): one CPUID
/// leaf's registers as the CPU reports them, and the bits glibc found
/// usable (CPU and OS support, tunables applied).
#[repr(C)]
struct CpuidFeature {
    cpuid: [u32; 4],
    active: [u32; 4],
}

/// Where the features come from.
enum Cpu {
    /// glibc's own record of the leaves this module reads (`active`
    /// registers by [`Feature::location`] index), as `init_cpu_features`
    /// left it in `ld.so`: no `cpuid` instruction, which traps to the
    /// hypervisor in a virtual machine (microseconds each).
    Glibc([[u32; 4]; 3]),
    /// Rust's `cpuid`-based detection, where glibc does not export
    /// `__x86_get_cpuid_feature_leaf` (before 2.33).
    Cpuid,
}

impl Cpu {
    /// glibc's record if it has one, else `cpuid`.
    fn detect() -> Cpu {
        type GetLeaf = unsafe extern "C" fn(u32) -> *const CpuidFeature;
        let name = c"__x86_get_cpuid_feature_leaf";
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
        // looks the name up.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        if f.is_null() {
            return Cpu::Cpuid;
        }
        // SAFETY: glibc's `__x86_get_cpuid_feature_leaf` has this type
        // (`const struct cpuid_feature *(unsigned int)`).
        let get: GetLeaf = unsafe { std::mem::transmute::<*mut libc::c_void, GetLeaf>(f) };
        let mut leaves = [[0u32; 4]; 3];
        for (i, leaf) in (0u32..).zip(leaves.iter_mut()) {
            // SAFETY: glibc returns a pointer to its static, initialised
            // record for any index (a zeroed one past its last).
            let p = unsafe { get(i) };
            if p.is_null() {
                return Cpu::Cpuid;
            }
            // SAFETY: non-null: a valid, immutable `struct cpuid_feature`.
            *leaf = unsafe { (*p).active };
        }
        Cpu::Glibc(leaves)
    }

    /// Whether `f` is usable.
    fn has(&self, f: Feature) -> bool {
        match self {
            Cpu::Glibc(leaves) => {
                let (leaf, reg, bit) = f.location();
                leaves[leaf as usize][reg] >> bit & 1 != 0
            }
            Cpu::Cpuid => f.by_cpuid(),
        }
    }
}

/// The CPU's `ISA_*` bits, as glibc's `get_isa_level` (every x86-64 CPU
/// has the baseline).
fn isa_level(cpu: &Cpu) -> u32 {
    use Feature::*;
    let all = |fs: &[Feature]| fs.iter().all(|&f| cpu.has(f));
    let v2 = all(&[Cmpxchg16b, LahfSahf, Popcnt, Sse3, Ssse3, Sse41, Sse42]);
    let v3 = all(&[Avx, Avx2, Bmi1, Bmi2, F16c, Fma, Lzcnt, Movbe, Xsave]);
    let v4 = all(&[Avx512f, Avx512bw, Avx512cd, Avx512dq, Avx512vl]);
    match (v2, v3, v4) {
        (false, _, _) => ISA_BASELINE,
        (true, false, _) => ISA_BASELINE | ISA_V2,
        (true, true, false) => ISA_BASELINE | ISA_V2 | ISA_V3,
        (true, true, true) => ISA_BASELINE | ISA_V2 | ISA_V3 | ISA_V4,
    }
}

/// glibc 2.36's `init_cpu_features` on Intel: AVX-512 adds the `avx512_1`
/// hwcap, and the platform becomes "xeon_phi" or "haswell".
fn intel_platform(cpu: &Cpu, hwcap: &mut u64, platform: &mut Option<String>) {
    use Feature::*;
    let has = |f| cpu.has(f);
    let mut name = None;
    if has(Avx512cd) {
        if has(Avx512er) {
            if has(Avx512pf) {
                name = Some("xeon_phi");
            }
        } else if has(Avx512bw) && has(Avx512dq) && has(Avx512vl) {
            *hwcap |= HWCAP_AVX512_1;
        }
    }
    let haswell = [Avx2, Fma, Bmi1, Bmi2, Lzcnt, Movbe, Popcnt]
        .iter()
        .all(|&f| has(f));
    if name.is_none() && haswell {
        name = Some("haswell");
    }
    if let Some(name) = name {
        *platform = Some(name.to_string());
    }
}

/// `AT_PLATFORM`, if the kernel gave a non-empty one.
fn at_platform() -> Option<String> {
    // SAFETY: getauxval has no preconditions; it returns 0 for an absent entry.
    let ptr = unsafe { libc::getauxval(libc::AT_PLATFORM) } as *const libc::c_char;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: AT_PLATFORM points to a NUL-terminated string the kernel put
    // on the initial stack, which lives as long as the process.
    let s = unsafe { CStr::from_ptr(ptr) };
    (!s.to_bytes().is_empty()).then(|| s.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------
// /etc/ld.so.cache

/// The old format's magic, `ld.so-1.7.0`.
const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
/// The new format's magic and version.
const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";
/// `sizeof (struct cache_file)`.
const OLD_HEADER: usize = 16;
/// `sizeof (struct file_entry)`.
const OLD_ENTRY: usize = 12;
/// `sizeof (struct cache_file_new)`.
const NEW_HEADER: usize = 48;
/// `sizeof (struct file_entry_new)`.
const NEW_ENTRY: usize = 24;
/// `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64`: the only flags x86-64 glibc accepts.
const FLAGS_X86_64: u32 = 0x0303;
/// `cache_extension_magic`.
const EXT_MAGIC: u32 = 0xeaa4_2174;
/// `cache_extension_tag_glibc_hwcaps`.
const EXT_TAG_HWCAPS: u32 = 1;

/// One x86-64 entry of `ld.so.cache`, in place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheEntry<'a> {
    /// The library name (its soname).
    key: &'a [u8],
    /// The file.
    value: &'a [u8],
    /// Legacy hwcap bits, or a `glibc-hwcaps` subdirectory index with
    /// `DL_CACHE_HWCAP_EXTENSION` (bit 62) and an ISA level (bits 32..42).
    hwcap: u64,
}

/// The bytes of an `ld.so.cache`.
enum CacheBytes {
    /// The file, mapped read-only (as glibc's `ld.so` maps it).
    Mapped(memmap2::Mmap),
    /// A copy (tests, and an empty file, which cannot be mapped).
    #[cfg_attr(not(test), allow(dead_code))]
    Owned(Vec<u8>),
}

impl std::ops::Deref for CacheBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            CacheBytes::Mapped(m) => m,
            CacheBytes::Owned(v) => v,
        }
    }
}

/// Where a cache's entry table is, its headers checked.
#[derive(Debug, Clone, Copy, Default)]
enum Layout {
    /// No usable header: no entries.
    #[default]
    Empty,
    /// The old format: `nlibs` entries of 12 bytes after its header, the
    /// strings (relative to `strings`) after them.
    Old { nlibs: usize, strings: usize },
    /// The new format, its header at `base`: `nlibs` entries of 24 bytes
    /// after it, strings relative to `base`.
    New { base: usize, nlibs: usize },
}

/// An `ld.so.cache`: its bytes, with the headers checked once. Entries are
/// read in place by each lookup (a linear walk, as names compare exactly;
/// no entry is copied).
struct Cache {
    /// The file's bytes.
    bytes: CacheBytes,
    /// Where its entries are.
    layout: Layout,
    /// The `glibc-hwcaps` subdirectory names, by index (`None` if unreadable).
    hwcaps: Vec<Option<Vec<u8>>>,
}

/// The parsed cache, and the file it was parsed from.
type CacheSlot = Option<(FileId, Arc<Cache>)>;

/// Identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    /// The path.
    path: PathBuf,
    /// Device, inode, size, modification time (s, ns).
    stat: (u64, u64, u64, i64, i64),
}

impl FileId {
    /// `path` with the identity in `m`.
    fn new(path: &Path, m: &std::fs::Metadata) -> FileId {
        FileId {
            path: path.to_path_buf(),
            stat: (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()),
        }
    }
}

/// Looks `name` up in the cache at `path`.
fn cache_lookup(path: &Path, name: &[u8]) -> Option<PathBuf> {
    load_cache(path)?
        .lookup_with(name, host)
        .map(Path::to_path_buf)
}

/// The cache at `path`, mapped and checked once per process and again
/// whenever the file changes (another inode, size or modification time;
/// `ldconfig` replaces the file by renaming a new one over it). A lookup
/// of an unchanged file costs one `stat`.
fn load_cache(path: &Path) -> Option<Arc<Cache>> {
    static SLOT: Mutex<CacheSlot> = Mutex::new(None);
    let m = std::fs::metadata(path).ok()?;
    if !m.is_file() {
        return None;
    }
    let mut slot = SLOT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((have, cache)) = slot.as_ref() {
        if *have == FileId::new(path, &m) {
            return Some(Arc::clone(cache));
        }
    }
    // The identity is the opened file's: the one that is mapped.
    let file = open(path)?;
    let m = file.metadata().ok()?;
    if !m.is_file() {
        return None;
    }
    let id = FileId::new(path, &m);
    let bytes = if id.stat.2 == 0 {
        CacheBytes::Owned(Vec::new())
    } else {
        // SAFETY: a read-only private mapping of a regular file, as glibc's
        // `ld.so` maps this file. `ldconfig` never rewrites it in place: it
        // writes a new file and renames it over this one, which leaves this
        // mapping's inode untouched. Every read of it is bounds-checked.
        CacheBytes::Mapped(unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }.ok()?)
    };
    let cache = Arc::new(Cache::parse(bytes));
    *slot = Some((id, Arc::clone(&cache)));
    Some(cache)
}

/// Parses a copy of `b` (tests).
#[cfg(test)]
fn parse_cache(b: &[u8]) -> Cache {
    Cache::parse(CacheBytes::Owned(b.to_vec()))
}

impl Cache {
    /// Checks the headers: the new format alone, the old format alone, or
    /// the old format with the new one after it. Anything malformed in the
    /// headers gives an empty cache; a malformed entry is skipped by
    /// lookups.
    fn parse(bytes: CacheBytes) -> Cache {
        let b: &[u8] = &bytes;
        let parsed = if b.starts_with(MAGIC_NEW) {
            parse_new(b, 0)
        } else if b.starts_with(MAGIC_OLD) {
            parse_old(b)
        } else {
            None
        };
        let (layout, hwcaps) = parsed.unwrap_or_default();
        Cache {
            bytes,
            layout,
            hwcaps,
        }
    }

    /// The x86-64 entries, in file order.
    fn entries(&self) -> impl Iterator<Item = CacheEntry<'_>> + '_ {
        let b: &[u8] = &self.bytes;
        let (n, at, size, strings): (usize, usize, usize, &[u8]) = match self.layout {
            Layout::Empty => (0, 0, 0, &[]),
            Layout::Old { nlibs, strings } => (
                nlibs,
                OLD_HEADER,
                OLD_ENTRY,
                b.get(strings..).unwrap_or(&[]),
            ),
            Layout::New { base, nlibs } => (
                nlibs,
                base + NEW_HEADER,
                NEW_ENTRY,
                b.get(base..).unwrap_or(&[]),
            ),
        };
        (0..n).filter_map(move |i| {
            let off = at + i * size;
            let hwcap = if size == NEW_ENTRY {
                u64_at(b, off + 16)?
            } else {
                0
            };
            entry(
                strings,
                u32_at(b, off)?,
                u32_at(b, off + 4)?,
                u32_at(b, off + 8)?,
                hwcap,
            )
        })
    }
}

/// The old format, or the new one hidden in its string table.
fn parse_old(b: &[u8]) -> Option<(Layout, Vec<Option<Vec<u8>>>)> {
    let nlibs = u32_at(b, 12)? as usize;
    if b.len() <= OLD_HEADER || (b.len() - OLD_HEADER) / OLD_ENTRY < nlibs {
        return None;
    }
    let end = OLD_HEADER + nlibs * OLD_ENTRY;
    let new_at = end.next_multiple_of(8);
    if b.get(new_at..).is_some_and(|h| h.starts_with(MAGIC_NEW)) {
        return parse_new(b, new_at);
    }
    b.get(end..)?;
    Some((
        Layout::Old {
            nlibs,
            strings: end,
        },
        Vec::new(),
    ))
}

/// The new format, its header at `base`. Entries' strings are relative to
/// the header; the extension directory and the hwcaps names are relative to
/// the file, as glibc 2.36's `ld.so` reads them.
fn parse_new(b: &[u8], base: usize) -> Option<(Layout, Vec<Option<Vec<u8>>>)> {
    let h = b.get(base..)?;
    let nlibs = u32_at(h, 20)? as usize;
    let flags = *h.get(28)?;
    let endian_ok = flags == 0 || flags & 3 == 2;
    if h.len() < NEW_HEADER || !endian_ok || (h.len() - NEW_HEADER) / NEW_ENTRY < nlibs {
        return None;
    }
    Some((
        Layout::New { base, nlibs },
        hwcaps_names(b, u32_at(h, 32)? as usize),
    ))
}

/// One entry, if it is for x86-64 and its strings are in `strings`.
fn entry(strings: &[u8], flags: u32, key: u32, value: u32, hwcap: u64) -> Option<CacheEntry<'_>> {
    let key = cstr_at(strings, key as usize)?;
    let value = cstr_at(strings, value as usize)?;
    (flags == FLAGS_X86_64 && !value.is_empty()).then_some(CacheEntry { key, value, hwcap })
}

/// The `glibc-hwcaps` names from the extension directory at file offset
/// `ext`, as glibc's `cache_extension_load`: none if anything is off.
fn hwcaps_names(b: &[u8], ext: usize) -> Vec<Option<Vec<u8>>> {
    if ext == 0 || !ext.is_multiple_of(4) || u32_at(b, ext) != Some(EXT_MAGIC) {
        return Vec::new();
    }
    let Some(count) = u32_at(b, ext + 4) else {
        return Vec::new();
    };
    if (b.len() - ext - 8) / 16 < count as usize {
        return Vec::new();
    }
    let mut section = None;
    for s in (0..count as usize).map(|i| ext + 8 + i * 16) {
        let (tag, off, size) = (u32_at(b, s), u32_at(b, s + 8), u32_at(b, s + 12));
        let (Some(tag), Some(off), Some(size)) = (tag, off, size) else {
            return Vec::new();
        };
        if off as usize + size as usize > b.len() {
            return Vec::new();
        }
        if tag == EXT_TAG_HWCAPS {
            section = Some((off as usize, size as usize));
        }
    }
    match section {
        Some((off, size)) if size != 0 && off % 4 == 0 && size % 4 == 0 => (0..size / 4)
            .map(|i| {
                u32_at(b, off + 4 * i)
                    .and_then(|n| cstr_at(b, n as usize))
                    .map(<[u8]>::to_vec)
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Cache {
    /// [`Cache::lookup_with`] on a host already known.
    #[cfg(test)]
    fn lookup(&self, name: &[u8], host: &Host) -> Option<&Path> {
        self.lookup_with(name, || host)
    }

    /// glibc's `search_cache`, except that names compare exactly: among the
    /// entries named `name`, the best usable `glibc-hwcaps` one, else the
    /// first usable legacy one. The host's features are asked for only at
    /// an entry with hwcap bits: the usual entry (no bits) needs none of
    /// them, and detecting them costs a `cpuid`, which a virtual machine
    /// traps.
    fn lookup_with<'h>(&self, name: &[u8], host: impl Fn() -> &'h Host) -> Option<&Path> {
        let mut best: Option<(&[u8], u32)> = None;
        for e in self.entries().filter(|e| e.key == name) {
            if e.hwcap == 0 {
                // A legacy entry with no requirements: usable, and the
                // answer unless a glibc-hwcaps entry came first.
                if best.is_some() {
                    break;
                }
                return Some(Path::new(OsStr::from_bytes(e.value)));
            }
            let host = host();
            let exclude = !(host.hwcap | HWCAP_PLATFORMS | HWCAP_TLS);
            let platform = platform_bit(host.platform.as_deref());
            let named = is_hwcaps_entry(e.hwcap);
            if named && !isa_compatible(e.hwcap, host.isa) {
                continue;
            }
            if !named && best.is_some() {
                break;
            }
            if !named && e.hwcap & exclude != 0 {
                continue;
            }
            let plat = e.hwcap & HWCAP_PLATFORMS;
            if plat != 0 && plat != platform {
                continue;
            }
            if !named {
                return Some(Path::new(OsStr::from_bytes(e.value)));
            }
            let prio = self.priority(e.hwcap as u32, host);
            if prio != 0 && best.is_none_or(|(_, b)| prio < b) {
                best = Some((e.value, prio));
            }
        }
        best.map(|(p, _)| Path::new(OsStr::from_bytes(p)))
    }

    /// The preference of `glibc-hwcaps` subdirectory `index` (1 is best), 0
    /// when this CPU does not use it.
    fn priority(&self, index: u32, host: &Host) -> u32 {
        let Some(Some(name)) = self.hwcaps.get(index as usize) else {
            return 0;
        };
        let at = host
            .hwcaps
            .iter()
            .position(|h| h.as_bytes() == name.as_slice());
        at.map_or(0, |i| i as u32 + 1)
    }
}

/// Whether a cache entry's hwcap names a `glibc-hwcaps` subdirectory
/// (`DL_CACHE_HWCAP_EXTENSION` and nothing else above the ISA level bits).
fn is_hwcaps_entry(hwcap: u64) -> bool {
    (hwcap >> 32) & !0x3ff == 1 << 30
}

/// Whether the ISA level a `glibc-hwcaps` entry needs is one the CPU has.
fn isa_compatible(hwcap: u64, isa: u32) -> bool {
    let level = ((hwcap >> 32) & 0x3ff) as u32;
    1u32.checked_shl(level).is_some_and(|bit| isa & bit == bit)
}

/// The cache hwcap bit of glibc's platform; all bits when it has none.
fn platform_bit(platform: Option<&str>) -> u64 {
    match platform {
        Some("haswell") => 1 << 50,
        Some("xeon_phi") => 1 << 51,
        _ => u64::MAX,
    }
}

/// The little-endian `u32` at `off`.
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The little-endian `u64` at `off`.
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The NUL-terminated string at `off`, if it ends inside `b`.
fn cstr_at(b: &[u8], off: usize) -> Option<&[u8]> {
    let s = b.get(off..)?;
    s.iter().position(|&c| c == 0).map(|end| &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::fs;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One `on_try` report.
    type Try = (PathBuf, &'static str, bool);

    /// A fresh, empty directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("soloader-search-{}-{tag}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }

        /// Writes `bytes` to `rel`, creating its directories.
        fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
            let p = self.path(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, bytes).expect("write");
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The system's libz, the library these tests copy around.
    fn libz() -> Vec<u8> {
        fs::read("/lib/x86_64-linux-gnu/libz.so.1").expect("libz.so.1 (zlib1g) is installed")
    }

    /// Runs a search and returns its result and every report.
    fn run(
        name: &str,
        needed_by: Option<&Path>,
        path: &SearchPath<'_>,
        config: &SearchConfig,
    ) -> (Result<PathBuf, Error>, Vec<Try>) {
        let mut tries = Vec::new();
        let r = search(name, needed_by, path, config, &mut |p, s, f| {
            tries.push((p.to_path_buf(), s, f))
        });
        (r.map(|(p, _)| p), tries)
    }

    /// [`run`] through [`find_library`] with no RPATH/RUNPATH.
    fn find(name: &str, config: &SearchConfig) -> (Result<PathBuf, Error>, Vec<Try>) {
        let mut tries = Vec::new();
        let r = find_library(name, None, &[], &[], config, &mut |p, s, f| {
            tries.push((p.to_path_buf(), s, f))
        });
        (r.map(|(p, _)| p), tries)
    }

    /// A configuration without environment: these dirs, no cache, these system dirs, these subdirs.
    fn config(library_path: &[&Path], system_dirs: &[&Path], subdirs: &[&str]) -> SearchConfig {
        SearchConfig {
            library_path: library_path.iter().map(|p| p.to_path_buf()).collect(),
            cache: None,
            system_dirs: system_dirs.iter().map(|p| p.to_path_buf()).collect(),
            subdirs: Some(subdirs.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// `ldconfig -p [-C cache]` as (name, description, path) lines, or None without ldconfig.
    fn ldconfig_p(cache: Option<&Path>) -> Option<Vec<(String, String, PathBuf)>> {
        let mut cmd = Command::new("/sbin/ldconfig");
        if let Some(c) = cache {
            cmd.arg("-C").arg(c);
        }
        let out = cmd.arg("-p").output().ok().filter(|o| o.status.success())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines = text.lines().skip(1).filter_map(|l| {
            let (left, path) = l.trim().split_once(" => ")?;
            let (name, desc) = left.split_once(" (")?;
            Some((
                name.to_string(),
                desc.trim_end_matches(')').to_string(),
                PathBuf::from(path),
            ))
        });
        Some(lines.collect())
    }

    /// What `ldconfig -p` says the cache gives for each name without glibc-hwcaps entries.
    fn ldconfig_expected(lines: &[(String, String, PathBuf)]) -> HashMap<String, PathBuf> {
        let mut want = HashMap::new();
        let hwcaps: Vec<&str> = lines
            .iter()
            .filter(|l| l.1.contains("hwcap"))
            .map(|l| l.0.as_str())
            .collect();
        for (name, desc, path) in lines.iter().rev() {
            if desc.contains("x86-64") && !hwcaps.contains(&name.as_str()) {
                want.insert(name.clone(), path.clone());
            }
        }
        want
    }

    #[test]
    fn real_cache_matches_ldconfig() {
        let cache = parse_cache(&fs::read(LD_SO_CACHE).expect("read /etc/ld.so.cache"));
        let libc = cache
            .lookup(b"libc.so.6", host())
            .expect("libc.so.6 in the cache");
        let Some(lines) = ldconfig_p(None) else {
            assert!(libc.ends_with("libc.so.6"));
            return;
        };
        let x86_64 = lines.iter().filter(|l| l.1.contains("x86-64")).count();
        assert_eq!(
            cache.entries().count(),
            x86_64,
            "one entry per x86-64 line of ldconfig -p"
        );
        let want = ldconfig_expected(&lines);
        assert_eq!(Some(libc), want.get("libc.so.6").map(PathBuf::as_path));
        for (name, path) in &want {
            assert_eq!(
                cache.lookup(name.as_bytes(), host()),
                Some(path.as_path()),
                "{name}"
            );
        }
        assert_eq!(
            cache.lookup(b"libc.so", host()),
            want.get("libc.so").map(PathBuf::as_path)
        );
        assert_eq!(cache.lookup(b"libc.so.", host()), None);
        assert_eq!(
            cache_lookup(Path::new(LD_SO_CACHE), b"libc.so.6").as_deref(),
            Some(libc)
        );
    }

    /// Hosts for cache lookups: baseline, v2, v3, v4 (AMD-like: platform x86_64).
    fn host_with(isa: u32) -> Host {
        Host::new(isa, HWCAP_X86_64, Some("x86_64".to_string()))
    }

    #[test]
    fn ldconfig_written_hwcaps_caches() {
        let t = TempDir::new("ldconfig");
        let z = libz();
        let v2 = t.write("lib/glibc-hwcaps/x86-64-v2/libz.so.1", &z);
        let v3 = t.write("lib/glibc-hwcaps/x86-64-v3/libz.so.1", &z);
        let conf = t.write(
            "ld.so.conf",
            format!("{}\n", t.path("lib").display()).as_bytes(),
        );
        for format in ["new", "compat"] {
            let out = t.path(&format!("{format}.cache"));
            let ok = Command::new("/sbin/ldconfig")
                .args(["-X", "-c", format, "-f"])
                .arg(&conf)
                .arg("-C")
                .arg(&out)
                .status()
                .is_ok_and(|s| s.success());
            let Some(lines) = ok.then(|| ldconfig_p(Some(&out))).flatten() else {
                eprintln!("ldconfig unavailable: skipped");
                return;
            };
            let cache = parse_cache(&fs::read(&out).expect("read cache"));
            assert_eq!(
                cache.entries().count(),
                lines.iter().filter(|l| l.1.contains("x86-64")).count()
            );
            let plain = lines
                .iter()
                .find(|l| l.0 == "libz.so.1" && !l.1.contains("hwcap"))
                .map(|l| l.2.as_path());
            let look = |isa| {
                cache
                    .lookup(b"libz.so.1", &host_with(isa))
                    .map(Path::to_path_buf)
            };
            let all = ISA_BASELINE | ISA_V2 | ISA_V3 | ISA_V4;
            if format == "new" {
                assert_eq!(look(all), Some(v3.clone()), "v4 has no copy: v3 is best");
                assert_eq!(look(ISA_BASELINE | ISA_V2), Some(v2.clone()));
                assert_eq!(look(ISA_BASELINE).as_deref(), plain);
            } else {
                // ldconfig 2.36 writes the compat format's hwcaps names relative to the
                // new header, ld.so reads them relative to the file: the names do not
                // match, so glibc uses the plain entry. So do we.
                assert_eq!(look(all).as_deref(), plain);
            }
            assert_eq!(
                cache.lookup(b"libc.so.6", &host_with(all)),
                Some(Path::new("/lib/x86_64-linux-gnu/libc.so.6"))
            );
        }
    }

    /// A cache file: `entries` (flags, key, value, hwcap), `hwcaps` names, optionally inside the old format.
    fn build_cache(entries: &[(u32, &str, &str, u64)], hwcaps: &[&str], old: bool) -> Vec<u8> {
        let n = entries.len();
        let old_end = OLD_HEADER + n * OLD_ENTRY;
        let base = if old { old_end.next_multiple_of(8) } else { 0 };
        let mut strings: Vec<u8> = Vec::new();
        let strings_at = base + NEW_HEADER + n * NEW_ENTRY;
        let mut intern = |s: &str| {
            let at = strings_at + strings.len();
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        };
        let offs: Vec<(usize, usize)> =
            entries.iter().map(|e| (intern(e.1), intern(e.2))).collect();
        let names: Vec<usize> = hwcaps.iter().map(|h| intern(h)).collect();
        let mut b = Vec::new();
        if old {
            b.extend_from_slice(MAGIC_OLD);
            b.push(0);
            b.extend_from_slice(&(n as u32).to_le_bytes());
            for (e, (k, v)) in entries.iter().zip(&offs) {
                for x in [e.0, (k - old_end) as u32, (v - old_end) as u32] {
                    b.extend_from_slice(&x.to_le_bytes());
                }
            }
            b.resize(base, 0);
        }
        let ext_at = (strings_at + strings.len()).next_multiple_of(4);
        b.extend_from_slice(MAGIC_NEW);
        for x in [
            n as u32,
            strings.len() as u32,
            2,
            if hwcaps.is_empty() { 0 } else { ext_at as u32 },
            0,
            0,
            0,
        ] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        for (e, (k, v)) in entries.iter().zip(&offs) {
            for x in [e.0, (k - base) as u32, (v - base) as u32, 0] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b.extend_from_slice(&e.3.to_le_bytes());
        }
        b.extend_from_slice(&strings);
        if !hwcaps.is_empty() {
            b.resize(ext_at, 0);
            for x in [
                EXT_MAGIC,
                1,
                EXT_TAG_HWCAPS,
                0,
                (ext_at + 24) as u32,
                4 * names.len() as u32,
            ] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            names
                .iter()
                .for_each(|&a| b.extend_from_slice(&(a as u32).to_le_bytes()));
        }
        b
    }

    /// A `glibc-hwcaps` entry's hwcap: subdirectory `index`, ISA level `level`.
    fn named(index: u64, level: u64) -> u64 {
        1 << 62 | level << 32 | index
    }

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    #[test]
    fn synthetic_layouts_parse_alike() {
        let entries = [
            (FLAGS_X86_64, "libfoo.so.1", "/a/libfoo.so.1", 0),
            (0x0003, "libfoo.so.1", "/i386/libfoo.so.1", 0),
            (0x0803, "libfoo.so.1", "/x32/libfoo.so.1", 0),
            (FLAGS_X86_64, "libfoo.so.1", "/b/libfoo.so.1", 0),
            (FLAGS_X86_64, "libc.so.6", LIBC, 0),
        ];
        for old in [false, true] {
            let cache = parse_cache(&build_cache(&entries, &[], old));
            assert_eq!(
                cache.entries().count(),
                3,
                "only x86-64 entries are kept (old = {old})"
            );
            assert_eq!(
                cache.lookup(b"libfoo.so.1", &host_with(ISA_BASELINE)),
                Some(Path::new("/a/libfoo.so.1"))
            );
            assert_eq!(
                cache.lookup(b"libc.so.6", &host_with(ISA_BASELINE)),
                Some(Path::new(LIBC))
            );
            assert_eq!(
                cache.lookup(b"libfoo.so.01", &host_with(ISA_BASELINE)),
                None,
                "names compare exactly"
            );
            // An entry without hwcap bits needs none of the CPU's features:
            // they are not even detected.
            assert_eq!(
                cache.lookup_with(b"libc.so.6", || -> &Host { panic!("the host was asked") }),
                Some(Path::new(LIBC))
            );
        }
        // The old format alone.
        let old = build_old_cache(&entries);
        let cache = parse_cache(&old);
        assert_eq!(cache.entries().count(), 3);
        assert_eq!(
            cache.lookup(b"libfoo.so.1", &host_with(ISA_BASELINE)),
            Some(Path::new("/a/libfoo.so.1"))
        );
    }

    /// A cache file in the old format alone.
    fn build_old_cache(entries: &[(u32, &str, &str, u64)]) -> Vec<u8> {
        let mut b = MAGIC_OLD.to_vec();
        b.push(0);
        b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        let mut strings = Vec::new();
        for e in entries {
            let key = strings.len() as u32;
            strings.extend_from_slice(format!("{}\0", e.1).as_bytes());
            let value = strings.len() as u32;
            strings.extend_from_slice(format!("{}\0", e.2).as_bytes());
            for x in [e.0, key, value] {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn synthetic_hwcaps_choice() {
        let hwcaps = ["x86-64-v2", "x86-64-v3", "x86-64-v4", "x86-64-v9"];
        let entries = [
            (FLAGS_X86_64, "libm.so.6", "/v4/libm.so.6", named(2, 3)),
            (FLAGS_X86_64, "libm.so.6", "/v2/libm.so.6", named(0, 1)),
            (FLAGS_X86_64, "libm.so.6", "/v3/libm.so.6", named(1, 2)),
            (FLAGS_X86_64, "libm.so.6", "/v9/libm.so.6", named(3, 0)),
            (FLAGS_X86_64, "libm.so.6", "/bad/libm.so.6", named(99, 0)),
            (
                FLAGS_X86_64,
                "libm.so.6",
                "/avx512/libm.so.6",
                HWCAP_AVX512_1,
            ),
            (FLAGS_X86_64, "libm.so.6", "/haswell/libm.so.6", 1 << 50),
            (
                FLAGS_X86_64,
                "libm.so.6",
                "/tls/libm.so.6",
                HWCAP_TLS | HWCAP_X86_64,
            ),
            (FLAGS_X86_64, "libm.so.6", "/plain/libm.so.6", 0),
        ];
        for old in [false, true] {
            let cache = parse_cache(&build_cache(&entries, &hwcaps, old));
            assert_eq!(cache.hwcaps.len(), 4);
            let look = |h: &Host| cache.lookup(b"libm.so.6", h).map(Path::to_path_buf);
            let all = ISA_BASELINE | ISA_V2 | ISA_V3 | ISA_V4;
            assert_eq!(look(&host_with(all)), Some("/v4/libm.so.6".into()));
            assert_eq!(
                look(&host_with(ISA_BASELINE | ISA_V2 | ISA_V3)),
                Some("/v3/libm.so.6".into())
            );
            assert_eq!(
                look(&host_with(ISA_BASELINE | ISA_V2)),
                Some("/v2/libm.so.6".into())
            );
            // No usable glibc-hwcaps entry: the first legacy entry whose bits the host has.
            assert_eq!(
                look(&host_with(ISA_BASELINE)),
                Some("/tls/libm.so.6".into())
            );
            let intel = Host::new(
                ISA_BASELINE,
                HWCAP_X86_64 | HWCAP_AVX512_1,
                Some("haswell".into()),
            );
            assert_eq!(look(&intel), Some("/avx512/libm.so.6".into()));
            let haswell = Host::new(ISA_BASELINE, HWCAP_X86_64, Some("haswell".into()));
            assert_eq!(look(&haswell), Some("/haswell/libm.so.6".into()));
        }
    }

    #[test]
    fn corrupt_caches_give_no_entries_and_never_panic() {
        let good = build_cache(
            &[
                (FLAGS_X86_64, "libm.so.6", "/v3/libm.so.6", named(0, 2)),
                (FLAGS_X86_64, "libm.so.6", "/m", 0),
            ],
            &["x86-64-v3"],
            true,
        );
        let real = fs::read(LD_SO_CACHE).unwrap_or_default();
        let hosts = [host_with(ISA_BASELINE | ISA_V2 | ISA_V3), host().clone()];
        let probe = |b: &[u8]| {
            let c = parse_cache(b);
            hosts.iter().for_each(|h| {
                let _ = (c.lookup(b"libm.so.6", h), c.lookup(b"libc.so.6", h));
            });
            c
        };
        for sample in [&good, &real] {
            for len in (0..sample.len()).step_by(1 + sample.len() / 3000) {
                probe(&sample[..len]);
            }
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            for _ in 0..3000 {
                let mut b = sample.clone();
                for _ in 0..4 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    if let Some(x) = b.get_mut(seed as usize % sample.len().max(1)) {
                        *x = (seed >> 32) as u8;
                    }
                }
                probe(&b);
            }
        }
        // Headers that lie.
        for bad in [
            &b""[..],
            b"glibc-ld.so.cache1.1",
            b"ld.so-1.7.0\0\xff\xff\xff\xff",
            b"ld.so-1.7.0\0\x01\0\0\0\x03\x03\0\0\0\0\0\0\xff\0\0\0",
        ] {
            assert!(probe(bad).entries().next().is_none());
        }
        let mut huge = good.clone();
        let new_at = (OLD_HEADER + 2 * OLD_ENTRY).next_multiple_of(8);
        huge[new_at + 20..new_at + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            probe(&huge).entries().next().is_none(),
            "nlibs beyond the file"
        );
        let mut big_endian = good.clone();
        big_endian[new_at + 28] = 3;
        assert!(
            probe(&big_endian).entries().next().is_none(),
            "big-endian cache"
        );
        let mut dangling = good.clone();
        dangling[new_at + NEW_HEADER + 4..new_at + NEW_HEADER + 8]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        let c = probe(&dangling);
        assert_eq!(
            c.entries().count(),
            1,
            "an entry with a key outside the file is dropped"
        );
        let mut unterminated = build_cache(&[(FLAGS_X86_64, "libm.so.6", "/m", 0)], &[], false);
        unterminated.pop();
        assert!(
            probe(&unterminated).entries().next().is_none(),
            "a value running off the end is dropped"
        );
        let mut bad_ext = good.clone();
        bad_ext[new_at + 32..new_at + 36].copy_from_slice(&(good.len() as u32 - 2).to_le_bytes());
        let c = probe(&bad_ext);
        assert!(c.hwcaps.is_empty());
        assert_eq!(
            c.lookup(b"libm.so.6", &hosts[0]),
            Some(Path::new("/m")),
            "named entries unusable without names"
        );
    }

    #[test]
    fn cache_file_is_reread_when_it_changes() {
        let t = TempDir::new("reread");
        let path = t.write("ld.so.cache", b"garbage");
        assert_eq!(cache_lookup(&path, b"libc.so.6"), None);
        fs::write(
            &path,
            build_cache(&[(FLAGS_X86_64, "libc.so.6", LIBC, 0)], &[], false),
        )
        .expect("write");
        assert_eq!(
            cache_lookup(&path, b"libc.so.6").as_deref(),
            Some(Path::new(LIBC))
        );
        // A corrupt cache is no cache: the search goes on to the system directories.
        fs::write(&path, b"glibc-ld.so.cache1.1 but truncated").expect("write");
        let mut c = SearchConfig::new(Some(&[]));
        c.cache = Some(path);
        let (r, tries) = find("libz.so.1", &c);
        assert_eq!(
            r.expect("found"),
            Path::new("/lib/x86_64-linux-gnu/libz.so.1")
        );
        assert!(tries.iter().all(|t| t.1 == "default"));
    }

    #[test]
    fn library_path_beats_cache() {
        let t = TempDir::new("llp");
        let mine = t.write("lp/libz.so.1", &libz());
        let c = SearchConfig::new(Some(&[t.path("empty"), t.path("lp/")]));
        let (r, tries) = find("libz.so.1", &c);
        assert_eq!(r.expect("found"), mine);
        assert!(tries.iter().all(|t| t.1 == "LD_LIBRARY_PATH"));
        assert_eq!(tries.last(), Some(&(mine, "LD_LIBRARY_PATH", true)));
        assert_eq!(tries.len(), 2 * c.subdirs().len());
    }

    /// Searches `libz.so.1` with a library path holding a bad `libz.so.1` and checks it was skipped for the cache's.
    fn assert_skipped(bad: &Path, lp: &Path) {
        let c = SearchConfig::new(Some(&[lp.to_path_buf()]));
        let (r, tries) = find("libz.so.1", &c);
        let cached = cache_lookup(Path::new(LD_SO_CACHE), b"libz.so.1").expect("libz in the cache");
        assert_eq!(r.expect("found"), cached);
        assert!(tries.contains(&(bad.to_path_buf(), "LD_LIBRARY_PATH", false)));
        assert_eq!(tries.last(), Some(&(cached, "ld.so.cache", true)));
    }

    #[test]
    fn non_elf_and_odd_files_are_skipped() {
        let t = TempDir::new("nonelf");
        let text = t.write(
            "a/libz.so.1",
            b"/* GNU ld script */ INPUT(libz.so.1.2.13) and more text to pass sixty-four bytes",
        );
        assert_skipped(&text, &t.path("a"));
        let short = t.write("b/libz.so.1", b"\x7fELF\x02\x01\x01");
        assert_skipped(&short, &t.path("b"));
        let dir = t.path("c/libz.so.1");
        fs::create_dir_all(&dir).expect("mkdir");
        assert_skipped(&dir, &t.path("c"));
        let fifo = t.path("d/libz.so.1");
        fs::create_dir_all(t.path("d")).expect("mkdir");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_skipped(&fifo, &t.path("d"));
    }

    #[test]
    fn wrong_class_or_machine_is_skipped() {
        let t = TempDir::new("class");
        let mut elf32 = libz();
        elf32[4] = 1;
        let p = t.write("32/libz.so.1", &elf32);
        assert_skipped(&p, &t.path("32"));
        let mut arm = libz();
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        let p = t.write("arm/libz.so.1", &arm);
        assert_skipped(&p, &t.path("arm"));
        let mut be = libz();
        be[5] = 2;
        let p = t.write("be/libz.so.1", &be);
        assert_skipped(&p, &t.path("be"));
    }

    #[test]
    fn dst_expansion() {
        let o = Some(&b"/opt/app/lib"[..]);
        let x = |e: &str, secure, platform| {
            expand(e.as_bytes(), o, secure, platform).map(|v| String::from_utf8(v).expect("utf-8"))
        };
        let p = Some("x86_64");
        assert_eq!(
            x("$ORIGIN/../lib64", false, p).as_deref(),
            Some("/opt/app/lib/../lib64")
        );
        assert_eq!(
            x("${ORIGIN}/plugins", false, p).as_deref(),
            Some("/opt/app/lib/plugins")
        );
        assert_eq!(
            x("/usr/$LIB/foo", false, p).as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/foo")
        );
        assert_eq!(
            x("/usr/${LIB}", false, p).as_deref(),
            Some("/usr/lib/x86_64-linux-gnu")
        );
        assert_eq!(
            x("/p/$PLATFORM/${PLATFORM}", false, p).as_deref(),
            Some("/p/x86_64/x86_64")
        );
        assert_eq!(
            x("$ORIGIN:$LIB", false, p).as_deref(),
            Some("/opt/app/lib:lib/x86_64-linux-gnu")
        );
        // Not DSTs: kept as written.
        for lit in [
            "/a/$ORIGINX",
            "/a/$LIBX",
            "/a/${LIB",
            "/a/$FOO/b",
            "/a/$",
            "/a/${}",
            "/$_LIB",
            "/a/$LIB_x",
        ] {
            assert_eq!(x(lit, false, p).as_deref(), Some(lit), "{lit}");
        }
        assert_eq!(
            x("/a/$LIB.so", false, p).as_deref(),
            Some("/a/lib/x86_64-linux-gnu.so")
        );
        // Dropped: $ORIGIN in secure mode, $PLATFORM without a platform, an expansion to nothing.
        assert_eq!(x("$ORIGIN/lib", true, p), None);
        assert_eq!(x("/x/${ORIGIN}", true, p), None);
        assert_eq!(
            x("/usr/$LIB", true, p).as_deref(),
            Some("/usr/lib/x86_64-linux-gnu")
        );
        assert_eq!(x("/p/$PLATFORM", false, None), None);
        assert_eq!(expand(b"$ORIGIN", Some(b""), false, p), None);
        assert_eq!(expand(b"$ORIGIN/x", None, false, p), None);
        assert_eq!(
            x("", false, p).as_deref(),
            Some(""),
            "empty: the current directory"
        );
        // The public wrappers.
        let dirs = split_path_list(
            "/a::/b/:/a/:$ORIGIN/../lib:${PLATFORM}",
            Path::new("/opt/app/bin"),
        );
        let want: Vec<PathBuf> = ["/a", "", "/b", "/opt/app/bin/../lib"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs[..4], want[..]);
        if !secure() {
            assert_eq!(
                expand_dst("$ORIGIN/x", Path::new("/o")),
                Some(PathBuf::from("/o/x"))
            );
        }
        assert_eq!(
            dirs.get(4).map(PathBuf::from),
            host().platform.as_ref().map(PathBuf::from)
        );
        assert_eq!(split_path_list("", Path::new("/o")), Vec::<PathBuf>::new());
        let secure_dirs = split_dirs(b"$ORIGIN/a:/b:${ORIGIN}", b":", |e| expand(e, o, true, p));
        assert_eq!(secure_dirs, vec![PathBuf::from("/b")]);
        assert_eq!(
            split_dirs(b"/a;/b:/a", b":;", |e| expand(e, o, false, p)),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    /// A candidate found by name comes with its `fstat` and first
    /// `min(4096, size)` bytes; one named by path with neither (the
    /// loader asks for them).
    #[test]
    fn search_keeps_what_the_check_learnt() {
        let t = TempDir::new("opened");
        let bytes = libz();
        let lib = t.write("a/libz.so.1", &bytes);
        let small = t.write("b/libz.so.1", &bytes[..1000]);
        let m = fs::metadata(&lib).expect("stat");
        let c = config(&[&t.path("a")], &[], &[""]);
        let (p, mut opened) =
            find_library("libz.so.1", None, &[], &[], &c, &mut |_, _, _| {}).expect("found");
        assert_eq!(p, lib);
        let info = opened.info.expect("stat'ed by the search");
        assert_eq!(info.id, (m.dev(), m.ino()));
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(
            info.stamp,
            (
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            )
        );
        assert_eq!(opened.head, bytes[..4096]);
        assert_eq!(opened.info(&p).expect("known").id, info.id);
        // A file shorter than 4 KiB is read whole.
        let c = config(&[&t.path("b")], &[], &[""]);
        let (p, opened) =
            find_library("libz.so.1", None, &[], &[], &c, &mut |_, _, _| {}).expect("found");
        assert_eq!((p, opened.head), (small, bytes[..1000].to_vec()));
        // By path: only opened; `info` asks now and keeps the answer.
        let (p, mut opened) = find_library(
            lib.to_str().expect("utf-8"),
            None,
            &[],
            &[],
            &c,
            &mut |_, _, _| {},
        )
        .expect("found");
        assert!(opened.info.is_none() && opened.head.is_empty());
        assert_eq!(opened.info(&p).expect("fstat").id, info.id);
        assert!(opened.info.is_some());
        let dir = t.path("a");
        let (p, mut opened) = find_library(
            dir.to_str().expect("utf-8"),
            None,
            &[],
            &[],
            &c,
            &mut |_, _, _| {},
        )
        .expect("a path is only opened");
        assert!(matches!(opened.info(&p), Err(Error::Malformed { .. })));
    }

    #[test]
    fn names_with_a_slash_are_paths() {
        let t = TempDir::new("slash");
        let lib = t.write("x/libz.so.1", &libz());
        let c = config(&[], &[], &[""]);
        let (r, tries) = find(lib.to_str().expect("utf-8"), &c);
        assert_eq!(r.expect("found"), lib);
        assert_eq!(tries, vec![(lib.clone(), "path", true)]);
        // Used as-is: the loader, not the search, reports what is wrong with the file.
        let text = t.write("x/libtext.so", b"text");
        assert_eq!(
            find(text.to_str().expect("utf-8"), &c).0.expect("found"),
            text
        );
        let missing = t.path("x/libmissing.so");
        match find(missing.to_str().expect("utf-8"), &c).0 {
            Err(Error::NotFound { tried, .. }) => assert_eq!(tried, vec![missing]),
            other => panic!("{other:?}"),
        }
        // A DT_NEEDED name is expanded against the needing object's directory.
        let by = t.path("x/libneeder.so");
        let path = SearchPath {
            rpath: &[],
            library_path: &[],
            runpath: &[],
            nodeflib: false,
        };
        if !secure() {
            assert_eq!(
                run("$ORIGIN/libz.so.1", Some(&by), &path, &c)
                    .0
                    .expect("found"),
                lib
            );
        }
        assert!(
            run("libz.so.1", Some(&by), &path, &c).0.is_err(),
            "no directories at all"
        );
    }

    #[test]
    fn not_found_lists_every_path_tried_in_order() {
        let t = TempDir::new("order");
        let (r, rp, lp, ru, sys) = (
            t.path("r"),
            t.path("rp"),
            t.path("lp"),
            t.path("ru"),
            t.path("sys"),
        );
        let c = config(&[&lp], &[&sys], &["sub", ""]);
        let path = SearchPath {
            rpath: &[r.clone(), rp.clone()],
            library_path: &c.library_path,
            runpath: std::slice::from_ref(&ru),
            nodeflib: false,
        };
        let by = t.path("libneeder.so");
        let (res, tries) = run("libnothere.so.3", Some(&by), &path, &c);
        let want: Vec<Try> = [
            (&r, "RPATH"),
            (&rp, "RPATH"),
            (&lp, "LD_LIBRARY_PATH"),
            (&ru, "RUNPATH"),
            (&sys, "default"),
        ]
        .iter()
        .flat_map(|&(d, s)| {
            [
                (d.join("sub/libnothere.so.3"), s, false),
                (d.join("libnothere.so.3"), s, false),
            ]
        })
        .collect();
        assert_eq!(tries, want);
        match res {
            Err(Error::NotFound {
                name,
                needed_by,
                tried,
            }) => {
                assert_eq!(name, "libnothere.so.3");
                assert_eq!(needed_by, Some(by));
                assert_eq!(tried, want.into_iter().map(|t| t.0).collect::<Vec<_>>());
            }
            other => panic!("{other:?}"),
        }
        // An empty directory entry is the current directory.
        let cwd = config(&[Path::new("")], &[], &[""]);
        assert_eq!(
            find("libnothere.so.3", &cwd).1,
            vec![(PathBuf::from("libnothere.so.3"), "LD_LIBRARY_PATH", false)]
        );
    }

    #[test]
    fn nodeflib_skips_system_directories_and_their_cache_entries() {
        let c = SearchConfig::new(Some(&[]));
        let path = SearchPath {
            rpath: &[],
            library_path: &[],
            runpath: &[],
            nodeflib: true,
        };
        let (r, tries) = run("libz.so.1", None, &path, &c);
        assert!(r.is_err());
        assert!(tries.is_empty());
        assert!(find("libz.so.1", &c).0.is_ok());
    }

    #[test]
    fn glibc_features_agree_with_cpuid() {
        let glibc = Cpu::detect();
        assert!(
            matches!(glibc, Cpu::Glibc(_)),
            "glibc 2.36 exports __x86_get_cpuid_feature_leaf"
        );
        for f in Feature::ALL {
            assert_eq!(glibc.has(f), f.by_cpuid(), "{f:?}");
        }
        let (a, b) = (Host::with(&glibc), Host::with(&Cpu::Cpuid));
        assert_eq!((a.isa, a.hwcap, &a.platform), (b.isa, b.hwcap, &b.platform));
        assert_eq!(a.subdirs, b.subdirs);
    }

    #[test]
    fn legacy_and_hwcaps_subdirs() {
        let amd = Host::new(ISA_BASELINE | ISA_V2, HWCAP_X86_64, Some("x86_64".into()));
        let want = [
            "glibc-hwcaps/x86-64-v2",
            "tls/x86_64/x86_64",
            "tls/x86_64",
            "tls",
            "x86_64/x86_64",
            "x86_64",
            "",
        ];
        assert_eq!(amd.subdirs, want);
        let intel = Host::new(
            ISA_BASELINE | ISA_V2 | ISA_V3 | ISA_V4,
            HWCAP_X86_64 | HWCAP_AVX512_1,
            Some("haswell".into()),
        );
        assert_eq!(intel.subdirs.len(), 3 + 16);
        assert_eq!(
            intel.subdirs[..6],
            [
                "glibc-hwcaps/x86-64-v4",
                "glibc-hwcaps/x86-64-v3",
                "glibc-hwcaps/x86-64-v2",
                "tls/haswell/avx512_1/x86_64",
                "tls/haswell/avx512_1",
                "tls/haswell/x86_64"
            ]
        );
        let none = Host::new(ISA_BASELINE, HWCAP_X86_64, None);
        assert_eq!(none.subdirs, ["tls/x86_64", "tls", "x86_64", ""]);
    }

    /// The candidates glibc's loader tries for `name` (each once), from `LD_DEBUG=libs` of a preload.
    fn system_loader_tries(name: &str, library_path: &str) -> Option<Vec<PathBuf>> {
        let out = Command::new("/bin/true")
            .env_clear()
            .env("LD_DEBUG", "libs")
            .env("LD_LIBRARY_PATH", library_path)
            .env("LD_PRELOAD", name)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let start = text.find(&format!("find library={name} "))?;
        let block = text[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.contains("find library=") && !l.trim_end().ends_with(':'));
        let mut tries: Vec<PathBuf> = Vec::new();
        for l in block {
            if let Some((_, f)) = l.split_once("trying file=") {
                let f = PathBuf::from(f.trim_end());
                if !tries.contains(&f) {
                    tries.push(f);
                }
            }
        }
        Some(tries)
    }

    #[test]
    fn same_order_as_the_system_loader() {
        let t = TempDir::new("ldd");
        let (a, b) = (t.path("a"), t.path("b"));
        fs::create_dir_all(&b).expect("mkdir");
        let llp = format!("{}:{}", a.display(), b.display());
        let c = SearchConfig::new(Some(&[a, b]));
        for name in ["libsoloader-nonexistent.so.7", "libz.so.1"] {
            let Some(glibc) = system_loader_tries(name, &llp) else {
                eprintln!("no LD_DEBUG output: skipped");
                return;
            };
            let ours: Vec<PathBuf> = find(name, &c).1.into_iter().map(|t| t.0).collect();
            assert!(glibc.len() > 2 * c.subdirs().len(), "{glibc:?}");
            assert_eq!(ours, glibc, "{name}");
        }
    }
}
