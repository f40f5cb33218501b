//! Repeated lookups by name: after a few lookups in one symbol table,
//! `Library::get` answers from a name index instead of the ELF hash
//! tables. Whatever answers, the answers are the same: the same addresses,
//! functions that run, IFUNCs resolved, thread-local variables at this
//! thread's copy, hidden versions out of reach, misses still misses, and
//! definitions found in dependencies in breadth-first order.

mod common;

use std::os::raw::c_long;

use soloader::{Error, Library};

/// More than enough lookups for any table to build its index.
const ROUNDS: usize = 64;

/// `f` called `ROUNDS` times gives the same answer every time.
fn same_every_time<T: PartialEq + std::fmt::Debug>(mut f: impl FnMut() -> T) -> T {
    let first = f();
    for round in 1..ROUNDS {
        assert_eq!(f(), first, "lookup {round} differs from the first");
    }
    first
}

#[test]
fn functions_and_data_by_name_before_and_after_the_index() {
    let _g = common::shared();
    let lib = Library::open(common::lib("libarith.so")).expect("load libarith");
    // Interleave names, so the index is built in the middle of the run.
    let add = same_every_time(|| {
        // SAFETY: add's real type.
        let add = unsafe { lib.get::<extern "C" fn(i32, i32) -> i32>("add") }.expect("add");
        // SAFETY: arith_add_ptr's real type (a pointer to a function pointer).
        let ptr = unsafe { lib.get::<*const usize>("arith_add_ptr") }.expect("arith_add_ptr");
        assert_eq!(add(20, 22), 42);
        (add.addr(), ptr.addr())
    });
    // The pointer variable holds add_impl, found by name too.
    // SAFETY: add_impl's real type.
    let add_impl =
        unsafe { lib.get::<extern "C" fn(i32, i32) -> i32>("add_impl") }.expect("add_impl");
    // SAFETY: the variable is an initialised, relocated pointer.
    assert_eq!(unsafe { *(add.1 as *const usize) }, add_impl.addr());
    for name in ["ad", "addd", "add_impl2", "", "Add"] {
        same_every_time(|| {
            // SAFETY: only the error is used.
            match unsafe { lib.get::<*const u8>(name) } {
                Err(Error::SymbolNotFound { symbol, .. }) => symbol,
                other => panic!(
                    "{name:?}: expected SymbolNotFound, got {:?}",
                    other.map(|s| s.addr())
                ),
            }
        });
    }
}

#[test]
fn ifunc_and_tls_take_the_general_path() {
    let _g = common::shared();
    let lib = Library::open(common::lib("libifunc.so")).expect("load libifunc");
    same_every_time(|| {
        // SAFETY: ifunc_answer's real type.
        let f = unsafe { lib.get::<extern "C" fn() -> i32>("ifunc_answer") }.expect("ifunc_answer");
        assert_eq!(f(), 42);
        // The resolver's result, never the resolver itself.
        // SAFETY: ifunc_answer_ptr holds the resolved function.
        let p = unsafe { lib.get::<*const usize>("ifunc_answer_ptr") }.expect("ptr");
        // SAFETY: an initialised, relocated pointer variable.
        assert_eq!(unsafe { *(p.addr() as *const usize) }, f.addr());
        f.addr()
    });

    let tls = Library::open(common::lib("libtls.so")).expect("load libtls");
    // SAFETY: tls_addr's real type.
    let tls_addr =
        unsafe { tls.get::<extern "C" fn() -> *mut c_long>("tls_addr") }.expect("tls_addr");
    let here = same_every_time(|| {
        // SAFETY: a TLS variable's lookup gives this thread's copy.
        unsafe { tls.get::<*mut c_long>("tls_counter") }
            .expect("tls_counter")
            .addr()
    });
    assert_eq!(here, tls_addr() as usize);
    // Another thread sees its own copy, through the index as well.
    let there = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: as above.
            unsafe { tls.get::<*mut c_long>("tls_counter") }
                .expect("tls_counter")
                .addr()
        })
        .join()
        .expect("thread")
    });
    assert_ne!(there, here);
}

#[test]
fn hidden_versions_stay_hidden_and_dependencies_answer_in_order() {
    let _g = common::shared();
    let lib = Library::open(common::lib("libversioned.so")).expect("load libversioned");
    same_every_time(|| {
        // SAFETY: vfunc's real type; unversioned: the default, VERS_2.
        let f = unsafe { lib.get::<extern "C" fn() -> i32>("vfunc") }.expect("vfunc");
        assert_eq!(f(), 2);
        // SAFETY: as above; the hidden VERS_1 only by name.
        let old = unsafe { lib.get_versioned::<extern "C" fn() -> i32>("vfunc", "VERS_1") }
            .expect("vfunc@VERS_1");
        assert_eq!(old(), 1);
        (f.addr(), old.addr())
    });

    // diamond_a needs b and c, both need d: a name only d defines is found
    // through the search list, and each library's own name in itself.
    let a = Library::open(common::lib("libdiamond_a.so")).expect("load diamond_a");
    let sum = same_every_time(|| {
        // SAFETY: the functions' real types.
        unsafe {
            let d = a
                .get::<extern "C" fn() -> i32>("diamond_d")
                .expect("diamond_d via deps");
            let a_fn = a
                .get::<extern "C" fn() -> i32>("diamond_a")
                .expect("diamond_a");
            (d(), a_fn())
        }
    });
    assert_eq!(sum.0, i32::from(b'd'));
    assert!(sum.1 > sum.0);
    // A libc function, through the host's copy of libc.
    // SAFETY: only the address is compared.
    let strlen = same_every_time(|| {
        unsafe { a.get::<*const u8>("strlen") }
            .expect("strlen")
            .addr()
    });
    // SAFETY: the system loader's answer for the same name.
    let host = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"strlen".as_ptr()) } as usize;
    assert_eq!(strlen, host);
}
