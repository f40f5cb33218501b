//! `soloader::mem` and `soloader rss`, end to end, on real worker
//! processes (the `soloader` binary's hidden `rss-worker` mode).
//!
//! - every resident file page of libbigtext's text is one physical frame
//!   across four soloader workers (root: frame numbers);
//! - each worker's private (anonymous) pages are exactly the pages the
//!   load wrote: relocation, the RELRO pages, the zeroed `.bss` tail;
//! - `read` shares nothing;
//! - soloader's private bytes per process are no larger than glibc's
//!   `dlopen` for libz and libsqlite3 (through `soloader rss --json`);
//! - the numbers agree with an independent reading of `smaps`;
//! - workers are cleaned up on SIGINT and when they fail.
//!
//! The test process never maps a library its workers measure: libbigtext
//! is measured through private copies (a copy is another file), and the
//! expected written pages come from loading yet another copy here.
//!
//! Tests measure map counts: each takes [`exclusive`], one at a time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::json::{rss_json, run_of, Json};
use common::rss_workers::{WorkerReport, Workers};
use common::{exclusive, processes_mentioning, TempDir, SOLOADER};
use soloader::mem::{self, Measurement, SegmentKind};
use soloader::{Event, Library, Options, VecSink};

const WORKERS: usize = 4;
/// bigtext_run(1024) calls every one of the 1024 functions.
const BIGTEXT_CALL: [&str; 2] = ["bigtext_run", "1024"];

fn bigtext() -> PathBuf {
    common::lib("libbigtext.so")
}

/// Whether frame numbers are readable; prints why a test skips if not.
fn frames_or_skip(ms: &[Measurement], test: &str) -> bool {
    let ok = ms.iter().all(|m| m.access.pfn);
    if !ok {
        println!(
            "SKIP {test}: frame numbers read as 0 (needs CAP_SYS_ADMIN, i.e. root); \
             the frame-level assertions cannot be made"
        );
    }
    ok
}

fn page() -> usize {
    mem::page_size()
}

fn span_start(r: &WorkerReport) -> usize {
    r.regions.iter().map(|x| x.range.start).min().unwrap()
}

#[test]
fn text_is_one_physical_frame_per_file_page_across_workers() {
    let _g = exclusive();
    let dir = TempDir::new("text");
    let lib = dir.copy_synced(&bigtext(), "libbigtext.so");
    let w = Workers::start("soloader", &lib, &BIGTEXT_CALL, None, WORKERS);
    let results: BTreeSet<Option<i64>> = w.reports.iter().map(|r| r.result).collect();
    assert_eq!(results.len(), 1, "every worker computes the same checksum");
    let ms = w.measure();
    if !frames_or_skip(
        &ms,
        "text_is_one_physical_frame_per_file_page_across_workers",
    ) {
        return;
    }
    // file page -> frames, over the union of all workers.
    let mut frames: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut text_pages = 0usize;
    for m in &ms {
        for p in m.pages.iter().filter(|p| p.kind == SegmentKind::Text) {
            text_pages += 1;
            if !p.resident() {
                continue;
            }
            assert!(
                p.info.file_or_shared_anon(),
                "text page {:#x} of pid {} is not a file page",
                p.info.addr,
                m.pid
            );
            let pfn = p.info.pfn().expect("a resident page has a frame as root");
            frames
                .entry(p.file_page.expect("text has file offsets"))
                .or_default()
                .insert(pfn);
        }
    }
    let text_bytes = text_pages / WORKERS * page();
    assert!(
        text_bytes > 300 * 1024,
        "libbigtext text is {text_bytes} bytes"
    );
    // bigtext_run(1024) executes every function: all of the text is
    // resident in the union (each worker's fault-around windows differ).
    assert_eq!(
        frames.len() * page(),
        text_bytes,
        "resident text file pages"
    );
    for (off, f) in &frames {
        assert_eq!(f.len(), 1, "file page {off:#x} has frames {f:x?}");
    }
    let all: BTreeSet<u64> = frames.values().flatten().copied().collect();
    assert_eq!(
        all.len(),
        frames.len(),
        "one frame per file page, none reused"
    );
    let s = mem::summarize(&ms);
    let text = &s.kinds[&SegmentKind::Text];
    assert_eq!(text.max_copies, Some(1));
    assert_eq!(text.frames, Some(frames.len() as u64));
    assert_eq!(text.sum.anon, 0);
}

/// The pages a soloader load of `lib` writes, relative to its span start,
/// from the trace of a load in this process (of a copy of the file), plus
/// every RELRO page.
fn expected_written(lib: &Path) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let sink = VecSink::new();
    let l = Library::open_with(lib, &Options::new().trace(Arc::new(sink.clone())))
        .expect("loading a copy of libbigtext");
    let span = l.span();
    let mut written = BTreeSet::new();
    for e in sink.events() {
        match e {
            Event::Relocations { pages, .. } => {
                written.extend(pages.into_iter().filter(|p| span.contains(p)));
            }
            Event::BssZero { addr, len } if len > 0 && span.contains(&addr) => {
                let mut p = addr / page() * page();
                while p < addr + len {
                    written.insert(p);
                    p += page();
                }
            }
            _ => {}
        }
    }
    let mut relro = BTreeSet::new();
    for s in l.segments() {
        if let Some(r) = &s.relro {
            let mut p = r.start / page() * page();
            while p < r.end {
                relro.insert(p);
                p += page();
            }
        }
    }
    let rel = |set: BTreeSet<usize>| set.into_iter().map(|p| p - span.start).collect();
    (rel(written), rel(relro))
}

#[test]
fn private_pages_are_exactly_the_pages_the_load_wrote() {
    let _g = exclusive();
    let dir = TempDir::new("private");
    let lib = dir.copy_synced(&bigtext(), "libbigtext.so");
    let probe = dir.copy_synced(&bigtext(), "libbigtext-probe.so");
    let (written, relro) = expected_written(&probe);
    assert!(
        relro.len() >= 6,
        "libbigtext has ~7 RELRO pages, got {relro:x?}"
    );
    let expected: BTreeSet<usize> = written.union(&relro).copied().collect();
    println!(
        "expected private pages (offsets): {expected:x?} ({} RELRO)",
        relro.len()
    );

    let w = Workers::start("soloader", &lib, &BIGTEXT_CALL, None, WORKERS);
    let ms = w.measure();
    for (r, m) in w.reports.iter().zip(&ms) {
        let base = span_start(r);
        let anon: BTreeSet<usize> = m.anonymous_pages(None).iter().map(|a| a - base).collect();
        assert_eq!(anon, expected, "pid {}: anonymous pages", m.pid);
        let reported: BTreeSet<usize> = r.written.iter().map(|a| a - base).collect();
        assert_eq!(reported, written, "pid {}: the worker's own trace", m.pid);
        // The same, in smaps terms, for the library's VMAs.
        let bytes = (expected.len() * page()) as u64;
        assert_eq!(m.total.anon, bytes);
        assert_eq!(
            m.total.smaps.anonymous, bytes,
            "pid {}: smaps Anonymous",
            m.pid
        );
        assert_eq!(
            m.total.smaps.private_dirty, bytes,
            "pid {}: smaps Private_Dirty",
            m.pid
        );
        assert_eq!(m.total.smaps.shared_dirty, 0);
    }
}

#[test]
fn read_shares_nothing() {
    let _g = exclusive();
    let dir = TempDir::new("read");
    let lib = dir.copy_synced(&bigtext(), "libbigtext.so");
    let size = fs::metadata(&lib).unwrap().len() as usize;
    let w = Workers::start("read", &lib, &[], None, WORKERS);
    let ms = w.measure();
    let whole = size.div_ceil(page()) as u64 * page() as u64;
    for m in &ms {
        assert_eq!(
            m.total.rss, whole,
            "pid {}: the whole file is resident",
            m.pid
        );
        assert_eq!(m.total.anon, whole, "pid {}: all of it anonymous", m.pid);
        assert_eq!(m.total.private, whole, "pid {}: all of it private", m.pid);
        assert_eq!(m.total.file, 0);
        for p in &m.pages {
            assert!(p.resident() && p.anonymous() && p.info.exclusive());
        }
    }
    let s = mem::summarize(&ms);
    assert_eq!(s.total.sum.rss, whole * WORKERS as u64);
    assert_eq!(
        s.total.sum.pss.round() as u64,
        s.total.sum.rss,
        "Σ PSS = Σ RSS"
    );
    if frames_or_skip(&ms, "read_shares_nothing (frames)") {
        assert_eq!(s.total.frames, Some(whole / page() as u64 * WORKERS as u64));
        assert_eq!(s.total.max_copies, Some(WORKERS as u64));
    }
}

// ---------------------------------------------------------------------------
// `soloader rss --json`.

fn max_private(run: &Json) -> f64 {
    run.get("total")
        .get("per_process")
        .get("anon")
        .arr()
        .iter()
        .map(Json::f64)
        .fold(0.0, f64::max)
}

fn soloader_no_worse_than_dlopen(lib: &str, call: &[&str]) {
    let mut args = vec![lib, "--procs", "4", "--loader", "all"];
    if !call.is_empty() {
        args.push("--call");
        args.extend_from_slice(call);
    }
    let doc = rss_json(&args);
    assert_eq!(doc.get("schema").str(), "soloader-rss/1");
    let so = run_of(&doc, "soloader");
    let dl = run_of(&doc, "dlopen");
    let rd = run_of(&doc, "read");
    let (a, b) = (max_private(so), max_private(dl));
    println!("{lib}: private per process: soloader {a} bytes, dlopen {b} bytes");
    assert!(a > 0.0, "relocation makes at least one private page");
    assert!(
        a <= b,
        "{lib}: soloader {a} > dlopen {b} private bytes per process"
    );
    // The same number, read per segment, adds up.
    let per_kind: f64 = so
        .get("segments")
        .arr()
        .iter()
        .map(|s| s.get("anon").f64())
        .sum();
    assert_eq!(per_kind, so.get("total").get("anon").f64());
    // soloader's private pages are exactly what its load wrote (no call
    // that writes the library's data).
    if call.is_empty() {
        assert_eq!(so.get("total").get("written_match"), &Json::Bool(true));
    }
    // read: nothing shared.
    let t = rd.get("total");
    assert_eq!(t.get("shared").f64(), 0.0);
    assert_eq!(t.get("anon").f64(), t.get("rss").f64());
    if doc.get("access").get("pfn") == &Json::Bool(true) {
        let text = so
            .get("segments")
            .arr()
            .iter()
            .find(|s| s.get("kind").str() == "text")
            .expect("a text segment");
        assert_eq!(
            text.get("max_copies").f64(),
            1.0,
            "{lib}: soloader's text is one copy"
        );
    } else {
        println!("SKIP frame checks for {lib}: frame numbers read as 0 (not root)");
    }
}

#[test]
fn libz_soloader_private_no_larger_than_dlopen() {
    let _g = exclusive();
    soloader_no_worse_than_dlopen("libz.so.1", &[]);
}

#[test]
fn libsqlite3_soloader_private_no_larger_than_dlopen() {
    let _g = exclusive();
    soloader_no_worse_than_dlopen("libsqlite3.so.0", &[]);
    soloader_no_worse_than_dlopen("libsqlite3.so.0", &["sqlite3_initialize"]);
}

/// An independent reading of `/proc/PID/smaps`: Σ `Rss`, `Pss`,
/// `Private_*`, `Anonymous` over the VMAs inside `span`, in bytes.
fn independent_smaps(pid: i32, span: std::ops::Range<usize>) -> BTreeMap<String, u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a >= span.start && b <= span.end;
                if inside {
                    *sums.entry("vmas".into()).or_default() += 1;
                }
                continue;
            }
        }
        if !inside {
            continue;
        }
        let mut w = line.split_whitespace();
        if let (Some(name), Some(v), Some("kB")) = (w.next(), w.next(), w.next()) {
            if let (Some(name), Ok(v)) = (name.strip_suffix(':'), v.parse::<u64>()) {
                *sums.entry(name.to_string()).or_default() += v * 1024;
            }
        }
    }
    sums
}

#[test]
fn numbers_agree_with_an_independent_reading_of_smaps() {
    let _g = exclusive();
    let dir = TempDir::new("smaps");
    let lib = dir.copy_synced(&bigtext(), "libbigtext.so");
    let w = Workers::start("soloader", &lib, &BIGTEXT_CALL, None, WORKERS);
    let ms = w.measure();
    let mut tool = (0u64, 0u64, 0f64);
    let mut mine = (0u64, 0u64);
    let mut vmas = 0u64;
    for (r, m) in w.reports.iter().zip(&ms) {
        let span = span_start(r)..r.regions.iter().map(|x| x.range.end).max().unwrap();
        let s = independent_smaps(m.pid, span);
        let get = |k: &str| s.get(k).copied().unwrap_or(0);
        // Every VMA of the library lies inside one kind: nothing prorated.
        assert_eq!(m.total.smaps.partial, 0);
        assert_eq!(
            m.total.smaps.vmas as u64,
            get("vmas"),
            "pid {}: VMAs",
            m.pid
        );
        let per_kind_rss: u64 = m.kinds.values().map(|u| u.smaps.rss).sum();
        let per_kind_pss: u64 = m.kinds.values().map(|u| u.smaps.pss).sum();
        assert_eq!(per_kind_rss, get("Rss"), "pid {}: Σ Rss", m.pid);
        assert_eq!(per_kind_pss, get("Pss"), "pid {}: Σ Pss", m.pid);
        assert_eq!(m.total.smaps.rss, get("Rss"));
        assert_eq!(m.total.smaps.pss, get("Pss"));
        // The per-page view says the same as smaps.
        assert_eq!(
            m.total.rss,
            get("Rss"),
            "pid {}: pagemap vs smaps Rss",
            m.pid
        );
        assert_eq!(
            m.total.private,
            get("Private_Clean") + get("Private_Dirty"),
            "pid {}: exclusive pages vs Private_*",
            m.pid
        );
        assert_eq!(m.total.anon, get("Anonymous"), "pid {}: Anonymous", m.pid);
        tool.0 += m.total.rss;
        tool.1 += m.total.smaps.pss;
        tool.2 += m.total.pss;
        mine.0 += get("Rss");
        mine.1 += get("Pss");
        vmas += get("vmas");
    }
    let s = mem::summarize(&ms);
    assert_eq!(s.total.sum.rss, mine.0, "the summary's Σ RSS");
    assert_eq!(s.total.sum.smaps.pss, mine.1, "the summary's Σ smaps Pss");
    assert_eq!((tool.0, tool.1), mine);
    if s.access.exact_pss() {
        // Exact per-page PSS is at most 1 KiB per VMA above the kernel's
        // truncated per-VMA Pss, never below.
        let exact = tool.2;
        let truncated = mine.1 as f64;
        assert!(
            exact >= truncated && exact - truncated < (vmas * 1024) as f64,
            "exact {exact} vs smaps {truncated} over {vmas} VMAs"
        );
    } else {
        assert_eq!(
            tool.2, mine.1 as f64,
            "without kpagecount, PSS is smaps' Pss"
        );
    }
}

// ---------------------------------------------------------------------------
// Cleanup

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn workers_are_killed_on_sigint() {
    let _g = exclusive();
    let dir = TempDir::new("sigint");
    // A uniquely named copy marks this test's workers (libz: it needs
    // libc, where `sleep` is found).
    let lib = dir.copy_synced(
        Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1"),
        "libz-sigint.so",
    );
    let marker = lib.to_string_lossy().into_owned();
    // Workers block in a function that never returns soon (libc's sleep,
    // found through the library's dependencies), before reporting.
    let mut parent = Command::new(SOLOADER)
        .arg("rss")
        .arg(&lib)
        .args(["--procs", "3", "--call", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ppid = parent.id() as i32;
    wait_until("3 workers", Duration::from_secs(30), || {
        processes_mentioning(&marker)
            .into_iter()
            .filter(|p| *p != ppid)
            .count()
            == 3
    });
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(ppid, libc::SIGINT) };
    let status = parent.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "the parent dies of SIGINT"
    );
    wait_until("the workers to be gone", Duration::from_secs(10), || {
        processes_mentioning(&marker).is_empty()
    });
}

#[test]
fn workers_are_cleaned_up_when_one_fails() {
    let _g = exclusive();
    let dir = TempDir::new("fail");
    let lib = dir.copy_synced(&bigtext(), "libbigtext-fail.so");
    let marker = lib.to_string_lossy().into_owned();
    let out = Command::new(SOLOADER)
        .arg("rss")
        .arg(&lib)
        .args(["--procs", "3", "--call", "no_such_function"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no_such_function") && err.contains("all workers killed"),
        "{err}"
    );
    wait_until("the workers to be gone", Duration::from_secs(10), || {
        processes_mentioning(&marker).is_empty()
    });
}
