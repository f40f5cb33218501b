//! `soloader rss --fork`: workers forked without exec from the rss process,
//! sharing its address-space layout, as a pre-fork server's workers do.
//!
//! - every loader works forked: one worker per pid, text shared, dlopen's
//!   RELRO copied privately, `read` sharing nothing, and glibc's dlopen
//!   placing the library at one address in every worker (the inherited
//!   layout);
//! - the headline: with a relocation cache, the warm soloader workers
//!   (1..) pay at most a quarter of dlopen's private bytes for the
//!   library's writable segments (relro, data, bss);
//! - `--call` runs in the forked worker, and a failing worker is reported
//!   by index and leaves no process behind.
//!
//! This process never maps the measured libraries: the `soloader` binary
//! and its workers do (finding a library reads headers only).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::json::{rss_json, run_of, Json};
use common::{exclusive, processes_mentioning, TempDir, SOLOADER};
use soloader::Options;

/// Whether system library `name` is installed; says why a test skips if
/// not.
fn installed(name: &str, test: &str) -> bool {
    let ok = soloader::find_library(name, &Options::new()).is_ok();
    if !ok {
        eprintln!("SKIP {test}: {name} is not installed");
    }
    ok
}

/// The run's summary of segment kind `kind`, if any worker has one.
fn segment<'a>(run: &'a Json, kind: &str) -> Option<&'a Json> {
    run.get("segments")
        .arr()
        .iter()
        .find(|s| s.get("kind").str() == kind)
}

/// One number per worker, in worker order.
fn per_worker(seg: &Json, field: &str) -> Vec<u64> {
    seg.get("per_process")
        .get(field)
        .arr()
        .iter()
        .map(Json::num)
        .collect()
}

/// Each worker's private (anonymous) bytes in the library's writable
/// segments: relro + data + bss.
fn writable_anon(run: &Json) -> Vec<u64> {
    let n = run.get("workers").arr().len();
    let mut sum = vec![0u64; n];
    for kind in ["relro", "data", "bss"] {
        if let Some(seg) = segment(run, kind) {
            for (s, a) in sum.iter_mut().zip(per_worker(seg, "anon")) {
                *s += a;
            }
        }
    }
    sum
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

/// The start of worker `w`'s first region of kind `kind`.
fn region_start(w: &Json, kind: &str) -> Option<u64> {
    w.get("regions")
        .arr()
        .iter()
        .filter(|r| r.get("kind").str() == kind)
        .map(|r| r.get("start").hex())
        .min()
}

#[test]
fn every_loader_works_forked() {
    let _g = exclusive();
    let test = "every_loader_works_forked";
    if !installed("libsqlite3.so.0", test) {
        return;
    }
    let doc = rss_json(&[
        "libsqlite3.so.0",
        "--procs",
        "3",
        "--fork",
        "--loader",
        "all",
    ]);
    assert_eq!(doc.get("fork"), &Json::Bool(true));
    assert_eq!(doc.get("procs").num(), 3);
    let frames = doc.get("access").get("pfn") == &Json::Bool(true);
    let mut pids = BTreeSet::new();
    for loader in ["soloader", "dlopen", "read"] {
        let run = run_of(&doc, loader);
        let workers = run.get("workers").arr();
        assert_eq!(workers.len(), 3, "{loader}: workers");
        for w in workers {
            assert!(
                pids.insert(w.get("pid").num()),
                "{loader}: pid {} seen twice",
                w.get("pid").num()
            );
            assert!(!w.get("regions").arr().is_empty(), "{loader}: no region");
        }
    }
    for loader in ["soloader", "dlopen"] {
        let run = run_of(&doc, loader);
        let text = segment(run, "text").unwrap_or_else(|| panic!("{loader}: no text"));
        assert_eq!(text.get("processes_mapping").num(), 3, "{loader}: text");
        assert_eq!(text.get("anon").num(), 0, "{loader}: text is never copied");
        assert!(
            text.get("shared").num() > 0,
            "{loader}: the workers share text pages"
        );
        if frames {
            assert_eq!(
                text.get("max_copies").num(),
                1,
                "{loader}: one frame per text page"
            );
        }
    }
    // soloader without a cache: its private pages are the ones it wrote.
    let so = run_of(&doc, "soloader");
    assert_eq!(so.get("total").get("written_match"), &Json::Bool(true));
    // glibc's dlopen in a forked child relocates privately, as usual.
    let dl = run_of(&doc, "dlopen");
    let relro = segment(dl, "relro").expect("libsqlite3 has RELRO");
    let size = per_worker(relro, "vsz")[0];
    for (i, anon) in per_worker(relro, "anon").into_iter().enumerate() {
        assert_eq!(anon, size, "dlopen worker {i}: RELRO is a private copy");
    }
    // Forked workers inherit one layout: the same mmap calls in the same
    // address space put the library at the same address in each.
    let starts: BTreeSet<Option<u64>> = dl
        .get("workers")
        .arr()
        .iter()
        .map(|w| region_start(w, "text"))
        .collect();
    assert_eq!(starts.len(), 1, "dlopen's text starts at {starts:x?}");
    // read: nothing shared.
    let t = run_of(&doc, "read").get("total");
    assert_eq!(t.get("shared").num(), 0);
    assert_eq!(t.get("anon").num(), t.get("rss").num());
}

/// The headline: forked workers with a relocation cache against forked
/// workers using glibc's dlopen.
#[test]
fn warm_forked_workers_pay_a_quarter_of_dlopen() {
    let _g = exclusive();
    let test = "warm_forked_workers_pay_a_quarter_of_dlopen";
    if !installed("libsqlite3.so.0", test) {
        return;
    }
    let cache = TempDir::private("rss-fork-cache");
    let dir = cache.path().to_str().expect("a UTF-8 temporary path");
    let so = rss_json(&[
        "libsqlite3.so.0",
        "--procs",
        "4",
        "--fork",
        "--relocation-cache",
        dir,
    ]);
    let dl = rss_json(&[
        "libsqlite3.so.0",
        "--procs",
        "4",
        "--fork",
        "--loader",
        "dlopen",
    ]);
    assert_eq!(so.get("fork"), &Json::Bool(true));
    let so = run_of(&so, "soloader");
    let dl = run_of(&dl, "dlopen");
    // Started one after another: worker 0 wrote the cache, the others
    // mapped it.
    for (i, w) in so.get("workers").arr().iter().enumerate() {
        let notes: Vec<&str> = w.get("notes").arr().iter().map(Json::str).collect();
        let want = if i == 0 {
            "relocation cache miss"
        } else {
            "relocation cache hit"
        };
        assert!(
            notes.iter().any(|n| n.starts_with(want)),
            "worker {i}: {want} expected, notes {notes:?}"
        );
    }
    let so_anon = writable_anon(so);
    let dl_anon = writable_anon(dl);
    let warm = mean(&so_anon[1..]);
    let glibc = mean(&dl_anon);
    eprintln!(
        "libsqlite3, private bytes of relro+data+bss per worker: soloader with a relocation \
         cache {so_anon:?} (warm workers 1..3: mean {warm:.0}), dlopen {dl_anon:?} (mean \
         {glibc:.0}); warm/dlopen = {:.1}%",
        100.0 * warm / glibc
    );
    assert!(glibc > 0.0, "dlopen copies some pages privately");
    assert!(
        warm <= 0.25 * glibc,
        "warm soloader workers: {warm:.0} private bytes, more than 25% of dlopen's {glibc:.0}"
    );
}

#[test]
fn call_runs_in_the_forked_worker() {
    let _g = exclusive();
    let test = "call_runs_in_the_forked_worker";
    if !installed("libz.so.1", test) {
        return;
    }
    let doc = rss_json(&[
        "libz.so.1",
        "--procs",
        "2",
        "--fork",
        "--loader",
        "all",
        "--call",
        "zlibVersion",
    ]);
    assert_eq!(doc.get("fork"), &Json::Bool(true));
    assert_eq!(doc.get("call").get("symbol").str(), "zlibVersion");
    // zlibVersion returns the address of its version string: inside the
    // library as that worker loaded it.
    for loader in ["soloader", "dlopen"] {
        for (i, w) in run_of(&doc, loader).get("workers").arr().iter().enumerate() {
            let Json::Num(v) = w.get("result") else {
                panic!("{loader} worker {i}: no result");
            };
            let addr = *v as u64;
            let inside = w
                .get("regions")
                .arr()
                .iter()
                .any(|r| (r.get("start").hex()..r.get("end").hex()).contains(&addr));
            assert!(
                inside,
                "{loader} worker {i}: zlibVersion returned {addr:#x}, outside the library"
            );
        }
    }
    for w in run_of(&doc, "read").get("workers").arr() {
        assert_eq!(w.get("result"), &Json::Null);
    }
}

#[test]
fn human_output_and_failures_in_fork_mode() {
    let _g = exclusive();
    let test = "human_output_and_failures_in_fork_mode";
    if !installed("libz.so.1", test) {
        return;
    }
    let cache = TempDir::private("rss-fork-human");
    let out = Command::new(SOLOADER)
        .args(["rss", "libz.so.1", "--procs", "3", "--fork"])
        .arg("--relocation-cache")
        .arg(cache.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("forked without exec"), "{text}");
    assert!(
        text.contains("(shared layout), one after another; worker 0 wrote the relocation cache"),
        "{text}"
    );

    // A worker that fails: named by index, every worker gone.
    let dir = TempDir::new("rss-fork-fail");
    let lib = dir.copy_synced(
        &soloader::find_library("libz.so.1", &Options::new()).unwrap(),
        "libz-fork-fail.so",
    );
    let marker = lib.to_string_lossy().into_owned();
    let out = Command::new(SOLOADER)
        .arg("rss")
        .arg(&lib)
        .args(["--procs", "3", "--fork", "--call", "no_such_function"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("worker ")
            && err.contains("no_such_function")
            && err.contains("all workers killed"),
        "{err}"
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&marker).is_empty() {
        assert!(Instant::now() < end, "forked workers left behind");
        std::thread::sleep(Duration::from_millis(20));
    }
}
