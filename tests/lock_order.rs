//! soloader never waits for the system loader's lock while it holds its
//! own.
//!
//! The system loader holds its lock while it runs a library's
//! constructors, and a constructor may call soloader and wait for
//! soloader's lock. If soloader, holding its own, then waited for the
//! system loader's — a system `dlopen` of a glibc-family dependency the
//! process does not have yet — neither thread could go on. This test sets
//! that up exactly:
//!
//! 1. thread B starts a soloader load that needs libm (which this process
//!    does not have) and, from its trace sink (called under soloader's
//!    lock), waits there;
//! 2. thread A has the system loader load libctorhook, whose constructor
//!    (under the system loader's lock) calls back into this test: it lets B
//!    go on, waits a moment for B to reach libm, and loads a library with
//!    soloader itself.
//!
//! A watchdog ends the process if that deadlocks. Its own test binary: it
//! opens test libraries with the system loader, and needs a process
//! without libm.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{lib, TempDir};
use soloader::{Event, Library, Options, TraceSink};

/// B to A: B holds soloader's lock.
static B_HOLDS_LOCK: OnceLock<Mutex<mpsc::Sender<()>>> = OnceLock::new();
/// A to B: A's constructor runs (under the system loader's lock).
static A_IN_CONSTRUCTOR: OnceLock<Mutex<mpsc::Sender<()>>> = OnceLock::new();

/// Called by libctorhook's constructor, under the system loader's lock.
extern "C" fn inside_constructor() {
    A_IN_CONSTRUCTOR
        .get()
        .unwrap()
        .lock()
        .unwrap()
        .send(())
        .unwrap();
    // Let B go on to libm.
    std::thread::sleep(Duration::from_millis(200));
    // Needs soloader's lock.
    let l = Library::open(lib("libarith.so")).expect("load from the constructor");
    // SAFETY: `int add(int, int)` (testlibs/arith.c).
    let add = unsafe { l.get::<extern "C" fn(i32, i32) -> i32>("add") }.unwrap();
    assert_eq!(add(1, 2), 3);
}

/// B's trace sink: at the first file opened (soloader's lock held), says
/// so and waits for A's constructor.
struct Pause {
    until: Mutex<Option<mpsc::Receiver<()>>>,
}

impl TraceSink for Pause {
    fn event(&self, event: &Event) {
        if let Event::Open { .. } = event {
            if let Some(rx) = self.until.lock().unwrap().take() {
                B_HOLDS_LOCK
                    .get()
                    .unwrap()
                    .lock()
                    .unwrap()
                    .send(())
                    .unwrap();
                rx.recv().unwrap();
            }
        }
    }
}

#[test]
fn a_constructor_under_the_system_loader_s_lock_can_always_load() {
    // SAFETY: RTLD_NOLOAD only asks whether libm is loaded.
    let m = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(m.is_null(), "this test binary must not have libm yet");

    // A deadlock would hang both threads: end the process instead.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        eprintln!(
            "lock_order: deadlock: soloader waited for the system loader's lock while holding its own"
        );
        std::process::abort();
    });

    let (b_tx, b_rx) = mpsc::channel();
    let (a_tx, a_rx) = mpsc::channel();
    B_HOLDS_LOCK.set(Mutex::new(b_tx)).unwrap();
    A_IN_CONSTRUCTOR.set(Mutex::new(a_tx)).unwrap();
    let dir = TempDir::private("lockorder");
    let needs_libm = dir.copy_lib_needing("libarith.so", "libm.so.6");
    let b = std::thread::spawn(move || {
        let sink = Arc::new(Pause {
            until: Mutex::new(Some(a_rx)),
        });
        let l = Library::open_with(&needs_libm, &Options::new().trace(sink))
            .expect("load that needs libm");
        // SAFETY: `int add(int, int)` (testlibs/arith.c).
        let add = unsafe { l.get::<extern "C" fn(i32, i32) -> i32>("add") }.unwrap();
        add(2, 2)
    });

    b_rx.recv().unwrap();
    // SAFETY: setting an environment variable before the constructor
    // reads it; B waits in its sink and reads no environment meanwhile.
    unsafe {
        std::env::set_var(
            "SOLOADER_TEST_CTOR_HOOK",
            format!("{:x}", inside_constructor as extern "C" fn() as usize),
        )
    };
    let path = std::ffi::CString::new(lib("libctorhook.so").to_str().unwrap()).unwrap();
    // SAFETY: a test library whose constructor calls inside_constructor.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen libctorhook");
    assert_eq!(b.join().unwrap(), 4);
}
