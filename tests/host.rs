//! The host process and soloader: libraries the host already has are
//! bound to the host's copy (the index notices libraries the system loader
//! added after it was built), and the loader's lock survives fork.

use soloader::{Library, Options, VecSink};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

/// The two tests must not overlap: the first calls the system loader's
/// dlopen directly, and a fork while another thread is inside glibc's
/// loader leaves glibc's own lock held in the child (POSIX allows only
/// async-signal-safe calls there). What the fork test checks is soloader's
/// lock, not glibc's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn binds_to_a_library_the_host_loaded_later() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Build the host index first, with a load that does not involve dup_b.
    drop(Library::open(lib("libarith.so")).unwrap());
    // Now the system loader brings in libdup_b.so.
    let c = CString::new(lib("libdup_b.so").to_str().unwrap()).unwrap();
    // SAFETY: loading a test library with the system loader.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null());
    let sink = VecSink::new();
    let l = Library::open_with(
        lib("libdup_ba.so"),
        &Options::new().trace(Arc::new(sink.clone())),
    )
    .unwrap();
    let deps = l.dependencies();
    let b = deps.iter().find(|(n, _, _)| n == "libdup_b.so").unwrap();
    assert!(b.2, "libdup_b.so is bound to the host's copy: {deps:?}");
    let a = deps.iter().find(|(n, _, _)| n == "libdup_a.so").unwrap();
    assert!(!a.2, "libdup_a.so is loaded by soloader: {deps:?}");
    // who() finds which() in the first dependency, b: the host's copy.
    // SAFETY: signature from testlibs/dupuser.c.
    let who = unsafe { l.get::<extern "C" fn() -> i32>("who").unwrap() };
    assert_eq!(who(), b'b' as i32);
    let host_which = sink.events().into_iter().any(|e| match e {
        soloader::Event::Bind {
            symbol,
            provider: soloader::Provider::Host(p),
            ..
        } => symbol == "which" && p.ends_with("libdup_b.so"),
        _ => false,
    });
    assert!(host_which, "which() was bound to the host's libdup_b");
    drop(l);
    // SAFETY: closing our own handle.
    unsafe { libc::dlclose(h) };
}

#[test]
fn fork_while_other_threads_load() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let loader = std::thread::spawn(move || {
        let mut n = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let l = Library::open(lib("libdiamond_a.so")).unwrap();
            // SAFETY: signature from testlibs/diamond.c.
            let a = unsafe { l.get::<extern "C" fn() -> i32>("diamond_a").unwrap() };
            assert_eq!(a(), 494);
            n += 1;
        }
        n
    });
    for _ in 0..20 {
        // SAFETY: the child only loads with soloader and exits; fork is
        // safe with the loader's atfork handlers (what this test checks).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = Library::open(lib("libarith.so"))
                .ok()
                .and_then(|l| {
                    // SAFETY: signature from testlibs/arith.c.
                    let add = unsafe { l.get::<extern "C" fn(i32, i32) -> i32>("add").ok()? };
                    Some(add(2, 3) == 5)
                })
                .unwrap_or(false);
            // SAFETY: leaving the child without running the parent's
            // test-harness exit machinery.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child, with a timeout by alarm-free
        // polling below.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child deadlocked after fork"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: {status:#x}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(loader.join().unwrap() > 0);
}
