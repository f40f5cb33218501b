//! The global scope includes the libraries the host opened `RTLD_GLOBAL`.
//!
//! glibc resolves a new library's imports against the global scope first:
//! the executable and its dependencies, then every library opened with
//! `RTLD_GLOBAL`, in the order opened — and never against a library opened
//! `RTLD_LOCAL` that the new one does not need. This test binary (its own
//! process, unlike the rest of the suite, on purpose) opens test libraries
//! with the system loader to set that up; and it checks that a glibc-family
//! dependency the host does not have yet is loaded by the system loader
//! (between attempts, outside soloader's lock).

mod common;

use std::ffi::CString;
use std::sync::Arc;

use common::{lib, TempDir};
use soloader::{Error, Event, Library, Options, Provider, VecSink};

fn system_open(path: &std::path::Path, flags: i32) -> *mut libc::c_void {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a test library with no constructors, opened by path.
    let h = unsafe { libc::dlopen(c.as_ptr(), flags) };
    assert!(!h.is_null(), "dlopen {}", path.display());
    h
}

#[test]
fn imports_see_the_host_s_rtld_global_libraries_and_only_those() {
    // The same library under another name, opened RTLD_LOCAL: it defines
    // global_provider_value, but it is not in the global scope.
    let dir = TempDir::private("global");
    let local = dir.path().join("liblocalprovider.so");
    std::fs::copy(lib("libglobalprovider.so"), &local).unwrap();
    let _local = system_open(&local, libc::RTLD_NOW | libc::RTLD_LOCAL);
    match Library::open(lib("libglobaluser.so")) {
        Err(Error::UndefinedSymbol { symbol, .. }) => assert_eq!(symbol, "global_provider_value"),
        Err(e) => panic!("expected UndefinedSymbol, got {e}"),
        Ok(_) => panic!("an RTLD_LOCAL library of the host must not provide imports"),
    }

    // Opened RTLD_GLOBAL: now it is found, there and not in the copy.
    let _global = system_open(
        &lib("libglobalprovider.so"),
        libc::RTLD_NOW | libc::RTLD_GLOBAL,
    );
    let sink = VecSink::new();
    let user = Library::open_with(
        lib("libglobaluser.so"),
        &Options::new().trace(Arc::new(sink.clone())),
    )
    .expect("the global scope provides global_provider_value");
    // SAFETY: global_user's real type.
    let f = unsafe { user.get::<extern "C" fn() -> i32>("global_user") }.unwrap();
    assert_eq!(f(), 4243);
    let provider = sink.events().into_iter().find_map(|e| match e {
        Event::Bind {
            symbol, provider, ..
        } if symbol == "global_provider_value" => Some(provider),
        _ => None,
    });
    match provider {
        Some(Provider::Host(name)) => {
            assert!(name.ends_with("/libglobalprovider.so"), "bound to {name}")
        }
        other => panic!("expected a host provider, got {other:?}"),
    }
}

#[test]
fn a_glibc_family_library_the_host_lacks_is_loaded_by_the_system_loader() {
    // SAFETY: RTLD_NOLOAD only asks whether libm is loaded.
    let before = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(before.is_null(), "this test binary must not have libm yet");
    // libarith with its DT_NEEDED (and version need) "libc.so.6" turned
    // into "libm.so.6": libm defines GLIBC_2.2.5 too, and libarith's libc
    // imports are found in the global scope, as with glibc.
    let dir = TempDir::private("needm");
    let path = dir.copy_lib_needing("libarith.so", "libm.so.6");

    let sink = VecSink::new();
    let l = Library::open_with(&path, &Options::new().trace(Arc::new(sink.clone())))
        .expect("loads with libm from the system loader");
    // SAFETY: `int add(int, int)` (testlibs/arith.c).
    let add = unsafe { l.get::<extern "C" fn(i32, i32) -> i32>("add") }.unwrap();
    assert_eq!(add(40, 2), 42);
    let events = sink.events();
    let host: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::HostLibrary {
                name, newly_loaded, ..
            } => Some((name.clone(), *newly_loaded)),
            _ => None,
        })
        .collect();
    assert_eq!(host, [("libm.so.6".to_string(), true)], "{host:?}");
    let loaded = events
        .iter()
        .filter(|e| matches!(e, Event::Loaded { .. }))
        .count();
    assert_eq!(loaded, 1, "one load, however many attempts");
    // Two attempts: the first stopped at libm, which the system loader
    // then loaded with soloader's lock released (a thread running a
    // constructor for the system loader may hold its lock and wait for
    // soloader's); the second went through.
    let attempts = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Search {
                    needed_by: None,
                    ..
                }
            )
        })
        .count();
    assert_eq!(attempts, 2);
    // SAFETY: as above.
    let after = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(!after.is_null(), "the system loader has libm now");
}
