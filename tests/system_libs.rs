//! Real system libraries (zlib, SQLite, expat, OpenSSL's libcrypto) loaded
//! by soloader, each checked against the system loader.
//!
//! The expected answer of every workload is computed by glibc's `dlopen` in
//! a *child* process (this test binary re-executed to run the ignored test
//! [`system_loader_child`]), so this process never has the library mapped by
//! the system loader: soloader cannot quietly bind to glibc's copy, and the
//! tests check that it did not (`/proc/self/maps` before and after,
//! `dlopen(RTLD_NOLOAD)`, every symbol inside soloader's span).
//!
//! Each workload is written once, generic over how its symbols are found
//! ([`Sym`]): the parent passes `Library::get`, the child `dlsym`. The
//! workloads call back into Rust (sqlite3_exec row callbacks, an SQL
//! function, expat element and text handlers, zlib allocators), bind to
//! the host's libc (malloc/calloc/free, string functions, OpenSSL's
//! pthread once and locks, atexit), and run enough of each library to
//! exercise the relocations it carries.
//!
//! Every test takes [`exclusive`]: they assert on the process-wide address
//! space (a library must not be mapped before it is loaded, nor after it
//! is unloaded), so they must not overlap.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::sysref::{
    self, assert_unknown_to_system_loader, cstring, func, hex, Report, Sym, Workload,
};
use common::{
    canonical, exclusive, file_name_starts_with, line_at, maps, maps_dump, page_size, perms_of,
};
use soloader::Library;

// ---------------------------------------------------------------------------
// Harness: the workloads, the child process, /proc/self/maps.
// ---------------------------------------------------------------------------

/// Selects the child's workload.
const CHILD_ENV: &str = "SOLOADER_SYSTEM_LIBS_CHILD";
/// The ignored test the child process runs.
const CHILD_TEST: &str = "system_loader_child";

/// Each workload's one probe is the symbol it calls first (its version
/// function): the child reports the file glibc mapped for it.
const ZLIB: Workload = Workload {
    key: "zlib",
    soname: "libz.so.1",
    probes: &["zlibVersion"],
    run: zlib_workload,
};
const SQLITE: Workload = Workload {
    key: "sqlite",
    soname: "libsqlite3.so.0",
    probes: &["sqlite3_libversion"],
    run: sqlite_workload,
};
const EXPAT: Workload = Workload {
    key: "expat",
    soname: "libexpat.so.1",
    probes: &["XML_ExpatVersion"],
    run: expat_workload,
};
const CRYPTO: Workload = Workload {
    key: "crypto",
    soname: "libcrypto.so.3",
    probes: &["OpenSSL_version_num"],
    run: crypto_workload,
};
const WORKLOADS: [&Workload; 4] = [&ZLIB, &SQLITE, &EXPAT, &CRYPTO];

/// Runs in the child process only (it is ignored, and does nothing without
/// [`CHILD_ENV`]): loads the library with the system loader and prints the
/// workload's report and the file glibc mapped.
#[test]
#[ignore = "the system-loader half of the comparisons; the other tests run it in a child process"]
fn system_loader_child() {
    sysref::system_loader_child(CHILD_ENV, &WORKLOADS);
}

/// The symbol every workload calls first (its version function).
fn first_symbol(w: &Workload) -> &'static str {
    w.probes[0]
}

/// `libz.so` for `libz.so.1`: any mapped file whose name starts so is
/// (some version of) this library.
fn stem(w: &Workload) -> &'static str {
    let end = w.soname.find(".so").expect("a soname has .so") + ".so".len();
    &w.soname[..end]
}

/// What the system loader answered in a child process.
struct SystemAnswer {
    /// The canonical path of the file it mapped.
    path: PathBuf,
    /// The rendered report.
    result: String,
}

fn system_loader(w: &Workload) -> SystemAnswer {
    let answer = sysref::system_loader(CHILD_TEST, CHILD_ENV, w);
    SystemAnswer {
        path: answer.file(first_symbol(w)).to_path_buf(),
        result: answer.result,
    }
}

/// Nothing in this process maps the library: neither `path` nor any file
/// named like it.
fn assert_not_mapped(w: &Workload, path: &Path, when: &str) {
    let p = path.to_string_lossy();
    let lines = maps();
    let bad = maps_dump(&lines, |l| {
        l.path == p || file_name_starts_with(&l.path, stem(w))
    });
    assert!(
        bad.is_empty(),
        "{when}: {} must not be mapped in this process, but /proc/self/maps has:\n{bad}",
        w.soname
    );
}

/// Every page of every segment is where `segments()` says, as the kernel
/// sees it: file-backed pages are private mappings of `path` (right inode,
/// right file offset, right protections, RELRO read-only), `.bss` pages
/// are anonymous, and nothing else is mapped inside the span.
fn assert_segments_mapped(lib: &Library, path: &Path) {
    let p = path.to_string_lossy().into_owned();
    let ino = std::fs::metadata(path).expect("stat library").ino();
    let lines = maps();
    let span = lib.span();
    let page = page_size();
    let ctx = || {
        format!(
            "{p} span {:#x}..{:#x}, segments {:#x?}\nmaps in span:\n{}",
            span.start,
            span.end,
            lib.segments(),
            maps_dump(&lines, |l| l.start < span.end && span.start < l.end)
        )
    };
    let at = |a: usize| line_at(&lines, a);
    assert!(!lib.segments().is_empty(), "no segments: {}", ctx());
    for seg in lib.segments() {
        assert!(
            span.start <= seg.range.start && seg.range.end <= span.end,
            "segment {} outside the span: {}",
            seg.index,
            ctx()
        );
        let mut a = seg.range.start;
        while a < seg.range.end {
            let Some(l) = at(a) else {
                panic!(
                    "page {a:#x} of segment {} is not mapped: {}",
                    seg.index,
                    ctx()
                );
            };
            if seg.file_range.contains(&a) {
                assert_eq!(
                    (l.path.as_str(), l.inode),
                    (p.as_str(), ino),
                    "page {a:#x} of segment {} is not mapped from the library file: {}",
                    seg.index,
                    ctx()
                );
                let off = l.offset + (a - l.start) as u64;
                let want = seg.file_offset + (a - seg.file_range.start) as u64;
                assert_eq!(
                    off,
                    want,
                    "page {a:#x} of segment {} maps file offset {off:#x}, not {want:#x}: {}",
                    seg.index,
                    ctx()
                );
                let perms = if seg.relro.as_ref().is_some_and(|r| r.contains(&a)) {
                    "r--p".to_string()
                } else {
                    perms_of(seg.prot)
                };
                assert_eq!(
                    l.perms,
                    perms,
                    "page {a:#x} of segment {} has the wrong protection: {}",
                    seg.index,
                    ctx()
                );
            } else {
                assert!(
                    l.path.is_empty() && l.inode == 0,
                    "bss page {a:#x} of segment {} is not anonymous: {}",
                    seg.index,
                    ctx()
                );
                assert_eq!(l.perms, perms_of(seg.prot), "bss page {a:#x}: {}", ctx());
            }
            a += page;
        }
    }
    // Only this library's file, or anonymous memory, inside the span; and
    // nothing of this file outside it.
    for l in &lines {
        let overlaps = l.start < span.end && span.start < l.end;
        if overlaps {
            assert!(
                l.path.is_empty() || l.path == p,
                "another file mapped inside the span: {}\n{}",
                l.text,
                ctx()
            );
        } else {
            assert!(
                l.path != p,
                "the library file is mapped outside soloader's span: {}\n{}",
                l.text,
                ctx()
            );
        }
    }
}

/// Loads `w` with soloader, runs its workload, and checks the answer
/// against the system loader's. Returns the open library, its canonical
/// path and the report. The caller holds [`exclusive`].
fn load_and_compare(w: &Workload) -> (Library, PathBuf, Report) {
    let system = system_loader(w);
    assert_not_mapped(w, &system.path, "before loading");
    assert_unknown_to_system_loader(w.soname, "before loading");

    let lib = Library::open(w.soname)
        .unwrap_or_else(|e| panic!("soloader failed to load {}: {e}", w.soname));
    let path = canonical(lib.path());
    assert_eq!(
        path, system.path,
        "soloader and the system loader chose different files for {}",
        w.soname
    );
    assert_segments_mapped(&lib, &path);

    let report = {
        let get = |name: &str| -> *const c_void {
            // SAFETY: `*const c_void` is pointer-sized and only its value
            // is used here; the workload gives it the symbol's real type.
            let s = unsafe { lib.get::<*const c_void>(name) }
                .unwrap_or_else(|e| panic!("soloader: {}: get({name}): {e}", w.soname));
            assert!(
                lib.span().contains(&s.addr()),
                "{name} resolved to {:#x}, outside {}'s span {:#x?}: not soloader's copy",
                s.addr(),
                w.soname,
                lib.span()
            );
            *s
        };
        (w.run)(&get)
    };
    assert_eq!(
        report.render(),
        system.result,
        "{}: soloader's answer (left) differs from the system loader's (right)",
        w.soname
    );
    assert_unknown_to_system_loader(w.soname, "after the workload");
    assert_segments_mapped(&lib, &path);
    (lib, path, report)
}

/// Closes `lib` and checks nothing of `path` is mapped any more.
fn close_and_check_unmapped(w: &Workload, lib: Library, path: &Path) {
    lib.close()
        .unwrap_or_else(|e| panic!("closing {}: {e}", w.soname));
    assert_not_mapped(w, path, "after close");
    assert_unknown_to_system_loader(w.soname, "after close");
}

// ---------------------------------------------------------------------------
// 1. zlib
// ---------------------------------------------------------------------------

/// zlib's `z_stream` (LP64).
#[repr(C)]
struct ZStream {
    next_in: *const u8,
    avail_in: c_uint,
    total_in: c_ulong,
    next_out: *mut u8,
    avail_out: c_uint,
    total_out: c_ulong,
    msg: *const c_char,
    state: *mut c_void,
    zalloc: Option<unsafe extern "C" fn(*mut c_void, c_uint, c_uint) -> *mut c_void>,
    zfree: Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
    opaque: *mut c_void,
    data_type: c_int,
    adler: c_ulong,
    reserved: c_ulong,
}

/// What zlib's allocator callbacks (Rust, below) saw.
#[derive(Default)]
struct ZAllocStats {
    allocs: usize,
    frees: usize,
    bytes: usize,
}

unsafe extern "C" fn z_alloc(opaque: *mut c_void, items: c_uint, size: c_uint) -> *mut c_void {
    // SAFETY: `opaque` is the ZAllocStats the workload set, alive for the
    // whole stream; zlib calls back on the workload's thread.
    let stats = unsafe { &mut *(opaque as *mut ZAllocStats) };
    stats.allocs += 1;
    stats.bytes += items as usize * size as usize;
    // SAFETY: plain calloc.
    unsafe { libc::calloc(items as usize, size as usize) }
}

unsafe extern "C" fn z_free(opaque: *mut c_void, ptr: *mut c_void) {
    // SAFETY: as in z_alloc.
    let stats = unsafe { &mut *(opaque as *mut ZAllocStats) };
    stats.frees += 1;
    // SAFETY: `ptr` came from z_alloc's calloc.
    unsafe { libc::free(ptr) }
}

/// 1 MiB of deterministic pseudo-random but compressible text.
fn zlib_input() -> Vec<u8> {
    const WORDS: [&[u8]; 16] = [
        b"loader ",
        b"segment ",
        b"relocation ",
        b"symbol ",
        b"GOT ",
        b"PLT ",
        b"ELF ",
        b"mmap ",
        b"page ",
        b"bss ",
        b"TLS ",
        b"init ",
        b"fini ",
        b"hash ",
        b"version ",
        b"dynamic\n",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(1 << 20);
    while out.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x >> 40) as usize % WORDS.len()]);
        if x & 7 == 0 {
            out.extend_from_slice(format!("{} ", x % 1000).as_bytes());
        }
    }
    out.truncate(1 << 20);
    out
}

fn zlib_workload(get: Sym<'_>) -> Report {
    type Version = unsafe extern "C" fn() -> *const c_char;
    type Bound = unsafe extern "C" fn(c_ulong) -> c_ulong;
    type Compress2 =
        unsafe extern "C" fn(*mut u8, *mut c_ulong, *const u8, c_ulong, c_int) -> c_int;
    type Uncompress = unsafe extern "C" fn(*mut u8, *mut c_ulong, *const u8, c_ulong) -> c_int;
    type Check = unsafe extern "C" fn(c_ulong, *const u8, c_uint) -> c_ulong;
    type InflateInit = unsafe extern "C" fn(*mut ZStream, *const c_char, c_int) -> c_int;
    type Inflate = unsafe extern "C" fn(*mut ZStream, c_int) -> c_int;
    type InflateEnd = unsafe extern "C" fn(*mut ZStream) -> c_int;
    const Z_OK: c_int = 0;
    const Z_STREAM_END: c_int = 1;
    const Z_NO_FLUSH: c_int = 0;

    let mut r = Report::default();
    let input = zlib_input();
    // SAFETY: every type below is zlib's documented prototype (zlib.h,
    // LP64: uLong = unsigned long, uInt = unsigned int); the buffers passed
    // are live Vecs with the lengths given, and the z_stream is zeroed and
    // initialised by inflateInit_ before use and ended after.
    unsafe {
        let version: Version = func(get, "zlibVersion");
        let bound: Bound = func(get, "compressBound");
        let compress2: Compress2 = func(get, "compress2");
        let uncompress: Uncompress = func(get, "uncompress");
        let crc32: Check = func(get, "crc32");
        let adler32: Check = func(get, "adler32");
        let inflate_init: InflateInit = func(get, "inflateInit_");
        let inflate: Inflate = func(get, "inflate");
        let inflate_end: InflateEnd = func(get, "inflateEnd");

        let v = version();
        r.put("version", cstring(v));

        let cap = bound(input.len() as c_ulong);
        let mut comp = vec![0u8; cap as usize];
        let mut clen: c_ulong = cap;
        let rc = compress2(
            comp.as_mut_ptr(),
            &mut clen,
            input.as_ptr(),
            input.len() as c_ulong,
            6,
        );
        assert_eq!(rc, Z_OK, "compress2");
        comp.truncate(clen as usize);
        r.put("compressed_len", clen);
        r.put(
            "crc32",
            format!(
                "{:08x}",
                crc32(crc32(0, std::ptr::null(), 0), comp.as_ptr(), clen as c_uint)
            ),
        );
        r.put(
            "adler32",
            format!(
                "{:08x}",
                adler32(
                    adler32(0, std::ptr::null(), 0),
                    comp.as_ptr(),
                    clen as c_uint
                )
            ),
        );
        r.put(
            "input_crc32",
            format!("{:08x}", crc32(0, input.as_ptr(), input.len() as c_uint)),
        );

        let mut back = vec![0u8; input.len()];
        let mut blen = back.len() as c_ulong;
        let rc = uncompress(back.as_mut_ptr(), &mut blen, comp.as_ptr(), clen);
        assert_eq!(rc, Z_OK, "uncompress");
        assert_eq!(blen as usize, input.len(), "uncompress length");
        assert!(back == input, "uncompress: round trip differs");
        r.put("uncompress", "ok");

        // Streaming inflate in 64 KiB pieces, with Rust allocators.
        let mut stats = ZAllocStats::default();
        let mut z: ZStream = std::mem::zeroed();
        z.zalloc = Some(z_alloc);
        z.zfree = Some(z_free);
        z.opaque = &mut stats as *mut ZAllocStats as *mut c_void;
        let rc = inflate_init(&mut z, v, std::mem::size_of::<ZStream>() as c_int);
        assert_eq!(rc, Z_OK, "inflateInit_");
        z.next_in = comp.as_ptr();
        z.avail_in = comp.len() as c_uint;
        let mut streamed = Vec::with_capacity(input.len());
        let mut chunk = vec![0u8; 64 << 10];
        let mut calls = 0;
        loop {
            z.next_out = chunk.as_mut_ptr();
            z.avail_out = chunk.len() as c_uint;
            let rc = inflate(&mut z, Z_NO_FLUSH);
            calls += 1;
            assert!(rc == Z_OK || rc == Z_STREAM_END, "inflate: {rc}");
            streamed.extend_from_slice(&chunk[..chunk.len() - z.avail_out as usize]);
            if rc == Z_STREAM_END {
                break;
            }
            assert!(calls < 1000, "inflate makes no progress");
        }
        assert_eq!(z.total_out as usize, input.len());
        let adler_stream = z.adler;
        assert_eq!(inflate_end(&mut z), Z_OK, "inflateEnd");
        assert!(streamed == input, "inflate: round trip differs");
        r.put("inflate_calls", calls);
        r.put("inflate_adler", format!("{adler_stream:08x}"));
        r.put(
            "zalloc",
            format!(
                "{} allocs, {} frees, {} bytes",
                stats.allocs, stats.frees, stats.bytes
            ),
        );
    }
    r
}

fn crc32_reference(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn adler32_reference(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

#[test]
fn zlib_matches_system_loader() {
    let _g = exclusive();
    let (lib, path, r) = load_and_compare(&ZLIB);
    // Known truths, independent of either loader.
    let input = zlib_input();
    assert_eq!(
        r.get("input_crc32"),
        format!("{:08x}", crc32_reference(&input))
    );
    assert_eq!(
        r.get("inflate_adler"),
        format!("{:08x}", adler32_reference(&input))
    );
    let clen: usize = r.get("compressed_len").parse().unwrap();
    assert!(clen < input.len() / 2, "compressed to {clen} bytes");
    assert_eq!(r.get("uncompress"), "ok");
    let zalloc = r.get("zalloc");
    let n: Vec<usize> = zalloc
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        n[0] > 0 && n[0] == n[1],
        "zlib allocator callbacks: {zalloc}"
    );
    close_and_check_unmapped(&ZLIB, lib, &path);
}

// ---------------------------------------------------------------------------
// 2. SQLite
// ---------------------------------------------------------------------------

type SqliteValueInt64 = unsafe extern "C" fn(*mut c_void) -> i64;
type SqliteResultInt64 = unsafe extern "C" fn(*mut c_void, i64);

thread_local! {
    /// The SQLite entry points the Rust SQL function needs, and how often
    /// it ran (it runs on the thread that steps the statement).
    static SQLITE_FN: Cell<Option<(SqliteValueInt64, SqliteResultInt64)>> = const { Cell::new(None) };
    static SQLITE_FN_CALLS: Cell<usize> = const { Cell::new(0) };
}

/// `rust_f(x) = 3x + 1`, an SQL function implemented in Rust that calls
/// back into SQLite for its argument and result.
unsafe extern "C" fn sqlite_rust_f(ctx: *mut c_void, argc: c_int, argv: *mut *mut c_void) {
    SQLITE_FN_CALLS.with(|c| c.set(c.get() + 1));
    if let Some((value_int64, result_int64)) = SQLITE_FN.with(Cell::get) {
        if argc == 1 {
            // SAFETY: SQLite passes `argc` live values and a live context;
            // the entry points are SQLite's own, with their prototypes.
            unsafe {
                let x = value_int64(*argv);
                result_int64(ctx, 3 * x + 1);
            }
        }
    }
}

/// `sqlite3_exec` row callback: appends `col=value,...` to the Vec<String>
/// behind `user`.
unsafe extern "C" fn sqlite_row(
    user: *mut c_void,
    n: c_int,
    values: *mut *mut c_char,
    names: *mut *mut c_char,
) -> c_int {
    // SAFETY: `user` is the workload's Vec<String>; SQLite passes `n`
    // column values and names, each null or NUL-terminated.
    unsafe {
        let rows = &mut *(user as *mut Vec<String>);
        let mut row = Vec::new();
        for i in 0..n.max(0) as usize {
            let name = *names.add(i);
            let value = *values.add(i);
            let name = if name.is_null() {
                "?".into()
            } else {
                cstring(name)
            };
            let value = if value.is_null() {
                "NULL".into()
            } else {
                cstring(value)
            };
            row.push(format!("{name}={value}"));
        }
        rows.push(row.join(","));
    }
    0
}

fn sqlite_workload(get: Sym<'_>) -> Report {
    type Str = unsafe extern "C" fn() -> *const c_char;
    type Open = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
    type RowCb =
        unsafe extern "C" fn(*mut c_void, c_int, *mut *mut c_char, *mut *mut c_char) -> c_int;
    type Exec = unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        Option<RowCb>,
        *mut c_void,
        *mut *mut c_char,
    ) -> c_int;
    type Free = unsafe extern "C" fn(*mut c_void);
    type Prepare = unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        c_int,
        *mut *mut c_void,
        *mut *const c_char,
    ) -> c_int;
    type BindInt64 = unsafe extern "C" fn(*mut c_void, c_int, i64) -> c_int;
    type Step = unsafe extern "C" fn(*mut c_void) -> c_int;
    type ColumnInt64 = unsafe extern "C" fn(*mut c_void, c_int) -> i64;
    type StmtFn = unsafe extern "C" fn(*mut c_void) -> c_int;
    type XFunc = unsafe extern "C" fn(*mut c_void, c_int, *mut *mut c_void);
    type CreateFunction = unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        c_int,
        c_int,
        *mut c_void,
        Option<XFunc>,
        Option<XFunc>,
        Option<unsafe extern "C" fn(*mut c_void)>,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> c_int;
    const SQLITE_OK: c_int = 0;
    const SQLITE_ERROR: c_int = 1;
    const SQLITE_ROW: c_int = 100;
    const SQLITE_DONE: c_int = 101;
    const SQLITE_UTF8: c_int = 1;
    const SQLITE_DETERMINISTIC: c_int = 0x800;

    let mut r = Report::default();
    let c = |s: &str| CString::new(s).unwrap();
    // SAFETY: every type is SQLite's documented prototype (sqlite3.h);
    // handles are used only between open/prepare and close/finalize; the
    // callbacks' user pointers are live locals; error messages are freed
    // with sqlite3_free.
    unsafe {
        let libversion: Str = func(get, "sqlite3_libversion");
        let sourceid: Str = func(get, "sqlite3_sourceid");
        let open: Open = func(get, "sqlite3_open");
        let exec: Exec = func(get, "sqlite3_exec");
        let free: Free = func(get, "sqlite3_free");
        let prepare: Prepare = func(get, "sqlite3_prepare_v2");
        let bind_int64: BindInt64 = func(get, "sqlite3_bind_int64");
        let step: Step = func(get, "sqlite3_step");
        let column_int64: ColumnInt64 = func(get, "sqlite3_column_int64");
        let finalize: StmtFn = func(get, "sqlite3_finalize");
        let close: StmtFn = func(get, "sqlite3_close");
        let create_function: CreateFunction = func(get, "sqlite3_create_function_v2");
        let value_int64: SqliteValueInt64 = func(get, "sqlite3_value_int64");
        let result_int64: SqliteResultInt64 = func(get, "sqlite3_result_int64");

        r.put("version", cstring(libversion()));
        r.put("sourceid", cstring(sourceid()));

        let mut db: *mut c_void = std::ptr::null_mut();
        assert_eq!(
            open(c(":memory:").as_ptr(), &mut db),
            SQLITE_OK,
            "sqlite3_open"
        );
        assert!(!db.is_null());

        let run = |sql: &str, rows: Option<&mut Vec<String>>| -> (c_int, String) {
            let mut err: *mut c_char = std::ptr::null_mut();
            let (cb, user): (Option<RowCb>, *mut c_void) = match rows {
                Some(v) => (Some(sqlite_row), v as *mut Vec<String> as *mut c_void),
                None => (None, std::ptr::null_mut()),
            };
            let rc = exec(db, c(sql).as_ptr(), cb, user, &mut err);
            let msg = if err.is_null() {
                String::new()
            } else {
                let m = cstring(err);
                free(err as *mut c_void);
                m
            };
            (rc, msg)
        };

        let (rc, msg) = run(
            "create table t(x integer not null); \
             with recursive c(x) as (select 1 union all select x + 1 from c where x < 1000) \
             insert into t select x from c;",
            None,
        );
        assert_eq!(rc, SQLITE_OK, "create/insert: {msg}");

        let mut rows = Vec::new();
        let (rc, msg) = run(
            "select count(*) as n, sum(x) as s, sum(x * x) as sq, printf('%.3f', avg(x)) as mean from t",
            Some(&mut rows),
        );
        assert_eq!(rc, SQLITE_OK, "aggregate: {msg}");
        r.put("aggregate", rows.join(" / "));

        let mut rows = Vec::new();
        let (rc, msg) = run(
            "select x from t where x % 250 = 0 order by x desc",
            Some(&mut rows),
        );
        assert_eq!(rc, SQLITE_OK, "multiples: {msg}");
        r.put("multiples", rows.join(" / "));

        // prepare / bind / step / column.
        let mut stmt: *mut c_void = std::ptr::null_mut();
        let sql = c("select sum(x) from t where x > ?1");
        let rc = prepare(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut());
        assert_eq!(rc, SQLITE_OK, "prepare");
        assert_eq!(bind_int64(stmt, 1, 900), SQLITE_OK, "bind");
        assert_eq!(step(stmt), SQLITE_ROW, "step");
        r.put("sum_gt_900", column_int64(stmt, 0));
        assert_eq!(step(stmt), SQLITE_DONE, "step to done");
        assert_eq!(finalize(stmt), SQLITE_OK, "finalize");

        // An SQL function written in Rust.
        SQLITE_FN.with(|f| f.set(Some((value_int64, result_int64))));
        SQLITE_FN_CALLS.with(|n| n.set(0));
        let rc = create_function(
            db,
            c("rust_f").as_ptr(),
            1,
            SQLITE_UTF8 | SQLITE_DETERMINISTIC,
            std::ptr::null_mut(),
            Some(sqlite_rust_f),
            None,
            None,
            None,
        );
        assert_eq!(rc, SQLITE_OK, "create_function");
        let mut stmt: *mut c_void = std::ptr::null_mut();
        let sql = c("select sum(rust_f(x)) from t");
        assert_eq!(
            prepare(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut()),
            SQLITE_OK,
            "prepare rust_f"
        );
        assert_eq!(step(stmt), SQLITE_ROW, "step rust_f");
        r.put("sum_rust_f", column_int64(stmt, 0));
        assert_eq!(finalize(stmt), SQLITE_OK);
        r.put("rust_f_calls", SQLITE_FN_CALLS.with(Cell::get));
        SQLITE_FN.with(|f| f.set(None));

        let (rc, msg) = run("select * from nope", None);
        assert_eq!(rc, SQLITE_ERROR, "a missing table must fail");
        r.put("error", msg);

        assert_eq!(close(db), SQLITE_OK, "sqlite3_close");
    }
    r
}

#[test]
fn sqlite_matches_system_loader() {
    let _g = exclusive();
    let (lib, path, r) = load_and_compare(&SQLITE);
    let n = 1000i64;
    assert_eq!(
        r.get("aggregate"),
        format!(
            "n={n},s={},sq={},mean=500.500",
            n * (n + 1) / 2,
            n * (n + 1) * (2 * n + 1) / 6
        )
    );
    assert_eq!(r.get("multiples"), "x=1000 / x=750 / x=500 / x=250");
    assert_eq!(r.get("sum_gt_900"), (901..=1000).sum::<i64>().to_string());
    assert_eq!(
        r.get("sum_rust_f"),
        (1..=n).map(|x| 3 * x + 1).sum::<i64>().to_string()
    );
    assert_eq!(r.get("rust_f_calls"), "1000");
    assert_eq!(r.get("error"), "no such table: nope");
    close_and_check_unmapped(&SQLITE, lib, &path);
}

// ---------------------------------------------------------------------------
// 3. expat
// ---------------------------------------------------------------------------

/// 20 elements, 14 attributes, depth 7.
const XML_DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<root a="1">
  <group name="g1">
    <item id="1" kind="x"/>
    <item id="2"/>
    <item id="3"><sub><leaf v="deep"/></sub></item>
  </group>
  <group name="g2">
    <item id="4">text &amp; more</item>
    <item id="5"><sub/><sub/></item>
  </group>
  <group name="g3" empty="">
    <a><b><c><d><e x="1">deepest</e></d></c></b></a>
  </group>
  <tail/>
  <tail last="yes"/>
</root>
"#;
const XML_ELEMENTS: usize = 20;
const XML_ATTRIBUTES: usize = 14;
const XML_MAX_DEPTH: usize = 7;

#[derive(Default)]
struct XmlStats {
    starts: usize,
    ends: usize,
    depth: usize,
    max_depth: usize,
    attributes: usize,
    names: Vec<String>,
    attrs: Vec<String>,
    text: String,
}

unsafe extern "C" fn xml_start(user: *mut c_void, name: *const c_char, atts: *mut *const c_char) {
    // SAFETY: `user` is the workload's XmlStats; expat passes a
    // NUL-terminated name and a null-terminated name/value array.
    unsafe {
        let s = &mut *(user as *mut XmlStats);
        s.starts += 1;
        s.depth += 1;
        s.max_depth = s.max_depth.max(s.depth);
        s.names.push(cstring(name));
        let mut i = 0;
        while !(*atts.add(i)).is_null() {
            let k = cstring(*atts.add(i));
            let v = cstring(*atts.add(i + 1));
            s.attrs.push(format!("{k}={v}"));
            s.attributes += 1;
            i += 2;
        }
    }
}

unsafe extern "C" fn xml_end(user: *mut c_void, _name: *const c_char) {
    // SAFETY: as in xml_start.
    let s = unsafe { &mut *(user as *mut XmlStats) };
    s.ends += 1;
    s.depth = s.depth.saturating_sub(1);
}

unsafe extern "C" fn xml_text(user: *mut c_void, text: *const c_char, len: c_int) {
    // SAFETY: as in xml_start; `text` holds `len` bytes (not NUL-terminated).
    unsafe {
        let s = &mut *(user as *mut XmlStats);
        let bytes = std::slice::from_raw_parts(text as *const u8, len.max(0) as usize);
        s.text.push_str(&String::from_utf8_lossy(bytes));
    }
}

fn expat_workload(get: Sym<'_>) -> Report {
    type Str = unsafe extern "C" fn() -> *const c_char;
    type Create = unsafe extern "C" fn(*const c_char) -> *mut c_void;
    type SetUserData = unsafe extern "C" fn(*mut c_void, *mut c_void);
    type Start = unsafe extern "C" fn(*mut c_void, *const c_char, *mut *const c_char);
    type End = unsafe extern "C" fn(*mut c_void, *const c_char);
    type Text = unsafe extern "C" fn(*mut c_void, *const c_char, c_int);
    type SetElementHandler = unsafe extern "C" fn(*mut c_void, Option<Start>, Option<End>);
    type SetTextHandler = unsafe extern "C" fn(*mut c_void, Option<Text>);
    type Parse = unsafe extern "C" fn(*mut c_void, *const c_char, c_int, c_int) -> c_int;
    type GetErrorCode = unsafe extern "C" fn(*mut c_void) -> c_int;
    type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
    type GetLine = unsafe extern "C" fn(*mut c_void) -> c_ulong;
    type Free = unsafe extern "C" fn(*mut c_void);
    const XML_STATUS_OK: c_int = 1;
    const XML_STATUS_ERROR: c_int = 0;

    let mut r = Report::default();
    // SAFETY: every type is expat's prototype (expat.h, XML_Char = char,
    // XML_Size = unsigned long); parsers are used between create and free;
    // the user data is a live local for the parser's whole life.
    unsafe {
        let version: Str = func(get, "XML_ExpatVersion");
        let create: Create = func(get, "XML_ParserCreate");
        let set_user_data: SetUserData = func(get, "XML_SetUserData");
        let set_element_handler: SetElementHandler = func(get, "XML_SetElementHandler");
        let set_text_handler: SetTextHandler = func(get, "XML_SetCharacterDataHandler");
        let parse: Parse = func(get, "XML_Parse");
        let error_code: GetErrorCode = func(get, "XML_GetErrorCode");
        let error_string: ErrorString = func(get, "XML_ErrorString");
        let line: GetLine = func(get, "XML_GetCurrentLineNumber");
        let free: Free = func(get, "XML_ParserFree");

        r.put("version", cstring(version()));

        let mut stats = XmlStats::default();
        let p = create(std::ptr::null());
        assert!(!p.is_null(), "XML_ParserCreate");
        set_user_data(p, &mut stats as *mut XmlStats as *mut c_void);
        set_element_handler(p, Some(xml_start), Some(xml_end));
        set_text_handler(p, Some(xml_text));
        // In two pieces, split inside a tag, to exercise incremental parsing.
        let doc = XML_DOC.as_bytes();
        let (a, b) = doc.split_at(doc.len() / 2);
        let rc1 = parse(p, a.as_ptr() as *const c_char, a.len() as c_int, 0);
        let rc2 = parse(p, b.as_ptr() as *const c_char, b.len() as c_int, 1);
        let code = error_code(p);
        assert!(
            rc1 == XML_STATUS_OK && rc2 == XML_STATUS_OK,
            "XML_Parse: {rc1} {rc2}: {}",
            cstring(error_string(code))
        );
        free(p);
        r.put("elements", stats.starts);
        r.put("ends", stats.ends);
        r.put("max_depth", stats.max_depth);
        r.put("attributes", stats.attributes);
        r.put("names", stats.names.join(","));
        r.put("attrs", stats.attrs.join(","));
        r.put(
            "text",
            stats.text.split_whitespace().collect::<Vec<_>>().join(" "),
        );

        // A malformed document: the error and where it is.
        let p = create(std::ptr::null());
        assert!(!p.is_null(), "XML_ParserCreate");
        let bad = b"<a>\n<b>\n</a>";
        let rc = parse(p, bad.as_ptr() as *const c_char, bad.len() as c_int, 1);
        assert_eq!(rc, XML_STATUS_ERROR, "a mismatched tag must fail");
        let code = error_code(p);
        r.put(
            "error",
            format!("{code} {} at line {}", cstring(error_string(code)), line(p)),
        );
        free(p);
    }
    r
}

#[test]
fn expat_matches_system_loader() {
    let _g = exclusive();
    let (lib, path, r) = load_and_compare(&EXPAT);
    assert!(r.get("version").starts_with("expat_"), "{r:?}");
    assert_eq!(r.get("elements"), XML_ELEMENTS.to_string());
    assert_eq!(r.get("ends"), XML_ELEMENTS.to_string());
    assert_eq!(r.get("max_depth"), XML_MAX_DEPTH.to_string());
    assert_eq!(r.get("attributes"), XML_ATTRIBUTES.to_string());
    assert_eq!(
        r.get("names"),
        "root,group,item,item,item,sub,leaf,group,item,item,sub,sub,group,a,b,c,d,e,tail,tail"
    );
    assert_eq!(r.get("text"), "text & more deepest");
    assert_eq!(r.get("error"), "7 mismatched tag at line 3");
    close_and_check_unmapped(&EXPAT, lib, &path);
}

// ---------------------------------------------------------------------------
// 4. libcrypto
// ---------------------------------------------------------------------------

fn crypto_workload(get: Sym<'_>) -> Report {
    type VersionNum = unsafe extern "C" fn() -> c_ulong;
    type Version = unsafe extern "C" fn(c_int) -> *const c_char;
    const OPENSSL_VERSION: c_int = 0;
    const OPENSSL_DIR: c_int = 4;

    let mut r = Report::default();
    // SAFETY: OpenSSL 3's prototypes (openssl/crypto.h); `get` finds
    // libcrypto's symbols, as the digest helpers require.
    unsafe {
        let version_num: VersionNum = func(get, "OpenSSL_version_num");
        let version: Version = func(get, "OpenSSL_version");

        r.put("version_num", format!("{:#x}", version_num()));
        r.put("version", cstring(version(OPENSSL_VERSION)));
        r.put("dir", cstring(version(OPENSSL_DIR)));
        r.put("sha256_abc", hex(&sysref::sha256(get, b"abc")));
        // One million 'a', in 1000 updates.
        r.put("sha256_million_a", hex(&sysref::sha256_million_a(get)));
        // RFC 4231 test case 2.
        r.put(
            "hmac_sha256",
            hex(&sysref::hmac_sha256(
                get,
                b"Jefe",
                b"what do ya want for nothing?",
            )),
        );
    }
    r
}

#[test]
fn crypto_matches_system_loader_and_stays_mapped() {
    let _g = exclusive();
    let (lib, path, r) = load_and_compare(&CRYPTO);
    assert_eq!(
        r.get("sha256_abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        r.get("sha256_million_a"),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
    assert_eq!(
        r.get("hmac_sha256"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert!(r.get("version").starts_with("OpenSSL 3."), "{r:?}");
    let num = u64::from_str_radix(r.get("version_num").trim_start_matches("0x"), 16).unwrap();
    assert_eq!(num >> 28, 3, "OpenSSL_version_num {num:#x}");

    // libcrypto is DF_1_NODELETE: closing the last handle keeps it (and
    // every segment) mapped, as glibc does, and opening it again finds
    // the same copy.
    let base = lib.base();
    let segments = lib.segments().to_vec();
    lib.close().expect("close libcrypto");
    let lines = maps();
    let p = path.to_string_lossy();
    for seg in segments.iter().filter(|s| !s.file_range.is_empty()) {
        let mut a = seg.file_range.start;
        while a < seg.file_range.end {
            assert!(
                lines
                    .iter()
                    .any(|l| l.path == p && l.start <= a && a < l.end),
                "NODELETE libcrypto: page {a:#x} of segment {} was unmapped by close:\n{}",
                seg.index,
                maps_dump(&lines, |l| l.path == p)
            );
            a += page_size();
        }
    }
    let again = Library::open(CRYPTO.soname).expect("reopen libcrypto");
    assert_eq!(
        again.base(),
        base,
        "NODELETE libcrypto must be reused, not reloaded"
    );
    assert_segments_mapped(&again, &path);
    // SAFETY: OpenSSL_version_num's type.
    let v = unsafe { again.get::<unsafe extern "C" fn() -> c_ulong>("OpenSSL_version_num") }
        .expect("OpenSSL_version_num");
    // SAFETY: calling a loaded, initialised function without arguments.
    assert_eq!(format!("{:#x}", unsafe { v() }), r.get("version_num"));
    again.close().expect("close libcrypto again");
    assert_unknown_to_system_loader(CRYPTO.soname, "after close");
}

// ---------------------------------------------------------------------------
// 5. Executable segments are file-backed.
// ---------------------------------------------------------------------------

#[test]
fn executable_segment_is_mapped_from_the_file() {
    let _g = exclusive();
    let w = &SQLITE;
    let system = system_loader_path_only(w);
    assert_not_mapped(w, &system, "before loading");
    let lib = Library::open(w.soname).expect("load libsqlite3");
    let path = canonical(lib.path());
    assert_eq!(path, system);
    let p = path.to_string_lossy().into_owned();
    let ino = std::fs::metadata(&path).expect("stat").ino();
    let lines = maps();
    let span = lib.span();

    let exec: Vec<_> = lib
        .segments()
        .iter()
        .filter(|s| s.prot & libc::PROT_EXEC != 0)
        .collect();
    assert!(
        !exec.is_empty(),
        "no executable segment: {:#x?}",
        lib.segments()
    );
    for seg in &exec {
        assert!(
            !seg.file_range.is_empty(),
            "text segment {} has no file range",
            seg.index
        );
        let line = lines
            .iter()
            .find(|l| l.start <= seg.file_range.start && seg.file_range.end <= l.end)
            .unwrap_or_else(|| {
                panic!(
                    "no single maps line holds text segment {:#x?}:\n{}",
                    seg,
                    maps_dump(&lines, |l| l.start < span.end && span.start < l.end)
                )
            });
        assert_eq!(
            line.path, p,
            "text is not mapped from the library: {}",
            line.text
        );
        assert_eq!(line.inode, ino, "text maps another inode: {}", line.text);
        assert_eq!(line.perms, "r-xp", "text protections: {}", line.text);
        assert_eq!(
            line.offset + (seg.file_range.start - line.start) as u64,
            seg.file_offset,
            "text file offset: {}",
            line.text
        );
    }
    // No executable anonymous memory in the span.
    let anon_exec = maps_dump(&lines, |l| {
        l.start < span.end && span.start < l.end && l.perms.contains('x') && l.path != p
    });
    assert!(
        anon_exec.is_empty(),
        "executable memory not from the file:\n{anon_exec}"
    );

    // A function lies in a text segment.
    // SAFETY: sqlite3_libversion's type.
    let f = unsafe { lib.get::<unsafe extern "C" fn() -> *const c_char>("sqlite3_libversion") }
        .expect("sqlite3_libversion");
    assert!(
        exec.iter().any(|s| s.file_range.contains(&f.addr())),
        "sqlite3_libversion at {:#x} is not in a text segment",
        f.addr()
    );
    // SAFETY: calling it returns a static string.
    assert!(!unsafe { cstring(f()) }.is_empty());
    close_and_check_unmapped(w, lib, &path);
}

/// The canonical path of the file the system loader picks for `w`.
fn system_loader_path_only(w: &Workload) -> PathBuf {
    system_loader(w).path
}

// ---------------------------------------------------------------------------
// 6. Unloading.
// ---------------------------------------------------------------------------

#[test]
fn close_unmaps_and_reload_works() {
    let _g = exclusive();
    for w in [&ZLIB, &SQLITE, &EXPAT] {
        let system = system_loader_path_only(w);
        assert_not_mapped(w, &system, "before loading");
        for round in 0..2 {
            let lib = Library::open(w.soname)
                .unwrap_or_else(|e| panic!("load {} (round {round}): {e}", w.soname));
            let path = canonical(lib.path());
            assert_eq!(path, system);
            assert_segments_mapped(&lib, &path);
            // SAFETY: every version function is `const char *(void)` except
            // OpenSSL's, which is not in this list.
            let f = unsafe { lib.get::<unsafe extern "C" fn() -> *const c_char>(first_symbol(w)) }
                .expect("version function");
            // SAFETY: returns a static string.
            assert!(!unsafe { cstring(f()) }.is_empty());
            close_and_check_unmapped(w, lib, &path);
        }
    }
}

#[test]
fn close_unmaps_only_after_the_last_handle() {
    let _g = exclusive();
    let w = &EXPAT;
    let system = system_loader_path_only(w);
    assert_not_mapped(w, &system, "before loading");
    let a = Library::open(w.soname).expect("first open");
    let b = Library::open(w.soname).expect("second open");
    assert_eq!(a.base(), b.base(), "one file, one copy");
    let path = canonical(a.path());
    a.close().expect("close first");
    assert_segments_mapped(&b, &path);
    // SAFETY: XML_ExpatVersion's type.
    let f = unsafe { b.get::<unsafe extern "C" fn() -> *const c_char>("XML_ExpatVersion") }
        .expect("XML_ExpatVersion");
    // SAFETY: returns a static string.
    assert!(unsafe { cstring(f()) }.starts_with("expat_"));
    close_and_check_unmapped(w, b, &path);
}
