//! Hostile input: thousands of deterministic mutants of the test libraries
//! and of libz, through `check` and `inspect` in process and a sample of
//! them through `soloader check` / `soloader inspect` as subprocesses.
//!
//! The mutants are bit flips (seeded), truncations at every structure
//! boundary, and targeted mutations of ELF header, program header,
//! dynamic, symbol, hash, version, string and relocation fields, located by
//! parsing the pristine file with goblin, set to boundary values (0, 1,
//! -1, huge, misaligned, pointing past the end of the file or image).
//!
//! None may crash, panic or hang (over 5 s); each yields OK or a typed error
//! whose `Display` is one line naming the file at fault; and nothing of a
//! mutant stays mapped or open afterwards. Inputs the fuzzer once crashed
//! on are kept in `tests/regressions/` and run here too.

mod common;
mod hostile_elf;

use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use hostile_elf::*;
use soloader::{Error, Options};

/// The libraries mutated: test libraries covering every feature the loader
/// validates (dependencies, versions, TLS, IFUNC, init arrays, C++), and
/// the system's libz.
const TESTLIBS: &[&str] = &[
    "libarith.so",
    "libdata.so",
    "libbss.so",
    "libinit.so",
    "libifunc.so",
    "libtls.so",
    "libtls_desc.so",
    "libversioned.so",
    "libneedhidden.so",
    "libdiamond_a.so",
    "libdup_ab.so",
    "libuselibc.so",
    "libcxx.so",
];
const LIBZ: &str = "/lib/x86_64-linux-gnu/libz.so.1";

/// Longest any one mutant may take (check and inspect together).
const HANG: Duration = Duration::from_secs(5);
/// Mutants run through the CLI.
const CLI_SAMPLE: usize = 200;

/// In-process tests of this binary assert on the process's mappings and
/// descriptor count, and the CLI tests open pipes to their children: one
/// at a time.
static IN_PROCESS: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------
// The mutants.

#[derive(Debug, Clone)]
enum Mutation {
    /// Set the field at `off` (`width` bytes) to `value`.
    Set {
        off: usize,
        width: usize,
        value: u64,
    },
    /// Keep the first `len` bytes.
    Truncate(usize),
    /// Flip these bits (byte offset, bit).
    Flip(Vec<(usize, u8)>),
    /// Overwrite one byte of the dynamic string table.
    Byte { off: usize, value: u8 },
    /// Rewrite whole program headers (segments split, moved, swapped).
    Phdrs(PhdrWrites),
}

struct Source {
    name: String,
    bytes: Vec<u8>,
}

struct Mutant {
    source: usize,
    what: String,
    category: &'static str,
    mutation: Mutation,
}

impl Mutant {
    fn bytes(&self, sources: &[Source]) -> Vec<u8> {
        let mut b = sources[self.source].bytes.clone();
        match &self.mutation {
            Mutation::Set { off, width, value } => write_uint(&mut b, *off, *width, *value),
            Mutation::Truncate(len) => b.truncate(*len),
            Mutation::Flip(bits) => {
                for &(off, bit) in bits {
                    b[off] ^= 1 << bit;
                }
            }
            Mutation::Byte { off, value } => b[*off] = *value,
            Mutation::Phdrs(list) => {
                for (at, ph) in list {
                    b[*at..*at + 56].copy_from_slice(ph);
                }
            }
        }
        b
    }
}

fn sources() -> Vec<Source> {
    let mut v: Vec<Source> = TESTLIBS
        .iter()
        .map(|n| Source {
            name: n.to_string(),
            bytes: fs::read(common::lib(n)).unwrap_or_else(|e| panic!("reading {n}: {e}")),
        })
        .collect();
    v.push(Source {
        name: "libz.so.1".into(),
        bytes: fs::read(LIBZ).expect("reading the system's libz"),
    });
    v
}

fn category_name(c: Category) -> &'static str {
    match c {
        Category::ElfHeader => "ELF header",
        Category::ProgramHeader => "program header",
        Category::Dynamic => "dynamic",
        Category::Symbol => "symbol",
        Category::Hash => "hash",
        Category::Version => "version",
        Category::Relocation => "relocation",
        Category::Strings => "strings",
        Category::Other => "init/fini/eh_frame",
    }
}

/// Every mutant, in a fixed order (the same on every run).
fn mutants(sources: &[Source]) -> Vec<Mutant> {
    let mut out = Vec::new();
    for (si, s) in sources.iter().enumerate() {
        let big = s.name.starts_with("libz");
        let l = layout(&s.bytes);
        let mut rng = Rng::new(0x5eed_0000 + si as u64);

        // Truncations at structure boundaries.
        let quota = if big { 120 } else { 45 };
        for i in rng.sample(l.boundaries.len(), quota) {
            let len = l.boundaries[i];
            out.push(Mutant {
                source: si,
                what: format!("truncated to {len:#x} bytes"),
                category: "truncation",
                mutation: Mutation::Truncate(len),
            });
        }

        // Targeted field mutations, a quota per category.
        let mut by_cat: BTreeMap<Category, Vec<(usize, u64)>> = BTreeMap::new();
        for (fi, f) in l.fields.iter().enumerate() {
            let orig = read_uint(&s.bytes, f.off, f.width);
            for v in values(f, orig, &l) {
                by_cat.entry(f.category).or_default().push((fi, v));
            }
        }
        // Relocations pointing at every kind of wrong place.
        let ro = l.loads.iter().find(|x| x.2 & 2 == 0).map_or(0, |x| x.0 + 8);
        for (k, &(entry, r_offset, _)) in l.relas.iter().enumerate().take(3) {
            for (why, v) in [
                ("a read-only segment", ro),
                ("a gap", l.image_end + 0x10),
                ("straddling the image's end", l.image_end - 4),
                ("misaligned", r_offset + 1),
            ] {
                out.push(Mutant {
                    source: si,
                    what: format!("relocation {k} r_offset into {why} ({v:#x})"),
                    category: "relocation",
                    mutation: Mutation::Set {
                        off: entry,
                        width: 8,
                        value: v,
                    },
                });
            }
        }
        for (what, list) in segment_mutations(&l) {
            out.push(Mutant {
                source: si,
                what,
                category: "segments",
                mutation: Mutation::Phdrs(list),
            });
        }
        let quota = if big { 140 } else { 36 };
        for (cat, cands) in &by_cat {
            for i in rng.sample(cands.len(), quota) {
                let (fi, v) = cands[i];
                let f = &l.fields[fi];
                out.push(Mutant {
                    source: si,
                    what: format!("{} = {v:#x}", f.name),
                    category: category_name(*cat),
                    mutation: Mutation::Set {
                        off: f.off,
                        width: f.width,
                        value: v,
                    },
                });
            }
        }

        // The dynamic string table: terminators removed, control bytes
        // and high bytes in names.
        if let Some((start, end)) = l.dynstr {
            let quota = if big { 60 } else { 16 };
            for k in 0..quota {
                let off = start + rng.below(end - start);
                let value = [0x41, b'\n', 0xff, 0x00, b'/', b'\r'][k % 6];
                out.push(Mutant {
                    source: si,
                    what: format!(".dynstr byte {:#x} = {value:#04x}", off - start),
                    category: "strings",
                    mutation: Mutation::Byte { off, value },
                });
            }
        }

        // Bit flips: mostly in the structures the loader reads.
        let quota = if big { 300 } else { 70 };
        for _ in 0..quota {
            let n = 1 + rng.below(3);
            let bits: Vec<(usize, u8)> = (0..n)
                .map(|_| {
                    let off = if rng.below(10) < 8 && !l.regions.is_empty() {
                        let (a, b) = l.regions[rng.below(l.regions.len())];
                        a + rng.below(b - a)
                    } else {
                        rng.below(l.size)
                    };
                    (off, rng.below(8) as u8)
                })
                .collect();
            let what = bits
                .iter()
                .map(|(o, b)| format!("{o:#x}.{b}"))
                .collect::<Vec<_>>()
                .join(",");
            out.push(Mutant {
                source: si,
                what: format!("bits flipped at {what}"),
                category: "bit flips",
                mutation: Mutation::Flip(bits),
            });
        }
    }
    out
}

const PT_LOAD: u32 = 1;
const PT_TLS: u32 = 7;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PAGE: u64 = 4096;

/// Program headers to write: (file offset, the 56 bytes).
type PhdrWrites = Vec<(usize, [u8; 56])>;

/// Compound mutations of the program headers, which single fields cannot
/// reach: a writable segment split so that a read-only one shares its last
/// page, a segment moved into the previous one's last page, segments
/// swapped or shifted, protections changed, a `PT_TLS` out of bounds.
fn segment_mutations(l: &Layout) -> Vec<(String, PhdrWrites)> {
    let mut out = Vec::new();
    let loads: Vec<usize> = (0..l.phdrs.len())
        .filter(|&i| l.phdrs[i].p_type == PT_LOAD && l.phdrs[i].p_memsz > 0)
        .collect();
    let relro: Vec<usize> = (0..l.phdrs.len())
        .filter(|&i| l.phdrs[i].p_type == PT_GNU_RELRO)
        .collect();
    // A header that may be reused: neither a load, nor the dynamic
    // section, nor RELRO.
    let spare_after = |i: usize| {
        (i + 1..l.phdrs.len()).find(|&j| matches!(l.phdrs[j].p_type, 4 | 0x6474_e551 | 0x6474_e553))
    };
    let relro_off: PhdrWrites = relro
        .iter()
        .map(|&r| {
            let mut p = l.phdrs[r];
            p.p_type = 0;
            (p.at, p.encode())
        })
        .collect();

    for &w in loads.iter().filter(|&&i| l.phdrs[i].p_flags & 2 != 0) {
        let wp = l.phdrs[w];
        let Some(x) = spare_after(w) else { continue };
        let to_page = PAGE - wp.p_vaddr % PAGE;
        for split in [8, 0x40, 0x400, to_page, wp.p_filesz / 2] {
            if split == 0 || split >= wp.p_filesz {
                continue;
            }
            for flags in [4, 5, 6] {
                for keep_relro in [false, true] {
                    let mut a = wp;
                    a.p_filesz = split;
                    a.p_memsz = split;
                    let mut b = wp;
                    b.at = l.phdrs[x].at;
                    b.p_flags = flags;
                    b.p_offset += split;
                    b.p_vaddr += split;
                    b.p_filesz -= split;
                    b.p_memsz -= split;
                    let mut list = vec![(a.at, a.encode()), (b.at, b.encode())];
                    if !keep_relro {
                        list.extend(relro_off.iter().copied());
                    }
                    out.push((
                        format!(
                            "writable PT_LOAD split at +{split:#x}, the rest flags {flags}{}",
                            if keep_relro { "" } else { ", no RELRO" }
                        ),
                        list,
                    ));
                }
            }
        }
        // The writable segment read-only; or a second copy of it.
        let mut ro = wp;
        ro.p_flags = 4;
        out.push((
            "writable PT_LOAD made read-only".into(),
            vec![(ro.at, ro.encode())],
        ));
        let mut dup = wp;
        dup.at = l.phdrs[x].at;
        out.push((
            "writable PT_LOAD duplicated".into(),
            vec![(dup.at, dup.encode())],
        ));
        // A PT_TLS in the .bss, past the file, and a huge one.
        for (what, filesz, memsz, align) in [
            ("in .bss", 16, 64, 8),
            ("of 2 GiB", 0, 1 << 31, 8),
            ("aligned to 1 MiB", 0, 64, 1 << 20),
            ("aligned to 3", 0, 64, 3),
        ] {
            let mut t = wp;
            t.at = l.phdrs[x].at;
            t.p_type = PT_TLS;
            t.p_vaddr = wp.p_vaddr + wp.p_memsz - 8;
            t.p_offset = wp.p_offset + wp.p_filesz;
            t.p_filesz = filesz;
            t.p_memsz = memsz;
            t.p_align = align;
            out.push((format!("PT_TLS {what}"), vec![(t.at, t.encode())]));
        }
    }
    for pair in loads.windows(2) {
        let (a, b) = (l.phdrs[pair[0]], l.phdrs[pair[1]]);
        let a_end = a.p_vaddr + a.p_memsz;
        // b moved to start in a's last page (same offset in the page).
        let delta = (b.p_vaddr - b.p_vaddr % PAGE) - (a_end - 1) / PAGE * PAGE;
        if delta > 0 && b.p_offset >= delta {
            let mut m = b;
            m.p_vaddr -= delta;
            m.p_offset -= delta;
            out.push((
                format!(
                    "PT_LOAD at {:#x} moved into the previous one's last page",
                    b.p_vaddr
                ),
                vec![(m.at, m.encode())],
            ));
        }
        // Swapped, shifted a page either way, made writable and executable.
        out.push((
            format!("PT_LOADs at {:#x} and {:#x} swapped", a.p_vaddr, b.p_vaddr),
            vec![(a.at, b.encode()), (b.at, a.encode())],
        ));
        for (what, dv) in [("up", PAGE as i64), ("down", -(PAGE as i64))] {
            let mut m = b;
            m.p_vaddr = m.p_vaddr.wrapping_add(dv as u64);
            out.push((
                format!("PT_LOAD at {:#x} shifted a page {what}", b.p_vaddr),
                vec![(m.at, m.encode())],
            ));
        }
        let mut m = a;
        m.p_flags = 7;
        out.push((
            format!("PT_LOAD at {:#x} made RWX", a.p_vaddr),
            vec![(m.at, m.encode())],
        ));
    }
    // RELRO stretched over the whole image, or over the text.
    for &r in &relro {
        for (what, v, sz) in [
            ("the whole image", 0, l.image_end),
            ("the first page", 0, PAGE),
            (
                "one byte past its segment",
                l.phdrs[r].p_vaddr,
                l.phdrs[r].p_memsz + PAGE,
            ),
        ] {
            let mut m = l.phdrs[r];
            m.p_vaddr = v;
            m.p_memsz = sz;
            out.push((
                format!("PT_GNU_RELRO over {what}"),
                vec![(m.at, m.encode())],
            ));
        }
    }
    out
}

/// A directory holding a copy of every test library (so a mutant's
/// `DT_NEEDED` entries resolve through its `$ORIGIN` run path, as the
/// original's do) and, one at a time, the mutants.
fn workdir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    for e in fs::read_dir(common::testlibs()).expect("test libraries") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "so") {
            fs::copy(&p, dir.join(&p.file_name().unwrap().to_string_lossy())).unwrap();
        }
    }
    dir
}

/// The file for mutant `i`: a name no other mutant uses.
fn mutant_path(dir: &TempDir, i: usize, m: &Mutant, sources: &[Source]) -> PathBuf {
    let stem = sources[m.source].name.replace(".so", "");
    dir.join(&format!("mutant-{i:05}-{stem}.so"))
}

// ---------------------------------------------------------------------------
// Checking one result.

/// The error is one line and names the file at fault: the mutant, or the
/// library it made soloader look for.
fn well_formed(e: &Error, path: &Path) -> Result<(), String> {
    let text = e.to_string();
    if text.contains('\n') || text.contains('\r') {
        return Err(format!("error is not one line: {text:?}"));
    }
    // Display escapes control characters: so does the name looked for.
    let culprit: String = e
        .path()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if !text.contains(path.to_string_lossy().as_ref())
        && (culprit.is_empty() || !text.contains(&culprit))
    {
        return Err(format!("error names no file: {text}"));
    }
    Ok(())
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Io { .. } => "Io",
        Error::Malformed { .. } => "Malformed",
        Error::Unsupported { .. } => "Unsupported",
        Error::NotFound { .. } => "NotFound",
        Error::UndefinedSymbol { .. } => "UndefinedSymbol",
        Error::VersionNotFound { .. } => "VersionNotFound",
        Error::SymbolNotFound { .. } => "SymbolNotFound",
        Error::Map { .. } => "Map",
        Error::Host { .. } => "Host",
        Error::Runtime { .. } => "Runtime",
        _ => "other",
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Where a failing mutant is saved, to be replayed (and kept as a
/// regression input once fixed).
fn save_failure(bytes: &[u8], name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile-failures");
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// Runs `check` and `inspect` on `path`; returns the outcome of each, or
/// what was wrong.
fn run_one(path: &Path) -> Result<(Option<String>, Option<String>), String> {
    let checked = catch_unwind(AssertUnwindSafe(|| soloader::check(path, &Options::new())))
        .map_err(|p| format!("check panicked: {}", panic_text(&*p)))?;
    let inspected = catch_unwind(AssertUnwindSafe(|| soloader::inspect::inspect(path)))
        .map_err(|p| format!("inspect panicked: {}", panic_text(&*p)))?;
    let mut out = (None, None);
    if let Err(e) = &checked {
        well_formed(e, path).map_err(|m| format!("check: {m}"))?;
        out.0 = Some(kind(e).to_string());
    }
    if let Err(e) = &inspected {
        well_formed(e, path).map_err(|m| format!("inspect: {m}"))?;
        out.1 = Some(kind(e).to_string());
    }
    Ok(out)
}

/// Aborts the process (naming the mutant) if one mutant runs for 60 s: a
/// hang would otherwise never end the test.
struct Watchdog {
    current: Arc<Mutex<String>>,
    started: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let epoch = *WATCH_EPOCH.get_or_init(Instant::now);
        let current = Arc::new(Mutex::new(String::new()));
        let started = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, st) = (current.clone(), started.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let t = s.load(Ordering::Relaxed);
                if t != 0 && epoch.elapsed().as_millis() as u64 > t + 60_000 {
                    eprintln!("HANG: {} has run for 60 s", c.lock().unwrap());
                    std::process::abort();
                }
            }
        });
        Watchdog {
            current,
            started,
            stop,
            thread: Some(thread),
        }
    }

    fn begin(&self, what: &str) {
        *self.current.lock().unwrap() = what.to_string();
        // Milliseconds since the epoch, plus one: 0 means idle.
        let now = WATCH_EPOCH.get().unwrap().elapsed().as_millis() as u64 + 1;
        self.started.store(now, Ordering::Relaxed);
    }

    fn end(&self) {
        self.started.store(0, Ordering::Relaxed);
    }
}

static WATCH_EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn thousands_of_mutants_in_process() {
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let sources = sources();
    let all = mutants(&sources);
    assert!(all.len() >= 5000, "only {} mutants", all.len());
    let dir = workdir("mutants");
    let watchdog = Watchdog::start();

    // The pristine files pass, which also brings in whatever host
    // libraries they need, before the baseline is taken.
    for s in &sources {
        let p = dir.join(&format!("pristine-{}", s.name));
        fs::write(&p, &s.bytes).unwrap();
        soloader::check(&p, &Options::new()).unwrap_or_else(|e| panic!("pristine {}: {e}", s.name));
        soloader::inspect::inspect(&p).unwrap_or_else(|e| panic!("pristine {}: {e}", s.name));
        fs::remove_file(&p).unwrap();
    }
    let fds = fd_count();
    let reservations = anon_reservations();

    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for (i, m) in all.iter().enumerate() {
        let bytes = m.bytes(&sources);
        let path = mutant_path(&dir, i, m, &sources);
        let what = format!("{} ({}): {}", sources[m.source].name, m.category, m.what);
        fs::write(&path, &bytes).unwrap();
        if std::env::var_os("HOSTILE_VERBOSE").is_some() {
            eprintln!("mutant {i}: {what}");
        }
        watchdog.begin(&what);
        let start = Instant::now();
        let r = run_one(&path);
        let took = start.elapsed();
        watchdog.end();
        fs::remove_file(&path).unwrap();
        *per_category.entry(m.category).or_default() += 1;
        if took > slowest.0 {
            slowest = (took, what.clone());
        }
        let r = if took > HANG {
            Err(format!("took {took:?}"))
        } else {
            r
        };
        match r {
            Ok((c, ins)) => {
                let c = c.unwrap_or_else(|| "OK".into());
                let ins = ins.unwrap_or_else(|| "OK".into());
                *outcomes.entry(format!("check {c}")).or_default() += 1;
                *outcomes.entry(format!("inspect {ins}")).or_default() += 1;
            }
            Err(msg) => {
                let saved = save_failure(&bytes, &format!("mutant-{i:05}"));
                failures.push(format!("{what}: {msg} (saved as {})", saved.display()));
            }
        }
        if i % 100 == 99 || i + 1 == all.len() {
            let left = mappings_under(dir.path());
            assert!(
                left.is_empty(),
                "after mutant {i} ({what}), mutants are still mapped:\n{}",
                left.join("\n")
            );
        }
    }
    drop(watchdog);

    let fds_left = fds_under(dir.path());
    assert!(fds_left.is_empty(), "descriptors left open: {fds_left:?}");
    assert_eq!(fd_count(), fds, "file descriptors leaked");
    assert!(
        anon_reservations() <= reservations,
        "anonymous PROT_NONE reservations grew from {reservations} to {}",
        anon_reservations()
    );
    eprintln!(
        "{} mutants of {} libraries in {:?} (slowest {:?}: {})",
        all.len(),
        sources.len(),
        t0.elapsed(),
        slowest.0,
        slowest.1
    );
    eprintln!("by category: {per_category:?}");
    eprintln!("outcomes: {outcomes:#?}");
    assert!(
        failures.is_empty(),
        "{} of {} mutants failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Runs the CLI with a 5-second limit; returns (exit code, stdout, stderr).
fn cli(args: &[&std::ffi::OsStr], out_dir: &Path) -> Result<(i32, String, String), String> {
    let (out, err) = (out_dir.join("stdout"), out_dir.join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_soloader"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .map_err(|e| format!("spawning soloader: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{args:?}: no answer in {HANG:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let code = status
        .code()
        .ok_or_else(|| format!("{args:?}: killed by a signal: {status}"))?;
    Ok((
        code,
        fs::read_to_string(&out).unwrap_or_default(),
        String::from_utf8_lossy(&fs::read(&err).unwrap()).into_owned(),
    ))
}

#[test]
fn a_sample_of_mutants_through_the_cli() {
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let sources = sources();
    let all = mutants(&sources);
    let dir = workdir("cli-mutants");
    let step = all.len() / CLI_SAMPLE;
    let mut failures = Vec::new();
    let mut ok = 0;
    for (n, i) in (0..all.len()).step_by(step).take(CLI_SAMPLE).enumerate() {
        let m = &all[i];
        let bytes = m.bytes(&sources);
        let path = mutant_path(&dir, i, m, &sources);
        fs::write(&path, &bytes).unwrap();
        let what = format!("{} ({}): {}", sources[m.source].name, m.category, m.what);
        let json = n % 4 == 0;
        for sub in ["check", "inspect"] {
            let mut args = vec![sub.as_ref(), path.as_os_str()];
            if json {
                args.push("--json".as_ref());
            }
            let r = cli(&args, dir.path()).and_then(|(code, out, err)| {
                let line = format!("soloader: {path}", path = path.display());
                match code {
                    0 => {
                        if !err.is_empty() {
                            return Err(format!("OK but stderr: {err}"));
                        }
                        if json && sub == "check" && !out.contains("\"ok\":true") {
                            return Err(format!("OK but JSON says otherwise: {out}"));
                        }
                        ok += 1;
                        Ok(())
                    }
                    1 => {
                        if err.lines().count() != 1 || !err.starts_with("soloader: ") {
                            return Err(format!("error is not one line: {err:?}"));
                        }
                        if sub == "check" && !err.starts_with(&line) && !err.contains("needed by") {
                            // Errors about a dependency name it instead.
                            let e = soloader::check(&path, &Options::new()).err();
                            if e.is_none_or(|e| !err.contains(e.path().to_string_lossy().as_ref()))
                            {
                                return Err(format!("error names no file: {err}"));
                            }
                        }
                        if json && sub == "check" && !out.contains("\"ok\":false") {
                            return Err(format!("failed but JSON says otherwise: {out}"));
                        }
                        Ok(())
                    }
                    c => Err(format!("exit status {c}: {err}")),
                }
            });
            if let Err(msg) = r {
                let saved = save_failure(&bytes, &format!("cli-mutant-{i:05}"));
                failures.push(format!(
                    "soloader {sub} on {what}: {msg} (saved as {})",
                    saved.display()
                ));
            }
        }
        fs::remove_file(&path).unwrap();
    }
    eprintln!(
        "{CLI_SAMPLE} mutants through `soloader check` and `soloader inspect` in {:?} ({ok} OK runs)",
        t0.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} CLI runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every input the fuzzer (or this test) once crashed soloader with.
#[test]
fn regression_inputs() {
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/regressions")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|x| x != "md"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no regression inputs");
    let work = TempDir::new("regressions");
    let mut failures = Vec::new();
    for input in &inputs {
        // A uniquely named copy, so that a leaked mapping would show.
        let path = work.join(&input.file_name().unwrap().to_string_lossy());
        fs::copy(input, &path).unwrap();
        let start = Instant::now();
        let r = run_one(&path);
        let r = r.and_then(|x| {
            if start.elapsed() > HANG {
                Err(format!("took {:?}", start.elapsed()))
            } else {
                Ok(x)
            }
        });
        if let Err(msg) = r {
            failures.push(format!("{}: {msg}", input.display()));
        }
        fs::remove_file(&path).unwrap();
    }
    let left = mappings_under(work.path());
    assert!(left.is_empty(), "still mapped:\n{}", left.join("\n"));
    assert!(
        failures.is_empty(),
        "regression inputs failed:\n{}",
        failures.join("\n")
    );
}

/// Files that are not libraries at all, or not files: a FIFO (opening it
/// must not wait for a writer), a directory, a device, an empty file, a
/// `/proc` file, one byte, a symlink loop, a library followed by 2 GiB of
/// holes. Through the CLI, with a time limit: one line and status 1 (the
/// sparse file is a valid library: status 0).
#[test]
fn files_that_are_not_libraries() {
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("not-libraries");
    let fifo = dir.join("fifo.so");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let empty = dir.join("empty.so");
    fs::write(&empty, b"").unwrap();
    let one = dir.join("one.so");
    fs::write(&one, b"\x7f").unwrap();
    let loop_ = dir.join("loop.so");
    std::os::unix::fs::symlink(&loop_, &loop_).unwrap();
    let sparse = dir.join("sparse.so");
    fs::copy(common::lib("libarith.so"), &sparse).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let cases: Vec<(PathBuf, i32)> = vec![
        (fifo, 1),
        (dir.path().to_path_buf(), 1),
        (PathBuf::from("/dev/zero"), 1),
        (empty, 1),
        (PathBuf::from("/proc/self/maps"), 1),
        (one, 1),
        (loop_, 1),
        (dir.join("absent/libnothing.so"), 1),
        (sparse, 0),
    ];
    for (path, want) in &cases {
        for sub in ["check", "inspect"] {
            let (code, _, err) = cli(&[sub.as_ref(), path.as_os_str()], dir.path())
                .unwrap_or_else(|e| panic!("soloader {sub} {}: {e}", path.display()));
            assert_eq!(code, *want, "soloader {sub} {}: {err}", path.display());
            if code == 1 {
                assert_eq!(err.lines().count(), 1, "{err:?}");
                assert!(
                    err.starts_with(&format!("soloader: {}", path.display())),
                    "{err}"
                );
            }
        }
    }
}

/// `soloader check`: OK with what it mapped and relocated, or the typed
/// error; `--json` either way.
#[test]
fn the_check_command() {
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("check-cli");
    let run = |args: &[&str]| {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        cli(&args, dir.path()).unwrap()
    };
    let diamond = common::lib("libdiamond_a.so");
    let diamond = diamond.to_str().unwrap();
    let (code, out, err) = run(&["check", diamond]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.starts_with(&format!("{diamond}: OK")), "{out}");
    for d in ["b", "c", "d"] {
        assert!(out.contains(&format!("libdiamond_{d}.so")), "{out}");
    }
    assert!(out.contains("R_X86_64_JUMP_SLOT"), "{out}");

    let (code, out, _) = run(&["check", diamond, "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "{{\"path\":\"{diamond}\",\"ok\":true,\"error\":null,\"mapped\":[\"{diamond}\","
        )),
        "{out}"
    );

    let missing = common::lib("libmissing.so");
    let missing = missing.to_str().unwrap();
    let (code, out, err) = run(&["check", missing]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!("soloader: {missing}: undefined symbol: soloader_no_such_function\n")
    );
    let (code, out, _) = run(&["check", missing, "--json"]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "{{\"path\":\"{missing}\",\"ok\":false,\"error\":{{\"kind\":\"undefined_symbol\",\
             \"file\":\"{missing}\",\"message\":\"{missing}: undefined symbol: \
             soloader_no_such_function\"}}}}\n"
        )
    );

    // A bare name is searched for, as a load would.
    let (code, out, _) = run(&["check", "libz.so.1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("libz.so.1: OK"), "{out}");
}
