//! The global scope includes the libraries the host opened `RTLD_GLOBAL`.
//!
//! glibc resolves a new library's imports against the global scope first:
//! the executable and its dependencies, then every library opened with
//! `RTLD_GLOBAL`, in the order opened — and never against a library opened
//! `RTLD_LOCAL` that the new one does not need. This test binary (its own
//! process, unlike the rest of the suite, on purpose) opens test libraries
//! with the system loader to set that up.

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
