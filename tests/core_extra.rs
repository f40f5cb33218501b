//! Core loader paths the other suites do not reach: a library with only a
//! SysV hash table, packed relative relocations (DT_RELR), and a
//! constructor that calls back into the loader while it is loading.

use soloader::{Event, Library, Options, VecSink};
use std::path::PathBuf;
use std::sync::Arc;

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

#[test]
fn sysv_hash_only() {
    let l = Library::open(lib("libsysvhash.so")).unwrap();
    // SAFETY: signatures from testlibs/sysvhash.c.
    unsafe {
        assert_eq!(
            l.get::<extern "C" fn() -> i32>("sysv_answer").unwrap()(),
            4242
        );
        assert_eq!(
            l.get::<extern "C" fn(i32) -> i32>("sysv_twice").unwrap()(21),
            42
        );
        assert!(l.get::<extern "C" fn() -> i32>("sysv_missing").is_err());
    }
    let info = soloader::inspect::inspect(lib("libsysvhash.so")).unwrap();
    assert_eq!(info.hash, "sysv", "the library really has no GNU hash");
}

#[test]
fn packed_relative_relocations() {
    let sink = VecSink::new();
    let l = Library::open_with(
        lib("librelr.so"),
        &Options::new().trace(Arc::new(sink.clone())),
    )
    .unwrap();
    // SAFETY: signature from testlibs/relr.c.
    let ok = unsafe { l.get::<extern "C" fn() -> i32>("relr_ok").unwrap() };
    assert_eq!(ok(), 1, "every packed relative relocation applied");
    let relr = sink.events().into_iter().find_map(|e| match e {
        Event::Relocations { kind, count, .. } if kind.contains("RELR") => Some(count),
        _ => None,
    });
    assert!(
        relr.is_some_and(|c| c >= 64),
        "RELR relocations traced: {relr:?}"
    );
}

#[test]
fn constructor_calls_back_into_the_loader() {
    let arith_mapped = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .any(|l| l.ends_with("/libarith.so"))
    };
    let l = Library::open(lib("libreenter.so")).unwrap();
    // SAFETY: signature from testlibs/reenter.c.
    let r = unsafe { l.get::<extern "C" fn() -> i32>("reenter_result").unwrap() };
    assert_eq!(
        r(),
        42,
        "the constructor's nested dlopen/dlsym through soloader worked"
    );
    assert!(
        arith_mapped(),
        "the nested load is soloader's (mapped from the file)"
    );
    drop(l);
}

#[test]
fn init_and_fini_events_name_their_functions() {
    let sink = VecSink::new();
    let l = Library::open_with(
        lib("libinit.so"),
        &Options::new().trace(Arc::new(sink.clone())),
    )
    .unwrap();
    l.close().unwrap();
    let events = sink.events();
    let init = events.iter().find_map(|e| match e {
        Event::Init { kind, function, .. } if kind == "DT_INIT" => Some(function.clone()),
        _ => None,
    });
    let fini = events.iter().find_map(|e| match e {
        Event::Fini { kind, function, .. } if kind == "DT_FINI" => Some(function.clone()),
        _ => None,
    });
    assert_eq!(
        init,
        Some(Some("init_legacy".to_string())),
        "found by soloader's address lookup"
    );
    assert_eq!(fini, Some(Some("fini_legacy".to_string())));
}
