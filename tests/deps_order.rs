//! Dependency order, compared with glibc's `dlopen` in child processes:
//!
//! - the initialisation and finalisation order over the dependency
//!   diamond `libdiamond_a.so -> (b, c) -> d`;
//! - the candidate paths tried for each `DT_NEEDED` name, against glibc's
//!   `LD_DEBUG=libs` "trying file=" lines;
//! - dependency cycles (`x -> y -> x`), which no library of `testlibs/`
//!   has: the test builds five small libraries with the C compiler into a
//!   temporary directory (the build script cannot be changed from here),
//!   then compares init and fini order with glibc and checks that a cycle
//!   neither loads anything twice nor keeps itself alive after close.
//!
//! The constructors and destructors append to the file named by
//! `SOLOADER_INIT_LOG`. That variable is only ever set in child processes
//! (both the soloader side and the glibc side run in one), so no test
//! changes this process's environment. The children are this test binary
//! re-executed, filtered to the ignored [`order_child`] test.
//!
//! Every test takes [`LOCK`]: the in-process checks look at what is mapped.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use soloader::{Event, Library, Options, VecSink};

const CHILD_TEST: &str = "order_child";
/// `soloader:<path>` or `glibc:<path>`: which loader opens which file.
const CHILD_ENV: &str = "SOLOADER_DEPS_ORDER_CHILD";
/// The `int f(void)` the child calls after opening.
const CALL_ENV: &str = "SOLOADER_DEPS_ORDER_CALL";
const INIT_LOG_ENV: &str = "SOLOADER_INIT_LOG";

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn testlibs() -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS"))
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
}

/// A directory removed with its contents when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "soloader-deps-order-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(canonical(&dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// The directory, no longer removed on drop.
    fn keep(self) -> PathBuf {
        let p = self.0.clone();
        std::mem::forget(self);
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "(no dlerror)".into()
    } else {
        // SAFETY: non-null, NUL-terminated.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Runs in a child process only: opens a library with soloader or with
/// glibc, calls one function, prints its result, closes the library.
#[test]
#[ignore = "the child half of the comparisons; the other tests run it in a child process"]
fn order_child() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (loader, path) = what.split_once(':').expect("loader:path");
    let call = std::env::var(CALL_ENV).expect("function to call");
    let result = match loader {
        "soloader" => {
            let lib = Library::open(path).unwrap_or_else(|e| panic!("soloader: open {path}: {e}"));
            // SAFETY: every function the tests name is `int f(void)`.
            let f = unsafe { lib.get::<extern "C" fn() -> i32>(&call) }
                .unwrap_or_else(|e| panic!("soloader: {call}: {e}"));
            let r = f();
            lib.close().expect("close");
            r
        }
        "glibc" => {
            let c = CString::new(path).unwrap();
            // SAFETY: dlopen with a valid C string.
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            assert!(!h.is_null(), "dlopen({path}): {}", dlerror());
            let name = CString::new(call.as_str()).unwrap();
            // SAFETY: a live handle and a valid C string.
            let f = unsafe { libc::dlsym(h, name.as_ptr()) };
            assert!(!f.is_null(), "dlsym({call}): {}", dlerror());
            // SAFETY: every function the tests name is `int f(void)`.
            let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(f) };
            let r = f();
            // SAFETY: the handle from dlopen above, closed once.
            assert_eq!(unsafe { libc::dlclose(h) }, 0, "dlclose: {}", dlerror());
            r
        }
        other => panic!("unknown loader {other}"),
    };
    println!("\nRESULT:{result}");
}

/// Runs [`order_child`] with `loader` on `path`, calling `call`, with
/// `env` added to the child's environment.
fn child(loader: &str, path: &Path, call: &str, env: &[(&str, &str)]) -> (i32, Output) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--exact",
        CHILD_TEST,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, format!("{loader}:{}", path.display()))
    .env(CALL_ENV, call)
    .env_remove(INIT_LOG_ENV)
    .env_remove("LD_DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{loader} child for {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT:"))
        .unwrap_or_else(|| panic!("child printed no RESULT:\n{stdout}"))
        .parse()
        .expect("RESULT is a number");
    (result, out)
}

/// Opens `path` with `loader` in a child with the init log enabled, and
/// returns the function's result and the log's lines.
fn logged_run(loader: &str, path: &Path, call: &str, dir: &TempDir) -> (i32, Vec<String>) {
    let log = dir.path().join(format!("{loader}.log"));
    let _ = std::fs::remove_file(&log);
    let (r, _) = child(
        loader,
        path,
        call,
        &[(INIT_LOG_ENV, log.to_str().expect("utf-8 temp path"))],
    );
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{loader}: no init log {}: {e}", log.display()));
    (r, text.lines().map(str::to_string).collect())
}

fn lines_of(log: &[String], kind: &str) -> Vec<String> {
    log.iter()
        .filter(|l| l.starts_with(kind))
        .cloned()
        .collect()
}

/// Both loaders in children; returns soloader's (init, fini) lines after
/// checking they equal glibc's exactly.
fn compare_orders(path: &Path, call: &str, expect_result: i32) -> (Vec<String>, Vec<String>) {
    let dir = TempDir::new("log");
    let (mine, my_log) = logged_run("soloader", path, call, &dir);
    let (theirs, their_log) = logged_run("glibc", path, call, &dir);
    assert_eq!(mine, expect_result, "{call}() under soloader");
    assert_eq!(theirs, expect_result, "{call}() under glibc");
    let (my_init, my_fini) = (lines_of(&my_log, "init:"), lines_of(&my_log, "fini:"));
    let (their_init, their_fini) = (lines_of(&their_log, "init:"), lines_of(&their_log, "fini:"));
    assert_eq!(
        my_log.len(),
        my_init.len() + my_fini.len(),
        "soloader's log has only init/fini lines: {my_log:#?}"
    );
    // Everything initialised before anything is finalised.
    assert_eq!(
        my_log,
        [my_init.clone(), my_fini.clone()].concat(),
        "soloader: all constructors, then all destructors"
    );
    assert_eq!(
        my_init,
        their_init,
        "{}: initialisation order, soloader (left) vs glibc (right)",
        path.display()
    );
    assert_eq!(
        my_fini,
        their_fini,
        "{}: finalisation order, soloader (left) vs glibc (right)",
        path.display()
    );
    (my_init, my_fini)
}

// ---------------------------------------------------------------------------
// 1. The diamond.
// ---------------------------------------------------------------------------

#[test]
fn diamond_init_and_fini_order_match_glibc() {
    let _g = lock();
    let (init, fini) = compare_orders(&testlibs().join("libdiamond_a.so"), "diamond_a", 494);
    // glibc 2.36's answer, spelled out.
    let names = |kind: &str, which: &str, order: &str| -> Vec<String> {
        order
            .chars()
            .map(|c| format!("{kind}:diamond_{c}:{which}"))
            .collect()
    };
    assert_eq!(init, names("init", "ctor", "dcba"));
    assert_eq!(fini, names("fini", "dtor", "abcd"));
}

// ---------------------------------------------------------------------------
// 2. The search, against LD_DEBUG=libs.
// ---------------------------------------------------------------------------

/// glibc's `LD_DEBUG=libs` output: for each `find library=NAME` the
/// `trying file=` paths, in order.
fn ld_debug_searches(stderr: &str) -> Vec<(String, Vec<PathBuf>)> {
    let mut out: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for line in stderr.lines() {
        // "     547:\t  trying file=/x/libfoo.so"
        let text = line.split_once(':').map_or(line, |(_, t)| t).trim();
        if let Some(rest) = text.strip_prefix("find library=") {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            out.push((name, Vec::new()));
        } else if let Some(p) = text.strip_prefix("trying file=") {
            if let Some((_, tries)) = out.last_mut() {
                tries.push(PathBuf::from(p));
            }
        }
    }
    out
}

/// soloader's trace: for each `Search` the `SearchTry` paths, in order,
/// with whether the candidate was taken.
fn traced_searches(events: &[Event]) -> Vec<(String, Vec<(PathBuf, bool)>)> {
    let mut out: Vec<(String, Vec<(PathBuf, bool)>)> = Vec::new();
    for e in events {
        match e {
            Event::Search { name, .. } => out.push((name.clone(), Vec::new())),
            Event::SearchTry { path, found, .. } => {
                if let Some((_, tries)) = out.last_mut() {
                    tries.push((path.clone(), *found));
                }
            }
            _ => {}
        }
    }
    out
}

fn parent_exists(p: &Path) -> bool {
    p.parent().is_some_and(Path::is_dir)
}

/// An ELF file of the wrong class (ELFCLASS32, EM_386): both loaders must
/// try it and go on searching.
fn elf32_decoy() -> Vec<u8> {
    let mut h = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0];
    h.resize(16, 0);
    for half in [3u16, 3] {
        h.extend_from_slice(&half.to_le_bytes()); // e_type ET_DYN, e_machine EM_386
    }
    h.extend_from_slice(&1u32.to_le_bytes()); // e_version
    h.resize(256, 0);
    h
}

#[test]
fn search_order_matches_ld_debug_libs() {
    let _g = lock();
    let root = testlibs().join("libdiamond_a.so");
    let names = ["libdiamond_b.so", "libdiamond_c.so", "libdiamond_d.so"];

    // LD_LIBRARY_PATH: an empty directory, then one with glibc-hwcaps and
    // legacy hwcap subdirectories (empty, so both loaders must try them
    // every time) and a wrong-class decoy for libdiamond_c.so.
    let empty = TempDir::new("empty");
    let second = TempDir::new("second");
    for sub in ["glibc-hwcaps/x86-64-v2", "tls", "x86_64"] {
        std::fs::create_dir_all(second.path().join(sub)).expect("mkdir");
    }
    let decoy = second.path().join("libdiamond_c.so");
    std::fs::write(&decoy, elf32_decoy()).expect("write decoy");
    let dirs = vec![empty.path().to_path_buf(), second.path().to_path_buf()];

    // soloader, in this process.
    let sink = Arc::new(VecSink::new());
    let lib = Library::open_with(
        &root,
        &Options::new()
            .library_path(dirs.clone())
            .trace(sink.clone()),
    )
    .expect("soloader: open libdiamond_a.so");
    let events = sink.events();
    lib.close().expect("close");
    let mine: Vec<(String, Vec<(PathBuf, bool)>)> = traced_searches(&events)
        .into_iter()
        .filter(|(n, tries)| names.contains(&n.as_str()) && !tries.is_empty())
        .collect();

    // glibc, in a fresh child.
    let ld_library_path = std::env::join_paths(&dirs).expect("join_paths");
    let (r, out) = child(
        "glibc",
        &root,
        "diamond_a",
        &[
            ("LD_LIBRARY_PATH", ld_library_path.to_str().expect("utf-8")),
            ("LD_DEBUG", "libs"),
        ],
    );
    assert_eq!(r, 494);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let theirs: Vec<(String, Vec<PathBuf>)> = ld_debug_searches(&stderr)
        .into_iter()
        .filter(|(n, _)| names.contains(&n.as_str()))
        .collect();

    let show = |v: &[(String, Vec<PathBuf>)]| -> String {
        v.iter()
            .map(|(n, t)| {
                format!(
                    "{n}:\n{}",
                    t.iter()
                        .map(|p| format!("    {}", p.display()))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mine_paths: Vec<(String, Vec<PathBuf>)> = mine
        .iter()
        .map(|(n, t)| (n.clone(), t.iter().map(|(p, _)| p.clone()).collect()))
        .collect();
    let ctx = format!(
        "soloader:\n{}\nglibc (LD_DEBUG=libs):\n{}",
        show(&mine_paths),
        show(&theirs)
    );

    // Each name searched once, in the same (breadth-first) order: d is
    // needed by b and by c, and the second time both find it loaded.
    assert_eq!(
        mine.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        names,
        "soloader's searches\n{ctx}"
    );
    assert_eq!(
        theirs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        names,
        "glibc's searches\n{ctx}"
    );

    for ((name, my_tries), (_, their_tries)) in mine_paths.iter().zip(&theirs) {
        // glibc tries `tls/x86_64` and `x86_64` twice (the platform and
        // the hwcap are both "x86_64"); soloader drops the repeat.
        let mut their_tries = their_tries.clone();
        their_tries.dedup();

        // glibc remembers, per process, which search directories do not
        // exist and skips them afterwards; the process's own startup
        // already searched LD_LIBRARY_PATH for libc & co. soloader keeps
        // no such memory and tries every candidate. So: glibc's list is a
        // subsequence of soloader's…
        let mut it = my_tries.iter();
        for p in &their_tries {
            assert!(
                it.any(|q| q == p),
                "{name}: glibc tried {} which soloader did not (or not in this order)\n{ctx}",
                p.display()
            );
        }
        // …and the candidates in existing directories are exactly the
        // same, in the same order.
        let existing = |v: &[PathBuf]| -> Vec<PathBuf> {
            v.iter().filter(|p| parent_exists(p)).cloned().collect()
        };
        assert_eq!(
            existing(my_tries),
            existing(&their_tries),
            "{name}: candidates in existing directories, soloader (left) vs glibc (right)\n{ctx}"
        );
        // Both end in the RUNPATH ($ORIGIN) directory.
        let found = canonical(&testlibs()).join(name);
        assert_eq!(my_tries.last(), Some(&found), "{name}\n{ctx}");
        assert_eq!(their_tries.last(), Some(&found), "{name}\n{ctx}");
    }

    // The first search in the RUNPATH directory: glibc has never seen it
    // (nor its subdirectories), so it tries every candidate there, as
    // soloader does.
    let origin = canonical(&testlibs());
    let in_origin = |v: &[PathBuf]| -> Vec<PathBuf> {
        v.iter()
            .filter(|p| p.starts_with(&origin))
            .cloned()
            .collect()
    };
    let mut first_theirs = theirs[0].1.clone();
    first_theirs.dedup();
    let first_origin = in_origin(&mine_paths[0].1);
    assert!(
        first_origin.len() > 1,
        "the hwcap subdirectories of $ORIGIN are tried\n{ctx}"
    );
    assert_eq!(
        first_origin,
        in_origin(&first_theirs),
        "libdiamond_b.so in $ORIGIN, soloader (left) vs glibc (right)\n{ctx}"
    );
    // The existing subdirectories of the second LD_LIBRARY_PATH entry are
    // tried for every name, best first, and the decoy is tried and passed.
    for (name, tries) in &mine {
        let expect: Vec<PathBuf> = ["glibc-hwcaps/x86-64-v2", "tls", "x86_64", ""]
            .iter()
            .map(|s| second.path().join(s).join(name))
            .collect();
        let got: Vec<PathBuf> = tries
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| p.starts_with(second.path()) && parent_exists(p))
            .collect();
        assert_eq!(
            got, expect,
            "{name} in the second LD_LIBRARY_PATH directory\n{ctx}"
        );
    }
    let decoy_tries: Vec<bool> = mine
        .iter()
        .flat_map(|(_, t)| t.iter())
        .filter(|(p, _)| *p == decoy)
        .map(|(_, f)| *f)
        .collect();
    assert_eq!(
        decoy_tries,
        [false],
        "the ELFCLASS32 decoy is tried once and not taken\n{ctx}"
    );
    assert!(
        theirs[1].1.contains(&decoy),
        "glibc tries the decoy too\n{ctx}"
    );
}

// ---------------------------------------------------------------------------
// 3. Cycles.
// ---------------------------------------------------------------------------

/// The cyclic libraries: `(letter, DT_NEEDED letters)`.
///
/// ```text
///        t            t -> x, w
///       / \           x -> y
///      x   w          y -> x, z      (x <-> y is a cycle)
///      ⇅   |          w -> z
///      y   |
///       \ /
///        z
/// ```
///
/// `cyc_<l>()` returns `l * 1000` plus `cyc_<d>_self()` (= `d`) of each
/// dependency, so every edge of the cycle is a call.
const CYCLE: &[(char, &[char])] = &[
    ('t', &['x', 'w']),
    ('x', &['y']),
    ('y', &['x', 'z']),
    ('w', &['z']),
    ('z', &[]),
];

fn cycle_value(letter: char) -> i32 {
    let deps = CYCLE
        .iter()
        .find(|(l, _)| *l == letter)
        .map(|(_, d)| *d)
        .expect("letter");
    letter as i32 * 1000 + deps.iter().map(|&d| d as i32).sum::<i32>()
}

fn cycle_source(letter: char, deps: &[char]) -> String {
    let mut s = String::from("#include \"initlog.h\"\n");
    for d in deps {
        s += &format!("int cyc_{d}_self(void);\n");
    }
    s += &format!(
        "__attribute__((constructor)) static void ctor(void) {{ initlog(\"init\", \"cyc_{letter}\", \"ctor\"); }}\n\
         __attribute__((destructor)) static void dtor(void) {{ initlog(\"fini\", \"cyc_{letter}\", \"dtor\"); }}\n\
         int cyc_{letter}_self(void) {{ return '{letter}'; }}\n\
         int cyc_{letter}(void) {{ return '{letter}' * 1000"
    );
    for d in deps {
        s += &format!(" + cyc_{d}_self()");
    }
    s += "; }\n";
    s
}

/// Where the cyclic libraries are, removed at process exit.
static CYCLE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_cycle_dir() {
    if let Some(d) = CYCLE_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Builds the cyclic libraries once per process: first every library
/// without `DT_NEEDED` (so the cycle's files all exist), then every
/// library again linked against its dependencies.
fn cycle_dir() -> &'static Path {
    CYCLE_DIR.get_or_init(|| {
        let dir = TempDir::new("cycle").keep();
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe { libc::atexit(remove_cycle_dir) };
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("testlibs");
        for (l, deps) in CYCLE {
            std::fs::write(dir.join(format!("{l}.c")), cycle_source(*l, deps))
                .expect("write source");
        }
        for pass in 0..2 {
            let jobs: Vec<_> = CYCLE
                .iter()
                .map(|(l, deps)| {
                    let mut cmd = Command::new(&cc);
                    cmd.current_dir(&dir)
                        .args(["-shared", "-fPIC", "-O1", "-Wall"])
                        .arg("-I")
                        .arg(&include)
                        .arg("-o")
                        .arg(format!("libcyc_{l}.so.tmp"))
                        .arg(format!("{l}.c"))
                        .arg(format!("-Wl,-soname,libcyc_{l}.so"))
                        .arg("-Wl,--enable-new-dtags,-rpath,$ORIGIN")
                        .arg("-Wl,--no-as-needed")
                        .arg("-L.");
                    if pass == 1 {
                        for d in *deps {
                            cmd.arg(format!("-lcyc_{d}"));
                        }
                    }
                    (
                        *l,
                        cmd.spawn().unwrap_or_else(|e| panic!("running {cc}: {e}")),
                    )
                })
                .collect();
            for (l, mut job) in jobs {
                let status = job.wait().expect("wait for cc");
                assert!(
                    status.success(),
                    "building libcyc_{l}.so (pass {pass}): {status}"
                );
            }
            for (l, _) in CYCLE {
                std::fs::rename(
                    dir.join(format!("libcyc_{l}.so.tmp")),
                    dir.join(format!("libcyc_{l}.so")),
                )
                .expect("rename");
            }
        }
        dir
    })
}

fn cycle_lib(letter: char) -> PathBuf {
    cycle_dir().join(format!("libcyc_{letter}.so"))
}

/// Lines of `/proc/self/maps` naming a cycle library.
fn cycle_mappings() -> Vec<String> {
    let dir = cycle_dir().as_os_str().as_bytes().to_vec();
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .filter(|l| l.as_bytes().windows(dir.len()).any(|w| w == dir.as_slice()))
        .map(str::to_string)
        .collect()
}

/// The soloader library holding `addr` (`soloader::lookup`): its path and
/// base.
fn owner(addr: usize) -> (PathBuf, usize) {
    let info = soloader::lookup(addr).expect("a soloader library");
    (info.path, info.base)
}

#[test]
fn cycle_from_outside_matches_glibc() {
    let _g = lock();
    compare_orders(&cycle_lib('t'), "cyc_t", cycle_value('t'));
}

#[test]
fn cycle_entered_inside_matches_glibc() {
    let _g = lock();
    // Opening a member of the cycle: x -> y -> (x, z).
    compare_orders(&cycle_lib('x'), "cyc_x", cycle_value('x'));
}

#[test]
fn cycle_loads_each_library_once_and_unloads_completely() {
    let _g = lock();
    assert!(cycle_mappings().is_empty(), "{:?}", cycle_mappings());
    let sink = Arc::new(VecSink::new());
    let t = Library::open_with(cycle_lib('t'), &Options::new().trace(sink.clone()))
        .expect("open libcyc_t.so");
    let events = sink.events();
    let mut opened: Vec<PathBuf> = events
        .iter()
        .filter_map(|e| match e {
            Event::Open { path, .. } => Some(canonical(path)),
            _ => None,
        })
        .collect();
    opened.sort();
    let mut all: Vec<PathBuf> = CYCLE.iter().map(|(l, _)| cycle_lib(*l)).collect();
    all.sort();
    assert_eq!(opened, all, "each library of the cycle opened exactly once");

    // Every function, reached through t's scope, in its own library; and
    // every call across the cycle works.
    let mut bases = Vec::new();
    for (l, _) in CYCLE {
        // SAFETY: `int cyc_<l>(void)`.
        let f = unsafe { t.get::<extern "C" fn() -> i32>(&format!("cyc_{l}")) }
            .unwrap_or_else(|e| panic!("cyc_{l}: {e}"));
        assert_eq!(f(), cycle_value(*l), "cyc_{l}()");
        let (path, base) = owner(f.addr());
        assert_eq!(
            canonical(&path),
            cycle_lib(*l),
            "cyc_{l} is in libcyc_{l}.so"
        );
        bases.push(base);
    }
    bases.sort();
    bases.dedup();
    assert_eq!(bases.len(), CYCLE.len(), "five libraries at five bases");

    // A second handle on a member of the cycle shares everything.
    let x = Library::open(cycle_lib('x')).expect("open libcyc_x.so");
    // SAFETY: `int cyc_y_self(void)`.
    let (via_x, via_t) = unsafe {
        (
            x.get::<*const c_void>("cyc_y_self").expect("via x").addr(),
            t.get::<*const c_void>("cyc_y_self").expect("via t").addr(),
        )
    };
    assert_eq!(via_x, via_t, "one libcyc_y.so");
    let per_file = cycle_mappings()
        .iter()
        .filter(|l| l.ends_with("/libcyc_y.so"))
        .count();
    assert!(per_file > 0, "libcyc_y.so is mapped");

    // Closing t keeps x's part of the graph (x, y, z) and drops t and w,
    // though y still points at x and x at y.
    t.close().expect("close t");
    let left: Vec<String> = cycle_mappings();
    for (l, kept) in [
        ('t', false),
        ('w', false),
        ('x', true),
        ('y', true),
        ('z', true),
    ] {
        let name = format!("/libcyc_{l}.so");
        assert_eq!(
            left.iter().any(|m| m.ends_with(&name)),
            kept,
            "after closing t, libcyc_{l}.so mapped = {kept}:\n{}",
            left.join("\n")
        );
    }
    // SAFETY: `int cyc_x(void)`.
    let f = unsafe { x.get::<extern "C" fn() -> i32>("cyc_x") }.expect("cyc_x");
    assert_eq!(f(), cycle_value('x'));
    // The cycle does not keep itself alive.
    x.close().expect("close x");
    assert!(
        cycle_mappings().is_empty(),
        "a closed cycle must be unmapped:\n{}",
        cycle_mappings().join("\n")
    );
}
