//! soloader against glibc's `dlopen`, measured side by side in one run.
//!
//! For each library: load (open + map + relocate + initialise) and unload,
//! and symbol lookup (hit and miss), with the two contenders alternated
//! iteration by iteration so that machine drift hits both alike; medians
//! over many iterations after a warm-up. Host dependencies (libc, libm …)
//! are loaded once before any timing, so `dlclose` does not unload and
//! reload them each round. libcrypto is `NODELETE`: it is measured on a
//! copy with `DF_1_NODELETE` cleared, so both loaders really unload it.
//! Also: relocations per microsecond, page faults and system calls per load
//! (the latter counted by `strace -c` on a child of this benchmark).
//!
//! The relocation cache (`Options::relocation_cache`) is measured twice:
//! in the same loop ("cached": a warm cache, the same alternation), and
//! where it matters, the first load of a library in a fresh process
//! (each contender in its own child process, interleaved, medians).
//!
//! `make bench` runs it; the table goes to stdout and JSON to
//! `target/bench.json`.

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use soloader::{Library, Options};

const WARMUP: usize = 50;

fn iterations() -> usize {
    std::env::var("SOLOADER_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn cstr(p: &Path) -> CString {
    CString::new(p.to_str().expect("utf-8 path")).expect("no NUL")
}

fn glibc_open(p: &CString) -> *mut c_void {
    // SAFETY: loading a trusted system library with the system loader.
    let h = unsafe { libc::dlopen(p.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen failed");
    h
}

fn glibc_close(h: *mut c_void) {
    // SAFETY: a handle from glibc_open.
    unsafe { libc::dlclose(h) };
}

/// Page faults of this process so far.
fn minflt() -> i64 {
    // SAFETY: getrusage fills the struct.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt + u.ru_majflt
    }
}

/// A copy of `src` in `dir` with `DF_1_NODELETE` cleared in its dynamic
/// section, so that unloading really unloads.
fn without_nodelete(src: &Path, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(src).expect("read library");
    let obj = goblin::elf::Elf::parse(&bytes).expect("parse library");
    let dynamic = obj
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_DYNAMIC)
        .expect("PT_DYNAMIC");
    let (off, size) = (dynamic.p_offset as usize, dynamic.p_filesz as usize);
    drop(obj);
    for at in (off..off + size).step_by(16) {
        let tag = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if tag == goblin::elf::dynamic::DT_FLAGS_1 {
            let v = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
            let v = v & !goblin::elf::dynamic::DF_1_NODELETE;
            bytes[at + 8..at + 16].copy_from_slice(&v.to_le_bytes());
        }
    }
    let out = dir.join(src.file_name().expect("file name"));
    std::fs::write(&out, bytes).expect("write copy");
    out
}

/// A generated library with `relocs` symbolic relocations against `syms`
/// exported functions (a data table of pointers to them), built with the
/// system C compiler.
fn generated(dir: &Path, syms: usize, relocs: usize) -> PathBuf {
    let mut c = String::new();
    for i in 0..syms {
        c.push_str(&format!("int gen_f{i}(void) {{ return {i}; }}\n"));
    }
    c.push_str(&format!("void *gen_table[{relocs}] = {{\n"));
    for i in 0..relocs {
        c.push_str(&format!("(void *)&gen_f{},\n", i % syms));
    }
    c.push_str("};\nint gen_sum(int n) { int s = 0; for (int i = 0; i < n; i++) s += ((int (*)(void))gen_table[i])(); return s; }\n");
    let src = dir.join(format!("gen_{syms}_{relocs}.c"));
    let out = dir.join(format!("libgen_{syms}_{relocs}.so"));
    std::fs::write(&src, c).expect("write source");
    let st = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run the C compiler");
    assert!(st.success(), "compiling the generated library failed");
    out
}

fn relocation_count(path: &Path) -> usize {
    soloader::inspect::inspect(path)
        .map(|i| i.relocations.iter().map(|r| r.count).sum())
        .unwrap_or(0)
}

struct Row {
    name: String,
    relocs: usize,
    so_load: f64,
    gl_load: f64,
    /// soloader with a warm relocation cache.
    rc_load: f64,
    so_unload: f64,
    gl_unload: f64,
    so_hit: f64,
    gl_hit: f64,
    so_miss: f64,
    gl_miss: f64,
    so_faults: f64,
    gl_faults: f64,
    /// A load+unload cycle in a child process sampled by `perf`.
    so_kernel: Option<Split>,
    gl_kernel: Option<Split>,
    so_syscalls: Option<f64>,
    gl_syscalls: Option<f64>,
}

fn bench_library(name: &str, path: &Path, hit: &str, cache: &Path) -> Row {
    let n = iterations();
    let c = cstr(path);
    let (mut sl, mut gl, mut su, mut gu) = (vec![], vec![], vec![], vec![]);
    let mut rl = vec![];
    let (mut sf, mut gf) = (0i64, 0i64);
    let cached = Options::new().relocation_cache(cache);
    // A warm cache is one written before the run: write it, then let it
    // settle (a process trusts a cache file it verified only once the
    // file's ctime is a second old; a younger one is read and checksummed
    // again by every load).
    drop(Library::open_with(path, &cached).expect("soloader load (cache)"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for i in 0..WARMUP + n {
        let t = Instant::now();
        let lib = Library::open_with(path, &cached).expect("soloader load (cache)");
        let rload = t.elapsed().as_secs_f64();
        drop(lib);
        if i >= WARMUP {
            rl.push(rload * 1e6);
        }
        let f0 = minflt();
        let t = Instant::now();
        let lib = Library::open(path).expect("soloader load");
        let load = t.elapsed().as_secs_f64();
        let f1 = minflt();
        let t = Instant::now();
        drop(lib);
        let unload = t.elapsed().as_secs_f64();
        let f2 = minflt();
        let t = Instant::now();
        let h = glibc_open(&c);
        let gload = t.elapsed().as_secs_f64();
        let f3 = minflt();
        let t = Instant::now();
        glibc_close(h);
        let gunload = t.elapsed().as_secs_f64();
        if i >= WARMUP {
            sl.push(load * 1e6);
            su.push(unload * 1e6);
            gl.push(gload * 1e6);
            gu.push(gunload * 1e6);
            sf += f1 - f0;
            gf += f3 - f2;
        }
    }
    // Lookups on one loaded copy each.
    let lib = Library::open(path).expect("soloader load");
    let h = glibc_open(&c);
    let hit_c = CString::new(hit).expect("no NUL");
    let miss = "soloader_bench_no_such_symbol";
    let miss_c = CString::new(miss).expect("no NUL");
    let reps = 2000;
    let (mut sh, mut gh, mut sm, mut gm) = (vec![], vec![], vec![], vec![]);
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: only the address is used.
            let s = unsafe { lib.get::<*const c_void>(hit) };
            std::hint::black_box(s.is_ok());
        }
        sh.push(t.elapsed().as_secs_f64() * 1e9 / reps as f64);
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: plain dlsym on a live handle.
            std::hint::black_box(unsafe { libc::dlsym(h, hit_c.as_ptr()) });
        }
        gh.push(t.elapsed().as_secs_f64() * 1e9 / reps as f64);
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: only the error is used.
            let s = unsafe { lib.get::<*const c_void>(miss) };
            std::hint::black_box(s.is_err());
        }
        sm.push(t.elapsed().as_secs_f64() * 1e9 / reps as f64);
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: plain dlsym on a live handle; dlerror clears the
            // error string it sets.
            std::hint::black_box(unsafe { libc::dlsym(h, miss_c.as_ptr()) });
            // SAFETY: as above.
            std::hint::black_box(unsafe { libc::dlerror() });
        }
        gm.push(t.elapsed().as_secs_f64() * 1e9 / reps as f64);
    }
    drop(lib);
    glibc_close(h);
    Row {
        name: name.to_string(),
        relocs: relocation_count(path),
        so_load: median(&mut sl),
        gl_load: median(&mut gl),
        rc_load: median(&mut rl),
        so_unload: median(&mut su),
        gl_unload: median(&mut gu),
        so_hit: median(&mut sh),
        gl_hit: median(&mut gh),
        so_miss: median(&mut sm),
        gl_miss: median(&mut gm),
        so_faults: sf as f64 / n as f64,
        gl_faults: gf as f64 / n as f64,
        so_kernel: kernel_share("soloader", path),
        gl_kernel: kernel_share("glibc", path),
        so_syscalls: syscalls("soloader", path),
        gl_syscalls: syscalls("glibc", path),
    }
}

/// `tool ARGS OUT [--] EXE` running this benchmark as a child that loads and
/// unloads `path` `n` times with `loader` (after one warm-up load).
fn under(
    tool: &str,
    args: &[&str],
    out: &Path,
    exe: &Path,
    loader: &str,
    path: &Path,
    n: usize,
) -> Command {
    let mut c = Command::new(tool);
    c.args(args).arg(out);
    if tool == "perf" {
        c.arg("--");
    }
    c.arg(exe)
        .env(
            "SOLOADER_BENCH_CHILD",
            format!("{loader}:{}:{n}", path.display()),
        )
        .env("SOLOADER_GDB", "0");
    c
}

/// System calls per load+unload, from `strace -c` on a child that does
/// 100 loads after one warm-up load (subtracting a run with 0 loads).
fn syscalls(loader: &str, path: &Path) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let count = |n: usize| -> Option<f64> {
        let out =
            std::env::temp_dir().join(format!("soloader-bench-strace-{}", std::process::id()));
        let st = under("strace", &["-f", "-c", "-o"], &out, &exe, loader, path, n)
            .stdout(std::process::Stdio::null())
            .status()
            .ok()?;
        if !st.success() {
            return None;
        }
        let text = std::fs::read_to_string(&out).ok()?;
        std::fs::remove_file(&out).ok();
        let total = text.lines().find(|l| l.trim_end().ends_with("total"))?;
        total.split_whitespace().nth(3)?.parse::<f64>().ok()
    };
    let (a, b) = (count(0)?, count(100)?);
    Some((b - a) / 100.0)
}

/// One first load in this (fresh) process: `glibc`, `soloader` or
/// `cached:DIR`; prints its duration in µs.
fn first_load(spec: &str) {
    let (mode, path) = spec.split_once(':').expect("mode:path");
    let (mode, path, dir) = match mode {
        "cached" => {
            let (dir, path) = path.split_once(':').expect("cached:dir:path");
            (mode, path, Some(dir))
        }
        _ => (mode, path, None),
    };
    preload_host();
    let t = Instant::now();
    match mode {
        "glibc" => {
            let h = glibc_open(&cstr(Path::new(path)));
            println!("{}", t.elapsed().as_secs_f64() * 1e6);
            glibc_close(h);
        }
        _ => {
            let mut o = Options::new();
            if let Some(d) = dir {
                o = o.relocation_cache(d);
            }
            let lib = Library::open_with(path, &o).expect("load");
            println!("{}", t.elapsed().as_secs_f64() * 1e6);
            drop(lib);
        }
    }
}

/// Medians of the first load in fresh processes: (glibc, soloader,
/// soloader with a warm relocation cache), in µs.
type Fresh = (f64, f64, f64);

/// The [`Fresh`] medians of `runs` processes each, or `None` if a child
/// failed.
fn fresh_process_loads(path: &Path, cache: &Path, runs: usize) -> Option<Fresh> {
    let exe = std::env::current_exe().ok()?;
    let one = |spec: String| -> Option<f64> {
        let out = Command::new(&exe)
            .env("SOLOADER_BENCH_FIRST", spec)
            .env("SOLOADER_GDB", "0")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let cached = format!("cached:{}:{}", cache.display(), path.display());
    one(cached.clone())?; // warm the cache for this executable
    let (mut g, mut s, mut c) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        g.push(one(format!("glibc:{}", path.display()))?);
        s.push(one(format!("soloader:{}", path.display()))?);
        c.push(one(cached.clone())?);
    }
    Some((median(&mut g), median(&mut s), median(&mut c)))
}

fn child(spec: &str) {
    let mut it = spec.splitn(3, ':');
    let (loader, path, n) = (
        it.next().unwrap_or(""),
        PathBuf::from(it.next().unwrap_or("")),
        it.next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0),
    );
    preload_host();
    let c = cstr(&path);
    // One warm-up load: the first load builds indexes on both sides.
    let t = if loader == "soloader" {
        drop(Library::open(&path).expect("load"));
        let t = Instant::now();
        for _ in 0..n {
            drop(Library::open(&path).expect("load"));
        }
        t
    } else {
        glibc_close(glibc_open(&c));
        let t = Instant::now();
        for _ in 0..n {
            glibc_close(glibc_open(&c));
        }
        t
    };
    // µs per load+unload cycle.
    println!("{}", t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64);
}

/// Where a load+unload cycle's time goes: a child does `n` cycles under
/// `perf record -g -e cpu-clock` (the only way here to split time between
/// user space and the kernel precisely: getrusage's split comes from
/// timer ticks, a handful over a whole run).
struct Split {
    /// µs per cycle (under perf, which slows it down).
    cycle: f64,
    /// The kernel's share of the samples.
    kernel: f64,
    /// The share of samples inside `munmap` (in the kernel): for both
    /// loaders, unloading is one `munmap` of the library's span.
    munmap: f64,
}

/// The [`Split`] of `loader`'s cycles on `path`, or `None` without a
/// working `perf`.
fn kernel_share(loader: &str, path: &Path) -> Option<Split> {
    let exe = std::env::current_exe().ok()?;
    let data = std::env::temp_dir().join(format!("soloader-bench-perf-{}", std::process::id()));
    let n = 1500;
    let record = ["record", "-q", "-g", "-e", "cpu-clock", "-F", "20000", "-o"];
    let out = under("perf", &record, &data, &exe, loader, path, n)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let cycle: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let report = |args: &[&str]| -> Option<String> {
        let o = Command::new("perf")
            .args(["report", "--stdio", "-i"])
            .arg(&data)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let percent = |text: &str, what: &str, column: usize| -> Option<f64> {
        text.lines()
            .find(|l| l.contains(what))?
            .split_whitespace()
            .nth(column)?
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
    };
    let by_dso = report(&["--no-children", "--sort", "dso", "-g", "none"])?;
    let by_sym = report(&["--children", "--sort", "sym", "-g", "none"])?;
    std::fs::remove_file(&data).ok();
    Some(Split {
        cycle,
        kernel: percent(&by_dso, "[kernel.kallsyms]", 0)? / 100.0,
        munmap: percent(&by_sym, "[k] __x64_sys_munmap", 0).unwrap_or(0.0) / 100.0,
    })
}

/// Loads the host libraries the measured ones need, once, with the system
/// loader (soloader binds to them; glibc keeps them).
fn preload_host() {
    for n in ["libm.so.6", "libpthread.so.0", "libdl.so.2"] {
        let c = CString::new(n).expect("no NUL");
        // SAFETY: loading glibc's own libraries; the handles are kept.
        unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn main() {
    if let Ok(spec) = std::env::var("SOLOADER_BENCH_CHILD") {
        child(&spec);
        return;
    }
    if let Ok(spec) = std::env::var("SOLOADER_BENCH_FIRST") {
        first_load(&spec);
        return;
    }
    // `cargo bench` passes --bench. `cargo test --all-targets` (make test)
    // runs this binary without it: measuring is make bench's job, not the
    // test suite's.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks: run `make bench` (cargo bench --bench compare)");
        return;
    }
    preload_host();
    let dir = std::env::temp_dir().join(format!("soloader-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let find = |n: &str| soloader::find_library(n, &Options::new()).expect("library installed");
    let mut libs: Vec<(String, PathBuf, &str)> = vec![
        ("libz".into(), find("libz.so.1"), "inflate"),
        ("libsqlite3".into(), find("libsqlite3.so.0"), "sqlite3_open"),
        (
            "libcrypto (NODELETE cleared)".into(),
            without_nodelete(&find("libcrypto.so.3"), &dir),
            "EVP_sha256",
        ),
    ];
    eprintln!("generating a library with 100,000 relocations and 20,000 exported symbols …");
    libs.push((
        "generated 100k relocs / 20k syms".into(),
        generated(&dir, 20_000, 100_000),
        "gen_f12345",
    ));
    for (syms, relocs) in [(2_000, 10_000), (10_000, 50_000)] {
        libs.push((
            format!(
                "generated {}k relocs / {}k syms",
                relocs / 1000,
                syms / 1000
            ),
            generated(&dir, syms, relocs),
            "gen_f1",
        ));
    }
    let cache = dir.join("relocation-cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let rows: Vec<Row> = libs
        .iter()
        .map(|(n, p, hit)| {
            eprintln!("measuring {n} …");
            bench_library(n, p, hit, &cache)
        })
        .collect();
    let fresh: Vec<(String, Option<Fresh>)> = libs
        .iter()
        .take(3)
        .map(|(n, p, _)| {
            eprintln!("first loads of {n} in fresh processes …");
            (n.clone(), fresh_process_loads(p, &cache, 31))
        })
        .collect();
    std::fs::remove_dir_all(&dir).ok();

    println!();
    println!("soloader vs glibc dlopen(RTLD_NOW|RTLD_LOCAL)/dlclose/dlsym, medians of {} alternated iterations", iterations());
    println!(
        "{:<34} {:>8} {:>10} {:>10} {:>6} {:>10} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6} {:>11} {:>13} {:>13}",
        "library", "relocs", "load µs", "glibc", "ratio", "cached µs", "unload", "glibc", "ratio", "hit ns", "glibc", "ratio",
        "miss ns", "glibc", "ratio", "relocs/µs", "faults/load", "syscalls/load"
    );
    let mut json = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let sys = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "{:<34} {:>8} {:>10.1} {:>10.1} {:>6.2} {:>10.1} {:>9.1} {:>9.1} {:>6.2} {:>8.0} {:>8.0} {:>6.2} {:>8.0} {:>8.0} {:>6.2} {:>5.0} /{:>5.0} {:>6.1} /{:>6.1} {:>6} /{:>6}",
            r.name,
            r.relocs,
            r.so_load,
            r.gl_load,
            ratio(r.so_load, r.gl_load),
            r.rc_load,
            r.so_unload,
            r.gl_unload,
            ratio(r.so_unload, r.gl_unload),
            r.so_hit,
            r.gl_hit,
            ratio(r.so_hit, r.gl_hit),
            r.so_miss,
            r.gl_miss,
            ratio(r.so_miss, r.gl_miss),
            r.relocs as f64 / r.so_load,
            r.relocs as f64 / r.gl_load,
            r.so_faults,
            r.gl_faults,
            sys(r.so_syscalls),
            sys(r.gl_syscalls),
        );
        json.push(format!(
            "{{\"library\":\"{}\",\"relocations\":{},\"load_us\":{{\"soloader\":{:.2},\"glibc\":{:.2},\"ratio\":{:.3},\"soloader_cached\":{:.2}}},\"unload_us\":{{\"soloader\":{:.2},\"glibc\":{:.2},\"ratio\":{:.3}}},\"lookup_hit_ns\":{{\"soloader\":{:.1},\"glibc\":{:.1},\"ratio\":{:.3}}},\"lookup_miss_ns\":{{\"soloader\":{:.1},\"glibc\":{:.1},\"ratio\":{:.3}}},\"faults_per_load\":{{\"soloader\":{:.1},\"glibc\":{:.1}}},\"kernel_share_of_cycle\":{{\"soloader\":{},\"glibc\":{}}},\"syscalls_per_load\":{{\"soloader\":{},\"glibc\":{}}}}}",
            r.name, r.relocs, r.so_load, r.gl_load, ratio(r.so_load, r.gl_load), r.rc_load, r.so_unload, r.gl_unload,
            ratio(r.so_unload, r.gl_unload), r.so_hit, r.gl_hit, ratio(r.so_hit, r.gl_hit), r.so_miss, r.gl_miss,
            ratio(r.so_miss, r.gl_miss), r.so_faults, r.gl_faults,
            r.so_kernel.as_ref().map_or("null".into(), |k| format!("{:.3}", k.kernel)),
            r.gl_kernel.as_ref().map_or("null".into(), |k| format!("{:.3}", k.kernel)),
            r.so_syscalls.map_or("null".into(), |v| format!("{v:.1}")),
            r.gl_syscalls.map_or("null".into(), |v| format!("{v:.1}")),
        ));
        if let Some((_, Some((g, s, c)))) = fresh.get(i) {
            let last = json.len() - 1;
            json[last].pop();
            json[last].push_str(&format!(
                ",\"first_load_fresh_process_us\":{{\"glibc\":{g:.1},\"soloader\":{s:.1},\"soloader_cached\":{c:.1}}}}}"
            ));
        }
    }
    println!();
    println!("where a load+unload cycle's time goes (a child doing 1,500 cycles under perf record -g -e cpu-clock;");
    println!("perf slows the cycle down, the shares are what counts): both loaders make the same system calls and");
    println!("take the same page faults, so the kernel's part is a floor. 'load floor' = glibc's kernel share of");
    println!("the cycle, the ratio a loader doing that same kernel work would reach with no user-space time;");
    println!("'unload floor' = the time glibc's munmap takes (its share of the cycle, applied to the load+unload");
    println!("medians above) / glibc's unload median: unloading is that one munmap for both");
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11} {:>8} {:>8} {:>12}",
        "library",
        "cycle µs",
        "glibc",
        "kernel %",
        "glibc",
        "user µs",
        "glibc",
        "load floor",
        "munmap %",
        "glibc",
        "unload floor"
    );
    for r in &rows {
        match (&r.so_kernel, &r.gl_kernel) {
            (Some(s), Some(g)) => println!(
                "{:<34} {:>10.1} {:>10.1} {:>10.0} {:>10.0} {:>9.1} {:>9.1} {:>11.2} {:>8.0} {:>8.0} {:>12.2}",
                r.name,
                s.cycle,
                g.cycle,
                s.kernel * 100.0,
                g.kernel * 100.0,
                s.cycle * (1.0 - s.kernel),
                g.cycle * (1.0 - g.kernel),
                g.kernel,
                s.munmap * 100.0,
                g.munmap * 100.0,
                ratio(g.munmap * (r.gl_load + r.gl_unload), r.gl_unload),
            ),
            _ => println!("{:<34} (perf record unavailable)", r.name),
        }
    }
    println!();
    println!("first load in a fresh process (what the relocation cache is for), medians of 31 processes each:");
    println!(
        "{:<34} {:>10} {:>10} {:>16} {:>8} {:>8}",
        "library", "glibc µs", "soloader", "soloader cached", "vs glibc", "vs cold"
    );
    for (name, f) in &fresh {
        match f {
            Some((g, s, c)) => println!(
                "{:<34} {:>10.0} {:>10.0} {:>16.0} {:>8.2} {:>8.2}",
                name,
                g,
                s,
                c,
                ratio(*c, *g),
                ratio(*c, *s)
            ),
            None => println!("{name:<34} (child processes failed)"),
        }
    }
    // In the target directory this run builds into.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let out = target.join("bench.json");
    let text = format!("[\n  {}\n]\n", json.join(",\n  "));
    if std::fs::write(&out, text).is_ok() {
        println!("\nJSON: {}", out.display());
    }
}
