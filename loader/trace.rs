//! The trace: a structured event for every step of a load.
//!
//! A [`TraceSink`] passed in [`crate::Options`] receives each [`Event`] as
//! it happens: every path searched, every `mmap`/`mprotect`/`munmap`, the
//! `.bss` zeroing, each batch of relocations with the pages it wrote, each
//! symbol binding and its provider, RELRO, and each initialiser and
//! finaliser. Without a sink nothing is built: the loader checks for the
//! sink before it formats anything.
//!
//! The trace is both the teaching view (`soloader trace`) and the test
//! oracle: the tests assert on these events rather than on log text.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Receives the loader's events. Implementations must be cheap and must not
/// call back into the loader.
pub trait TraceSink: Send + Sync {
    /// One event, in the order the loader did it.
    fn event(&self, event: &Event);
}

/// Who provided a symbol binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// An object the system loader mapped (the host process's copy).
    Host(String),
    /// A library soloader loaded.
    Loaded(PathBuf),
    /// Nobody: an undefined weak symbol, bound to 0.
    UndefinedWeak,
    /// soloader itself: a function the loader provides to its libraries
    /// (`__tls_get_addr`, …) instead of the system loader's.
    Loader,
}

/// One step of a load or unload.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A library name is being searched for.
    Search {
        /// The name as requested.
        name: String,
        /// The library whose `DT_NEEDED` asked for it.
        needed_by: Option<PathBuf>,
    },
    /// One candidate path was tried.
    SearchTry {
        /// The path.
        path: PathBuf,
        /// Where the directory came from (`LD_LIBRARY_PATH`, `ld.so.cache`, …).
        source: &'static str,
        /// Whether a usable file was found there.
        found: bool,
    },
    /// A dependency is bound to the host process's copy instead of being
    /// loaded by soloader.
    HostLibrary {
        /// The `DT_NEEDED` name.
        name: String,
        /// The host's path for it.
        path: String,
        /// Whether soloader had to ask the system loader to load it first.
        newly_loaded: bool,
    },
    /// The load stopped at a dependency only the system loader may load
    /// (the glibc family), which the process does not have yet. The
    /// system `dlopen` takes the system loader's lock, and a thread running
    /// a constructor under that lock may be waiting for soloader's: so
    /// soloader undoes what this attempt mapped, releases its lock, has the
    /// system loader load `name`, and starts the load again (the events
    /// that follow are the new attempt's).
    Deferred {
        /// The `DT_NEEDED` name.
        name: String,
        /// The library that needs it.
        needed_by: PathBuf,
    },
    /// A dependency was already loaded by soloader and is shared.
    AlreadyLoaded {
        /// The library.
        path: PathBuf,
        /// Its reference count after this use.
        refcount: usize,
    },
    /// A file is opened for loading.
    Open {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// A `mmap` call.
    Mmap {
        /// The address returned.
        addr: usize,
        /// The length.
        len: usize,
        /// `PROT_*` bits.
        prot: i32,
        /// `MAP_*` bits.
        flags: i32,
        /// File offset (0 for anonymous maps).
        offset: u64,
        /// What it is for (`"reserve"`, `"segment 1"`, `"bss"` …).
        purpose: String,
    },
    /// A `mprotect` call.
    Mprotect {
        /// The address.
        addr: usize,
        /// The length.
        len: usize,
        /// `PROT_*` bits.
        prot: i32,
        /// Why (`"relro"`, `"bss tail: writable"` …).
        purpose: String,
    },
    /// A `munmap` call.
    Munmap {
        /// The address.
        addr: usize,
        /// The length.
        len: usize,
        /// Why.
        purpose: String,
    },
    /// `madvise` (e.g. populating the pages relocation will write).
    Madvise {
        /// The address.
        addr: usize,
        /// The length.
        len: usize,
        /// The advice.
        advice: i32,
    },
    /// The tail of the last file page of a segment was zeroed (`.bss`).
    BssZero {
        /// The address of the first zeroed byte.
        addr: usize,
        /// How many bytes.
        len: usize,
    },
    /// The file descriptor was closed, all segments being mapped.
    Close {
        /// The file.
        path: PathBuf,
    },
    /// Mapping finished: where the library now lives.
    Mapped {
        /// The library.
        path: PathBuf,
        /// The load bias (address of virtual address 0).
        base: usize,
        /// The reserved span's length.
        size: usize,
    },
    /// A batch of relocations of one type was applied.
    Relocations {
        /// The library.
        path: PathBuf,
        /// The type's name, e.g. `"R_X86_64_RELATIVE"`.
        kind: &'static str,
        /// How many.
        count: usize,
        /// The distinct pages written (page-aligned addresses).
        pages: Vec<usize>,
    },
    /// A symbol reference was bound.
    Bind {
        /// The library whose reference it is.
        path: PathBuf,
        /// The symbol.
        symbol: String,
        /// The version asked for.
        version: Option<String>,
        /// Who provided it.
        provider: Provider,
        /// The address it resolved to.
        value: usize,
    },
    /// The relocation cache (`Options::relocation_cache`) placed a
    /// library, used or ignored a cache file, or wrote one.
    RelocationCache {
        /// The library.
        path: PathBuf,
        /// What happened: `"placed"`, `"not placed"`, `"not used"`,
        /// `"miss"` (no file yet), `"hit"` (pages mapped from the file),
        /// `"ignored"` (a stale or corrupt file: a warning; it is
        /// rewritten), `"written"`, `"not written"`, `"stub code private"`
        /// (the file cannot be mapped executable, e.g. `noexec`).
        what: &'static str,
        /// The cache file, if one is concerned.
        file: Option<PathBuf>,
        /// Why, or how much.
        detail: String,
        /// The pages (page-aligned addresses) mapped from the file
        /// (`"hit"`) or saved to it (`"written"`).
        pages: Vec<usize>,
    },
    /// `PT_GNU_RELRO` was made read-only.
    Relro {
        /// The library.
        path: PathBuf,
        /// The start of the protected range.
        addr: usize,
        /// Its length.
        len: usize,
    },
    /// An initialiser is about to be called.
    Init {
        /// The library.
        path: PathBuf,
        /// `"DT_INIT"` or `"DT_INIT_ARRAY[i]"`.
        kind: String,
        /// The function's address.
        addr: usize,
        /// The nearest dynamic symbol at or below it (as `dladdr` finds
        /// it), when there is one.
        function: Option<String>,
    },
    /// A finaliser is about to be called.
    Fini {
        /// The library.
        path: PathBuf,
        /// `"DT_FINI_ARRAY[i]"` or `"DT_FINI"`.
        kind: String,
        /// The function's address.
        addr: usize,
        /// The nearest dynamic symbol at or below it, when there is one.
        function: Option<String>,
    },
    /// The library is loaded and ready.
    Loaded {
        /// The library.
        path: PathBuf,
        /// The load bias.
        base: usize,
    },
    /// The library was unmapped and forgotten.
    Unloaded {
        /// The library.
        path: PathBuf,
    },
}

/// A sink that keeps every event in memory, for tests and for the CLI.
#[derive(Default, Clone)]
pub struct VecSink {
    events: Arc<Mutex<Vec<Event>>>,
}

impl VecSink {
    /// An empty sink.
    pub fn new() -> VecSink {
        VecSink::default()
    }

    /// A copy of every event received so far.
    pub fn events(&self) -> Vec<Event> {
        match self.events.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl TraceSink for VecSink {
    fn event(&self, event: &Event) {
        match self.events.lock() {
            Ok(mut v) => v.push(event.clone()),
            Err(poisoned) => poisoned.into_inner().push(event.clone()),
        }
    }
}

/// The loader's handle on an optional sink.
#[derive(Clone, Default)]
pub(crate) struct Tracer(pub(crate) Option<Arc<dyn TraceSink>>);

impl Tracer {
    /// Whether anyone listens; check before building an expensive event.
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.0.is_some()
    }

    /// Sends the event built by `f`, if anyone listens.
    #[inline]
    pub(crate) fn emit(&self, f: impl FnOnce() -> Event) {
        if let Some(sink) = &self.0 {
            sink.event(&f());
        }
    }
}
