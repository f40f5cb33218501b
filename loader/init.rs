//! Initialise and finalise, in glibc's (and the gABI's) order.
//!
//! Per object: `DT_INIT`, then `DT_INIT_ARRAY` forward, each called with
//! `(argc, argv, envp)` like glibc does; dependencies before the objects
//! that need them. Finalisers: `DT_FINI_ARRAY` backwards, then `DT_FINI`,
//! with no arguments; dependents before their dependencies.

use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicIsize, AtomicPtr, Ordering};

use crate::error::{Error, Result};
use crate::object::Object;
use crate::trace::{Event, Tracer};

static ARGC: AtomicIsize = AtomicIsize::new(0);
static ARGV: AtomicPtr<*const c_char> = AtomicPtr::new(std::ptr::null_mut());

/// Captures the program's `argc`/`argv`: glibc calls every `.init_array`
/// entry of the executable with `(argc, argv, envp)`, so this runs before
/// `main` in any program that links soloader.
extern "C" fn capture_args(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    ARGC.store(argc as isize, Ordering::Relaxed);
    ARGV.store(argv as *mut _, Ordering::Relaxed);
}

#[used]
#[link_section = ".init_array"]
static CAPTURE_ARGS: extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
    capture_args;

extern "C" {
    static environ: *const *const c_char;
}

type InitFn = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char);
type FiniFn = unsafe extern "C" fn();

/// The functions to call, checked to lie in the object's executable
/// segments (a table pointing anywhere else is refused before anything
/// runs).
fn functions(
    obj: &Object,
    single: Option<u64>,
    array: Option<(u64, u64)>,
    init: bool,
) -> Result<Vec<(String, usize)>> {
    let mut out = Vec::new();
    let (single_name, array_name) = if init {
        ("DT_INIT", "DT_INIT_ARRAY")
    } else {
        ("DT_FINI", "DT_FINI_ARRAY")
    };
    if let Some(v) = single {
        if v != 0 {
            out.push((single_name.to_string(), obj.addr(v)));
        }
    }
    if let Some((a, n)) = array {
        for i in 0..n {
            // The array lies in the file-backed part of a segment (checked
            // at parse time) and was relocated: read the final pointers.
            let at = obj.addr(a + 8 * i);
            // SAFETY: [a, a + 8n) was validated to lie inside the mapped,
            // readable file-backed bytes of a PT_LOAD.
            let f = unsafe { (at as *const usize).read_unaligned() };
            if f == 0 || f == usize::MAX {
                continue; // legacy terminators, as glibc's .ctors handling
            }
            out.push((format!("{array_name}[{i}]"), f));
        }
    }
    for (what, f) in &out {
        let ok = obj
            .mapping
            .segments
            .iter()
            .any(|s| s.prot & libc::PROT_EXEC != 0 && s.range.contains(f));
        if !ok {
            return Err(Error::malformed(
                &obj.path,
                format!("{what} points outside the executable segments"),
                Some(f.wrapping_sub(obj.mapping.base) as u64),
            ));
        }
    }
    Ok(out)
}

/// Checks the initialiser and finaliser tables before anything runs.
pub(crate) fn check(obj: &Object) -> Result<()> {
    functions(obj, obj.dynamic.init, obj.tables.init_array, true)?;
    functions(obj, obj.dynamic.fini, obj.tables.fini_array, false)?;
    Ok(())
}

/// The exported function an initialiser or finaliser lies in, for the
/// trace (static constructors usually have no dynamic symbol: `None`).
fn function_at(obj: &Object, addr: usize) -> Option<String> {
    obj.symbol_at(addr)
        .filter(|&(_, _, a)| a == addr)
        .map(|(_, n, _)| String::from_utf8_lossy(n).into_owned())
}

/// Runs the object's initialisers.
pub(crate) fn run_init(obj: &Object, tracer: &Tracer) -> Result<()> {
    let fns = functions(obj, obj.dynamic.init, obj.tables.init_array, true)?;
    let argc = ARGC.load(Ordering::Relaxed) as c_int;
    let argv = ARGV.load(Ordering::Relaxed) as *const *const c_char;
    // SAFETY: reading the C library's `environ` pointer.
    let envp = unsafe { environ };
    for (kind, f) in fns {
        tracer.emit(|| Event::Init {
            path: obj.path.clone(),
            kind: kind.clone(),
            addr: f,
            function: function_at(obj, f),
        });
        // SAFETY: `f` lies in the object's code and the object is fully
        // relocated and protected; initialisers take (argc, argv, envp).
        unsafe {
            let init: InitFn = std::mem::transmute::<usize, InitFn>(f);
            init(argc, argv, envp);
        }
    }
    Ok(())
}

/// Runs the object's finalisers.
pub(crate) fn run_fini(obj: &Object, tracer: &Tracer) {
    let fns = match functions(obj, obj.dynamic.fini, obj.tables.fini_array, false) {
        Ok(f) => f,
        Err(_) => return, // checked before init; cannot fail now
    };
    // DT_FINI_ARRAY backwards, then DT_FINI (which `functions` put first).
    let (single, array): (Vec<_>, Vec<_>) = fns.into_iter().partition(|(k, _)| k == "DT_FINI");
    for (kind, f) in array.into_iter().rev().chain(single) {
        tracer.emit(|| Event::Fini {
            path: obj.path.clone(),
            kind: kind.clone(),
            addr: f,
            function: function_at(obj, f),
        });
        // SAFETY: `f` lies in the object's code; the object is still mapped.
        unsafe {
            let fini: FiniFn = std::mem::transmute::<usize, FiniFn>(f);
            fini();
        }
    }
}
