//! The loader's own functions, as the libraries soloader loads see them.
//!
//! Some imports of a soloader library must not reach the system loader,
//! which does not know its modules: `__tls_get_addr` (soloader owns their
//! TLS), `__cxa_thread_atexit(_impl)` (glibc would not keep the module
//! mapped until a thread's `thread_local` destructors have run), and the
//! `dl*` family — so that a library that loads plugins loads them through
//! soloader, with its own `$ORIGIN`/`RUNPATH`, and `dlsym(RTLD_NEXT)`,
//! `dladdr`, `dl_iterate_phdr` and `_dl_find_object` see soloader's
//! modules. Handles and addresses soloader does not own are passed on to
//! the system loader. These names are bound to soloader's implementations
//! before the normal scope is searched; they are never exported from the
//! crate, so the host process keeps the system loader's.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::elf::hash::{sysv_hash, Name, VersionReq};
use crate::library::Library;
use crate::object::{Found, Held, Module, Object, Scope};

/// soloader's implementation of an import, if it provides one.
pub(crate) fn provided(name: &[u8]) -> Option<usize> {
    match name {
        b"__tls_get_addr" => Some(crate::arch::tls_get_addr_entry()),
        b"__cxa_thread_atexit" | b"__cxa_thread_atexit_impl" => {
            Some(cxa_thread_atexit as unsafe extern "C" fn(_, _, _) -> _ as usize)
        }
        b"dlopen" => Some(crate::arch::caller_entries().0),
        b"dlsym" => Some(crate::arch::caller_entries().1),
        b"dlvsym" => Some(crate::arch::caller_entries().2),
        b"dlclose" => Some(dlclose_impl as unsafe extern "C" fn(_) -> _ as usize),
        b"dlerror" => Some(dlerror_impl as unsafe extern "C" fn() -> _ as usize),
        b"dladdr" => Some(dladdr_impl as unsafe extern "C" fn(_, _) -> _ as usize),
        b"dladdr1" => Some(dladdr1_impl as unsafe extern "C" fn(_, _, _, _) -> _ as usize),
        b"dlinfo" => Some(dlinfo_impl as unsafe extern "C" fn(_, _, _) -> _ as usize),
        b"dl_iterate_phdr" => {
            Some(dl_iterate_phdr_impl as unsafe extern "C" fn(_, _) -> _ as usize)
        }
        b"_dl_find_object" => Some(dl_find_object_impl as unsafe extern "C" fn(_, _) -> _ as usize),
        _ => None,
    }
}

/// Handles `dlopen` gave out (boxed `Library`s); anything else passed to
/// `dlsym`/`dlclose`/`dlinfo` is the system loader's.
static HANDLES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// HANDLES is only taken under the loader's lock, so no thread holds it
/// across a fork.
fn handles() -> (
    crate::registry::Guard,
    std::sync::MutexGuard<'static, Vec<usize>>,
) {
    let g = crate::registry::lock();
    let h = match HANDLES.lock() {
        Ok(h) => h,
        Err(p) => p.into_inner(),
    };
    (g, h)
}

fn is_ours(h: *mut c_void) -> bool {
    handles().1.contains(&(h as usize))
}

/// Loads, adds and removes objects seen by `dl_iterate_phdr` callers.
static ADDS: AtomicU64 = AtomicU64::new(0);
static SUBS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// (error not yet returned, error last returned by `dlerror`).
    static DLERROR: RefCell<(Option<CString>, Option<CString>)> = const { RefCell::new((None, None)) };
}

fn set_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let _ = DLERROR.try_with(|e| e.borrow_mut().0 = Some(c));
}

/// `dlopen`: host-family names and libraries the host has go to the system
/// loader; everything else is loaded by soloader, searched with the
/// caller's `RPATH`/`RUNPATH`.
pub(crate) unsafe extern "C" fn dlopen_impl(
    name: *const c_char,
    flags: c_int,
    caller: usize,
) -> *mut c_void {
    if name.is_null() {
        // SAFETY: the main program's handle, from the system loader.
        return unsafe { libc::dlopen(name, flags) };
    }
    // SAFETY: the library passes a NUL-terminated name.
    let n = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    if crate::host::is_host_family(&n) || crate::host::index().by_name(&n).is_some() {
        // SAFETY: forwarding the caller's own arguments.
        return unsafe { libc::dlopen(name, flags) };
    }
    let caller = crate::library::object_containing(caller);
    let noload = flags & libc::RTLD_NOLOAD != 0;
    // A library soloader loaded passes on the options it was loaded with
    // (search path, trace, relocation cache).
    let options = caller
        .as_deref()
        .and_then(|c| c.options.get().cloned())
        .unwrap_or_default();
    match Library::open_from(&n, &options, caller.as_deref(), noload) {
        Ok(lib) => {
            ADDS.fetch_add(1, Ordering::Relaxed);
            let h = Box::into_raw(Box::new(lib)) as usize;
            handles().1.push(h);
            h as *mut c_void
        }
        Err(e) => {
            set_error(e.to_string());
            std::ptr::null_mut()
        }
    }
}

/// `dlclose`.
unsafe extern "C" fn dlclose_impl(handle: *mut c_void) -> c_int {
    let ours = {
        let (_g, mut h) = handles();
        match h.iter().position(|&x| x == handle as usize) {
            Some(i) => {
                h.swap_remove(i);
                true
            }
            None => false,
        }
    };
    if !ours {
        // SAFETY: a handle of the system loader's, passed through.
        return unsafe { libc::dlclose(handle) };
    }
    // SAFETY: made by Box::into_raw in dlopen_impl and removed from the
    // table above, so it is dropped exactly once.
    drop(unsafe { Box::from_raw(handle as *mut Library) });
    SUBS.fetch_add(1, Ordering::Relaxed);
    0
}

/// `dlerror`: soloader's last error on this thread, else the system's.
unsafe extern "C" fn dlerror_impl() -> *const c_char {
    let ours = DLERROR
        .try_with(|e| {
            let mut e = e.borrow_mut();
            let pending = e.0.take()?;
            e.1 = Some(pending);
            e.1.as_ref().map(|c| c.as_ptr())
        })
        .ok()
        .flatten();
    match ours {
        Some(p) => p,
        // SAFETY: the system loader's own error state.
        None => unsafe { libc::dlerror() },
    }
}

/// A symbol's address for a caller: soloader's own functions first (so a
/// library looking up `dlopen` gets the same one it imports).
fn value_of(found: Option<Found>, requester: &std::path::Path, name: &[u8]) -> Option<usize> {
    found.and_then(|f| f.value(requester, name).ok())
}

fn lookup(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
    caller: usize,
) -> *mut c_void {
    // SAFETY: the library passes NUL-terminated strings (version may be
    // NULL for dlsym).
    let n = unsafe { CStr::from_ptr(name) }.to_bytes();
    let v = (!version.is_null()).then(|| {
        // SAFETY: a non-NULL version is a NUL-terminated string.
        unsafe { CStr::from_ptr(version) }.to_bytes()
    });
    let req = v.map(|v| VersionReq {
        name: v,
        hash: sysv_hash(v),
        hidden: false,
    });
    let hashed = Name::new(n);
    let caller_obj = crate::library::object_containing(caller);
    let requester = caller_obj
        .as_ref()
        .map(|o| o.path.clone())
        .unwrap_or_default();
    let result: Option<usize> = if handle.is_null() || handle == libc::RTLD_NEXT {
        let next = handle == libc::RTLD_NEXT;
        if !next {
            if let Some(a) = provided(n) {
                return a as *mut c_void;
            }
        }
        let host = crate::host::index();
        let held = caller_obj
            .as_ref()
            .and_then(|c| c.search_list.get())
            .map(|l| Held::all(l))
            .unwrap_or_default();
        let loaded = held
            .iter()
            .filter(|h| matches!(h, Held::Loaded(_)))
            .map(Held::module);
        let hosts = held
            .iter()
            .filter(|h| matches!(h, Held::Host(_)))
            .map(Held::module);
        let global = host.global.iter().map(|h| Module::Host(h));
        let modules: Vec<Module> = if next {
            // RTLD_NEXT: what comes after the caller in its own search
            // order, then the global scope.
            loaded.skip(1).chain(hosts).chain(global).collect()
        } else {
            global.chain(loaded).collect()
        };
        let scope = Scope { modules };
        value_of(scope.lookup(&hashed, req.as_ref()), &requester, n)
    } else if is_ours(handle) {
        // SAFETY: a live handle from dlopen_impl (checked in the table).
        let lib = unsafe { &*(handle as *const Library) };
        crate::library::find_in(lib, &hashed, req.as_ref()).and_then(|r| r.ok())
    } else {
        // SAFETY: a system loader handle, passed through.
        let p = unsafe {
            if version.is_null() {
                libc::dlsym(handle, name)
            } else {
                dlvsym(handle, name, version)
            }
        };
        return p;
    };
    match result {
        Some(a) => a as *mut c_void,
        None => {
            set_error(format!(
                "{}: undefined symbol: {}{}",
                requester.display(),
                String::from_utf8_lossy(n),
                v.map(|v| format!(", version {}", String::from_utf8_lossy(v)))
                    .unwrap_or_default()
            ));
            std::ptr::null_mut()
        }
    }
}

extern "C" {
    fn dlvsym(handle: *mut c_void, name: *const c_char, version: *const c_char) -> *mut c_void;
}

/// `dlsym(handle, name)` (the entry appends the caller's address).
pub(crate) unsafe extern "C" fn dlsym_impl(
    handle: *mut c_void,
    name: *const c_char,
    caller: usize,
) -> *mut c_void {
    if name.is_null() {
        set_error("dlsym: NULL name".into());
        return std::ptr::null_mut();
    }
    lookup(handle, name, std::ptr::null(), caller)
}

/// `dlvsym(handle, name, version)`.
pub(crate) unsafe extern "C" fn dlvsym_impl(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
    caller: usize,
) -> *mut c_void {
    if name.is_null() || version.is_null() {
        set_error("dlvsym: NULL name or version".into());
        return std::ptr::null_mut();
    }
    lookup(handle, name, version, caller)
}

/// `dladdr`.
unsafe extern "C" fn dladdr_impl(addr: *const c_void, info: *mut libc::Dl_info) -> c_int {
    // SAFETY: forwarded to the full version with no extra output.
    unsafe { dladdr1_impl(addr, info, std::ptr::null_mut(), 0) }
}

const RTLD_DL_SYMENT: c_int = 1;
const RTLD_DL_LINKMAP: c_int = 2;

/// `dladdr1`: soloader's objects answered here, others by the system.
unsafe extern "C" fn dladdr1_impl(
    addr: *const c_void,
    info: *mut libc::Dl_info,
    extra: *mut *mut c_void,
    flags: c_int,
) -> c_int {
    let Some(o) = crate::library::object_containing(addr as usize) else {
        // SAFETY: the caller's arguments, passed through.
        return unsafe { libc::dladdr1(addr, info, extra, flags) };
    };
    if info.is_null() {
        return 0;
    }
    let sym = o.symbol_at(addr as usize);
    // SAFETY: `info` is the caller's Dl_info; the strings point into the
    // object's own path and mapped string table, valid while it is loaded.
    unsafe {
        (*info).dli_fname = o.c_path.as_ptr();
        (*info).dli_fbase = o.mapping.start as *mut c_void;
        match sym {
            Some((i, _, a)) => {
                let s = o.tables.symtab.sym(i);
                let off = s.map(|s| s.st_name as usize).unwrap_or(0);
                (*info).dli_sname = o.tables.symtab.strtab.as_ptr().add(off) as *const c_char;
                (*info).dli_saddr = a as *mut c_void;
                if flags == RTLD_DL_SYMENT && !extra.is_null() {
                    *extra = o.tables.symtab.syms_ptr(i) as *mut c_void;
                }
            }
            None => {
                (*info).dli_sname = std::ptr::null();
                (*info).dli_saddr = std::ptr::null_mut();
                if flags == RTLD_DL_SYMENT && !extra.is_null() {
                    *extra = std::ptr::null_mut();
                }
            }
        }
        if flags == RTLD_DL_LINKMAP && !extra.is_null() {
            *extra = &*o.link_map as *const _ as *mut c_void;
        }
    }
    1
}

/// `dlinfo` for soloader's handles: the link map, origin and TLS id.
unsafe extern "C" fn dlinfo_impl(handle: *mut c_void, request: c_int, arg: *mut c_void) -> c_int {
    if !is_ours(handle) {
        // SAFETY: a system handle, passed through.
        return unsafe { libc::dlinfo(handle, request, arg) };
    }
    // SAFETY: a live handle from dlopen_impl.
    let lib = unsafe { &*(handle as *const Library) };
    let o = crate::library::object_of(lib);
    // SAFETY: `arg` points to storage of the type the request implies.
    unsafe {
        match request {
            libc::RTLD_DI_LINKMAP => {
                *(arg as *mut *const c_void) = &*o.link_map as *const _ as *const c_void
            }
            libc::RTLD_DI_ORIGIN => {
                let dir = o
                    .path
                    .parent()
                    .map(|p| p.as_os_str().as_bytes().to_vec())
                    .unwrap_or_default();
                std::ptr::copy_nonoverlapping(dir.as_ptr(), arg as *mut u8, dir.len());
                *(arg as *mut u8).add(dir.len()) = 0;
            }
            libc::RTLD_DI_TLS_MODID => *(arg as *mut usize) = o.tls.map(|(id, _)| id).unwrap_or(0),
            _ => {
                set_error(format!(
                    "dlinfo: request {request} is not supported for soloader's libraries"
                ));
                return -1;
            }
        }
    }
    0
}

type PhdrCallback = unsafe extern "C" fn(*mut libc::dl_phdr_info, usize, *mut c_void) -> c_int;

/// `dl_iterate_phdr`: the system loader's objects, then soloader's.
unsafe extern "C" fn dl_iterate_phdr_impl(cb: Option<PhdrCallback>, data: *mut c_void) -> c_int {
    let Some(f) = cb else { return 0 };
    // SAFETY: the caller's callback and data, passed through.
    let rc = unsafe { libc::dl_iterate_phdr(Some(f), data) };
    if rc != 0 {
        return rc;
    }
    let (adds, subs) = (ADDS.load(Ordering::Relaxed), SUBS.load(Ordering::Relaxed));
    for o in crate::library::loaded_objects() {
        let mut info = libc::dl_phdr_info {
            dlpi_addr: o.mapping.base as u64,
            dlpi_name: o.c_path.as_ptr(),
            dlpi_phdr: o.plan.phdrs.as_ptr() as *const libc::Elf64_Phdr,
            dlpi_phnum: o.plan.phdrs.len() as u16,
            dlpi_adds: adds,
            dlpi_subs: subs,
            dlpi_tls_modid: o.tls.map(|(id, _)| id).unwrap_or(0),
            dlpi_tls_data: std::ptr::null_mut(),
        };
        // SAFETY: a valid info for a loaded object, alive for the call.
        let rc = unsafe { f(&mut info, std::mem::size_of::<libc::dl_phdr_info>(), data) };
        if rc != 0 {
            return rc;
        }
    }
    0
}

/// glibc 2.35's `struct dl_find_object`.
#[repr(C)]
struct DlFindObject {
    dlfo_flags: u64,
    dlfo_map_start: *mut c_void,
    dlfo_map_end: *mut c_void,
    dlfo_link_map: *mut c_void,
    dlfo_eh_frame: *mut c_void,
    reserved: [u64; 7],
}

/// `_dl_find_object`: soloader's objects, else glibc's answer.
unsafe extern "C" fn dl_find_object_impl(pc: *mut c_void, result: *mut DlFindObject) -> c_int {
    if let Some(o) = crate::library::object_containing(pc as usize) {
        // SAFETY: the caller's result struct.
        unsafe {
            (*result).dlfo_flags = 0;
            (*result).dlfo_map_start = o.mapping.start as *mut c_void;
            (*result).dlfo_map_end = (o.mapping.start + o.mapping.len) as *mut c_void;
            (*result).dlfo_link_map = &*o.link_map as *const _ as *mut c_void;
            (*result).dlfo_eh_frame = o.eh_frame().unwrap_or(0) as *mut c_void;
        }
        return 0;
    }
    type Find = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;
    match crate::host::function("_dl_find_object", "ld-linux-x86-64.so.2") {
        // SAFETY: glibc's _dl_find_object, with the caller's arguments.
        Some(a) => unsafe { std::mem::transmute::<usize, Find>(a)(pc, result) },
        None => -1,
    }
}

type Dtor = unsafe extern "C" fn(*mut c_void);

/// This thread's pending `thread_local` destructors, newest last, each
/// with the object it pins.
#[derive(Default)]
struct ThreadDtors(Vec<(Dtor, usize, Option<Arc<Object>>)>);

impl Drop for ThreadDtors {
    fn drop(&mut self) {
        // Destructors may register more: run until none is left, newest
        // first (C++ [basic.start.term]).
        while let Some((f, arg, pin)) = self.0.pop() {
            // SAFETY: a destructor and its argument registered by the
            // library, which the pin keeps mapped until here.
            unsafe { f(arg as *mut c_void) };
            if let Some(o) = pin {
                if o.pins.fetch_sub(1, Ordering::AcqRel) == 1 {
                    crate::library::collect();
                }
            }
        }
    }
}

thread_local! {
    static DTORS: RefCell<ThreadDtors> = RefCell::new(ThreadDtors::default());
}

/// `__cxa_thread_atexit_impl(dtor, obj, dso_symbol)`: runs `dtor(obj)`
/// when this thread exits, and keeps the object containing `dso_symbol`
/// mapped until then.
unsafe extern "C" fn cxa_thread_atexit(
    dtor: Option<Dtor>,
    obj: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    let Some(f) = dtor else { return 0 };
    let pin = crate::library::object_containing(dso as usize);
    if let Some(o) = &pin {
        o.pins.fetch_add(1, Ordering::AcqRel);
    }
    let queued = DTORS
        .try_with(|d| d.borrow_mut().0.push((f, obj as usize, pin.clone())))
        .is_ok();
    if queued {
        return 0;
    }
    // The thread is already tearing down its destructor list: run this one
    // now rather than never.
    // SAFETY: as in Drop above.
    unsafe { f(obj) };
    if let Some(o) = pin {
        o.pins.fetch_sub(1, Ordering::AcqRel);
    }
    0
}
