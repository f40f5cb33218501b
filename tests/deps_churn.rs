//! Open/close churn: thousands of load/use/unload cycles of libraries
//! without `DF_1_NODELETE` that have dependencies, TLS or C++, after which
//! the process must look exactly as before: the same number of
//! `/proc/self/maps` lines, the same open file descriptors, and (within a
//! small allowance for the allocator) the same resident memory.
//!
//! - `libcxx.so`: a C++ exception thrown and caught inside the library
//!   (its `.eh_frame` registered and deregistered each cycle), libstdc++
//!   strings, and the `thread_local` with a destructor used from short-lived
//!   threads: some of them exit *after* the library was closed, so the
//!   destructor's pin is what keeps it mapped, and its release is what
//!   unmaps it.
//! - `libtls.so` / `libtls_desc.so`: the TLS counter, in the main thread and
//!   in short-lived threads; every fresh load must start from the TLS
//!   image's initial value again.
//! - `libdiamond_a.so`: four libraries (a, b, c, d) per cycle, with
//!   cross-library calls.
//!
//! Each library's churn runs in a child process (this test binary
//! re-executed, filtered to the ignored [`churn_child`] test) so that
//! nothing else in the process (other test threads starting and exiting,
//! their stacks and signal stacks) moves the counts while they are taken.
//! [`exclusive`] serialises the tests anyway, so children do not compete
//! for the CPU and the timing stays meaningful.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    canonical, child_selection, child_stdout, exclusive, lib, maps, page_size, result, self_test,
    tagged, INIT_LOG_ENV,
};
use soloader::Library;

const CHILD_ENV: &str = "SOLOADER_DEPS_CHURN_CHILD";
const CHILD_TEST: &str = "churn_child";

/// Cycles per library.
const CYCLES: usize = 10_000;
/// Cycles before the baseline is taken (allocator pools, glibc's thread
/// stack cache, the host library index, lazily bound host symbols).
const WARMUP: usize = 200;
/// Allowed growth of the resident set over [`CYCLES`] cycles.
const RSS_SLACK: usize = 1 << 20;

/// What is measured before and after.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    maps: Vec<String>,
    fds: Vec<String>,
    rss: usize,
}

fn snapshot() -> Snapshot {
    let maps = maps().into_iter().map(|l| l.text).collect();
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| e.ok())
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("{} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm resident");
    Snapshot {
        maps,
        fds,
        rss: pages * page_size(),
    }
}

/// Lines of `/proc/self/maps` that name any of `files`.
fn mapped(files: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = files
        .iter()
        .map(|f| canonical(f).display().to_string())
        .collect();
    maps()
        .into_iter()
        .filter(|l| names.iter().any(|n| l.path.ends_with(n.as_str())))
        .map(|l| l.text)
        .collect()
}

/// Work left for after the handle is closed.
type After = Option<Box<dyn FnOnce()>>;
/// One cycle's use of a loaded library.
type CycleFn = fn(&Library, usize) -> After;

/// One library's churn.
struct Churn {
    key: &'static str,
    /// The library opened each cycle.
    file: &'static str,
    /// Every file the load maps (the library and its dependencies).
    files: &'static [&'static str],
    /// One cycle's use of the loaded library; `i` is the cycle number.
    /// Returns a closure run *after* close (for threads that outlive the
    /// handle), if any.
    cycle: CycleFn,
}

const CHURNS: [Churn; 4] = [
    Churn {
        key: "cxx",
        file: "libcxx.so",
        files: &["libcxx.so"],
        cycle: cxx_cycle,
    },
    Churn {
        key: "tls",
        file: "libtls.so",
        files: &["libtls.so"],
        cycle: tls_cycle,
    },
    Churn {
        key: "tls_desc",
        file: "libtls_desc.so",
        files: &["libtls_desc.so"],
        cycle: tls_cycle,
    },
    Churn {
        key: "diamond",
        file: "libdiamond_a.so",
        files: &[
            "libdiamond_a.so",
            "libdiamond_b.so",
            "libdiamond_c.so",
            "libdiamond_d.so",
        ],
        cycle: diamond_cycle,
    },
];

fn cxx_cycle(l: &Library, i: usize) -> After {
    // SAFETY: signatures from testlibs/cxx.cc.
    let (throw_catch, tl_next, format) = unsafe {
        (
            *l.get::<extern "C" fn(i32) -> i32>("cxx_throw_catch")
                .expect("cxx_throw_catch"),
            *l.get::<extern "C" fn() -> i32>("cxx_tl_next")
                .expect("cxx_tl_next"),
            *l.get::<extern "C" fn(*mut u8, i32, i32) -> i32>("cxx_format")
                .expect("cxx_format"),
        )
    };
    let n = (i % 1000) as i32 + 1;
    assert_eq!(
        throw_catch(n),
        format!("boom {n}").len() as i32,
        "cycle {i}: exception caught inside the library"
    );
    let mut buf = [0u8; 32];
    let len = format(buf.as_mut_ptr(), buf.len() as i32, 255);
    assert_eq!(&buf[..len as usize], b"x=255;hex=ff", "cycle {i}");
    match i % 20 {
        // A thread that uses the thread_local and exits while the library
        // is open.
        0 => {
            let got = std::thread::spawn(move || (tl_next(), tl_next()))
                .join()
                .expect("thread");
            assert_eq!(got, (5, 6), "cycle {i}: a fresh thread_local per thread");
            None
        }
        // A thread that is still alive when the handle is closed: its
        // thread_local destructor runs after close, from library code
        // that must still be mapped, and then the library goes.
        10 => {
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let (ready_tx, ready_rx) = mpsc::channel::<i32>();
            let t = std::thread::spawn(move || {
                ready_tx.send(tl_next()).expect("send");
                go_rx.recv().expect("recv");
            });
            assert_eq!(ready_rx.recv().expect("ready"), 5, "cycle {i}");
            Some(Box::new(move || {
                go_tx.send(()).expect("go");
                t.join().expect("thread");
            }))
        }
        _ => None,
    }
}

fn tls_cycle(l: &Library, i: usize) -> After {
    // SAFETY: signatures from testlibs/tls.c.
    let (inc, buf_sum) = unsafe {
        (
            *l.get::<extern "C" fn(i64) -> i64>("tls_increment")
                .expect("tls_increment"),
            *l.get::<extern "C" fn(i32) -> i64>("tls_buf_sum_then_fill")
                .expect("tls_buf_sum_then_fill"),
        )
    };
    // Every load starts from the TLS image again: 100 and a zeroed buffer.
    assert_eq!(inc(1), 101, "cycle {i}: tls_counter of a fresh load");
    assert_eq!(inc(2), 103, "cycle {i}");
    assert_eq!(buf_sum(1), 0, "cycle {i}: .tbss of a fresh load");
    assert_eq!(buf_sum(0), 64, "cycle {i}");
    if i.is_multiple_of(20) {
        let got = std::thread::spawn(move || (inc(5), buf_sum(2)))
            .join()
            .expect("thread");
        assert_eq!(got, (105, 0), "cycle {i}: a fresh thread's TLS");
        assert_eq!(inc(0), 103, "cycle {i}: the main thread's TLS untouched");
    }
    None
}

fn diamond_cycle(l: &Library, i: usize) -> After {
    // SAFETY: signatures from testlibs/diamond.c.
    unsafe {
        let a = l
            .get::<extern "C" fn() -> i32>("diamond_a")
            .expect("diamond_a");
        assert_eq!(a(), 494, "cycle {i}");
        // Reached through a's breadth-first scope, defined in d.
        let d = l
            .get::<extern "C" fn() -> i32>("diamond_d")
            .expect("diamond_d");
        assert_eq!(d(), 100, "cycle {i}");
    }
    None
}

/// Runs in the child only: the churn named by [`CHILD_ENV`], then prints
/// `RESULT:` lines for the parent.
#[test]
#[ignore = "the churn itself; the other tests run it in a child process"]
fn churn_child() {
    let Some(c) = child_selection(CHILD_ENV, &CHURNS, |c| c.key) else {
        return;
    };
    // The initialisation log of libdiamond_* must stay off.
    assert!(std::env::var_os(INIT_LOG_ENV).is_none());
    let path = lib(c.file);
    let files: Vec<PathBuf> = c.files.iter().map(|f| lib(f)).collect();
    let run = |range: std::ops::Range<usize>| {
        for i in range {
            let l = Library::open(&path).unwrap_or_else(|e| panic!("cycle {i}: open: {e}"));
            let after = (c.cycle)(&l, i);
            l.close()
                .unwrap_or_else(|e| panic!("cycle {i}: close: {e}"));
            if let Some(f) = after {
                // A thread still holds the library's thread_local: closed,
                // but pinned and mapped until the thread has exited.
                assert!(
                    !mapped(&files).is_empty(),
                    "cycle {i}: unmapped while a thread_local destructor is pending"
                );
                f();
                let left = mapped(&files);
                assert!(
                    left.is_empty(),
                    "cycle {i}: still mapped after the last thread_local destructor ran:\n{}",
                    left.join("\n")
                );
            }
            if i.is_multiple_of(1000) {
                let left = mapped(&files);
                assert!(
                    left.is_empty(),
                    "cycle {i}: still mapped after close:\n{}",
                    left.join("\n")
                );
            }
        }
    };
    run(0..WARMUP);
    let before = snapshot();
    let start = Instant::now();
    run(WARMUP..WARMUP + CYCLES);
    let elapsed = start.elapsed();
    let after = snapshot();
    let left = mapped(&files);
    assert!(
        left.is_empty(),
        "still mapped at the end:\n{}",
        left.join("\n")
    );
    result(format_args!(
        "maps={} {}",
        before.maps.len(),
        after.maps.len()
    ));
    result(format_args!("fds={} {}", before.fds.len(), after.fds.len()));
    result(format_args!("rss={} {}", before.rss, after.rss));
    result(format_args!("ms={}", elapsed.as_millis()));
    if before.maps != after.maps {
        println!(
            "\nDIFF:maps before:\n{}\nafter:\n{}",
            before.maps.join("\n"),
            after.maps.join("\n")
        );
    }
    if before.fds != after.fds {
        println!(
            "\nDIFF:fds before:\n{}\nafter:\n{}",
            before.fds.join("\n"),
            after.fds.join("\n")
        );
    }
}

/// Runs the churn `key` in a child and checks what it measured.
fn churn(key: &str) {
    let mut cmd = self_test(CHILD_TEST);
    cmd.env(CHILD_ENV, key).env_remove(INIT_LOG_ENV);
    let start = Instant::now();
    let stdout = child_stdout(&mut cmd, &format!("churn child {key}"));
    let wall = start.elapsed();
    let field = |name: &str| -> Vec<usize> {
        tagged(&stdout, &format!("RESULT:{name}="))
            .split(' ')
            .map(|n| n.parse().expect("number"))
            .collect()
    };
    let (maps, fds, rss, ms) = (field("maps"), field("fds"), field("rss"), field("ms"));
    println!(
        "{key}: {CYCLES} cycles in {} ms (child wall {wall:?}); maps {maps:?}, fds {fds:?}, rss {rss:?}",
        ms[0]
    );
    assert_eq!(
        maps[0], maps[1],
        "{key}: /proc/self/maps line count changed over {CYCLES} cycles:\n{stdout}"
    );
    assert_eq!(
        fds[0], fds[1],
        "{key}: open file descriptors changed over {CYCLES} cycles:\n{stdout}"
    );
    assert!(
        rss[1] < rss[0] + RSS_SLACK,
        "{key}: resident set grew by {} KiB over {CYCLES} cycles (allowed {} KiB)",
        (rss[1] - rss[0]) / 1024,
        RSS_SLACK / 1024
    );
    assert!(
        wall < Duration::from_secs(60),
        "{key}: {CYCLES} cycles took {wall:?}"
    );
}

#[test]
fn churn_cxx_with_thread_locals() {
    let _g = exclusive();
    churn("cxx");
}

#[test]
fn churn_tls() {
    let _g = exclusive();
    churn("tls");
}

#[test]
fn churn_tls_descriptors() {
    let _g = exclusive();
    churn("tls_desc");
}

#[test]
fn churn_diamond_with_dependencies() {
    let _g = exclusive();
    churn("diamond");
}
