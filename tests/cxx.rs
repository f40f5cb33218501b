//! The C++ test library under soloader: exceptions, libstdc++, static
//! constructors and a thread_local destructor that must run (and find the
//! library still mapped) after the library was closed.

use soloader::Library;
use std::path::PathBuf;

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

fn mapped(path: &std::path::Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let p = path.canonicalize().unwrap();
    maps.lines().any(|l| l.ends_with(p.to_str().unwrap()))
}

/// Both tests load the same library; the second checks when it leaves
/// the address space, so they must not overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn exceptions_strings_and_static_ctors() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = Library::open(lib("libcxx.so")).unwrap();
    // SAFETY: signatures from testlibs/cxx.cc.
    unsafe {
        let ok = l.get::<extern "C" fn() -> i32>("cxx_static_ok").unwrap();
        assert_eq!(ok(), 1, "static constructors ran once");
        let tc = l
            .get::<extern "C" fn(i32) -> i32>("cxx_throw_catch")
            .unwrap();
        assert_eq!(tc(0), -1);
        assert_eq!(
            tc(42),
            "boom 42".len() as i32,
            "exception caught inside the library"
        );
        assert_eq!(tc(7), 6);
        let vs = l
            .get::<extern "C" fn(i32) -> i64>("cxx_vector_sum")
            .unwrap();
        assert_eq!(vs(100), 3 * 5050);
        let fmt = l
            .get::<extern "C" fn(*mut u8, i32, i32) -> i32>("cxx_format")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = fmt(buf.as_mut_ptr(), 64, 255);
        assert_eq!(&buf[..n as usize], b"x=255;hex=ff");
        let once = l.get::<extern "C" fn() -> i32>("cxx_call_once").unwrap();
        assert_eq!(once(), 1);
        assert_eq!(once(), 1);
    }
}

#[test]
fn thread_local_destructor_outlives_close() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = lib("libcxx.so");
    let l = Library::open(&path).unwrap();
    // SAFETY: signature from testlibs/cxx.cc.
    let next = unsafe { *l.get::<extern "C" fn() -> i32>("cxx_tl_next").unwrap() };
    let (used_tx, used_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        assert_eq!(next(), 5, "thread_local initialised in this thread");
        assert_eq!(next(), 6);
        used_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        // Exiting runs the thread_local destructor inside the library.
    });
    used_rx.recv().unwrap();
    // A second thread gets its own copy.
    assert_eq!(std::thread::spawn(move || next()).join().unwrap(), 5);
    l.close().unwrap();
    assert!(
        mapped(&path),
        "the worker's pending thread_local destructor keeps the library mapped"
    );
    go_tx.send(()).unwrap();
    t.join().unwrap();
    // Its destructor ran inside the library at thread exit (no crash), and
    // releasing the last pin unloaded the library.
    assert!(
        !mapped(&path),
        "unmapped once the last thread_local destructor ran"
    );
}
