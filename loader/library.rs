//! The public API: [`Library`], [`Symbol`], [`Options`].
//!
//! Shaped like `libloading`: `Library::open`, an `unsafe` typed `get`
//! returning a [`Symbol`] that borrows the library, and `close`/`Drop`.
//! Unlike `libloading`, the whole load is visible: the segments, the base
//! address, and (through [`Options::trace`]) every step.

use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::elf::hash::{sysv_hash, Name, SymTab, VersionReq};
use crate::elf::page_down;
use crate::error::{Error, Result};
use crate::host;
use crate::init;
use crate::map::{FailPoint, Sys, Syscall};
use crate::object::{Dep, Found, Held, Module, Object, Scope};
use crate::registry::{self, Entry, Guard};
use crate::reloc::Relocator;
use crate::resolve::{self, Loader, Tree};
use crate::search::SearchConfig;
use crate::trace::{Event, TraceSink, Tracer};

/// How to load a library.
#[derive(Clone, Default)]
pub struct Options {
    pub(crate) library_path: Option<Vec<PathBuf>>,
    pub(crate) tracer: Tracer,
    pub(crate) fail: Option<FailPoint>,
    pub(crate) check_only: bool,
    /// Relocation cache directory (`relcache`), if enabled.
    pub(crate) relocation_cache: Option<PathBuf>,
    /// The relocation cache may treat host objects' addresses as fixed
    /// (`relocation_cache_forked`).
    pub(crate) relocation_cache_forked: bool,
    pub(crate) own_libstdcxx: bool,
}

impl Options {
    /// Default options: `LD_LIBRARY_PATH` from the environment, no trace.
    pub fn new() -> Options {
        Options::default()
    }

    /// Search these directories instead of the environment's
    /// `LD_LIBRARY_PATH`.
    pub fn library_path(mut self, dirs: Vec<PathBuf>) -> Options {
        self.library_path = Some(dirs);
        self
    }

    /// Send every step of the load to `sink`.
    pub fn trace(mut self, sink: Arc<dyn TraceSink>) -> Options {
        self.tracer = Tracer(Some(sink));
        self
    }

    /// Share relocated pages between processes through a cache of
    /// relocated pages in `dir` (created, mode 0700, if missing).
    ///
    /// Each library this load maps is placed at a deterministic address
    /// derived from its build-id, so that the pages relocation writes
    /// (RELRO, and data pages whose every relocation is internal) hold the
    /// same bytes in every process; the first load writes them to a cache
    /// file in `dir`, later loads (in any process) map them from it
    /// (`MAP_PRIVATE`: physically shared until written) instead of
    /// relocating them. Calls from the library to other objects go through
    /// small per-library stubs.
    ///
    /// **Trade-off:** a cached library's address is predictable (it does
    /// not get address-space layout randomisation). See the README.
    ///
    /// `dir` must be owned by the user and not writable by group or
    /// others: otherwise loads fail with [`Error::Unsupported`]. A stale or
    /// corrupt cache file is ignored (with a trace event) and rewritten.
    /// [`crate::check`] never uses the cache.
    pub fn relocation_cache(mut self, dir: impl Into<PathBuf>) -> Options {
        self.relocation_cache = Some(dir.into());
        self
    }

    /// Tell the relocation cache ([`Options::relocation_cache`]) that the
    /// processes sharing it are forked from one parent that started them
    /// without `exec` (a pre-fork server's workers, a zygote's children):
    /// they inherit its address-space layout, so the host's libraries (libc
    /// under ASLR, and soloader's own code) are at the same addresses in
    /// all of them.
    ///
    /// The cache then also shares the pages that hold pointers into host
    /// objects (`GLOB_DAT`, `R_X86_64_64` and `JUMP_SLOT` entries naming
    /// libc's functions and data), which otherwise every process relocates
    /// privately: their cache file is keyed by the host's layout (every host
    /// object's base, and soloader's), so a process with another layout
    /// never uses it. IFUNC results and TLS stay private as always.
    ///
    /// Processes started by `exec` each have their own layout: with this
    /// option each writes a cache file no other process can use. Leave it
    /// off for them. No effect without [`Options::relocation_cache`].
    pub fn relocation_cache_forked(mut self, yes: bool) -> Options {
        self.relocation_cache_forked = yes;
        self
    }

    /// Load `libstdc++` with soloader when a library needs it and the host
    /// process does not have it yet (by default it is the system loader's,
    /// like the glibc family). Its `STB_GNU_UNIQUE` symbols are then
    /// unified process-wide (the first definition wins, as in glibc), and
    /// the objects that provide them are never unloaded.
    pub fn load_libstdcxx(mut self, yes: bool) -> Options {
        self.own_libstdcxx = yes;
        self
    }

    /// Test hook: make the `nth` (0-based) `call` of each load fail with
    /// `ENOMEM`, to check that a failed load leaves nothing behind.
    pub fn fail_syscall(mut self, call: Syscall, nth: usize) -> Options {
        self.fail = Some(FailPoint {
            call,
            nth,
            seen: Arc::new(AtomicUsize::new(0)),
        });
        self
    }
}

/// One `PT_LOAD` segment as mapped in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Index of this `PT_LOAD` among the file's `PT_LOAD`s.
    pub index: usize,
    /// The page-aligned address range the segment occupies.
    pub range: Range<usize>,
    /// The part of `range` mapped from the file (`MAP_PRIVATE`); the rest
    /// of `range` is anonymous zero pages (`.bss`).
    pub file_range: Range<usize>,
    /// File offset of `file_range.start`.
    pub file_offset: u64,
    /// `PROT_*` bits the segment was mapped with.
    pub prot: i32,
    /// The part of `range` that `PT_GNU_RELRO` made read-only after
    /// relocation, if any.
    pub relro: Option<Range<usize>>,
    /// The zero-initialised part (`p_filesz..p_memsz`), if any, as an
    /// address range (not page-aligned at its start).
    pub bss: Option<Range<usize>>,
}

/// A loaded library. Dropping it (or calling [`Library::close`]) runs its
/// finalisers and unmaps it once nothing else needs it.
pub struct Library {
    obj: Option<Arc<Object>>,
    tracer: Tracer,
}

/// A symbol borrowed from a [`Library`]: it cannot outlive the library.
#[derive(Clone, Copy)]
pub struct Symbol<'lib, T> {
    value: T,
    addr: usize,
    _lib: PhantomData<&'lib Library>,
}

impl<T> Symbol<'_, T> {
    /// The symbol's address.
    pub fn addr(&self) -> usize {
        self.addr
    }
}

impl<T> std::ops::Deref for Symbol<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path())
            .field("base", &format_args!("{:#x}", self.base()))
            .finish()
    }
}

impl Library {
    /// Loads the library at `path` (a name without `/` is searched for the
    /// way `dlopen` does).
    pub fn open(path: impl AsRef<Path>) -> Result<Library> {
        Library::open_with(path, &Options::new())
    }

    /// Loads with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<Library> {
        Library::open_from(&path.as_ref().to_string_lossy(), options, None, false)
    }

    /// The whole load. `caller` is the soloader library that called
    /// `dlopen` (its `RPATH`/`RUNPATH` apply); `noload` only returns a
    /// library that is already loaded (`RTLD_NOLOAD`).
    pub(crate) fn open_from(
        name: &str,
        options: &Options,
        caller: Option<&Object>,
        noload: bool,
    ) -> Result<Library> {
        resolve::refuse_host_family(name)?;
        // Relocation cache (opt-in): the directory is checked (and a load
        // refused if it is not safe to trust) before anything is mapped.
        let relcache = match &options.relocation_cache {
            Some(dir) if !options.check_only => Some(crate::relcache::Dir::open(dir)?),
            _ => None,
        };
        // Host libraries the system loader must load are loaded between
        // attempts, with soloader's lock released (see `Deferred`); a few
        // attempts at most, then under the lock as a last resort.
        let mut attempts = 0;
        let mut loaded_between = Vec::new();
        let (guard, loader, tree) = loop {
            // The host's RTLD_GLOBAL libraries, asked for before taking the
            // lock (it takes the system loader's).
            host::probe_global();
            let guard = registry::lock();
            let loader = Loader {
                tracer: &options.tracer,
                fail: options.fail.as_ref(),
                search: SearchConfig::new(options.library_path.as_deref()),
                relcache: relcache.as_ref(),
                relcache_forked: options.relocation_cache_forked,
                own_libstdcxx: options.own_libstdcxx,
                may_defer: registry::depth() == 1 && attempts < 4,
                deferred: Default::default(),
                loaded_between: loaded_between.clone(),
            };
            let (root_path, mut opened) = loader.find_root(name, caller)?;
            if noload {
                let id = opened.info(&root_path)?.id;
                if guard.registry().by_file(id).is_none() {
                    return Err(Error::NotFound {
                        name: name.to_string(),
                        needed_by: caller.map(|c| c.path.clone()),
                        tried: vec![root_path],
                    });
                }
            }
            let attempt = loader.load_tree(&guard.registry(), &root_path, opened);
            let deferred = loader.deferred.borrow_mut().take();
            match (attempt, deferred) {
                (Ok(tree), _) => break (guard, loader, tree),
                (Err(_), Some(d)) => {
                    options.tracer.emit(|| Event::Deferred {
                        name: d.name.clone(),
                        needed_by: d.needed_by.clone(),
                    });
                    drop(guard);
                    attempts += 1;
                    host::ensure_loaded(&d.name, Some(&d.needed_by))?;
                    loaded_between.push(d.name);
                }
                (Err(e), None) => return Err(e),
            }
        };
        let root = tree.root.clone();
        if !tree.new.is_empty() {
            let order = resolve::init_order(&tree.root, &tree.new);
            if let Err(e) = link(&loader, &tree, &order, !options.check_only) {
                for o in &tree.new {
                    o.unmap(&loader.sys(&o.path));
                }
                return Err(e);
            }
            if options.check_only {
                // Validated, mapped and relocated without running anything
                // of the library: undo it all.
                for o in &tree.new {
                    o.unmap(&loader.sys(&o.path));
                }
                return Ok(Library {
                    obj: None,
                    tracer: options.tracer.clone(),
                });
            }
            // What these libraries' own dlopen calls load with: these
            // options, less the ones that belong to this call alone.
            let inherited = Options {
                fail: None,
                check_only: false,
                ..options.clone()
            };
            for o in &tree.new {
                let _ = o.options.set(inherited.clone());
            }
            register(&guard, &tree);
            initialise(&guard, &order, &options.tracer)?;
        }
        if let Some(e) = guard.registry().get_mut(root.id) {
            e.opens += 1;
        }
        options.tracer.emit(|| Event::Loaded {
            path: root.path.clone(),
            base: root.mapping.base,
        });
        Ok(Library {
            obj: Some(root),
            tracer: options.tracer.clone(),
        })
    }

    #[inline]
    fn obj(&self) -> &Arc<Object> {
        // SAFETY-free invariant: `obj` is only None inside close/drop.
        match &self.obj {
            Some(o) => o,
            None => unreachable!("Library used after close"),
        }
    }

    /// Looks up `name` in the library and then its dependencies,
    /// breadth-first (as `dlsym` on a handle does), never choosing a
    /// hidden version. An IFUNC resolves to its resolver's result.
    ///
    /// # Safety
    /// `T` must be the symbol's real type (a function pointer type or a
    /// raw pointer); calling or dereferencing it runs the library's code.
    pub unsafe fn get<T: Copy>(&self, name: &str) -> Result<Symbol<'_, T>> {
        // SAFETY: forwarded contract.
        unsafe { self.lookup(name, None) }
    }

    /// Looks up `name` at exactly `version` (this reaches hidden versions,
    /// like `dlvsym`).
    ///
    /// # Safety
    /// As for [`Library::get`].
    pub unsafe fn get_versioned<T: Copy>(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Symbol<'_, T>> {
        // SAFETY: forwarded contract.
        unsafe { self.lookup(name, Some(version)) }
    }

    #[inline]
    unsafe fn lookup<T: Copy>(&self, name: &str, version: Option<&str>) -> Result<Symbol<'_, T>> {
        let obj = self.obj();
        if std::mem::size_of::<T>() != std::mem::size_of::<usize>() {
            return Err(Error::unsupported(
                &obj.path,
                format!(
                    "get::<T>({name}): T must be pointer-sized (a function pointer or raw pointer)"
                ),
            ));
        }
        let req = version.map(|v| VersionReq {
            name: v.as_bytes(),
            hash: sysv_hash(v.as_bytes()),
            hidden: false,
        });
        // The common case first: a plain definition in the library
        // itself, from its name index.
        let indexed = match version {
            None => obj.indexed_value(name.as_bytes()),
            Some(_) => None,
        };
        let addr = match indexed {
            Some(a) => a,
            None => find(obj, name.as_bytes(), req.as_ref()).ok_or_else(|| {
                Error::SymbolNotFound {
                    path: obj.path.clone(),
                    symbol: name.to_string(),
                    version: version.map(str::to_string),
                }
            })??,
        };
        // SAFETY: T is pointer-sized (checked); the caller promises it is
        // the symbol's type.
        let value: T = unsafe { std::mem::transmute_copy(&addr) };
        Ok(Symbol {
            value,
            addr,
            _lib: PhantomData,
        })
    }

    /// Unloads now: runs finalisers of everything no longer needed and
    /// unmaps it.
    pub fn close(mut self) -> Result<()> {
        if let Some(o) = self.obj.take() {
            unload(o, &self.tracer);
        }
        Ok(())
    }

    /// The file loaded.
    pub fn path(&self) -> &Path {
        &self.obj().path
    }

    /// The load bias: the address of virtual address 0 of the file.
    pub fn base(&self) -> usize {
        self.obj().mapping.base
    }

    /// The reserved address range holding every segment.
    pub fn span(&self) -> Range<usize> {
        let m = &self.obj().mapping;
        m.start..m.start + m.len
    }

    /// The mapped segments.
    pub fn segments(&self) -> &[Segment] {
        &self.obj().mapping.segments
    }

    /// What the relocation cache ([`Options::relocation_cache`]) did for
    /// this library: `None` when it was not used (not enabled, or the
    /// library could not be placed at its deterministic address; the trace
    /// says why).
    pub fn relocation_cache(&self) -> Option<crate::relcache::CacheUse> {
        self.obj().relcache.as_ref().and_then(|p| p.outcome())
    }

    /// `DT_SONAME`, or the file name.
    pub fn soname(&self) -> String {
        self.obj().soname()
    }

    /// The symbol containing `addr` (or the nearest below it), if `addr`
    /// lies in this library, as `dladdr` finds it.
    pub fn symbol_at(&self, addr: usize) -> Option<AddrInfo> {
        addr_info(self.obj(), addr)
    }

    /// The direct dependencies: for each `DT_NEEDED`, the path of the
    /// library soloader loaded, or the host's path for a host library.
    pub fn dependencies(&self) -> Vec<(String, PathBuf, bool)> {
        let obj = self.obj();
        let deps = obj.deps.get().map(|d| d.as_slice()).unwrap_or(&[]);
        obj.tables
            .needed
            .iter()
            .zip(deps)
            .map(|(name, d)| match d {
                Dep::Loaded(w) => (
                    name.clone(),
                    w.upgrade().map(|o| o.path.clone()).unwrap_or_default(),
                    false,
                ),
                Dep::Host(h) => (name.clone(), PathBuf::from(&h.name), true),
            })
            .collect()
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if let Some(o) = self.obj.take() {
            unload(o, &self.tracer);
        }
    }
}

/// What an address is: the library that contains it and the nearest
/// symbol at or below it (like `dladdr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrInfo {
    /// The library's file.
    pub path: PathBuf,
    /// Its load bias.
    pub base: usize,
    /// The nearest defined symbol at or below the address, if any.
    pub symbol: Option<String>,
    /// That symbol's address.
    pub symbol_addr: Option<usize>,
}

impl std::fmt::Display for AddrInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = &self.symbol {
            write!(f, "{s} in ")?;
        }
        write!(f, "{}", self.path.display())
    }
}

fn addr_info(o: &Object, addr: usize) -> Option<AddrInfo> {
    if !o.contains(addr) {
        return None;
    }
    let sym = o.symbol_at(addr);
    Some(AddrInfo {
        path: o.path.clone(),
        base: o.mapping.base,
        symbol: sym.map(|(_, n, _)| String::from_utf8_lossy(n).into_owned()),
        symbol_addr: sym.map(|(_, _, a)| a),
    })
}

/// Finds a library the way [`Library::open`] would: a name with `/` is a
/// path; a bare name is searched in `LD_LIBRARY_PATH` (or the options'
/// library path), `/etc/ld.so.cache` and the default directories. Every
/// candidate tried is sent to the options' trace sink.
pub fn find_library(name: &str, options: &Options) -> Result<PathBuf> {
    let loader = Loader {
        tracer: &options.tracer,
        fail: None,
        search: SearchConfig::new(options.library_path.as_deref()),
        relcache: None,
        relcache_forked: false,
        own_libstdcxx: false,
        may_defer: false,
        deferred: Default::default(),
        loaded_between: Vec::new(),
    };
    loader.find_root(name, None).map(|(p, _)| p)
}

/// Parses, validates, maps and relocates `path` and the dependencies it
/// would load, without running any of its code (no IFUNC resolver, no
/// constructor), then unmaps everything. This is the validation every real
/// load runs first; `Ok` means a load would get as far as its
/// initialisers. A library that is already loaded is reported as fine.
pub fn check(path: impl AsRef<Path>, options: &Options) -> Result<()> {
    let mut o = options.clone();
    o.check_only = true;
    Library::open_from(&path.as_ref().to_string_lossy(), &o, None, false).map(|mut l| {
        // A library already loaded comes back as a real handle: let go of
        // it without unloading anything else.
        if let Some(obj) = l.obj.take() {
            unload(obj, &l.tracer);
        }
    })
}

/// Which soloader library contains `addr`, and the nearest symbol, for
/// every library loaded in this process (like `dladdr`, for soloader's
/// libraries).
pub fn lookup(addr: usize) -> Option<AddrInfo> {
    let o = object_containing(addr)?;
    addr_info(&o, addr)
}

/// `lib`'s object (for the loader's own functions).
pub(crate) fn object_of(lib: &Library) -> &Arc<Object> {
    lib.obj()
}

/// Looks `name` up in `lib` as `dlsym(handle)` does.
pub(crate) fn find_in(
    lib: &Library,
    name: &Name,
    version: Option<&VersionReq>,
) -> Option<Result<usize>> {
    find(lib.obj(), name.bytes, version)
}

/// Every object soloader has loaded, in load order.
pub(crate) fn loaded_objects() -> Vec<Arc<Object>> {
    let guard = registry::lock();
    let reg = guard.registry();
    reg.entries
        .iter()
        .filter(|e| !e.finied)
        .map(|e| e.obj.clone())
        .collect()
}

/// Looks `name` up along `obj`'s breadth-first search list.
fn find(obj: &Arc<Object>, name: &[u8], version: Option<&VersionReq>) -> Option<Result<usize>> {
    // Hashed for the ELF hash tables only when one is consulted.
    let hashed = Name::new(name);
    // One table's definition: an unversioned lookup goes through the
    // table's name index once lookups repeat.
    let in_table = |st: &SymTab| match version {
        None => st.lookup_unversioned(name),
        Some(_) => st.lookup(&hashed, version),
    };
    // The object itself first, without going through its weak edge.
    if let Some((_, sym)) = in_table(&obj.tables.symtab) {
        let f = Found {
            module: Module::Loaded(obj),
            sym,
        };
        return Some(f.value(&obj.path, name));
    }
    for d in obj.search_list.get()?.iter().skip(1) {
        let found = match d {
            Dep::Loaded(w) => {
                let Some(o) = resolve::live(w) else { continue };
                in_table(&o.tables.symtab).map(|(_, sym)| {
                    Found {
                        module: Module::Loaded(&o),
                        sym,
                    }
                    .value(&obj.path, name)
                })
            }
            Dep::Host(h) => in_table(&h.symtab).map(|(_, sym)| {
                Found {
                    module: Module::Host(h),
                    sym,
                }
                .value(&obj.path, name)
            }),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Relocates and protects every new object, dependencies first. Nothing of
/// the libraries runs here except IFUNC resolvers.
fn link(loader: &Loader, tree: &Tree, order: &[Arc<Object>], run_code: bool) -> Result<()> {
    let host = host::index();
    // The global scope, then the root's breadth-first search list.
    let held = Held::all(
        tree.root
            .search_list
            .get()
            .map(|l| l.as_slice())
            .unwrap_or(&[]),
    );
    let modules = host
        .global
        .iter()
        .map(|h| Module::Host(h))
        .chain(held.iter().map(Held::module))
        .collect();
    let scope = Scope { modules };
    // Relocation cache (opt-in): the scope's fingerprint, once per link.
    let fingerprint = loader
        .relcache
        .map(|_| crate::relcache::fingerprint(&scope, loader.relcache_forked));
    for o in order {
        check_versions(o)?;
        // Relocation cache: map the pages a valid cache file holds, or get
        // ready to record which pages can be cached.
        let cache = match (loader.relcache, &fingerprint) {
            (Some(dir), Some(fp)) => {
                crate::relcache::Session::begin(o, fp, dir, loader.sys(&o.path))?
            }
            _ => None,
        };
        Relocator {
            obj: o,
            scope: &scope,
            tracer: loader.tracer,
            run_code,
            cache: cache.as_ref(),
        }
        .run()?;
        if let Some(c) = cache {
            c.finish()?;
        }
        protect_relro(o, &loader.sys(&o.path))?;
        init::check(o)?;
        if run_code {
            o.register_eh_frame();
            o.register_debugger();
        }
    }
    Ok(())
}

/// Every `DT_VERNEED` entry must be defined by the dependency it names
/// (a weak need only warns, as in glibc).
fn check_versions(o: &Object) -> Result<()> {
    let deps = o.deps.get().map(|d| d.as_slice()).unwrap_or(&[]);
    for need in o.tables.versions.needs() {
        let file = need.file.as_deref().unwrap_or("");
        let dep = o
            .tables
            .needed
            .iter()
            .zip(deps)
            .find(|(n, _)| n.as_str() == file);
        let Some((_, dep)) = dep else { continue };
        let defined = match dep {
            Dep::Loaded(w) => resolve::live(w).map(|d| d.tables.versions.defines(&need.name)),
            Dep::Host(h) => Some(h.versions.defines(&need.name)),
        };
        if defined == Some(false) && need.flags & crate::elf::versions::VER_FLG_WEAK == 0 {
            return Err(Error::VersionNotFound {
                path: o.path.clone(),
                version: String::from_utf8_lossy(&need.name).into_owned(),
                dependency: file.to_string(),
            });
        }
    }
    Ok(())
}

/// Makes `PT_GNU_RELRO` read-only; both ends rounded down, as glibc does.
fn protect_relro(o: &Object, sys: &Sys) -> Result<()> {
    let Some((v, sz)) = o.plan.relro else {
        return Ok(());
    };
    let start = o.addr(page_down(v));
    let end = o.addr(page_down(v + sz));
    if end > start {
        sys.mprotect(start, end - start, libc::PROT_READ, || {
            "PT_GNU_RELRO".into()
        })?;
        sys.tracer.emit(|| Event::Relro {
            path: o.path.clone(),
            addr: start,
            len: end - start,
        });
    }
    Ok(())
}

fn register(guard: &Guard, tree: &Tree) {
    let mut reg = guard.registry();
    // In load (breadth-first) order, like glibc's namespace list: the
    // finalisation order is computed from it.
    for o in &tree.new {
        reg.entries.push(Entry {
            obj: o.clone(),
            opens: 0,
            inited: false,
            finied: false,
            nodelete: o.dynamic.nodelete(),
        });
    }
    if !reg.exit_handler {
        reg.exit_handler = true;
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe { libc::atexit(finalise_at_exit) };
    }
}

/// Runs initialisers, dependencies first. The registry is not borrowed
/// while library code runs, so constructors may call back into soloader.
fn initialise(guard: &Guard, order: &[Arc<Object>], tracer: &Tracer) -> Result<()> {
    for o in order {
        {
            let mut reg = guard.registry();
            match reg.get_mut(o.id) {
                Some(e) if !e.inited => {
                    e.inited = true;
                }
                _ => continue,
            }
        }
        init::run_init(o, tracer)?;
    }
    Ok(())
}

/// Drops one handle on `root`, then unloads whatever is no longer needed.
fn unload(root: Arc<Object>, tracer: &Tracer) {
    let guard = registry::lock();
    if let Some(e) = guard.registry().get_mut(root.id) {
        e.opens = e.opens.saturating_sub(1);
    }
    drop(root);
    sweep(&guard, tracer);
}

/// Unloads whatever became unneeded when a thread's destructors released
/// the last pin on an object.
pub(crate) fn collect() {
    let guard = registry::lock();
    sweep(&guard, &Tracer::default());
}

/// The loaded object whose span contains `addr`.
pub(crate) fn object_containing(addr: usize) -> Option<Arc<Object>> {
    let guard = registry::lock();
    let reg = guard.registry();
    reg.entries
        .iter()
        .find(|e| e.obj.contains(addr))
        .map(|e| e.obj.clone())
}

/// Finalises and unmaps every object that is not reachable from an open
/// handle, a `NODELETE` object or a pending thread-exit destructor.
fn sweep(guard: &Guard, tracer: &Tracer) {
    let dead: Vec<(Arc<Object>, bool)> = {
        let mut reg = guard.registry();
        // Mark what is still needed, following dependency edges (cycles
        // included).
        let mut live: Vec<u64> = Vec::new();
        let mut stack: Vec<Arc<Object>> = reg
            .entries
            .iter()
            .filter(|e| {
                e.opens > 0
                    || e.nodelete
                    || crate::reloc::unique_held(e.obj.id)
                    || e.obj.pins.load(std::sync::atomic::Ordering::Acquire) > 0
            })
            .map(|e| e.obj.clone())
            .collect();
        while let Some(o) = stack.pop() {
            if live.contains(&o.id) {
                continue;
            }
            live.push(o.id);
            for d in o.deps.get().map(|v| v.as_slice()).unwrap_or(&[]) {
                if let Dep::Loaded(w) = d {
                    if let Some(x) = w.upgrade() {
                        stack.push(x);
                    }
                }
            }
        }
        let dead: Vec<(Arc<Object>, bool)> = reg
            .entries
            .iter_mut()
            .filter(|e| !live.contains(&e.obj.id) && !e.finied)
            .map(|e| {
                e.finied = true;
                (e.obj.clone(), e.inited)
            })
            .collect();
        // Dependents first, sorted the way glibc's dlclose sorts.
        let objs: Vec<Arc<Object>> = dead.iter().map(|(o, _)| o.clone()).collect();
        resolve::fini_order(&objs)
            .into_iter()
            .map(|o| {
                let inited = dead.iter().any(|(d, i)| d.id == o.id && *i);
                (o, inited)
            })
            .collect()
    };
    if dead.is_empty() {
        return;
    }
    for (o, inited) in &dead {
        if *inited {
            init::run_fini(o, tracer);
        }
    }
    for (o, _) in &dead {
        o.unmap(&Sys {
            path: &o.path,
            tracer,
            fail: None,
            relcache: None,
        });
        tracer.emit(|| Event::Unloaded {
            path: o.path.clone(),
        });
    }
    let mut reg = guard.registry();
    reg.entries
        .retain(|e| !dead.iter().any(|(d, _)| d.id == e.obj.id));
}

/// At process exit, finalise every library still initialised, dependents
/// first, as glibc's `_dl_fini` does for its own. Nothing is unmapped: the
/// process is ending.
extern "C" fn finalise_at_exit() {
    let guard = registry::lock();
    let todo: Vec<Arc<Object>> = {
        let mut reg = guard.registry();
        let v: Vec<Arc<Object>> = reg
            .entries
            .iter_mut()
            .filter(|e| e.inited && !e.finied)
            .map(|e| {
                e.finied = true;
                e.obj.clone()
            })
            .collect();
        resolve::fini_order(&v)
    };
    for o in &todo {
        init::run_fini(o, &Tracer::default());
    }
}
