//! The host process's own libraries, indexed by soloader itself.
//!
//! The objects the system loader mapped (the executable, libc, libm,
//! ld.so, …) form the global scope that imports are resolved against
//! first, as glibc's `dlopen(RTLD_LOCAL)` does. Rather than one `dlsym`
//! per import (which hides versions, types and sizes, and takes glibc's
//! lock every time), soloader walks them with `dl_iterate_phdr` and reads
//! each one's `.dynsym`, hash and version tables with the same validated
//! code it uses for its own libraries. The walk reads only each object's
//! dynamic section (its name, `DT_SONAME` and `DT_NEEDED`); the symbol and
//! version tables of an object are read and validated the first time a
//! lookup needs them, so objects no lookup visits (the vDSO, libraries the
//! host opened for itself) cost next to nothing. The index is rebuilt
//! when `dlpi_adds`/`dlpi_subs` say the set changed.
//!
//! Libraries of the glibc family (and `libgcc_s`, `libstdc++`) are never
//! loaded by soloader: a second libc in one process breaks malloc, stdio,
//! TLS and locks. When a soloader library needs one that the host does not
//! have yet, the system loader loads it ([`ensure_loaded`]).

use std::ffi::{CStr, CString};
use std::ops::Deref;
use std::os::raw::{c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use goblin::elf::program_header::{PT_DYNAMIC, PT_LOAD};

use crate::elf::dynamic::{cstr_at, DynInfo, Tables};
use crate::elf::hash::{HashTable, Name, SymTab};
use crate::elf::versions::VersionTable;
use crate::elf::{LoadSegment, View};
use crate::error::{Error, Result};

/// One object mapped by the system loader.
pub(crate) struct HostObject {
    /// `dlpi_name` (the executable's path for the main program).
    pub name: String,
    /// `DT_SONAME`, if any.
    pub soname: Option<String>,
    /// Load bias.
    pub base: usize,
    /// Where its `.dynamic` is: with `base`, what tells this object from
    /// another mapped at the same place later (without reading its
    /// symbol table).
    pub dynamic: usize,
    /// Its dynamic symbols (read on first use).
    pub symtab: Symbols,
    /// Its version definitions (read with the symbols).
    pub versions: Versions,
    /// glibc's TLS module id (0 = no TLS).
    pub tls_modid: usize,
    /// For static TLS: the block's offset from the thread pointer (the
    /// same in every thread). `None` without TLS or for dynamic TLS.
    pub tls_offset: Option<isize>,
    /// Known to be in the system loader's global scope ([`opened_global`]
    /// said so once; it cannot leave it while loaded).
    global: AtomicBool,
    /// The generation of the host's set of libraries (`dlpi_adds` and
    /// `dlpi_subs`) when [`probe_global`] last asked about it, plus one; a
    /// library can be promoted to global, so a no is asked again when the
    /// set changes.
    probed: AtomicU64,
    /// `DT_NEEDED`, to follow the executable's dependency tree.
    pub needed: Vec<String>,
}

/// The host's objects in `dl_iterate_phdr` order (the executable first).
pub(crate) struct HostIndex {
    /// Every object the system loader has mapped.
    pub objects: Vec<Arc<HostObject>>,
    /// The global scope: the executable and its dependencies,
    /// breadth-first — glibc's main search list, where a
    /// `dlopen(RTLD_LOCAL)`ed library looks first. Libraries the host
    /// `dlopen`ed itself are not in it (their symbols must not preempt a
    /// soloader library's own), unless a soloader library names them in
    /// `DT_NEEDED`. (Libraries the host opened with `RTLD_GLOBAL` later are
    /// not visible to soloader as global: glibc does not say which they
    /// are.)
    pub global: Vec<Arc<HostObject>>,
    adds: u64,
    subs: u64,
}

/// A host object's symbol and version tables, read and checked on first
/// use ([`Tables::symbols`]: every table in bounds, as for soloader's own
/// libraries; the per-symbol version check and the tables a lookup never
/// reads are left to [`Tables::parse`], for the files soloader loads).
struct LazyTables {
    /// The object's name, for errors.
    path: PathBuf,
    /// Its mapped image.
    view: View<'static>,
    /// Its dynamic section, read when indexed.
    dynamic: DynInfo,
    /// The tables, once read.
    tables: OnceLock<(SymTab<'static>, VersionTable)>,
    /// The hash table alone (`None`: it does not validate), read before
    /// the tables for a lookup its Bloom filter can turn away.
    hash: OnceLock<Option<HashTable<'static>>>,
}

impl LazyTables {
    /// The tables, read now if this is the first use. An object whose
    /// tables do not validate has no symbols and no versions (it is never
    /// a definition), as if it were not in the index.
    fn get(&self) -> &(SymTab<'static>, VersionTable) {
        self.tables.get_or_init(
            || match Tables::symbols(&self.path, &self.view, &self.dynamic) {
                Ok(t) => t,
                Err(_) => (no_symbols(), VersionTable::default()),
            },
        )
    }
}

impl LazyTables {
    /// Whether `name` is certainly not defined here, answered by the GNU
    /// hash table alone without reading (and validating) the symbol and
    /// version tables: its Bloom filter and bucket until the tables are
    /// read (the chain array is bounded only by the symbol count), then
    /// also the hashes in the bucket's chain. A lookup that walks a scope
    /// passes most objects this way, and an object the host loaded for
    /// itself may never need its tables read at all.
    fn rejects(&self, name: &Name) -> bool {
        if let Some((st, _)) = self.tables.get() {
            return st.rejects(name);
        }
        self.hash
            .get_or_init(|| {
                HashTable::parse(
                    &self.path,
                    &self.view.read_only(),
                    self.dynamic.gnu_hash,
                    self.dynamic.hash,
                )
                .ok()
            })
            .as_ref()
            .is_some_and(|h| h.rejects(name))
    }

    /// Up to `n` of the object's global function and variable definitions
    /// (name, `st_value`) from the first 256 entries of `.dynsym`, read
    /// straight from the image without validating the whole table (what
    /// [`opened_global`] needs: names to ask the system loader for; a bad
    /// entry only makes a useless question).
    fn some_definitions(&self, n: usize) -> Vec<(CString, u64)> {
        use goblin::elf::sym::{STB_GLOBAL, STT_FUNC, STT_OBJECT};
        let ro = self.view.read_only();
        let d = &self.dynamic;
        let (Some(symtab), Some(strtab), Some(strsz)) = (d.symtab, d.strtab, d.strsz) else {
            return Vec::new();
        };
        let Some(strings) = ro.bytes(strtab, strsz) else {
            return Vec::new();
        };
        // A hidden version (`__libdl_version_placeholder@GLIBC_2.2.5`) is
        // never what an unversioned dlsym finds.
        let hidden = |i: u64| {
            d.versym
                .and_then(|v| ro.table::<u16>(v + i * 2, 1))
                .and_then(|t| t.get(0))
                .is_some_and(|v| v & 0x8000 != 0)
        };
        let mut out = Vec::new();
        for i in 1..256u64 {
            let Some(t) = ro.table::<goblin::elf64::sym::Sym>(symtab + i * 24, 1) else {
                break;
            };
            let Some(sym) = t.get(0) else { break };
            if sym.st_shndx == 0
                || hidden(i)
                || sym.st_info >> 4 != STB_GLOBAL
                || !matches!(sym.st_info & 0xf, STT_FUNC | STT_OBJECT)
                || sym.st_other & 3 != 0
            {
                continue;
            }
            if let Some(name) = cstr_at(strings, u64::from(sym.st_name))
                .filter(|s| !s.is_empty())
                .and_then(|s| CString::new(s).ok())
            {
                out.push((name, sym.st_value));
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }
}

/// A host object's dynamic symbols, read on first use (dereferences to
/// the [`SymTab`]).
pub(crate) struct Symbols(Arc<LazyTables>);

impl Symbols {
    /// Whether `name` is certainly not defined here (the hash table's
    /// answer, without reading the symbol table).
    #[inline]
    pub(crate) fn rejects(&self, name: &Name) -> bool {
        self.0.rejects(name)
    }
}

impl Deref for Symbols {
    type Target = SymTab<'static>;

    fn deref(&self) -> &SymTab<'static> {
        &self.0.get().0
    }
}

/// A host object's versions, read with its symbols (dereferences to the
/// [`VersionTable`]).
pub(crate) struct Versions(Arc<LazyTables>);

impl Deref for Versions {
    type Target = VersionTable;

    fn deref(&self) -> &VersionTable {
        &self.0.get().1
    }
}

/// An empty symbol table: a one-bucket SysV hash table whose only chain is
/// empty, over the null symbol.
fn no_symbols() -> SymTab<'static> {
    /// `DT_HASH` (nbucket 1, nchain 1, bucket 0, chain 0) at 0, the null
    /// symbol at 16, an empty string table at 40.
    static IMAGE: [u8; 48] = {
        let mut b = [0u8; 48];
        b[0] = 1;
        b[4] = 1;
        b
    };
    const SEGMENT: LoadSegment = LoadSegment {
        index: 0,
        vaddr: 0,
        memsz: 48,
        offset: 0,
        filesz: 48,
        flags: goblin::elf::program_header::PF_R,
    };
    let view = View::of_file(&IMAGE, &[SEGMENT]);
    let path = Path::new("<no symbols>");
    let table = || -> Option<SymTab<'static>> {
        let hash = HashTable::parse(path, &view, None, Some(0)).ok()?;
        let syms = view.table(16, 1)?;
        let strtab = view.bytes(40, 1)?;
        Some(SymTab::new(
            syms,
            strtab,
            hash,
            None,
            &VersionTable::default(),
        ))
    };
    match table() {
        Some(t) => t,
        // The image above is a constant that parses (see the tests).
        None => unreachable!("the empty symbol table image is valid"),
    }
}

impl HostObject {
    /// Whether a `DT_NEEDED` `name` means this object: its `DT_SONAME` or
    /// its file name.
    fn is_named(&self, name: &str) -> bool {
        self.soname.as_deref() == Some(name)
            || Path::new(&self.name).file_name().is_some_and(|f| f == name)
    }
}

impl HostIndex {
    /// The address of the first definition of `name` among the host's
    /// objects, in load order (each object's hash table asked first).
    pub(crate) fn first_definition(&self, name: &[u8]) -> Option<usize> {
        let n = Name::new(name);
        self.objects
            .iter()
            .filter(|o| !o.symtab.rejects(&n))
            .find_map(|o| {
                o.symtab
                    .lookup(&n, None)
                    .map(|(_, s)| o.base.wrapping_add(s.st_value as usize))
            })
    }

    /// The host object whose `DT_SONAME` or file name is `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<HostObject>> {
        self.objects.iter().find(|o| o.is_named(name))
    }
}

static INDEX: Mutex<Option<Arc<HostIndex>>> = Mutex::new(None);

/// The current index, rebuilt if the system loader's set of objects
/// changed since it was built.
pub(crate) fn index() -> Arc<HostIndex> {
    // Taken under the loader's lock, so that no other thread can hold
    // INDEX when the atfork handler (which takes the loader's lock) lets
    // a fork happen.
    let _g = crate::registry::lock();
    let (adds, subs) = counters();
    let mut guard = match INDEX.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(ix) = guard.as_ref() {
        if ix.adds == adds && ix.subs == subs {
            return ix.clone();
        }
    }
    let ix = Arc::new(build(adds, subs, guard.as_deref()));
    *guard = Some(ix.clone());
    ix
}

fn counters() -> (u64, u64) {
    let mut out = (0u64, 0u64);
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: glibc passes a valid info of `size` bytes; `data` is our
        // `out`. dlpi_adds/subs exist when size covers them.
        unsafe {
            let out = &mut *(data as *mut (u64, u64));
            if size >= std::mem::offset_of!(libc::dl_phdr_info, dlpi_tls_modid) {
                *out = ((*info).dlpi_adds, (*info).dlpi_subs);
            }
        }
        1 // stop after the first object: the counters are global
    }
    // SAFETY: the callback only writes `out`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(cb), &mut out as *mut _ as *mut c_void) };
    out
}

struct Raw {
    name: String,
    base: usize,
    loads: Vec<LoadSegment>,
    dynamic: Option<(u64, u64)>,
    tls_modid: usize,
    tls_data: usize,
}

fn build(adds: u64, subs: u64, old: Option<&HostIndex>) -> HostIndex {
    let mut raws: Vec<Raw> = Vec::new();
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: glibc passes a valid info whose phdr array has dlpi_phnum
        // entries, alive for the callback; `data` is our Vec.
        unsafe {
            let raws = &mut *(data as *mut Vec<Raw>);
            let info = &*info;
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(info.dlpi_name)
                    .to_string_lossy()
                    .into_owned()
            };
            let mut loads = Vec::new();
            let mut dynamic = None;
            for i in 0..usize::from(info.dlpi_phnum) {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type == PT_LOAD {
                    loads.push(LoadSegment {
                        index: loads.len(),
                        vaddr: ph.p_vaddr,
                        memsz: ph.p_memsz,
                        offset: ph.p_offset,
                        filesz: ph.p_filesz,
                        flags: ph.p_flags,
                    });
                } else if ph.p_type == PT_DYNAMIC {
                    dynamic = Some((ph.p_vaddr, ph.p_memsz));
                }
            }
            raws.push(Raw {
                name,
                base: info.dlpi_addr as usize,
                loads,
                dynamic,
                tls_modid: info.dlpi_tls_modid,
                tls_data: info.dlpi_tls_data as usize,
            });
        }
        0
    }
    // SAFETY: the callback only pushes into `raws`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(cb), &mut raws as *mut _ as *mut c_void) };

    static EXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let exe = EXE.get_or_init(executable_path);
    let objects = raws
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let name = if i == 0 && r.name.is_empty() {
                exe.clone()
            } else {
                r.name.clone()
            };
            // An object still mapped at the same place under the same name
            // keeps its index entry: rebuilding after the host loads one
            // library costs that library only.
            old.and_then(|ix| {
                ix.objects
                    .iter()
                    .find(|o| o.base == r.base && o.name == name)
                    .cloned()
            })
            .or_else(|| index_one(name, &r).map(Arc::new))
        })
        .collect::<Vec<Arc<HostObject>>>();
    let global = global_scope(&objects);
    HostIndex {
        objects,
        global,
        adds,
        subs,
    }
}

/// The executable's path: the one `execve` was given (`AT_EXECFN`, no
/// system call) when it is absolute, else what `/proc/self/exe` links to
/// (a `readlink` of /proc costs 10-13 µs in a fresh process here).
fn executable_path() -> String {
    // SAFETY: getauxval only reads the auxiliary vector; AT_EXECFN, when
    // present, points to a NUL-terminated string on the initial stack that
    // lives as long as the process.
    let execfn = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
    if !execfn.is_null() {
        // SAFETY: as above.
        let s = unsafe { CStr::from_ptr(execfn) };
        if s.to_bytes().first() == Some(&b'/') {
            return s.to_string_lossy().into_owned();
        }
    }
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<executable>".into())
}

/// The system loader's global scope, over `objects` (in load order): the
/// executable's breadth-first dependency list, then the libraries the host
/// opened with `RTLD_GLOBAL`, in the order it opened them — what glibc's
/// `dlopen(RTLD_LOCAL)` resolves a new library's imports against first.
fn global_scope(objects: &[Arc<HostObject>]) -> Vec<Arc<HostObject>> {
    let Some(exe) = objects.first() else {
        return Vec::new();
    };
    let mut out = vec![exe.clone()];
    let mut i = 0;
    while i < out.len() {
        for n in out[i].needed.clone() {
            let found = objects.iter().find(|o| o.is_named(&n));
            if let Some(o) = found {
                if !out.iter().any(|x| Arc::ptr_eq(x, o)) {
                    out.push(o.clone());
                }
            }
        }
        i += 1;
    }
    // Those found global by `probe_global` (which asks the system loader,
    // so never under soloader's lock, as building the index is).
    let opened_global: Vec<Arc<HostObject>> = objects
        .iter()
        .filter(|o| o.global.load(Ordering::Acquire) && !out.iter().any(|x| Arc::ptr_eq(x, o)))
        .cloned()
        .collect();
    out.extend(opened_global);
    out
}

/// Finds which of the host's libraries outside the executable's tree the
/// host opened `RTLD_GLOBAL`, and puts them in the index's global scope.
/// Called at the start of every load, outside soloader's lock: asking
/// needs the system loader's lock, which a thread running a constructor
/// for the system loader holds while it may wait for soloader's. (From
/// inside soloader's lock — a library's constructor loading another —
/// it does nothing; what earlier loads found still holds.) Each library
/// is asked once per change of the host's set of libraries.
pub(crate) fn probe_global() {
    if crate::registry::held() {
        return;
    }
    let ix = index();
    let generation = (ix.adds ^ ix.subs.rotate_left(32)).wrapping_add(1);
    for o in &ix.objects {
        if o.global.load(Ordering::Acquire)
            || o.probed.load(Ordering::Acquire) == generation
            || ix.global.iter().any(|g| Arc::ptr_eq(g, o))
        {
            continue;
        }
        // Another thread may ask about the same object at the same time:
        // harmless, both get the same answer.
        if opened_global(o) {
            o.global.store(true, Ordering::Release);
        } else {
            o.probed.store(generation, Ordering::Release);
        }
    }
    // Found global (here or by another thread) but not yet in the index's
    // global scope: publish it before this load looks anything up.
    let found = ix
        .objects
        .iter()
        .any(|o| o.global.load(Ordering::Acquire) && !ix.global.iter().any(|g| Arc::ptr_eq(g, o)));
    if found {
        // The index now in place (this one, or one rebuilt meanwhile,
        // perhaps before these flags were set) with the wider global scope:
        // the flags only ever turn on, so recomputing is always right.
        let _g = crate::registry::lock();
        let mut guard = match INDEX.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(cur) = guard.clone() {
            let global = global_scope(&cur.objects);
            if global.len() != cur.global.len() {
                *guard = Some(Arc::new(HostIndex {
                    objects: cur.objects.clone(),
                    global,
                    adds: cur.adds,
                    subs: cur.subs,
                }));
            }
        }
    }
}

/// Whether the host opened `o` with `RTLD_GLOBAL` (it is not a dependency
/// of the executable). glibc keeps that flag private; what it does show is
/// its effect: `dlsym(RTLD_DEFAULT, name)` searches the global scope, so a
/// function or variable only `o` defines there resolves into `o` exactly
/// when `o` is in it. Up to 4 of `o`'s global definitions are asked for
/// (one defined earlier in the scope too resolves there instead), read
/// without parsing its symbol table (which stays unread until a lookup
/// needs it). A
/// library the host opened `RTLD_LOCAL` and later promoted with
/// `RTLD_NOLOAD | RTLD_GLOBAL` is seen at the next change of the host's
/// set of libraries (the index is rebuilt only then).
fn opened_global(o: &HostObject) -> bool {
    // The vDSO is never in the global scope (and asking for its
    // functions would only make the system loader write error messages).
    // SAFETY: getauxval only reads the auxiliary vector.
    if o.base == unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize {
        return false;
    }
    for (name, value) in o.symtab.0.some_definitions(4) {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
        // looks the name up.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
        if found == 0 {
            // Not left for the host's next dlerror().
            // SAFETY: dlerror only reads and clears this thread's state.
            unsafe { libc::dlerror() };
        }
        if found == o.base.wrapping_add(value as usize) {
            return true;
        }
    }
    false
}

/// Indexes one host object: its dynamic section, `DT_SONAME` and
/// `DT_NEEDED` now, its symbol and version tables on first use. An object
/// whose dynamic section or names do not validate is left out of the
/// index.
fn index_one(name: String, r: &Raw) -> Option<HostObject> {
    let (dyn_vaddr, dyn_size) = r.dynamic?;
    // SAFETY: the system loader keeps these segments mapped readable while
    // the object is loaded; the glibc family is never unloaded, and the
    // index is rebuilt when dlpi_subs says something was.
    let view: View<'static> = unsafe { View::of_image(r.base, &r.loads) };
    let base = r.base as u64;
    let path = PathBuf::from(&name);
    // glibc rewrites address entries of .dynamic to run-time addresses;
    // the vDSO's read-only .dynamic keeps link-time ones.
    let unbias = move |v: u64| if v >= base && base != 0 { v - base } else { v };
    let d = DynInfo::parse(&path, &view, dyn_vaddr, dyn_size, unbias).ok()?;
    // The names, checked as `Tables::parse` checks them.
    let strtab = view.read_only().bytes(d.strtab?, d.strsz?)?;
    let string = |off: u64| cstr_at(strtab, off).map(|s| String::from_utf8_lossy(s).into_owned());
    let needed = d
        .needed
        .iter()
        .map(|&o| string(o))
        .collect::<Option<Vec<_>>>()?;
    let soname = match d.soname {
        Some(o) => Some(string(o)?),
        None => None,
    };
    let tables = Arc::new(LazyTables {
        path,
        view,
        dynamic: d,
        tables: OnceLock::new(),
        hash: OnceLock::new(),
    });
    Some(HostObject {
        name,
        soname,
        base: r.base,
        dynamic: r.base.wrapping_add(dyn_vaddr as usize),
        symtab: Symbols(Arc::clone(&tables)),
        versions: Versions(tables),
        needed,
        tls_modid: r.tls_modid,
        // dlpi_tls_data is this thread's block: for a module in glibc's
        // static TLS its distance from the thread pointer is the same in
        // every thread.
        tls_offset: (r.tls_modid != 0 && r.tls_data != 0)
            .then(|| r.tls_data.wrapping_sub(crate::arch::thread_pointer()) as isize),
        global: AtomicBool::new(false),
        probed: AtomicU64::new(0),
    })
}

/// The address of a function the host provides (`__register_frame` …),
/// loading `library` with the system loader first if no host object
/// defines it yet.
pub(crate) fn function(name: &str, library: &str) -> Option<usize> {
    index().first_definition(name.as_bytes()).or_else(|| {
        ensure_loaded(library, None).ok()?;
        index().first_definition(name.as_bytes())
    })
}

/// Libraries that are always the system loader's copy in this process.
const HOST_FAMILY: &[&str] = &[
    "libc.so",
    "libm.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libresolv.so",
    "libanl.so",
    "libutil.so",
    "libmvec.so",
    "libBrokenLocale.so",
    "libc_malloc_debug.so",
    "libnsl.so",
    "ld-linux-x86-64.so",
    "ld-linux.so",
    "libgcc_s.so",
    "libstdc++.so",
];

/// Whether `name` (a `DT_NEEDED` entry or a path) is one of the libraries
/// soloader always leaves to the system loader.
pub(crate) fn is_host_family(name: &str) -> bool {
    let base = Path::new(name)
        .file_name()
        .map(|f| f.as_bytes())
        .unwrap_or_default();
    HOST_FAMILY.iter().any(|stem| {
        base.strip_prefix(stem.as_bytes())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"."))
    })
}

/// Handles of libraries soloader asked the system loader for; never closed.
static DLOPENED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Makes sure the host has `name`, asking the system loader for it when it
/// does not yet. Returns the host object and whether it was newly loaded.
/// Whether the host has `name` (by file name) without asking the system
/// loader for it.
pub(crate) fn has(name: &str) -> bool {
    let name = Path::new(name)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(name);
    index().by_name(name).is_some()
}

/// Errors name `needed_by`, the library whose `DT_NEEDED` asked for it.
pub(crate) fn ensure_loaded(
    name: &str,
    needed_by: Option<&Path>,
) -> Result<(Arc<HostObject>, bool)> {
    ensure_loaded_by_name(name).map_err(|e| match e {
        Error::Host { name, message, .. } => Error::Host {
            name,
            needed_by: needed_by.map(Path::to_path_buf),
            message,
        },
        e => e,
    })
}

fn ensure_loaded_by_name(name: &str) -> Result<(Arc<HostObject>, bool)> {
    // Only ever the system's copy, by file name: a DT_NEEDED path such as
    // `/tmp/x/libm.so.6` must not make the system loader map (and run the
    // constructors of) whatever file that is, least of all under `check`.
    let name = Path::new(name)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(name);
    if let Some(o) = index().by_name(name) {
        return Ok((o.clone(), false));
    }
    let c = CString::new(name).map_err(|_| Error::Host {
        name: name.into(),
        needed_by: None,
        message: "name contains a NUL byte".into(),
    })?;
    // SAFETY: dlopen with a valid C string; the handle is kept forever.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a thread-local string or NULL.
        let msg = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(Error::Host {
            name: name.into(),
            needed_by: None,
            message: msg,
        });
    }
    match DLOPENED.lock() {
        Ok(mut v) => v.push(h as usize),
        Err(p) => p.into_inner().push(h as usize),
    }
    let ix = index();
    let o = ix.by_name(name).cloned().or_else(|| {
        // The name may be a link whose target has another file name: find
        // the object by one of its symbols' addresses via dlinfo.
        let mut lm: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: RTLD_DI_LINKMAP writes a link_map pointer into `lm`.
        let ok =
            unsafe { libc::dlinfo(h, libc::RTLD_DI_LINKMAP, &mut lm as *mut _ as *mut c_void) }
                == 0;
        if !ok || lm.is_null() {
            return None;
        }
        // SAFETY: link_map starts with l_addr (the load bias).
        let addr = unsafe { *(lm as *const usize) };
        ix.objects.iter().find(|o| o.base == addr).cloned()
    });
    o.map(|o| (o, true)).ok_or_else(|| Error::Host {
        name: name.into(),
        needed_by: None,
        message: "loaded, but not found among the host's objects".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::hash::Name;

    #[test]
    fn the_empty_symbol_table_finds_nothing() {
        let t = no_symbols();
        assert_eq!(t.len(), 1, "the null symbol only");
        for name in [&b"memcpy"[..], b"", b"x"] {
            assert!(t.lookup(&Name::new(name), None).is_none());
        }
    }

    #[test]
    fn host_family_names() {
        for yes in [
            "libc.so.6",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "libc.so",
            "ld-linux-x86-64.so.2",
            "libstdc++.so.6",
        ] {
            assert!(is_host_family(yes), "{yes}");
        }
        for no in [
            "libcrypto.so.3",
            "libc.so6",
            "libc.sox",
            "mylibc.so.6",
            "",
            "/",
        ] {
            assert!(!is_host_family(no), "{no}");
        }
    }

    #[test]
    fn tables_are_read_when_a_lookup_needs_them() {
        let ix = index();
        let libc = ix.by_name("libc.so.6").expect("the host has libc");
        assert!(libc.symtab.len() > 1000);
        assert!(libc.symtab.0.tables.get().is_some(), "read now");
        assert!(libc.versions.defines(b"GLIBC_2.2.5"));
        assert!(libc.symtab.lookup(&Name::new(b"malloc"), None).is_some());
    }
}
