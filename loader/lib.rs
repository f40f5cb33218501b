//! soloader: a userspace dynamic loader for ELF shared libraries.
//!
//! soloader does in a library what `ld.so` does inside `dlopen`: it opens
//! a `.so`, maps its segments from the file with `mmap(MAP_PRIVATE)` so
//! that text and read-only data stay file-backed and physically shared
//! with every other process that maps the same file, applies the
//! relocations (which turns only the pages they touch into private
//! copy-on-write copies), resolves symbols, runs the constructors, and
//! hands out typed function pointers.
//!
//! ```no_run
//! let lib = soloader::Library::open("libz.so.1")?;
//! // SAFETY: zlibVersion is `const char *zlibVersion(void)`.
//! let version = unsafe { lib.get::<extern "C" fn() -> *const std::ffi::c_char>("zlibVersion")? };
//! // SAFETY: zlib returns a static NUL-terminated string.
//! println!("{:?}", unsafe { std::ffi::CStr::from_ptr(version()) });
//! # Ok::<(), soloader::Error>(())
//! ```
//!
//! # The pipeline
//!
//! Data flows forward through one module per stage; no stage reaches back.
//!
//! 1. **Find** (`search`): a name with `/` is a path; a bare name is
//!    searched like `dlopen` does — `DT_RPATH`, `LD_LIBRARY_PATH`,
//!    `DT_RUNPATH`, `/etc/ld.so.cache`, the default directories — and the
//!    first regular x86-64 ELF file wins.
//! 2. **Parse and validate** (`elf`): the ELF header and program headers
//!    are read with one `pread` and checked into a load plan (sorted,
//!    non-overlapping, page-congruent `PT_LOAD`s inside the file; one
//!    `PT_DYNAMIC`; no executable stack). The dynamic section and every
//!    table it names — strings, symbols, GNU/SysV hash, versions,
//!    relocations — are read through a bounds-checked view that only hands
//!    out bytes inside the read-only, file-backed part of a segment. Every
//!    offset, size and index is checked before use; a bad one is an
//!    [`Error::Malformed`] naming the file, the field and the offset.
//! 3. **Map** (`map`): one anonymous `PROT_NONE` reservation of the whole
//!    span, aligned to the largest `p_align`; each segment mapped from the
//!    file over it with `MAP_PRIVATE | MAP_FIXED` and its own protections;
//!    the tail of the last file page of `.bss` zeroed and anonymous pages
//!    for the rest; the file descriptor closed. Gaps stay `PROT_NONE`.
//! 4. **Resolve dependencies** (`resolve`): `DT_NEEDED` breadth-first,
//!    each file loaded once per process (device and inode). The glibc
//!    family (`libc`, `libm`, `ld.so`, …), `libgcc_s`, `libstdc++` and any
//!    library the host already has are bound to the host process's copy
//!    (`host`), never loaded twice. One the host does not have yet is
//!    loaded by the system loader with soloader's lock released (the load
//!    is undone and started again): soloader never waits for the system
//!    loader's lock while it holds its own.
//! 5. **Relocate** (`reloc`, with numbers from `arch`): dependencies first,
//!    in glibc's order. `DT_RELR`, `DT_REL`, `DT_RELA`, `DT_JMPREL`
//!    (bound eagerly); imports resolved against the host's global scope
//!    (the executable's tree, then its `RTLD_GLOBAL` libraries) first,
//!    then the library and its dependencies breadth-first, with GNU hash
//!    and Bloom filter and glibc's version rules, each resolution
//!    remembered for the next load of the same file; IFUNC work last.
//! 6. **Protect**: `PT_GNU_RELRO` made read-only.
//! 7. **Initialise** (`init`): `DT_INIT` then `DT_INIT_ARRAY`, each called
//!    with `(argc, argv, envp)`, dependencies first.
//! 8. **Use** ([`Library`]): typed lookups that borrow the library (a
//!    symbol table asked repeatedly builds a name index).
//! 9. **Unload**: when no handle and no loaded library needs an object,
//!    `DT_FINI_ARRAY` backwards then `DT_FINI`, then one `munmap`.
//!
//! Two things cut across: the **trace** ([`trace`]), a structured event
//! for every step (the teaching view and the tests' oracle), and the
//! **registry** (`registry`), the loaded set behind one reentrant,
//! fork-safe lock.
//!
//! One option changes stages 3 and 5: the **relocation cache**
//! ([`Options::relocation_cache`], module `relcache`). Each library is
//! mapped at a deterministic address (no ASLR for it), external
//! `JUMP_SLOT`s go through per-library stubs, and the pages relocation
//! writes with the same bytes in every process are saved to a cache file
//! once and then mapped from it (`MAP_PRIVATE`, shared) by every later
//! load in any process, which skips their relocations. Pages holding the
//! host's addresses (libc under ASLR) stay private, unless the processes
//! are forked from one parent without `exec`
//! ([`Options::relocation_cache_forked`]): then the host's layout is part
//! of the cache file's key and those pages are shared too. Without the
//! option every stage is exactly as described above.
//!
//! # Trust
//!
//! Parsing is safe on any file. Loading runs the library's own code
//! (IFUNC resolvers, constructors), exactly like `dlopen`: load only
//! libraries you trust.

#![warn(missing_docs)]

mod arch;
mod debug;
mod dl;
mod elf;
pub mod error;
mod host;
mod init;
pub mod inspect;
mod library;
mod map;
pub mod mem;
mod object;
mod registry;
mod relcache;
mod reloc;
mod resolve;
mod search;
mod tls;
pub mod trace;
mod unwind;

pub use error::{Error, Result};
pub use library::{check, find_library, lookup, AddrInfo, Library, Options, Segment, Symbol};
pub use map::Syscall;
pub use relcache::CacheUse;
pub use trace::{Event, Provider, TraceSink, VecSink};

#[cfg(test)]
mod tests {
    #[test]
    fn library_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Library>();
        check::<crate::Options>();
    }
}
