//! Concurrency and endurance.
//!
//! - 8 threads open, call and close libraries that share dependencies (the
//!   diamond `a → b, c → d`; `dup_ab` and `dup_ba`, which share `dup_a` and
//!   `dup_b` in opposite orders), in varying orders, some handles held
//!   across iterations, with `check` of the same libraries in between: no
//!   crash, no deadlock (a time limit), every call answering right, and at
//!   the end reference counts consistent — nothing of them mapped once all
//!   handles are closed, and the next open is a fresh load of every file.
//! - 10,000 open/close cycles of one library leave the mappings, the file
//!   descriptors and the resident set flat.

mod common;
mod hostile_elf;

use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{maps_of, opened, private_copies, traced, TempDir};
use soloader::{Library, Options};

/// Both tests assert on process-wide state: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const THREADS: usize = 8;
const ITERATIONS: usize = 500;
const DEADLINE: Duration = Duration::from_secs(120);

const SHARED: &[&str] = &[
    "libdiamond_a.so",
    "libdiamond_b.so",
    "libdiamond_c.so",
    "libdiamond_d.so",
    "libdup_a.so",
    "libdup_b.so",
    "libdup_ab.so",
    "libdup_ba.so",
];

fn open(path: &Path) -> Library {
    Library::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Calls `int name(void)` in `l`.
fn call(l: &Library, name: &str) -> c_int {
    // SAFETY: every function called here is `int f(void)`.
    let f = unsafe { l.get::<extern "C" fn() -> c_int>(name) }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    f()
}

/// One thread's work.
fn worker(dir: &Path, t: usize) {
    let p = |n: &str| dir.join(n);
    let mut held: Vec<Library> = Vec::new();
    for i in 0..ITERATIONS {
        match (t + i) % 5 {
            0 => {
                let a = open(&p("libdiamond_a.so"));
                assert_eq!(call(&a, "diamond_a"), 494);
                assert_eq!(call(&a, "diamond_d"), 100, "d through a's scope");
            }
            1 => {
                let b = open(&p("libdiamond_b.so"));
                let c = open(&p("libdiamond_c.so"));
                assert_eq!(call(&b, "diamond_b"), 198);
                assert_eq!(call(&c, "diamond_c"), 199);
                if i % 2 == 0 {
                    drop(b);
                    drop(c);
                } else {
                    c.close().unwrap();
                    b.close().unwrap();
                }
            }
            2 => {
                let ab = open(&p("libdup_ab.so"));
                let ba = open(&p("libdup_ba.so"));
                // Each binds `which` to its first dependency.
                assert_eq!(call(&ab, "who"), 'a' as c_int);
                assert_eq!(call(&ba, "who"), 'b' as c_int);
                if i % 2 == 0 {
                    drop(ab);
                    drop(ba);
                } else {
                    drop(ba);
                    drop(ab);
                }
            }
            3 => {
                let d = open(&p("libdiamond_d.so"));
                let a = open(&p("libdiamond_a.so"));
                assert_eq!(call(&d, "diamond_d"), 100);
                assert_eq!(call(&a, "diamond_a_self"), 'a' as c_int);
                if i % 3 == 0 {
                    held.push(a);
                    drop(d);
                } else {
                    drop(d);
                    drop(a);
                }
            }
            _ => {
                // A check of libraries others have open (or not) at the
                // same moment: it must neither disturb them nor keep them.
                for n in ["libdiamond_a.so", "libdup_ba.so"] {
                    soloader::check(p(n), &Options::new())
                        .unwrap_or_else(|e| panic!("check {n}: {e}"));
                }
            }
        }
        // Handles held for a while, released out of order.
        if held.len() > 3 {
            let k = (t + i) % held.len();
            drop(held.swap_remove(k));
        }
    }
    drop(held);
}

#[test]
fn eight_threads_share_dependencies_without_deadlock_or_leak() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = private_copies(SHARED);
    let files: Vec<PathBuf> = SHARED.iter().map(|n| dir.join(n)).collect();
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel();
    for t in 0..THREADS {
        let (tx, d) = (tx.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| worker(&d, t));
            let _ = tx.send((
                t,
                r.map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                }),
            ));
        });
    }
    drop(tx);
    for _ in 0..THREADS {
        let left = DEADLINE.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok((t, Ok(()))) => eprintln!("thread {t} done after {:?}", t0.elapsed()),
            Ok((t, Err(msg))) => panic!("thread {t} failed: {msg}"),
            Err(_) => panic!("deadlock: threads still running after {DEADLINE:?}"),
        }
    }
    eprintln!(
        "{THREADS} threads x {ITERATIONS} iterations in {:?}",
        t0.elapsed()
    );
    // Every handle is closed: nothing of them stays.
    for f in &files {
        let m = maps_of(f);
        assert!(m.is_empty(), "{} still mapped: {m:?}", f.display());
    }
    // And the registry agrees: the next open loads every file afresh.
    let (opts, sink) = traced();
    let a = Library::open_with(dir.join("libdiamond_a.so"), &opts).unwrap();
    assert_eq!(call(&a, "diamond_a"), 494);
    assert_eq!(
        opened(&sink.events()).len(),
        4,
        "a fresh load of a, b, c, d"
    );
    drop(a);
    for f in &files {
        assert!(maps_of(f).is_empty(), "{} still mapped", f.display());
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn maps_count() -> usize {
    hostile_elf::maps_lines().len()
}

#[test]
fn ten_thousand_open_close_cycles_stay_flat() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const CYCLES: usize = 10_000;
    let dir: TempDir = private_copies(&["libarith.so"]);
    let path = dir.join("libarith.so");
    let cycle = |n: usize| {
        for i in 0..n {
            let l = open(&path);
            // SAFETY: int add(int, int).
            let add = unsafe { l.get::<extern "C" fn(c_int, c_int) -> c_int>("add") }.unwrap();
            assert_eq!(add(i as c_int, 1), i as c_int + 1);
            l.close().unwrap();
        }
    };
    // Warm up: allocator pools, the host index, lazily built tables.
    cycle(200);
    let (maps0, fds0, rss0) = (maps_count(), hostile_elf::fd_count(), rss_kib());
    let t0 = Instant::now();
    cycle(CYCLES);
    let took = t0.elapsed();
    let (maps1, fds1, rss1) = (maps_count(), hostile_elf::fd_count(), rss_kib());
    eprintln!(
        "{CYCLES} open/close cycles in {took:?}: maps {maps0} -> {maps1} lines, \
         fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB"
    );
    assert!(maps_of(&path).is_empty(), "still mapped");
    assert_eq!(fds1, fds0, "file descriptors leaked");
    // The heap may split or merge a mapping; a leak of one per cycle
    // would be thousands.
    assert!(maps1 <= maps0 + 2, "mappings grew: {maps0} -> {maps1}");
    // A leak of 100 bytes a cycle would be 1 MiB.
    assert!(
        rss1 <= rss0 + 1024,
        "resident set grew by {} KiB over {CYCLES} cycles",
        rss1.saturating_sub(rss0)
    );
}
