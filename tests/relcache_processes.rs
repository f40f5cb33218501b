//! The relocation cache across processes, on real system libraries:
//!
//! - libcrypto (SHA-256, HMAC) and libsqlite3 (queries on a database file,
//!   math functions) give the same answers loaded without the cache, on a
//!   cold cache (the load that writes it) and on a warm one (a load that
//!   maps it), each in a fresh process;
//! - libcrypto's RELRO is shared by four worker processes: one physical
//!   frame per page when frame numbers are readable (root), otherwise file
//!   pages mapped by several processes instead of private copies;
//! - eight processes loading at once with an empty cache all work, and
//!   leave one complete cache file behind, which the next load uses.
//!
//! This process never loads the measured libraries itself (it would raise
//! their pages' map counts): children do, the test binary re-executed as
//! its ignored `child` test, or the `soloader` binary.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::rss_workers::Workers;
use common::sysref::{cstring, func, hex, hmac_sha256, sha256, sha256_million_a, soloader_get};
use common::{child_stdout, emit, exclusive, self_test, tagged, TempDir, SOLOADER};
use soloader::mem::{self, Measurement, SegmentKind};
use soloader::{Library, Options};

/// Selects the child's workload.
const CHILD_ENV: &str = "SOLOADER_RELCACHE_CHILD";
/// The child's cache directory (none: load without the cache).
const DIR_ENV: &str = "SOLOADER_RELCACHE_DIR";
/// Set: the child loads with `Options::relocation_cache_forked(true)`.
const FORKED_ENV: &str = "SOLOADER_RELCACHE_FORKED";
/// A number: the child forks that many workers instead of loading itself.
const FORKS_ENV: &str = "SOLOADER_RELCACHE_FORKS";

// ---------------------------------------------------------------------------
// The child: load with soloader (with or without the cache), run a workload.

/// Looks `name` up; panics if it is missing.
///
/// # Safety
/// `T` must be the symbol's function pointer type.
unsafe fn sym<T: Copy>(l: &Library, name: &str) -> T {
    // SAFETY: forwarded to the caller.
    unsafe { *l.get::<T>(name).unwrap_or_else(|e| panic!("{name}: {e}")) }
}

/// SHA-256 (one shot and in 1000 updates), HMAC-SHA-256 and the version
/// string.
fn crypto(l: &Library) -> Vec<String> {
    type Version = unsafe extern "C" fn(c_int) -> *const c_char;
    let get = soloader_get(l);
    // SAFETY: `get` finds libcrypto 3's symbols; OpenSSL_version's
    // prototype (openssl/crypto.h) returns a static string.
    unsafe {
        let version: Version = func(&get, "OpenSSL_version");
        vec![
            hex(&sha256(&get, b"abc")),
            hex(&sha256_million_a(&get)),
            hex(&hmac_sha256(
                &get,
                b"key",
                b"The quick brown fox jumps over the lazy dog",
            )),
            cstring(version(0)),
        ]
    }
}

/// Collects sqlite3_exec's rows (`arg` is a `Vec<String>`).
unsafe extern "C" fn row(
    arg: *mut c_void,
    n: c_int,
    values: *mut *mut c_char,
    _names: *mut *mut c_char,
) -> c_int {
    // SAFETY: sqlite passes `n` values (each NULL or a C string) and our
    // Vec as `arg`.
    unsafe {
        let rows = &mut *(arg as *mut Vec<String>);
        let cols: Vec<String> = (0..n as usize)
            .map(|i| {
                let v = *values.add(i);
                if v.is_null() {
                    "NULL".into()
                } else {
                    CStr::from_ptr(v).to_string_lossy().into_owned()
                }
            })
            .collect();
        rows.push(cols.join("|"));
    }
    0
}

fn sqlite(l: &Library, db_path: &Path) -> Vec<String> {
    type Open = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
    type Exec = unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        Option<
            unsafe extern "C" fn(*mut c_void, c_int, *mut *mut c_char, *mut *mut c_char) -> c_int,
        >,
        *mut c_void,
        *mut *mut c_char,
    ) -> c_int;
    type Close = unsafe extern "C" fn(*mut c_void) -> c_int;
    // SAFETY: sqlite3's prototypes; the handle is used between open and
    // close; `rows` outlives every exec.
    unsafe {
        let open: Open = sym(l, "sqlite3_open");
        let exec: Exec = sym(l, "sqlite3_exec");
        let close: Close = sym(l, "sqlite3_close");
        let _ = fs::remove_file(db_path);
        let path = CString::new(db_path.to_str().unwrap()).unwrap();
        let mut db = std::ptr::null_mut();
        assert_eq!(open(path.as_ptr(), &mut db), 0, "sqlite3_open");
        let mut rows: Vec<String> = Vec::new();
        for sql in [
            "create table t(x integer primary key, s text, r real)",
            "with recursive c(i) as (select 1 union all select i + 1 from c where i < 2000) \
             insert into t select i, printf('row%04d', i), i / 7.0 from c",
            "create index ts on t(s)",
            "select count(*), sum(x), min(s), max(s), printf('%.4f', sum(r)) from t",
            "select group_concat(x, ',') from (select x from t where s like 'row199_' order by x)",
            "select sqlite_version(), upper('abc'), length(zeroblob(10)), instr('hello', 'll')",
            "select printf('%.6f', sqrt(2.0)), pow(2, 10), printf('%.6f', cos(0.5)), floor(-2.5), trunc(7.9)",
            "pragma integrity_check",
        ] {
            let c = CString::new(sql).unwrap();
            let mut err: *mut c_char = std::ptr::null_mut();
            let rc = exec(db, c.as_ptr(), Some(row), (&mut rows as *mut Vec<String>).cast(), &mut err);
            assert_eq!(rc, 0, "{sql}: {}", if err.is_null() { "?".into() } else { CStr::from_ptr(err).to_string_lossy() });
        }
        assert_eq!(close(db), 0);
        rows
    }
}

/// Runs in children only: loads the library named by [`CHILD_ENV`] with
/// the cache in [`DIR_ENV`] (if set) and prints the workload's answers.
#[test]
#[ignore = "the child half of the cross-process tests"]
fn child() {
    let Ok(which) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut o = Options::new();
    if let Ok(d) = std::env::var(DIR_ENV) {
        o = o.relocation_cache(d);
    }
    if std::env::var_os(FORKED_ENV).is_some() {
        o = o.relocation_cache_forked(true);
    }
    type Work = Box<dyn Fn(&Library) -> Vec<String>>;
    let (name, work): (&str, Work) = match which.as_str() {
        "crypto" => ("libcrypto.so.3", Box::new(crypto)),
        "sqlite" => {
            let db = PathBuf::from(std::env::var("SOLOADER_RELCACHE_DB").unwrap());
            (
                "libsqlite3.so.0",
                Box::new(move |l: &Library| sqlite(l, &db)),
            )
        }
        other => panic!("unknown workload {other}"),
    };
    // Forked workers: this process never loads the library; it forks
    // them one after another (the first loads cold), as a pre-fork server
    // would, and each prints its lines with its number.
    let forks: usize = std::env::var(FORKS_ENV).map_or(0, |n| n.parse().unwrap());
    if forks > 0 {
        for k in 0..forks {
            // SAFETY: fork has no preconditions; the child only loads,
            // prints and leaves with _exit (no unwinding into the harness).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker(name, &*work, &o, &k.to_string())
                }))
                .is_ok();
                // SAFETY: ends the forked child without running the
                // harness's exit path.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waits for the child just forked.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "forked worker {k} failed ({status:#x})"
            );
        }
        return;
    }
    worker(name, &*work, &o, "");
}

/// Loads `name`, runs `work`, prints what the cache did (`CACHE<n>:`), the
/// answers (`RESULT<n>:`) and the private copies in the library's writable
/// segments (`ANON<n>:` bytes).
fn worker(name: &str, work: &dyn Fn(&Library) -> Vec<String>, o: &Options, n: &str) {
    let l = Library::open_with(name, o).unwrap_or_else(|e| panic!("{name}: {e}"));
    let private = || -> u64 {
        let m = mem::measure(std::process::id() as i32, &mem::regions(l.segments()))
            .expect("measure this process");
        m.kinds
            .iter()
            .filter(|(k, _)| matches!(k, SegmentKind::Relro | SegmentKind::Data | SegmentKind::Bss))
            .map(|(_, u)| u.anon)
            .sum()
    };
    let loaded = private();
    let answers = work(&l);
    let cache = match l.relocation_cache() {
        None => "none".to_string(),
        Some(c) => format!(
            "{} written={} pages={} shared={} stubs={}",
            if c.hit { "hit" } else { "miss" },
            c.written,
            c.pages.len(),
            c.shared.len(),
            c.stubs
        ),
    };
    emit(&format!("CACHE{n}:"), cache);
    emit(&format!("RESULT{n}:"), answers.join("; "));
    emit(&format!("ANON{n}:"), format!("{loaded} {}", private()));
}

/// Runs the `child` test in a new process: (cache line, result line).
fn run_child(which: &str, dir: Option<&Path>, env: &[(&str, &Path)]) -> (String, String) {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let stdout = run_child_env(which, dir, &env);
    let field = |tag: &str| tagged(&stdout, tag).to_string();
    (field("CACHE:"), field("RESULT:"))
}

#[test]
fn libcrypto_answers_the_same_cold_warm_and_uncached() {
    let _g = exclusive();
    let cache = TempDir::private("crypto");
    let (c0, plain) = run_child("crypto", None, &[]);
    assert_eq!(c0, "none");
    let (c1, cold) = run_child("crypto", Some(cache.path()), &[]);
    assert!(c1.starts_with("miss written=true"), "{c1}");
    let (c2, warm) = run_child("crypto", Some(cache.path()), &[]);
    assert!(c2.starts_with("hit"), "{c2}");
    let (c3, warm2) = run_child("crypto", Some(cache.path()), &[]);
    assert!(c3.starts_with("hit"), "{c3}");
    assert_eq!(cold, plain);
    assert_eq!(warm, plain);
    assert_eq!(warm2, plain);
    let parts: Vec<&str> = plain.split("; ").collect();
    assert_eq!(
        parts[..3],
        [
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
        ]
    );
}

#[test]
fn libsqlite3_answers_the_same_cold_warm_and_uncached() {
    let _g = exclusive();
    let cache = TempDir::private("sqlite");
    let work = TempDir::private("db");
    let db = work.path().join("t.db");
    let env = [("SOLOADER_RELCACHE_DB", db.as_path())];
    let (c0, plain) = run_child("sqlite", None, &env);
    assert_eq!(c0, "none");
    let (c1, cold) = run_child("sqlite", Some(cache.path()), &env);
    assert!(c1.starts_with("miss written=true"), "{c1}");
    let (c2, warm) = run_child("sqlite", Some(cache.path()), &env);
    assert!(c2.starts_with("hit"), "{c2}");
    assert_eq!(cold, plain);
    assert_eq!(warm, plain);
    assert!(plain.contains("2000|2001000|row0001|row2000|"), "{plain}");
    assert!(
        plain.contains("1.414214|1024.0|0.877583|-3.0|7.0"),
        "{plain}"
    );
    assert!(plain.ends_with("ok"), "{plain}");
}

/// Runs the `child` test with `env` (and the cache in `dir`, if any);
/// returns its stdout.
fn run_child_env(which: &str, dir: Option<&Path>, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let mut cmd = self_test("child");
    cmd.env(CHILD_ENV, which);
    if let Some(d) = dir {
        cmd.env(DIR_ENV, d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    child_stdout(&mut cmd, &format!("child {which}"))
}

#[test]
fn forked_workers_share_the_pages_that_point_into_libc() {
    let _g = exclusive();
    let cache = TempDir::private("forked");
    let work = TempDir::private("forked-db");
    let db = work.path().join("t.db");
    let forks = 4;
    let n = forks.to_string();
    let base: [(&str, &std::ffi::OsStr); 2] = [
        ("SOLOADER_RELCACHE_DB", db.as_os_str()),
        (FORKS_ENV, n.as_ref()),
    ];
    let forked = [base[0], base[1], (FORKED_ENV, "1".as_ref())];
    // Per worker: (cache line, answers, private bytes).
    // Per worker: (cache line, answers, private bytes after the load and
    // after the queries).
    type Worker = (String, String, u64, u64);
    let workers = |out: &str| -> Vec<Worker> {
        (0..forks)
            .map(|k| {
                let f = |tag: &str| tagged(out, &format!("{tag}{k}:")).to_string();
                let anon = f("ANON");
                let (a, b) = anon.split_once(' ').unwrap();
                (
                    f("CACHE"),
                    f("RESULT"),
                    a.parse().unwrap(),
                    b.parse().unwrap(),
                )
            })
            .collect()
    };
    let plain = workers(&run_child_env("sqlite", None, &base));
    let exec_mode = workers(&run_child_env("sqlite", Some(cache.path()), &base));
    let with = workers(&run_child_env("sqlite", Some(cache.path()), &forked));
    let answers = &plain[0].1;
    assert!(answers.ends_with("ok"), "{answers}");
    for (c, a, _, _) in plain.iter().chain(&exec_mode).chain(&with) {
        assert_eq!(a, answers, "{c}");
    }
    // The layout-keyed file is another file: the first forked worker
    // writes it, the others map it.
    assert!(with[0].0.starts_with("miss written=true"), "{:?}", with[0]);
    let shared = |c: &str| -> usize {
        let f = c
            .split(' ')
            .find_map(|w| w.strip_prefix("shared="))
            .unwrap();
        f.parse().unwrap()
    };
    for k in 1..forks {
        assert!(exec_mode[k].0.starts_with("hit"), "{:?}", exec_mode[k]);
        assert!(with[k].0.starts_with("hit"), "{:?}", with[k]);
        // Pages holding libc's addresses are shared too, not patched.
        assert!(
            shared(&with[k].0) > shared(&exec_mode[k].0),
            "forked {:?} vs exec {:?}",
            with[k],
            exec_mode[k]
        );
    }
    let page = mem::page_size() as u64;
    let mean = |w: &[Worker], after: bool| {
        let sum: u64 = w[1..].iter().map(|x| if after { x.3 } else { x.2 }).sum();
        sum / (forks as u64 - 1)
    };
    let (p, e, f) = (
        mean(&plain, false),
        mean(&exec_mode, false),
        mean(&with, false),
    );
    let (pq, eq, fq) = (
        mean(&plain, true),
        mean(&exec_mode, true),
        mean(&with, true),
    );
    eprintln!(
        "libsqlite3 private bytes per warm worker, loaded / after the queries: \
         uncached {p} / {pq}, cache {e} / {eq}, forked cache {f} / {fq}"
    );
    assert!(f < e && fq < eq, "forked {f}/{fq} vs exec-mode {e}/{eq}");
    assert!(f * 4 <= p && f <= 2 * page, "forked {f} vs uncached {p}");
    // A process with its own layout (started by exec) finds no file for
    // it: the forked workers' file is keyed by theirs.
    let (c, a) = run_child(
        "sqlite",
        Some(cache.path()),
        &[("SOLOADER_RELCACHE_DB", db.as_path())],
    );
    assert!(c.starts_with("hit"), "{c}");
    assert_eq!(&a, answers);
    let solo = run_child_env(
        "sqlite",
        Some(cache.path()),
        &[
            ("SOLOADER_RELCACHE_DB", db.as_os_str()),
            (FORKED_ENV, "1".as_ref()),
        ],
    );
    assert!(tagged(&solo, "CACHE:").starts_with("miss"), "{solo}");
}

// ---------------------------------------------------------------------------
// RELRO shared by four workers

/// A worker's resident RELRO pages: address → (anonymous, frame number).
type RelroPages = BTreeMap<usize, (bool, Option<u64>)>;

/// Per worker, the RELRO pages, and the measurements.
fn relro_pages(ws: &Workers) -> (Vec<RelroPages>, Vec<Measurement>) {
    let ms = ws.measure();
    let pages = ms
        .iter()
        .map(|m| {
            m.pages
                .iter()
                .filter(|p| p.kind == SegmentKind::Relro && p.info.present())
                .map(|p| (p.info.addr, (p.anonymous(), p.info.pfn())))
                .collect()
        })
        .collect();
    (pages, ms)
}

#[test]
fn libcrypto_relro_is_shared_by_four_processes() {
    let _g = exclusive();
    let cache = TempDir::private("relro");
    let page = mem::page_size();
    // Without the cache: every RELRO page is a private copy in every worker.
    let plain = Workers::start("soloader", Path::new("libcrypto.so.3"), &[], None, 4);
    let (pages, _) = relro_pages(&plain);
    let relro_len: usize = plain.reports[0]
        .regions
        .iter()
        .filter(|r| r.kind == SegmentKind::Relro)
        .map(|r| r.range.len() / page)
        .sum();
    assert!(
        relro_len >= 64,
        "libcrypto has ~98 RELRO pages, found {relro_len}"
    );
    for p in &pages {
        let private = p.values().filter(|(anon, _)| *anon).count();
        assert!(private * 10 >= relro_len * 9, "{private} of {relro_len}");
    }
    drop(plain);

    // Warm the cache, then four workers.
    let st = Command::new(SOLOADER)
        .args([
            "call",
            "libcrypto.so.3",
            "OpenSSL_version_num",
            "--relocation-cache",
        ])
        .arg(cache.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let ws = Workers::start(
        "soloader",
        Path::new("libcrypto.so.3"),
        &[],
        Some(cache.path()),
        4,
    );
    for w in &ws.reports {
        assert!(
            w.notes
                .iter()
                .any(|n| n.starts_with("relocation cache hit")),
            "{:?}",
            w.notes
        );
    }
    let (pages, ms) = relro_pages(&ws);
    let frames = ms.iter().all(|m| m.access.pfn);
    for (i, p) in pages.iter().enumerate() {
        let private = p.values().filter(|(anon, _)| *anon).count();
        assert!(
            private <= 2,
            "worker {i}: {private} of {relro_len} RELRO pages are private copies"
        );
        let u = &ms[i].kinds[&SegmentKind::Relro];
        assert!(u.anon <= 2 * page as u64, "worker {i}: {u:?}");
        // (Shared_Dirty while the cache file's pages are not written back.)
        assert!(
            u.smaps.private_dirty <= 2 * page as u64
                && u.smaps.shared_clean + u.smaps.shared_dirty >= 16 * page as u64,
            "worker {i}: Shared_Clean instead of Private_Dirty: {:?}",
            u.smaps
        );
    }
    if frames {
        // One physical frame per cached page, across the four workers.
        let mut per_page: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
        for p in &pages {
            for (&addr, &(anon, pfn)) in p {
                if !anon {
                    per_page.entry(addr).or_default().insert(pfn.unwrap());
                }
            }
        }
        assert!(per_page.len() >= 16, "{} shared pages", per_page.len());
        for (addr, pfns) in &per_page {
            assert_eq!(pfns.len(), 1, "page {addr:#x} has frames {pfns:?}");
        }
    } else {
        println!(
            "frame numbers unreadable (not root): checked Shared_Clean and the exclusive bit only"
        );
        for (i, m) in ms.iter().enumerate() {
            let shared = m
                .pages
                .iter()
                .filter(|p| p.kind == SegmentKind::Relro && p.info.present() && !p.anonymous())
                .filter(|p| !p.info.exclusive())
                .count();
            assert!(shared > 0, "worker {i}: no RELRO page mapped by others");
        }
    }
}

// ---------------------------------------------------------------------------
// Concurrent first loads

#[test]
fn eight_concurrent_first_loads_are_safe() {
    let _g = exclusive();
    let cache = TempDir::private("concurrent");
    let libs = TempDir::private("libs");
    let lib = libs.copy_lib("libarith.so");
    let call = |extra: &[&str]| {
        let mut c = Command::new(SOLOADER);
        c.arg("call")
            .arg(&lib)
            .args(extra)
            .arg("--relocation-cache")
            .arg(cache.path());
        c
    };
    for round in 0..3 {
        let children: Vec<Child> = (0..8)
            .map(|_| {
                call(&["strsum", "s:hello"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "532");
        }
        let names = cache.names();
        assert_eq!(
            names.len(),
            1,
            "round {round}: one file, no temporary left: {names:?}"
        );
        assert!(names[0].ends_with(".relcache"));
        if round == 0 {
            // Start again from nothing.
            fs::remove_file(cache.path().join(&names[0])).unwrap();
        }
    }
    // The file left behind is whole: the next load maps it.
    let out = call(&["add", "2", "3", "--ret", "i32"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    let trace = Command::new(SOLOADER)
        .arg("trace")
        .arg(&lib)
        .arg("--relocation-cache")
        .arg(cache.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&trace.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("relocation cache:") && l.contains(" hit ")),
        "{text}"
    );
}
