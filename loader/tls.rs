//! Thread-local storage for the libraries soloader loads.
//!
//! glibc's dynamic thread vector (DTV) knows nothing of soloader's
//! modules, so soloader keeps its own: module ids in a range glibc never
//! uses (bit 62 set), each made of a slot and a generation, so that a slot
//! reused after an unload never reaches a stale block. Every thread has its
//! own table of blocks, allocated on first use from the module's TLS image
//! (`.tdata` copied, `.tbss` zeroed) and freed when the thread exits.
//!
//! Loaded libraries' `__tls_get_addr` is bound to soloader's entry, which
//! forwards ids it does not own to glibc's. Initial-exec TLS (`TPOFF64`)
//! is refused for soloader's modules (their variables cannot live in
//! glibc's static block) and resolved from glibc's own numbers for the
//! host's libraries.

use std::alloc::Layout;
use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};

/// Marks a module id as soloader's.
const MARK: usize = 1 << 62;
const SLOT_BITS: u32 = 20;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;

/// The argument of `__tls_get_addr`: `{ module id, offset }`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsIndex {
    pub module: usize,
    pub offset: usize,
}

/// Where a module's TLS image is and how big its block is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsImage {
    /// Run-time address of the initialisation image.
    pub addr: usize,
    pub filesz: usize,
    pub memsz: usize,
    pub align: usize,
}

struct Slot {
    generation: usize,
    image: Option<TlsImage>,
}

static SLOTS: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

/// SLOTS is only taken under the loader's lock (see `registry`), so no
/// thread holds it across a fork.
fn slots() -> (
    crate::registry::Guard,
    std::sync::MutexGuard<'static, Vec<Slot>>,
) {
    let g = crate::registry::lock();
    let s = match SLOTS.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    (g, s)
}

/// Gives a module an id; its blocks will be initialised from `image`.
pub(crate) fn register(image: TlsImage) -> usize {
    let (_g, mut s) = slots();
    let i = match s.iter().position(|x| x.image.is_none()) {
        Some(i) => i,
        None => {
            s.push(Slot {
                generation: 0,
                image: None,
            });
            s.len() - 1
        }
    };
    s[i].generation += 1;
    s[i].image = Some(image);
    MARK | ((s[i].generation & ((1 << (62 - SLOT_BITS)) - 1)) << SLOT_BITS) | i
}

/// Forgets a module: its id never resolves again; this thread's block is
/// freed now, other threads' when they exit or reuse the slot.
pub(crate) fn unregister(id: usize) {
    let slot = id & SLOT_MASK;
    {
        let (_g, mut s) = slots();
        if let Some(x) = s.get_mut(slot) {
            if module_id(slot, x.generation) == id {
                x.image = None;
            }
        }
    }
    let _ = DTV.try_with(|d| {
        if let Ok(mut d) = d.try_borrow_mut() {
            d.free(slot, Some(id));
        }
    });
}

fn module_id(slot: usize, generation: usize) -> usize {
    MARK | ((generation & ((1 << (62 - SLOT_BITS)) - 1)) << SLOT_BITS) | slot
}

struct Block {
    id: usize,
    ptr: *mut u8,
    layout: Layout,
}

/// One thread's blocks, by slot.
#[derive(Default)]
struct Dtv {
    blocks: Vec<Option<Block>>,
}

impl Dtv {
    fn free(&mut self, slot: usize, only: Option<usize>) {
        if let Some(b) = self.blocks.get_mut(slot) {
            if b.as_ref().is_some_and(|b| only.is_none_or(|id| b.id == id)) {
                if let Some(b) = b.take() {
                    // SAFETY: allocated in `allocate` with this layout.
                    unsafe { std::alloc::dealloc(b.ptr, b.layout) };
                }
            }
        }
    }
}

impl Drop for Dtv {
    fn drop(&mut self) {
        for i in 0..self.blocks.len() {
            self.free(i, None);
        }
    }
}

thread_local! {
    static DTV: RefCell<Dtv> = RefCell::new(Dtv::default());
}

fn allocate(id: usize) -> Option<(*mut u8, Layout)> {
    let slot = id & SLOT_MASK;
    let image = {
        let (_g, s) = slots();
        let x = s.get(slot)?;
        if module_id(slot, x.generation) != id {
            return None; // unloaded: the id is stale
        }
        x.image?
    };
    let layout = Layout::from_size_align(image.memsz.max(1), image.align.max(16)).ok()?;
    // SAFETY: layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // SAFETY: the image lies in the module's mapped, relocated segments
    // (validated at load) and the block holds memsz >= filesz bytes.
    unsafe { std::ptr::copy_nonoverlapping(image.addr as *const u8, p, image.filesz) };
    Some((p, layout))
}

/// The address of this thread's copy of the variable at `ti`.
fn own_addr(ti: &TlsIndex) -> *mut u8 {
    let id = ti.module;
    let slot = id & SLOT_MASK;
    let found = DTV.try_with(|d| {
        let mut d = d.borrow_mut();
        if let Some(Some(b)) = d.blocks.get(slot) {
            if b.id == id {
                return Some(b.ptr);
            }
        }
        d.free(slot, None);
        let (ptr, layout) = allocate(id)?;
        if d.blocks.len() <= slot {
            d.blocks.resize_with(slot + 1, || None);
        }
        d.blocks[slot] = Some(Block { id, ptr, layout });
        Some(ptr)
    });
    match found {
        Ok(Some(p)) => p.wrapping_add(ti.offset),
        // The thread is exiting (its table is gone) and a destructor still
        // touches TLS: give it a block that lives on.
        Err(_) => allocate(id).map_or(std::ptr::null_mut(), |(p, _)| p.wrapping_add(ti.offset)),
        Ok(None) => std::ptr::null_mut(),
    }
}

type GlibcTlsGetAddr = unsafe extern "C" fn(*const TlsIndex) -> *mut u8;

/// glibc's `__tls_get_addr`, found in the host's global scope.
fn glibc_tls_get_addr() -> Option<GlibcTlsGetAddr> {
    static F: OnceLock<Option<usize>> = OnceLock::new();
    let addr = *F.get_or_init(|| crate::host::index().first_definition(b"__tls_get_addr"));
    // SAFETY: the address is glibc's __tls_get_addr function.
    addr.map(|a| unsafe { std::mem::transmute::<usize, GlibcTlsGetAddr>(a) })
}

/// soloader's `__tls_get_addr` (called through the assembly entry that
/// realigns the stack).
///
/// # Safety
/// `ti` must point to a valid `TlsIndex`.
pub(crate) unsafe extern "C" fn tls_get_addr(ti: *const TlsIndex) -> *mut u8 {
    // SAFETY: the caller passes a valid index (the GOT pair relocated by
    // DTPMOD64/DTPOFF64, or a descriptor argument soloader allocated).
    let t = unsafe { &*ti };
    if t.module & MARK != 0 {
        return own_addr(t);
    }
    match glibc_tls_get_addr() {
        // SAFETY: forwarding a glibc module id to glibc.
        Some(f) => unsafe { f(ti) },
        None => std::ptr::null_mut(),
    }
}

/// The address of a TLS variable in the calling thread, for `get()`.
pub(crate) fn address(module: usize, offset: usize) -> usize {
    let ti = TlsIndex { module, offset };
    // SAFETY: `ti` is a valid index on the stack.
    unsafe { tls_get_addr(&ti) as usize }
}
