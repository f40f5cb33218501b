//! The loader's own functions, as the libraries soloader loads see them.
//!
//! Some imports of a soloader library must not reach the system loader,
//! which does not know its modules: `__tls_get_addr` (soloader owns their
//! TLS) and `__cxa_thread_atexit(_impl)` (glibc would not keep the module
//! mapped until a thread's `thread_local` destructors have run). These
//! names are bound to soloader's implementations before the normal scope
//! is searched. They are never exported from the crate: the host process
//! keeps the system loader's.

use std::cell::RefCell;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::object::Object;

/// soloader's implementation of an import, if it provides one.
pub(crate) fn provided(name: &[u8]) -> Option<usize> {
    match name {
        b"__tls_get_addr" => Some(crate::arch::tls_get_addr_entry()),
        b"__cxa_thread_atexit" | b"__cxa_thread_atexit_impl" => {
            Some(cxa_thread_atexit as unsafe extern "C" fn(_, _, _) -> _ as usize)
        }
        _ => None,
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
