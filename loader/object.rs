//! A loaded object: one file, parsed, validated and mapped; and symbol
//! lookup across a scope of loaded and host objects.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use goblin::elf::sym::{STT_GNU_IFUNC, STT_TLS};
use goblin::elf64::sym::Sym;

use crate::elf::dynamic::{DynInfo, Tables};
use crate::elf::hash::{Name, SymTab, VersionReq};
use crate::elf::{self, page_down, LoadPlan, View};
use crate::error::{Error, Result};
use crate::host::HostObject;
use crate::map::{self, Mapping, Sys};
pub(crate) use crate::search::FileInfo;
use crate::search::Opened;
use crate::tls::{TlsImage, TlsIndex};
use crate::trace::{Event, Provider};

/// A dependency edge: to a library soloader loaded, or to the host's copy.
#[derive(Clone)]
pub(crate) enum Dep {
    /// Loaded by soloader (weak: the registry owns objects).
    Loaded(Weak<Object>),
    /// Mapped by the system loader.
    Host(Arc<HostObject>),
}

/// A library soloader mapped.
pub(crate) struct Object {
    /// Process-unique id.
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// `(st_dev, st_ino)`: the identity used to load each file once.
    pub file_id: (u64, u64),
    /// `(st_size, st_mtime, st_mtime_nsec, st_ctime, st_ctime_nsec)`: with `file_id`, says whether
    /// the file is the one a cached resolution was made for.
    pub stamp: (u64, i64, i64, i64, i64),
    /// Where it is.
    pub mapping: Mapping,
    /// What the program headers said.
    pub plan: LoadPlan,
    /// What the dynamic section said.
    pub dynamic: DynInfo,
    /// The validated tables, pointing into the mapping.
    pub tables: Tables<'static>,
    /// Direct dependencies, in `DT_NEEDED` order (set once resolved).
    pub deps: OnceLock<Vec<Dep>>,
    /// This object and its dependencies, breadth-first: where `get` looks.
    pub search_list: OnceLock<Vec<Dep>>,
    /// All relocations applied (IFUNC resolvers in it may be called).
    pub relocated: AtomicBool,
    /// Unmapped: nothing may read it any more.
    pub unmapped: AtomicBool,
    /// `PT_TLS`: soloader's module id and the image.
    pub tls: Option<(usize, TlsImage)>,
    /// Arguments of the TLS descriptors relocation installed. Boxed: the
    /// descriptors hold their addresses, which must not move when the
    /// vector grows.
    #[allow(clippy::vec_box)]
    pub tlsdesc_args: Mutex<Vec<Box<TlsIndex>>>,
    /// Start of `.eh_frame`, for the unwinder: found on first use, since
    /// reading `.eh_frame_hdr` faults in read-only pages a load otherwise
    /// never touches.
    eh_frame: OnceLock<Option<usize>>,
    /// `.eh_frame` is registered with the host's unwinder.
    pub eh_registered: AtomicBool,
    /// Thread-exit destructors registered by this object that have not
    /// run yet: while non-zero the object stays mapped.
    pub pins: AtomicUsize,
    /// The path as a C string, for `dladdr` and `dl_iterate_phdr`.
    pub c_path: CString,
    /// The public part of a glibc `struct link_map`, for `dlinfo` and
    /// `dladdr1` callers (and debuggers).
    pub link_map: Box<LinkMap>,
    /// The copy of the file given to gdb, while registered.
    pub debug: Mutex<Option<crate::debug::Registration>>,
    /// Relocation cache (opt-in, `relcache`): set when the object was
    /// mapped at its deterministic place; owns the stub area after the
    /// span.
    pub relcache: Option<crate::relcache::Placed>,
    /// The options of the load that mapped it: what the library's own
    /// `dlopen` calls load with (search path, trace, relocation cache).
    pub options: OnceLock<crate::library::Options>,
}

/// The public fields of glibc's `struct link_map` (`<link.h>`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct LinkMap {
    pub l_addr: usize,
    pub l_name: *const std::os::raw::c_char,
    pub l_ld: usize,
    pub l_next: *mut LinkMap,
    pub l_prev: *mut LinkMap,
}

// SAFETY: the pointers are into the owning Object's own data (its CString)
// or null; the struct is only read through shared references.
unsafe impl Send for LinkMap {}
// SAFETY: as above.
unsafe impl Sync for LinkMap {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Object {
    /// Parse, validate and map one opened file, with what the search
    /// learnt of it (its `fstat` and first bytes, asked for here only if
    /// the search did not). On error nothing stays mapped.
    pub(crate) fn load(path: &Path, mut opened: Opened, sys: &Sys) -> Result<Object> {
        let info = opened.info(path)?;
        let Opened { file, head, .. } = opened;
        let (file_id, size) = (info.id, info.size);
        sys.tracer.emit(|| Event::Open {
            path: path.to_path_buf(),
            size,
        });
        let (plan, head) = read_plan(path, &file, size, head)?;
        // Relocation cache (opt-in): reserve the deterministic place first;
        // `None` maps it wherever the kernel chooses, as always.
        let placed = sys
            .relcache
            .and_then(|_| crate::relcache::place(sys, &file, &plan, &info, &head));
        let fixed = placed.as_ref().map(|p| p.start);
        let mapping = match map::map_object(sys, file.as_raw_fd(), &plan, fixed) {
            Ok(m) => m,
            Err(e) => {
                if let Some(p) = &placed {
                    p.release(sys);
                }
                return Err(e);
            }
        };
        drop(file); // as glibc does: the mappings keep the file alive
        sys.tracer.emit(|| Event::Close {
            path: path.to_path_buf(),
        });
        // SAFETY: the segments were just mapped readable (PT_LOADs without
        // PF_R are refused by `check_readable`); the mapping lives as long
        // as the Object, which owns the tables that borrow it, and the
        // Object unmaps only in `unmap`, after which it is never read.
        let view: View<'static> = unsafe { View::of_image(mapping.base, &plan.loads) };
        let parsed = check_readable(path, &plan).and_then(|()| {
            let d = DynInfo::parse(path, &view, plan.dynamic.0, plan.dynamic.1, |v| v)?;
            let t = Tables::parse(path, &view, &d)?;
            let tls = tls_image(path, &view, &plan, mapping.base)?;
            Ok((d, t, tls))
        });
        let (dynamic, tables, tls) = match parsed {
            Ok(x) => x,
            Err(e) => {
                sys.munmap(mapping.start, mapping.len, "undo failed load");
                if let Some(p) = &placed {
                    p.release(sys);
                }
                return Err(e);
            }
        };
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
        let link_map = Box::new(LinkMap {
            l_addr: mapping.base,
            l_name: c_path.as_ptr(),
            l_ld: mapping.base.wrapping_add(plan.dynamic.0 as usize),
            l_next: std::ptr::null_mut(),
            l_prev: std::ptr::null_mut(),
        });
        let mut obj = Object {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_path_buf(),
            file_id,
            stamp: info.stamp,
            mapping,
            plan,
            dynamic,
            tables,
            deps: OnceLock::new(),
            search_list: OnceLock::new(),
            relocated: AtomicBool::new(false),
            unmapped: AtomicBool::new(false),
            tls: tls.map(|image| (crate::tls::register(image), image)),
            tlsdesc_args: Mutex::new(Vec::new()),
            eh_frame: OnceLock::new(),
            eh_registered: AtomicBool::new(false),
            pins: AtomicUsize::new(0),
            options: OnceLock::new(),
            c_path,
            link_map,
            debug: Mutex::new(None),
            relcache: placed,
        };
        obj.note_relro();
        Ok(obj)
    }

    fn note_relro(&mut self) {
        let Some((v, sz)) = self.plan.relro else {
            return;
        };
        let start = self.mapping.base + page_down(v) as usize;
        let end = self.mapping.base + page_down(v + sz) as usize;
        if end <= start {
            return;
        }
        for s in &mut self.mapping.segments {
            if s.range.start < end && start < s.range.end {
                s.relro = Some(start.max(s.range.start)..end.min(s.range.end));
            }
        }
    }

    /// The name other libraries know this one by (`DT_SONAME`, else the
    /// file name).
    pub(crate) fn soname(&self) -> String {
        self.tables.soname.clone().unwrap_or_else(|| {
            self.path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// The address of this object's own plain definition of `name` (a
    /// function or data object: no IFUNC, no TLS), answered from the name
    /// index alone; `None` when there is no index yet, no such definition,
    /// or one that needs the general path.
    #[inline]
    pub(crate) fn indexed_value(&self, name: &[u8]) -> Option<usize> {
        let hit = self.tables.symtab.indexed(name)?;
        hit.plain
            .then(|| self.mapping.base.wrapping_add(hit.value as usize))
    }

    /// Runtime address of link-time `vaddr`.
    #[inline]
    pub(crate) fn addr(&self, vaddr: u64) -> usize {
        self.mapping.base.wrapping_add(vaddr as usize)
    }

    /// The start of `.eh_frame` (through `PT_GNU_EH_FRAME`), if the object
    /// has a usable one.
    pub(crate) fn eh_frame(&self) -> Option<usize> {
        *self.eh_frame.get_or_init(|| {
            let hdr = self.plan.eh_frame_hdr?;
            // SAFETY: the object is mapped (callers hold it loaded) and its
            // file-backed segments are readable.
            let view: View<'_> = unsafe { View::of_image(self.mapping.base, &self.plan.loads) };
            crate::unwind::eh_frame_start(&self.path, &view, hdr, self.mapping.base)
                .ok()
                .flatten()
        })
    }

    /// Whether code in this object throws or catches exceptions itself:
    /// it imports the unwinder or the C++ exception runtime.
    fn uses_exceptions(&self) -> bool {
        let st = &self.tables.symtab;
        // Imports only (undefined symbols); names compared in place.
        (1..st.imports_end()).any(|i| {
            st.sym(i).is_some_and(|s| {
                s.st_shndx == 0
                    && (st.name_starts_with(s.st_name, b"_Unwind_")
                        || st.name_starts_with(s.st_name, b"__gxx_personality")
                        || st.name_at_is(s.st_name, b"__cxa_throw")
                        || st.name_at_is(s.st_name, b"__cxa_begin_catch"))
            })
        })
    }

    /// Registers `.eh_frame` with the unwinder (after relocation), for
    /// objects that use exceptions. Registering reads the first word of
    /// `.eh_frame`, which faults in (with fault-around) up to 64 KiB of
    /// read-only data a plain C library never needs; glibc's own loader
    /// touches none of it. (A C library that an exception must cross,
    /// through a callback, needs the registration too: that case is left
    /// out.)
    pub(crate) fn register_eh_frame(&self) {
        if !self.uses_exceptions() {
            return;
        }
        if let Some(eh) = self.eh_frame() {
            if !self.eh_registered.load(Ordering::Acquire) && crate::unwind::register(eh) {
                self.eh_registered.store(true, Ordering::Release);
            }
        }
    }

    /// The defined symbol containing `addr` (or the nearest one below it
    /// in the same object), as `dladdr` finds it: its index, name and
    /// address.
    pub(crate) fn symbol_at(&self, addr: usize) -> Option<(usize, &[u8], usize)> {
        if !self.contains(addr) {
            return None;
        }
        let st = &self.tables.symtab;
        let mut best: Option<(usize, &[u8], usize)> = None;
        for i in 1..st.len() {
            let Some(s) = st.sym(i) else { continue };
            let kind = s.st_info & 0xf;
            if s.st_shndx == 0 || s.st_value == 0 || kind == goblin::elf::sym::STT_TLS {
                continue;
            }
            let a = self.addr(s.st_value);
            let inside = addr >= a
                && (addr < a.wrapping_add(s.st_size as usize) || (s.st_size == 0 && addr == a));
            if a <= addr && best.is_none_or(|(_, _, b)| a > b || inside) {
                best = Some((i, st.name(&s), a));
                if inside {
                    break;
                }
            }
        }
        best
    }

    /// Tells an attached debugger about this object.
    pub(crate) fn register_debugger(&self) {
        if crate::debug::enabled() {
            let r = crate::debug::register(&self.path, self.mapping.base);
            *self.debug.lock().unwrap_or_else(|e| e.into_inner()) = r;
        }
    }

    /// Whether `addr` lies in this object's reserved span.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr >= self.mapping.start && addr < self.mapping.start + self.mapping.len
    }

    /// Unmaps the whole span. The object must not be used afterwards.
    pub(crate) fn unmap(&self, sys: &Sys) {
        if !self.unmapped.swap(true, Ordering::AcqRel) {
            if let Some((id, _)) = self.tls {
                crate::tls::unregister(id);
            }
            if let (Some(eh), true) = (
                self.eh_frame.get().copied().flatten(),
                self.eh_registered.swap(false, Ordering::AcqRel),
            ) {
                crate::unwind::deregister(eh);
            }
            drop(self.debug.lock().unwrap_or_else(|e| e.into_inner()).take());
            crate::reloc::forget_unique(self.id);
            let end = self.mapping.start + self.mapping.len;
            match &self.relcache {
                // The relocation cache's stub area follows the span: one
                // call for both.
                Some(p) if p.area().start == end => sys.munmap(
                    self.mapping.start,
                    p.area().end - self.mapping.start,
                    "unload",
                ),
                Some(p) => {
                    sys.munmap(self.mapping.start, self.mapping.len, "unload");
                    p.release(sys);
                }
                None => sys.munmap(self.mapping.start, self.mapping.len, "unload"),
            }
        }
    }
}

/// Checks `PT_TLS`: its image must lie in the file-backed bytes.
fn tls_image(path: &Path, view: &View, plan: &LoadPlan, base: usize) -> Result<Option<TlsImage>> {
    let Some(ph) = plan.tls else { return Ok(None) };
    if ph.p_memsz > 1 << 30 || ph.p_align > 1 << 16 {
        return Err(Error::malformed(
            path,
            "PT_TLS block is over 1 GiB or aligned to over 64 KiB",
            Some(ph.p_vaddr),
        ));
    }
    if ph.p_filesz > 0 && view.bytes(ph.p_vaddr, ph.p_filesz).is_none() {
        return Err(Error::malformed(
            path,
            "PT_TLS image lies outside the file-backed segments",
            Some(ph.p_vaddr),
        ));
    }
    Ok(Some(TlsImage {
        addr: base.wrapping_add(ph.p_vaddr as usize),
        filesz: ph.p_filesz as usize,
        memsz: ph.p_memsz as usize,
        align: ph.p_align.max(1) as usize,
    }))
}

/// Refuses `PT_LOAD`s that are not readable: the loader reads its tables
/// from the image.
fn check_readable(path: &Path, plan: &LoadPlan) -> Result<()> {
    match plan
        .loads
        .iter()
        .find(|l| l.flags & goblin::elf::program_header::PF_R == 0)
    {
        Some(l) => Err(Error::unsupported(
            path,
            format!("PT_LOAD[{}] is not readable (no PF_R)", l.index),
        )),
        None => Ok(()),
    }
}

/// Reads and checks the ELF header and program headers of `file`, whose
/// first bytes `head` already holds as far as they were read (the
/// search's check reads the first `min(4096, size)`; nothing has been
/// read of a file named by path). Reads what is missing of the first
/// 4 KiB (one `pread`), then what is missing of the headers if they reach
/// past them (a second); returns the plan and the bytes read.
pub(crate) fn read_plan(
    path: &Path,
    file: &File,
    size: u64,
    mut head: Vec<u8>,
) -> Result<(LoadPlan, Vec<u8>)> {
    read_to(path, file, &mut head, size.min(4096) as usize)?;
    let need = elf::needed_len(path, &head)?;
    if need > head.len() {
        if need as u64 > size {
            return Err(Error::malformed(
                path,
                "program headers extend past the end of the file",
                Some(need as u64),
            ));
        }
        read_to(path, file, &mut head, need)?;
    }
    let plan = elf::parse_plan(path, &head, size)?;
    Ok((plan, head))
}

/// Extends `head`, the first bytes of `file`, to its first `len` bytes
/// with one `pread` of the missing ones (none if it has them).
fn read_to(path: &Path, file: &File, head: &mut Vec<u8>, len: usize) -> Result<()> {
    let have = head.len();
    if have < len {
        head.resize(len, 0);
        file.read_exact_at(&mut head[have..], have as u64)
            .map_err(|e| Error::io(path, "read", e))?;
    }
    Ok(())
}

/// A search-list entry made strong for the length of a lookup: loaded
/// objects upgraded (those already unloaded left out), host objects as
/// they are.
pub(crate) enum Held {
    /// Loaded by soloader.
    Loaded(Arc<Object>),
    /// The system loader's.
    Host(Arc<HostObject>),
}

impl Held {
    /// The live entries of `list`, in order.
    pub(crate) fn all(list: &[Dep]) -> Vec<Held> {
        list.iter()
            .filter_map(|d| match d {
                Dep::Loaded(w) => crate::resolve::live(w).map(Held::Loaded),
                Dep::Host(h) => Some(Held::Host(h.clone())),
            })
            .collect()
    }

    /// As a scope module.
    pub(crate) fn module(&self) -> Module<'_> {
        match self {
            Held::Loaded(o) => Module::Loaded(o),
            Held::Host(h) => Module::Host(h),
        }
    }
}

/// A module in a lookup scope.
#[derive(Clone, Copy)]
pub(crate) enum Module<'s> {
    /// Loaded by soloader.
    Loaded(&'s Object),
    /// The system loader's.
    Host(&'s HostObject),
}

impl<'s> Module<'s> {
    pub(crate) fn symtab(&self) -> &'s SymTab<'static> {
        match self {
            Module::Loaded(o) => &o.tables.symtab,
            Module::Host(h) => &h.symtab,
        }
    }

    pub(crate) fn base(&self) -> usize {
        match self {
            Module::Loaded(o) => o.mapping.base,
            Module::Host(h) => h.base,
        }
    }

    pub(crate) fn provider(&self) -> Provider {
        match self {
            Module::Loaded(o) => Provider::Loaded(o.path.clone()),
            Module::Host(h) => Provider::Host(h.name.clone()),
        }
    }
}

/// A definition found by a lookup.
#[derive(Clone, Copy)]
pub(crate) struct Found<'s> {
    pub module: Module<'s>,
    pub sym: Sym,
}

impl Found<'_> {
    /// Whether the definition is an IFUNC (its address is the resolver's).
    pub(crate) fn is_ifunc(&self) -> bool {
        self.sym.st_info & 0xf == STT_GNU_IFUNC
    }

    /// Whether it is a TLS variable.
    pub(crate) fn is_tls(&self) -> bool {
        self.sym.st_info & 0xf == STT_TLS
    }

    /// The definition's address (for an IFUNC, the resolver's).
    pub(crate) fn raw_addr(&self) -> usize {
        self.module.base().wrapping_add(self.sym.st_value as usize)
    }

    /// The address a caller should use: an IFUNC's resolver is called,
    /// which is allowed once the defining object is relocated.
    pub(crate) fn value(&self, path: &Path, name: &[u8]) -> Result<usize> {
        if self.is_tls() {
            // The calling thread's copy, as dlsym gives.
            let module = match self.module {
                Module::Loaded(o) => o.tls.map(|(id, _)| id).unwrap_or(0),
                Module::Host(h) => h.tls_modid,
            };
            return Ok(crate::tls::address(module, self.sym.st_value as usize));
        }
        if !self.is_ifunc() {
            return Ok(self.raw_addr());
        }
        if let Module::Loaded(o) = self.module {
            if !o.relocated.load(Ordering::Acquire) {
                return Err(Error::Runtime {
                    path: path.to_path_buf(),
                    what: format!(
                        "IFUNC symbol {} is defined in {}, which is not relocated yet (relink {} with {})",
                        String::from_utf8_lossy(name),
                        o.path.display(),
                        path.display(),
                        o.path.display()
                    ),
                });
            }
        }
        // SAFETY: the defining object is relocated (checked above; host
        // objects always are), and its IFUNC symbol's value is its resolver.
        Ok(unsafe { crate::arch::call_ifunc_resolver(self.raw_addr()) })
    }
}

/// An ordered list of modules to search.
pub(crate) struct Scope<'s> {
    pub modules: Vec<Module<'s>>,
}

impl<'s> Scope<'s> {
    /// The first definition of `name` (at `version`) in scope order.
    #[inline]
    pub(crate) fn lookup(&self, name: &Name, version: Option<&VersionReq>) -> Option<Found<'s>> {
        self.modules.iter().find_map(|m| {
            // A host object's tables are read only if its Bloom filter
            // lets the name through.
            if let Module::Host(h) = m {
                if h.symtab.rejects(name) {
                    return None;
                }
            }
            m.symtab()
                .lookup(name, version)
                .map(|(_, sym)| Found { module: *m, sym })
        })
    }
}
