//! Shared helpers for the integration tests (`mod common;`).
//!
//! - where the C test libraries are, temporary directories, and private
//!   copies of libraries (a copy is a different file, so soloader loads a
//!   fresh instance of it even when another test thread has the original
//!   open);
//! - traced loads (`VecSink`) and small queries over the events;
//! - `/proc/self/maps` and `/proc/self/fd`;
//! - child processes: the test binary re-executes itself, filtered to one
//!   of its `#[ignore]`d tests ([`self_test`], [`child_stdout`]), with an
//!   environment variable naming what to do ([`child_selection`]); the
//!   child prints tagged lines ([`emit`]) that the parent reads back
//!   ([`tagged`]). The generic `child_helper` scenarios ([`run_child`],
//!   [`child_main`]) print `RESULT:<value>` lines. The system loader's
//!   answers (`dlopen`/`dlsym`) are computed only in children, so no test
//!   process ever has a test library loaded by glibc;
//! - per-binary locks: tests asserting on process-global state (what is
//!   mapped, which fds are open, whether a load is fresh) take
//!   [`exclusive`]; tests that only need the loader to work take
//!   [`shared`].
//!
//! Submodules, for the tests that need them: [`sysref`] (workloads run
//! against soloader here and against the system loader in a child),
//! [`rss_workers`] (the `soloader rss-worker` processes and their
//! reports), [`json`] (a small JSON reader).

#![allow(dead_code)]

pub mod json;
pub mod rss_workers;
pub mod sysref;

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt::Display;
use std::fs;
use std::io::Write;
use std::os::raw::{c_char, c_void};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use soloader::{Event, Library, Options, VecSink};

/// Environment variable naming the child scenario.
pub const CHILD_ENV: &str = "SOLOADER_TEST_CHILD";
/// The log file libinit / libdiamond_* append to.
pub const INIT_LOG_ENV: &str = "SOLOADER_INIT_LOG";
/// Environment variable carrying the call list of the `calls` scenarios.
pub const CALLS_ENV: &str = "SOLOADER_TEST_CALLS";

// ---------------------------------------------------------------------------
// Files

/// The directory the build script put the test libraries in.
pub fn testlibs() -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS"))
}

/// The path of test library `name` (e.g. `"libarith.so"`).
pub fn lib(name: &str) -> PathBuf {
    testlibs().join(name)
}

/// The `soloader` binary of this package.
pub const SOLOADER: &str = env!("CARGO_BIN_EXE_soloader");

/// A directory removed (with its contents) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty, uniquely named directory.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "soloader-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// As [`TempDir::new`], mode 0700 (what the relocation cache accepts
    /// as its directory).
    pub fn private(tag: &str) -> TempDir {
        let dir = TempDir::new(tag);
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod 0700 {}: {e}", dir.0.display()));
        dir
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file in the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Copies `src` into the directory as `name`; returns the copy's path.
    pub fn copy_from(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.join(name);
        fs::copy(src, &dst)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), self.0.display()));
        dst
    }

    /// Copies test library `name` into the directory; returns the copy's
    /// path.
    /// A copy of test library `name` in which the `.dynstr` string
    /// `libc.so.6` (its `DT_NEEDED` and version need) is `libc_to`, a name
    /// of the same length.
    pub fn copy_lib_needing(&self, name: &str, libc_to: &str) -> PathBuf {
        assert_eq!(libc_to.len(), "libc.so.6".len(), "same length, in place");
        let path = self.copy_lib(name);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes
            .windows(10)
            .position(|w| w == b"libc.so.6\0")
            .expect("libc.so.6 in .dynstr");
        bytes[at..at + 9].copy_from_slice(libc_to.as_bytes());
        fs::write(&path, bytes).unwrap();
        path
    }

    pub fn copy_lib(&self, name: &str) -> PathBuf {
        self.copy_from(&lib(name), name)
    }

    /// As [`TempDir::copy_from`], and written back to disk: a freshly
    /// written file's page-cache pages are dirty, and `smaps` would count
    /// them as `Shared_Dirty`/`Private_Dirty` in every mapping.
    pub fn copy_synced(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.copy_from(src, name);
        fs::File::open(&dst)
            .and_then(|f| f.sync_all())
            .unwrap_or_else(|e| panic!("syncing {}: {e}", dst.display()));
        dst
    }

    /// Every file name in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.0.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A test may have changed the directory's mode.
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o700));
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `p`'s canonical path; panics if it has none.
pub fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
}

/// Copies the named test libraries into a new temporary directory. The
/// copies are new files (new inodes): soloader loads them afresh even when
/// the originals are loaded. Keep the `TempDir` alive while they are.
pub fn private_copies(names: &[&str]) -> TempDir {
    let dir = TempDir::new(names.first().copied().unwrap_or("empty"));
    for name in names {
        dir.copy_lib(name);
    }
    dir
}

/// One private copy of `name`: the directory and the copy's path.
pub fn private_copy(name: &str) -> (TempDir, PathBuf) {
    let dir = private_copies(&[name]);
    let path = dir.join(name);
    (dir, path)
}

// ---------------------------------------------------------------------------
// Locks

static LOCK: RwLock<()> = RwLock::new(());

/// For tests that load libraries but assert nothing process-global.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(PoisonError::into_inner)
}

/// For tests asserting on process-global state (maps, fds, fresh loads of
/// libraries other tests of the same binary also load).
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Traced loads

/// Options sending the trace to a new sink, and the sink.
pub fn traced() -> (Options, VecSink) {
    let sink = VecSink::new();
    (Options::new().trace(Arc::new(sink.clone())), sink)
}

/// Opens `path` with a trace; panics with the error if the load fails.
pub fn open_traced(path: &Path) -> (Library, VecSink) {
    let (opts, sink) = traced();
    let l = Library::open_with(path, &opts)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    (l, sink)
}

/// Opens `path`, panicking with the error if the load fails.
pub fn open(path: &Path) -> Library {
    Library::open(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The address of `name` in `l` (or its dependencies).
pub fn addr_of(l: &Library, name: &str) -> usize {
    // SAFETY: usize is pointer-sized and nothing is called.
    match unsafe { l.get::<usize>(name) } {
        Ok(s) => s.addr(),
        Err(e) => panic!("get({name}) in {}: {e}", l.path().display()),
    }
}

/// `Bind` events of `path`'s references to `symbol`: (version, provider,
/// value).
pub fn binds(
    events: &[Event],
    path: &Path,
    symbol: &str,
) -> Vec<(Option<String>, soloader::Provider, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Bind {
                path: p,
                symbol: s,
                version,
                provider,
                value,
            } if p == path && s == symbol => Some((version.clone(), provider.clone(), *value)),
            _ => None,
        })
        .collect()
}

/// The (kind, count, pages) of each `Relocations` event of `path`.
pub fn relocations(events: &[Event], path: &Path) -> Vec<(&'static str, usize, Vec<usize>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Relocations {
                path: p,
                kind,
                count,
                pages,
            } if p == path => Some((*kind, *count, pages.clone())),
            _ => None,
        })
        .collect()
}

/// How many relocations of `kind` the trace reports for `path`.
pub fn reloc_count(events: &[Event], path: &Path, kind: &str) -> usize {
    relocations(events, path)
        .iter()
        .filter(|r| r.0 == kind)
        .map(|r| r.1)
        .sum()
}

/// The paths of the `Init` (or `Fini`) events, in order, with their kinds.
pub fn inits(events: &[Event]) -> Vec<(PathBuf, String, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Init {
                path, kind, addr, ..
            } => Some((path.clone(), kind.clone(), *addr)),
            _ => None,
        })
        .collect()
}

/// As [`inits`], for `Fini` events.
pub fn finis(events: &[Event]) -> Vec<(PathBuf, String, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fini {
                path, kind, addr, ..
            } => Some((path.clone(), kind.clone(), *addr)),
            _ => None,
        })
        .collect()
}

/// The paths of the `Open` events, in order.
pub fn opened(events: &[Event]) -> Vec<PathBuf> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Open { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// The paths of the `Unloaded` events, in order.
pub fn unloaded(events: &[Event]) -> Vec<PathBuf> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Unloaded { path } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// Formats events one per line, for assertion messages.
pub fn dump(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("  {e:?}\n"))
        .collect::<String>()
}

// ---------------------------------------------------------------------------
// /proc/self

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLine {
    pub start: usize,
    pub end: usize,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// Empty for anonymous memory.
    pub path: String,
    /// The whole line, for messages.
    pub text: String,
}

/// The current `/proc/self/maps`.
pub fn maps() -> Vec<MapLine> {
    let text = fs::read_to_string("/proc/self/maps").expect("reading /proc/self/maps");
    text.lines()
        .map(|line| {
            let mut f = line.splitn(6, ' ');
            let mut next = |what: &str| f.next().unwrap_or_else(|| panic!("maps: {what}: {line}"));
            let (range, perms, offset, _dev, inode) = (
                next("range"),
                next("perms"),
                next("offset"),
                next("dev"),
                next("inode"),
            );
            // The path is padded on the left; anonymous memory has none.
            let path = f.next().unwrap_or("").trim().to_string();
            let (s, e) = range.split_once('-').expect("maps: range");
            MapLine {
                start: usize::from_str_radix(s, 16).expect("maps: start"),
                end: usize::from_str_radix(e, 16).expect("maps: end"),
                perms: perms.to_string(),
                offset: u64::from_str_radix(offset, 16).expect("maps: offset"),
                inode: inode.parse().expect("maps: inode"),
                path,
                text: line.to_string(),
            }
        })
        .collect()
}

/// The lines of `lines` that `keep` accepts, as `/proc/self/maps` shows
/// them, one per line (for assertion messages).
pub fn maps_dump(lines: &[MapLine], keep: impl Fn(&MapLine) -> bool) -> String {
    lines
        .iter()
        .filter(|l| keep(l))
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the file name of `path` starts with `stem` (`libz.so` for any
/// version of libz).
pub fn file_name_starts_with(path: &str, stem: &str) -> bool {
    Path::new(path)
        .file_name()
        .is_some_and(|f| f.to_string_lossy().starts_with(stem))
}

/// The files mapped in this process whose name starts with `stem`, in
/// address order (consecutive repeats removed).
pub fn mapped_files_named(stem: &str) -> Vec<String> {
    let mut v: Vec<String> = maps()
        .into_iter()
        .filter(|l| file_name_starts_with(&l.path, stem))
        .map(|l| l.path)
        .collect();
    v.dedup();
    v
}

/// The lines of `/proc/self/maps` mapping `path`.
pub fn maps_of(path: &Path) -> Vec<MapLine> {
    let p = path.to_string_lossy();
    maps().into_iter().filter(|m| m.path == p).collect()
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// The number of open file descriptors.
pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .count()
}

/// Four-letter permissions for `PROT_*` bits, as maps shows a private
/// mapping.
pub fn perms_of(prot: i32) -> String {
    format!(
        "{}{}{}p",
        if prot & libc::PROT_READ != 0 {
            'r'
        } else {
            '-'
        },
        if prot & libc::PROT_WRITE != 0 {
            'w'
        } else {
            '-'
        },
        if prot & libc::PROT_EXEC != 0 {
            'x'
        } else {
            '-'
        },
    )
}

/// The maps line containing `addr`.
pub fn line_at(maps: &[MapLine], addr: usize) -> Option<&MapLine> {
    maps.iter().find(|m| m.start <= addr && addr < m.end)
}

// ---------------------------------------------------------------------------
// Generic calls: "lib.so:symbol:ret[:a1,a2,...]" with ret `i` (int) or `l`
// (long) and up to six integer arguments.

/// One call spec, parsed.
pub struct Call {
    pub lib: String,
    pub sym: String,
    pub int_ret: bool,
    pub args: Vec<i64>,
}

impl Call {
    pub fn parse(spec: &str) -> Call {
        let mut parts = spec.split(':');
        let lib = parts.next().expect("call spec: library").to_string();
        let sym = parts.next().expect("call spec: symbol").to_string();
        let int_ret = match parts.next() {
            Some("i") => true,
            Some("l") => false,
            other => panic!("call spec {spec}: return type {other:?}"),
        };
        let args: Vec<i64> = parts
            .next()
            .filter(|a| !a.is_empty())
            .map(|a| a.split(',').map(|x| x.parse().unwrap()).collect())
            .unwrap_or_default();
        assert!(args.len() <= 6, "call spec {spec}: too many arguments");
        Call {
            lib,
            sym,
            int_ret,
            args,
        }
    }
}

/// Calls the function at `addr` with up to six integer arguments.
///
/// # Safety
/// `addr` must be a function taking up to six integer arguments (extra
/// register arguments are ignored by the SysV ABI) and returning an
/// integer.
pub unsafe fn call_addr(addr: usize, int_ret: bool, args: &[i64]) -> i64 {
    let mut a = [0i64; 6];
    a[..args.len()].copy_from_slice(args);
    type F = extern "C" fn(i64, i64, i64, i64, i64, i64) -> i64;
    // SAFETY: forwarded contract.
    let f: F = unsafe { std::mem::transmute::<usize, F>(addr) };
    let r = f(a[0], a[1], a[2], a[3], a[4], a[5]);
    if int_ret {
        r as i32 as i64
    } else {
        r
    }
}

/// Performs each call in order with soloader, in this process; one
/// `Library` per library file (opened from the test library directory)
/// for the whole list. Returns the values in order.
pub fn soloader_calls(specs: &[&str]) -> Vec<i64> {
    let mut libs: HashMap<String, Library> = HashMap::new();
    let mut out = Vec::new();
    for spec in specs {
        let c = Call::parse(spec);
        let l = libs
            .entry(c.lib.clone())
            .or_insert_with(|| open(&lib(&c.lib)));
        let f = addr_of(l, &c.sym);
        // SAFETY: the spec names an integer function of the test library.
        out.push(unsafe { call_addr(f, c.int_ret, &c.args) });
    }
    out
}

/// Performs each call in order with the system loader, in a child process
/// (`dlopen(RTLD_NOW)` once per library, `dlsym` per call). Returns the
/// values in order, and the child's pid.
pub fn glibc_calls(specs: &[&str]) -> (Vec<i64>, i64) {
    let out = run_child("glibc_calls", &[(CALLS_ENV, &specs.join(";"))]);
    let mut values = Vec::new();
    let mut pid = None;
    for line in out {
        if let Some(p) = line.strip_prefix("pid=") {
            pid = Some(p.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("value=") {
            values.push(v.parse().unwrap());
        }
    }
    assert_eq!(
        values.len(),
        specs.len(),
        "glibc child returned too few values"
    );
    (values, pid.expect("glibc child printed no pid"))
}

fn glibc_calls_child() {
    let specs = std::env::var(CALLS_ENV).expect("SOLOADER_TEST_CALLS");
    result(format!("pid={}", std::process::id()));
    let mut handles: HashMap<String, *mut c_void> = HashMap::new();
    for spec in specs.split(';') {
        let c = Call::parse(spec);
        let h = *handles
            .entry(c.lib.clone())
            .or_insert_with(|| glibc_dlopen(&lib(&c.lib)));
        let f = glibc_dlsym(h, &c.sym);
        // SAFETY: the spec names an integer function of the test library.
        let v = unsafe { call_addr(f, c.int_ret, &c.args) };
        result(format!("value={v}"));
    }
}

/// `dlopen(path, RTLD_NOW)`; only ever called in child processes.
pub fn glibc_dlopen(path: &Path) -> *mut c_void {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: plain dlopen of a test library, in a child process.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW) };
    assert!(!h.is_null(), "dlopen {}: {}", path.display(), dlerror());
    h
}

/// `dlsym(h, name)`, panicking if absent.
pub fn glibc_dlsym(h: *mut c_void, name: &str) -> usize {
    let c = CString::new(name).unwrap();
    // SAFETY: h is a live dlopen handle.
    let p = unsafe { libc::dlsym(h, c.as_ptr()) };
    assert!(!p.is_null(), "dlsym {name}: {}", dlerror());
    p as usize
}

/// The system loader's last error message.
pub fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a C string.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        String::from("(no dlerror)")
    } else {
        // SAFETY: non-null C string from dlerror.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// The host's own address of `name` (`dlsym(RTLD_DEFAULT, name)`): for
/// symbols of libraries the process already has, such as libc's.
pub fn host_addr(name: &str) -> usize {
    let c = CString::new(name).unwrap();
    // SAFETY: lookup in the global scope; loads nothing.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    assert!(!p.is_null(), "dlsym(RTLD_DEFAULT, {name}) failed");
    p as usize
}

/// A C string's contents.
pub fn cstr(p: *const c_char) -> String {
    assert!(!p.is_null(), "unexpected NULL string");
    // SAFETY: non-null, NUL-terminated (the test libraries return such).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// Child processes

/// Prints one `<tag><value>` line for the parent (a child's answer).
pub fn emit(tag: &str, value: impl Display) {
    let mut out = std::io::stdout().lock();
    // A leading newline: libtest may have printed "test x ... " on this line.
    writeln!(out, "\n{tag}{value}").unwrap();
    out.flush().unwrap();
}

/// Prints one `RESULT:` line for the parent.
pub fn result(value: impl Display) {
    emit("RESULT:", value);
}

/// The command running this test binary's (ignored) test `test`, alone,
/// with its output on stdout; the caller adds the environment.
pub fn self_test(test: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Runs `cmd` (from [`self_test`]) and returns its stdout. Panics, with
/// the child's output, unless it succeeded and ran its one test; `what`
/// names the child in the messages.
pub fn child_stdout(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{what} did not run its test:\n{stdout}"
    );
    stdout
}

/// The rest of the first line of a child's `stdout` that starts with
/// `tag` (see [`emit`]); panics if there is none.
pub fn tagged<'a>(stdout: &'a str, tag: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .unwrap_or_else(|| panic!("the child printed no {tag}:\n{stdout}"))
}

/// In a child started with `env` set (see [`self_test`]): the item of
/// `items` whose `key` is that variable's value; panics if none is.
/// `None` in any other process.
pub fn child_selection<'a, T>(
    env: &str,
    items: &'a [T],
    key: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    let want = std::env::var(env).ok()?;
    let item = items
        .iter()
        .find(|i| key(i) == want)
        .unwrap_or_else(|| panic!("{env}: unknown child selection {want}"));
    Some(item)
}

/// Runs this test binary's `child_helper` test in a child process with
/// `SOLOADER_TEST_CHILD=scenario` and `env`, and returns its `RESULT:`
/// values. Panics (with the child's output) if the child fails.
pub fn run_child(scenario: &str, env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = self_test("child_helper");
    cmd.env(CHILD_ENV, scenario)
        .env_remove(INIT_LOG_ENV)
        .env_remove(CALLS_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let stdout = child_stdout(&mut cmd, &format!("child scenario {scenario}"));
    stdout
        .lines()
        .filter_map(|l| l.find("RESULT:").map(|i| l[i + 7..].to_string()))
        .collect()
}

/// The body of each test binary's `child_helper`: does nothing unless run
/// as a child; runs the generic scenarios, then the binary's own.
pub fn child_main(own: &[(&str, fn())]) {
    if std::env::var(CHILD_ENV).as_deref() == Ok("glibc_calls") {
        glibc_calls_child();
        return;
    }
    if let Some((_, f)) = child_selection(CHILD_ENV, own, |(name, _)| name) {
        f();
    }
}

/// Appends `mark:test:<label>` to the init log (children only), so the
/// parent sees where in the sequence of initialisers and finalisers the
/// child's own steps happened.
pub fn log_mark(label: &str) {
    let path = std::env::var(INIT_LOG_ENV).expect("SOLOADER_INIT_LOG");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("opening the init log");
    writeln!(f, "mark:test:{label}").unwrap();
}

/// Reads an init log: its lines.
pub fn read_log(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Processes whose command line mentions `marker` (a forked child keeps its
/// parent's).
pub fn processes_mentioning(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) {
                out.push(pid);
            }
        }
    }
    out
}
