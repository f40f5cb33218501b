//! The relocation cache (`Options::relocation_cache`) in this process, on
//! private copies of the test libraries:
//!
//! - a cold load (which writes the cache file) and a warm load (which maps
//!   it) give the same results as a load without the cache, at the same
//!   deterministic base, with the cached pages mapped from the cache file;
//! - a library file that changes (same build-id, new contents) makes its
//!   cache file stale: ignored, and rewritten;
//! - a corrupt cache file (flipped byte, truncated, bad magic) is ignored
//!   with a trace event and rewritten;
//! - a directory or cache file writable by others is refused / ignored;
//! - when the deterministic place is taken, the library is placed as usual
//!   and the cache is not used;
//! - without the option nothing of it happens.
//!
//! Tests run one at a time: loads of copies of one library compete for the
//! same deterministic slot.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::collections::BTreeSet;
use std::ffi::{c_char, CStr, CString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{exclusive, line_at, maps, TempDir};
use soloader::{CacheUse, Error, Event, Library, Options, TraceSink, VecSink};

/// The range deterministic placements use.
const REGION: std::ops::Range<usize> = 0x2000_0000_0000..0x3000_0000_0000;
/// A placement slot.
const SLOT: usize = 1 << 32;

/// The cache files (`*.relcache`) in `dir`, sorted.
fn cache_files(dir: &TempDir) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "relcache"))
        .collect();
    v.sort();
    v
}

/// Loads `lib` with the cache in `dir` (if any), traced.
fn load(lib: &Path, dir: Option<&Path>) -> (Library, Vec<Event>) {
    let sink = VecSink::new();
    let mut o = Options::new().trace(Arc::new(sink.clone()));
    if let Some(d) = dir {
        o = o.relocation_cache(d);
    }
    let l =
        Library::open_with(lib, &o).unwrap_or_else(|e| panic!("loading {}: {e}", lib.display()));
    (l, sink.events())
}

/// The relocation-cache events: (what, detail).
fn cache_events(events: &[Event]) -> Vec<(&'static str, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RelocationCache { what, detail, .. } => Some((*what, detail.clone())),
            _ => None,
        })
        .collect()
}

fn has_event(events: &[Event], what: &str, detail_contains: &str) -> bool {
    cache_events(events)
        .iter()
        .any(|(w, d)| *w == what && d.contains(detail_contains))
}

fn used(l: &Library) -> CacheUse {
    l.relocation_cache()
        .unwrap_or_else(|| panic!("{} did not use the relocation cache", l.path().display()))
}

/// Calls libarith's functions: every kind of relocation it has.
fn arith(l: &Library) -> Vec<String> {
    type Add = unsafe extern "C" fn(i32, i32) -> i32;
    type Sum6 = unsafe extern "C" fn(i64, i64, i64, i64, i64, i64) -> i64;
    type StrSum = unsafe extern "C" fn(*const c_char) -> i64;
    type Greeting = unsafe extern "C" fn() -> *const c_char;
    type Fsum8 = unsafe extern "C" fn(f64, f64, f64, f64, f64, f64, f64, f64) -> f64;
    // SAFETY: the prototypes of testlibs/arith.c; the strings are static or
    // live across the calls.
    unsafe {
        let add = *l.get::<Add>("add").unwrap();
        let sum6 = *l.get::<Sum6>("sum6").unwrap();
        let strsum = *l.get::<StrSum>("strsum").unwrap();
        let greeting = *l.get::<Greeting>("greeting").unwrap();
        let fsum8 = *l.get::<Fsum8>("fsum8").unwrap();
        let hello = CString::new("hello").unwrap();
        vec![
            add(2, 3).to_string(),
            sum6(1, 2, 3, 4, 5, 6).to_string(),
            strsum(hello.as_ptr()).to_string(),
            CStr::from_ptr(greeting()).to_string_lossy().into_owned(),
            fsum8(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0).to_string(),
        ]
    }
}

/// Calls libdata's functions: RELRO tables, symbolic data pointers, GOT
/// reads, strcmp from libc.
fn data(l: &Library) -> Vec<String> {
    type Apply = unsafe extern "C" fn(*const c_char, i32, i32) -> i32;
    type OpName = unsafe extern "C" fn(i32) -> *const c_char;
    type Read = unsafe extern "C" fn() -> i32;
    type Table = unsafe extern "C" fn() -> *const *const c_char;
    // SAFETY: the prototypes of testlibs/data.c; the table is
    // NULL-terminated and static.
    unsafe {
        let apply = *l.get::<Apply>("apply").unwrap();
        let op_name = *l.get::<OpName>("op_name").unwrap();
        let via_ptr = *l.get::<Read>("read_via_ptr").unwrap();
        let elem2 = *l.get::<Read>("read_array_elem2").unwrap();
        let table = *l.get::<Table>("string_table").unwrap();
        let mul = CString::new("mul").unwrap();
        let mut out = vec![
            apply(mul.as_ptr(), 6, 7).to_string(),
            CStr::from_ptr(op_name(2)).to_string_lossy().into_owned(),
            via_ptr().to_string(),
            elem2().to_string(),
        ];
        let mut p = table();
        while !(*p).is_null() {
            out.push(CStr::from_ptr(*p).to_string_lossy().into_owned());
            p = p.add(1);
        }
        out
    }
}

/// Whether `addr` is mapped from a `.relcache` file in /proc/self/maps.
fn mapped_from_cache_file(addr: usize) -> bool {
    line_at(&maps(), addr).is_some_and(|l| l.path.ends_with(".relcache"))
}

#[test]
fn cold_and_warm_loads_give_the_results_of_an_uncached_load() {
    let _g = exclusive();
    for (name, work) in [
        ("libarith.so", arith as fn(&Library) -> Vec<String>),
        ("libdata.so", data),
    ] {
        let libs = TempDir::private("libs");
        let cache = TempDir::private("cache");
        let lib = libs.copy_lib(name);

        let count = |ev: &[Event]| -> usize {
            ev.iter()
                .map(|e| match e {
                    Event::Relocations { count, .. } => *count,
                    _ => 0,
                })
                .sum()
        };
        let (plain, events) = load(&lib, None);
        let plain_count = count(&events);
        let expected = work(&plain);
        assert!(plain.relocation_cache().is_none());
        assert!(cache_events(&events).is_empty());
        assert!(
            !REGION.contains(&plain.base()),
            "{name}: no fixed place without the option"
        );
        drop(plain);

        let (cold, events) = load(&lib, Some(cache.path()));
        let c = used(&cold);
        assert!(
            !c.hit && c.written,
            "{name}: first load writes: {c:?}\n{:?}",
            cache_events(&events)
        );
        assert!(
            has_event(&events, "placed", "build-id"),
            "{:?}",
            cache_events(&events)
        );
        assert!(
            has_event(&events, "miss", ""),
            "{:?}",
            cache_events(&events)
        );
        assert!(
            REGION.contains(&cold.base()),
            "{name}: placed in the reserved range"
        );
        assert!(!c.pages.is_empty(), "{name}: something to cache: {c:?}");
        assert!(
            c.stubs >= 1,
            "{name}: the libc call goes through a stub: {c:?}"
        );
        assert!(c.stub_code.start >= cold.span().end, "stubs after the span");
        assert_eq!(work(&cold), expected, "{name}: cold load");
        let base = cold.base();
        assert_eq!(cache_files(&cache).len(), 1, "{:?}", cache.names());
        // The cold load's own fixed pages were switched to the new file.
        assert!(c.shared.iter().all(|&p| mapped_from_cache_file(p)));
        drop(cold);

        let (warm, events) = load(&lib, Some(cache.path()));
        let w = used(&warm);
        assert!(
            w.hit,
            "{name}: second load hits: {:?}",
            cache_events(&events)
        );
        assert_eq!(warm.base(), base, "{name}: same deterministic base");
        assert_eq!(w.pages, c.pages);
        assert!(!w.shared.is_empty());
        for &p in &w.shared {
            assert!(
                mapped_from_cache_file(p),
                "{name}: page {p:#x} comes from the cache file"
            );
        }
        assert_eq!(work(&warm), expected, "{name}: warm load");
        // The hit applied fewer relocations than an uncached load.
        assert!(
            count(&events) < plain_count,
            "{} vs {plain_count}",
            count(&events)
        );
        drop(warm);
        assert_eq!(cache_files(&cache).len(), 1, "{:?}", cache.names());
    }
}

/// The virtual address and file offset of `sym`'s value in `lib`.
fn location_of(lib: &Path, sym: &str) -> (usize, usize) {
    let bytes = fs::read(lib).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let s = elf
        .dynsyms
        .iter()
        .find(|s| elf.dynstrtab.get_at(s.st_name) == Some(sym))
        .unwrap_or_else(|| panic!("{sym} not in {}", lib.display()));
    let ph = elf
        .program_headers
        .iter()
        .find(|p| {
            p.p_type == goblin::elf::program_header::PT_LOAD
                && p.p_vaddr <= s.st_value
                && s.st_value < p.p_vaddr + p.p_filesz
        })
        .unwrap();
    (
        s.st_value as usize,
        (s.st_value - ph.p_vaddr + ph.p_offset) as usize,
    )
}

#[test]
fn a_changed_library_makes_its_cache_file_stale() {
    let _g = exclusive();
    let libs = TempDir::private("libs");
    let cache = TempDir::private("cache");
    let lib = libs.copy_lib("libdata.so");
    let read = |l: &Library| -> i32 {
        // SAFETY: int read_via_ptr(void).
        unsafe {
            (*l.get::<unsafe extern "C" fn() -> i32>("read_via_ptr")
                .unwrap())()
        }
    };
    let (l, _) = load(&lib, Some(cache.path()));
    assert_eq!(read(&l), 1234);
    drop(l);
    let (l, _) = load(&lib, Some(cache.path()));
    assert!(used(&l).hit);
    // data_value lies in a page the cache holds: a stale file would bring
    // back 1234.
    let (vaddr, at) = location_of(&lib, "data_value");
    let page = (l.base() + vaddr) & !4095;
    assert!(used(&l).pages.contains(&page), "{:?}", used(&l));
    drop(l);

    // Same build-id, same size, new contents, written in place.
    let mut bytes = fs::read(&lib).unwrap();
    bytes[at..at + 4].copy_from_slice(&4321i32.to_le_bytes());
    fs::write(&lib, &bytes).unwrap();

    let (l, events) = load(&lib, Some(cache.path()));
    let u = used(&l);
    assert!(!u.hit && u.written, "{u:?} {:?}", cache_events(&events));
    assert!(
        has_event(&events, "ignored", "stale"),
        "{:?}",
        cache_events(&events)
    );
    assert_eq!(read(&l), 4321, "the new contents, not the cached ones");
    drop(l);
    assert_eq!(
        cache_files(&cache).len(),
        1,
        "rewritten in place: {:?}",
        cache.names()
    );

    let (l, events) = load(&lib, Some(cache.path()));
    assert!(used(&l).hit, "{:?}", cache_events(&events));
    assert_eq!(read(&l), 4321);
    drop(l);

    // Another library under the same name: another build-id, another file.
    let other = libs.copy_from(&common::lib("libarith.so"), "x.so");
    fs::rename(other, &lib).unwrap();
    let (l, _) = load(&lib, Some(cache.path()));
    assert!(!used(&l).hit);
    assert_eq!(arith(&l)[0], "5");
    drop(l);
    assert_eq!(cache_files(&cache).len(), 2);
}

/// Makes `f` writable by its owner, applies `edit`, restores its mode.
fn edit_file(f: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mode = fs::metadata(f).unwrap().permissions().mode();
    fs::set_permissions(f, fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = fs::read(f).unwrap();
    edit(&mut bytes);
    fs::write(f, &bytes).unwrap();
    fs::set_permissions(f, fs::Permissions::from_mode(mode)).unwrap();
}

/// A private copy of libarith, loaded once with a cache in a new
/// directory: its answers, and the cache file that load wrote.
struct ArithCache {
    /// Holds the library copy.
    libs: TempDir,
    cache: TempDir,
    lib: PathBuf,
    expected: Vec<String>,
    file: PathBuf,
    /// The file's contents as written.
    good: Vec<u8>,
}

fn arith_cache() -> ArithCache {
    let libs = TempDir::private("libs");
    let cache = TempDir::private("cache");
    let lib = libs.copy_lib("libarith.so");
    let (l, _) = load(&lib, Some(cache.path()));
    let expected = arith(&l);
    drop(l);
    let file = cache_files(&cache).pop().unwrap();
    let good = fs::read(&file).unwrap();
    ArithCache {
        libs,
        cache,
        lib,
        expected,
        file,
        good,
    }
}

#[test]
fn a_corrupt_cache_file_is_ignored_and_rewritten() {
    let _g = exclusive();
    let ArithCache {
        libs: _libs,
        cache,
        lib,
        expected,
        file,
        good,
    } = arith_cache();
    let header_len = u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
    assert!(header_len > 0 && header_len < good.len());

    type Corruption = (&'static str, &'static str, fn(&mut Vec<u8>, usize));
    let corruptions: [Corruption; 6] = [
        ("a page byte flipped", "checksum", |b, h| b[h + 100] ^= 0x40),
        ("the stub code changed", "stub code", |b, _| {
            let n = b.len();
            b[n - 4096 + 7] ^= 1;
        }),
        ("a header byte flipped", "header checksum", |b, _| {
            b[40] ^= 1
        }),
        ("header padding changed", "padding", |b, h| b[h - 20] ^= 1),
        ("truncated", "corrupt", |b, _| {
            let n = b.len();
            b.truncate(n - 100);
        }),
        ("bad magic", "magic", |b, _| b[0] = b'X'),
    ];
    for (what, why, corrupt) in corruptions {
        edit_file(&file, |b| corrupt(b, header_len));
        let (l, events) = load(&lib, Some(cache.path()));
        let u = used(&l);
        assert!(!u.hit, "{what}: never used: {:?}", cache_events(&events));
        assert!(
            has_event(&events, "ignored", why),
            "{what}: a warning saying {why:?}: {:?}",
            cache_events(&events)
        );
        assert!(u.written, "{what}: rewritten");
        assert_eq!(arith(&l), expected, "{what}");
        drop(l);
        assert_eq!(
            fs::read(&file).unwrap(),
            good,
            "{what}: rewritten as it was"
        );
        let (l, _) = load(&lib, Some(cache.path()));
        assert!(used(&l).hit, "{what}: the rewritten file is used");
        assert_eq!(arith(&l), expected);
        drop(l);
    }
    // A process remembers a file it verified once the file has settled
    // (its ctime a second old) and then re-checks only its header. A page
    // byte flipped in place after that, with the old mtime put back,
    // still changes the file's ctime, which the kernel alone sets: caught.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (l, _) = load(&lib, Some(cache.path()));
    assert!(used(&l).hit, "the settled file is used (and remembered)");
    drop(l);
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    edit_file(&file, |b| b[header_len + 100] ^= 0x40);
    fs::File::options()
        .write(true)
        .open(&file)
        .or_else(|_| {
            let mode = fs::metadata(&file).unwrap().permissions().mode();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            let f = fs::File::options().write(true).open(&file);
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            f
        })
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    let (l, events) = load(&lib, Some(cache.path()));
    assert!(
        !used(&l).hit && has_event(&events, "ignored", "checksum"),
        "a file changed in place since this process verified it: {:?}",
        cache_events(&events)
    );
    assert_eq!(arith(&l), expected);
    drop(l);
    assert_eq!(
        cache.names().len(),
        1,
        "no temporary file left: {:?}",
        cache.names()
    );
}

/// Every damage to a cache file is caught, wherever it falls: a property
/// test over 300 random damages of one file (a flipped bit, a run of
/// random bytes, a truncation, bytes appended, two words swapped). Each
/// time the file is ignored (never mapped), the load gives the uncached
/// answers, and the file is rewritten as it was.
#[test]
fn random_damage_to_a_cache_file_is_always_caught() {
    let _g = exclusive();
    let ArithCache {
        libs: _libs,
        cache,
        lib,
        expected,
        file,
        good,
    } = arith_cache();
    // xorshift64: the same damages every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut tried = 0;
    for round in 0..300 {
        let mut bad = good.clone();
        let at = |r: u64, len: usize| (r % len as u64) as usize;
        let what = match next() % 5 {
            0 => {
                let i = at(next(), bad.len());
                bad[i] ^= 1 << (next() % 8);
                "a flipped bit"
            }
            1 => {
                let i = at(next(), bad.len());
                let n = (1 + at(next(), 64)).min(bad.len() - i);
                for b in &mut bad[i..i + n] {
                    *b = next() as u8;
                }
                "a run of random bytes"
            }
            2 => {
                bad.truncate(at(next(), bad.len()));
                "truncated"
            }
            3 => {
                let n = 1 + at(next(), 8192);
                bad.extend((0..n).map(|_| next() as u8));
                "bytes appended"
            }
            _ => {
                let (i, j) = (at(next(), bad.len() / 8) * 8, at(next(), bad.len() / 8) * 8);
                for k in 0..8 {
                    bad.swap(i + k, j + k);
                }
                "two words swapped"
            }
        };
        if bad == good {
            continue;
        }
        tried += 1;
        edit_file(&file, |b| *b = bad);
        let (l, events) = load(&lib, Some(cache.path()));
        let u = used(&l);
        assert!(
            !u.hit && has_event(&events, "ignored", ""),
            "round {round} ({what}): the damaged file was used: {:?}",
            cache_events(&events)
        );
        assert_eq!(arith(&l), expected, "round {round} ({what})");
        drop(l);
        assert_eq!(
            fs::read(&file).unwrap(),
            good,
            "round {round} ({what}): rewritten"
        );
    }
    assert!(tried > 250, "only {tried} damages differed from the file");
}

/// The relocation-cache events about the file named `name`: what happened.
fn cache_events_of(events: &[Event], name: &str) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RelocationCache { path, what, .. }
                if path.file_name().is_some_and(|f| f == name) =>
            {
                Some(*what)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_library_s_own_dlopen_uses_the_cache_it_was_loaded_with() {
    let _g = exclusive();
    let libs = TempDir::private("libs");
    let cache = TempDir::private("cache");
    let host = libs.copy_lib("libpluginhost.so");
    libs.copy_lib("libplugin_impl.so");
    for round in 0..2 {
        let sink = VecSink::new();
        let o = Options::new()
            .relocation_cache(cache.path())
            .trace(Arc::new(sink.clone()));
        let l = Library::open_with(&host, &o).unwrap();
        // SAFETY: signatures from testlibs/pluginhost.c; plugin_call
        // dlopens libplugin_impl.so (found through its RUNPATH).
        let (call, close) = unsafe {
            (
                *l.get::<extern "C" fn(i32) -> i32>("plugin_call").unwrap(),
                *l.get::<extern "C" fn() -> i32>("plugin_close").unwrap(),
            )
        };
        assert_eq!(call(21), 42);
        assert_eq!(close(), 0);
        drop(l);
        let plugin = cache_events_of(&sink.events(), "libplugin_impl.so");
        let want = if round == 0 { "written" } else { "hit" };
        assert!(plugin.contains(&want), "round {round}: {plugin:?}");
    }
    assert_eq!(cache_files(&cache).len(), 2, "one file each");
}

/// Creates `dir/name` with a modification time `age` in the past.
fn aged_file(dir: &Path, name: &str, age: std::time::Duration) -> PathBuf {
    let p = dir.join(name);
    let f = fs::File::create(&p).unwrap();
    f.set_modified(std::time::SystemTime::now() - age).unwrap();
    p
}

#[test]
fn writing_a_cache_file_tidies_the_directory() {
    // The limits in loader/relcache.rs: VARIANTS files per library and
    // place, FILES in all, temporary files dead after 10 minutes.
    const VARIANTS: usize = 4;
    const FILES: usize = 256;
    let hour = std::time::Duration::from_secs(3600);
    let _g = exclusive();
    let libs = TempDir::private("libs");
    let cache = TempDir::private("cache");
    let lib = libs.copy_lib("libarith.so");
    drop(load(&lib, Some(cache.path())).0);
    let written = cache_files(&cache).pop().unwrap();
    let name = written.file_name().unwrap().to_str().unwrap().to_owned();
    let (group, _) = name.rsplit_once('-').unwrap();
    // Five other scopes' files for the same library and place, oldest
    // first; a dead writer's temporary file and a live one; 300 files of
    // other libraries, older still; something that is not a cache file.
    let variants: Vec<PathBuf> = (0..5)
        .map(|i| {
            aged_file(
                cache.path(),
                &format!("{group}-{:016x}.relcache", i + 1),
                hour * (10 - i),
            )
        })
        .collect();
    let dead = aged_file(cache.path(), ".x.relcache.1.2.3.tmp", hour);
    let live = aged_file(
        cache.path(),
        ".y.relcache.1.2.3.tmp",
        std::time::Duration::ZERO,
    );
    let others: Vec<PathBuf> = (0..300u32)
        .map(|i| {
            aged_file(
                cache.path(),
                &format!("other{i:03}-1000-{:016x}.relcache", i),
                hour * (1000 - i),
            )
        })
        .collect();
    let notes = aged_file(cache.path(), "notes.txt", hour * 2000);
    // The next write (the file gone: a miss) tidies.
    fs::remove_file(&written).unwrap();
    let (l, events) = load(&lib, Some(cache.path()));
    assert!(used(&l).written);
    drop(l);
    assert!(written.exists(), "the file just written stays");
    assert!(
        has_event(&events, "tidied", "removed"),
        "{:?}",
        cache_events(&events)
    );
    // The newest VARIANTS - 1 other variants stay, with the new file.
    let kept: Vec<bool> = variants.iter().map(|p| p.exists()).collect();
    assert_eq!(kept, [false, false, true, true, true]);
    assert_eq!(kept.iter().filter(|k| **k).count(), VARIANTS - 1);
    assert!(!dead.exists(), "a dead writer's temporary file goes");
    assert!(live.exists(), "a live writer's temporary file stays");
    assert!(notes.exists(), "not a cache file: left alone");
    // FILES in all, the oldest others gone.
    assert_eq!(cache_files(&cache).len(), FILES);
    let others_kept = others.iter().filter(|p| p.exists()).count();
    assert_eq!(others_kept, FILES - VARIANTS);
    assert!(others[299].exists() && !others[0].exists());
    // And the cache still works: a hit.
    let (l, _) = load(&lib, Some(cache.path()));
    assert!(used(&l).hit);
}

#[test]
fn an_unsafe_directory_is_refused_and_a_writable_file_ignored() {
    let _g = exclusive();
    let libs = TempDir::private("libs");
    let lib = libs.copy_lib("libarith.so");
    for mode in [0o770, 0o707, 0o777] {
        let cache = TempDir::private("cache");
        fs::set_permissions(cache.path(), fs::Permissions::from_mode(mode)).unwrap();
        let e = Library::open_with(&lib, &Options::new().relocation_cache(cache.path()))
            .expect_err("a directory others can write is refused");
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&cache.path().display().to_string()) && text.contains("writable"),
            "{text}"
        );
        assert!(cache.names().is_empty(), "nothing written");
    }
    // A missing directory is created, mode 0700.
    let parent = TempDir::private("parent");
    let fresh = parent.path().join("a/b");
    let l = Library::open_with(&lib, &Options::new().relocation_cache(&fresh)).unwrap();
    assert!(used(&l).written);
    drop(l);
    assert_eq!(
        fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // A cache file others can write is never used (and replaced).
    let cache = TempDir::private("cache");
    drop(load(&lib, Some(cache.path())));
    let file = cache_files(&cache).pop().unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    let (l, events) = load(&lib, Some(cache.path()));
    assert!(!used(&l).hit);
    assert!(
        has_event(&events, "ignored", "mode 666"),
        "{:?}",
        cache_events(&events)
    );
    drop(l);
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o444
    );
}

/// `mmap(MAP_FIXED_NOREPLACE)` of one slot, unmapped on drop.
struct Blocker(usize);

impl Blocker {
    fn new(at: usize) -> Option<Blocker> {
        // SAFETY: a new anonymous PROT_NONE mapping at a free address
        // (MAP_FIXED_NOREPLACE never replaces anything).
        let p = unsafe {
            libc::mmap(
                at as *mut _,
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        (p as usize == at).then_some(Blocker(at))
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.0 as *mut _, 4096) };
    }
}

#[test]
fn a_taken_place_falls_back_to_a_normal_load_without_the_cache() {
    let _g = exclusive();
    let libs = TempDir::private("libs");
    let cache = TempDir::private("cache");
    let lib = libs.copy_lib("libarith.so");
    let (l, _) = load(&lib, Some(cache.path()));
    let first = l.span().start;
    let expected = arith(&l);
    drop(l);
    // Take the library's slot: the next slot is probed, another base,
    // another cache file.
    let next = |k: usize| {
        let slot = (first - REGION.start) / SLOT;
        REGION.start + (slot + k) % ((REGION.end - REGION.start) / SLOT) * SLOT
    };
    let b = Blocker::new(first).expect("the slot is free again");
    let (l, events) = load(&lib, Some(cache.path()));
    assert_eq!(l.span().start, next(1), "{:?}", cache_events(&events));
    assert!(!used(&l).hit);
    assert_eq!(arith(&l), expected);
    drop(l);
    // Take all the slots it probes.
    let blockers: Vec<Blocker> = (1..8).filter_map(|k| Blocker::new(next(k))).collect();
    assert_eq!(blockers.len(), 7);
    let (l, events) = load(&lib, Some(cache.path()));
    assert!(l.relocation_cache().is_none());
    assert!(!REGION.contains(&l.base()));
    assert!(
        has_event(&events, "not placed", "taken"),
        "{:?}",
        cache_events(&events)
    );
    assert_eq!(arith(&l), expected);
    drop(l);
    drop(b);
    drop(blockers);
    // Free again: the first file is used.
    let (l, _) = load(&lib, Some(cache.path()));
    assert!(used(&l).hit);
    assert_eq!(l.span().start, first);
}

/// The (8-byte aligned) words TLS relocations of `lib` (at `base`) write:
/// module ids and descriptors, which differ from load to load.
fn tls_words(lib: &Path, base: usize) -> BTreeSet<usize> {
    let bytes = fs::read(lib).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let mut out = BTreeSet::new();
    for r in elf.dynrelas.iter().chain(elf.pltrelocs.iter()) {
        let words = match r.r_type {
            goblin::elf::reloc::R_X86_64_DTPMOD64 => 1,
            goblin::elf::reloc::R_X86_64_TLSDESC => 2,
            _ => 0,
        };
        for k in 0..words {
            out.insert(base + r.r_offset as usize + 8 * k);
        }
    }
    out
}

/// Memory contents: (address, bytes) per range.
type Bytes = Vec<(usize, Vec<u8>)>;

/// A trace sink that copies `lib`'s writable segments just before its
/// first initialiser runs (relocated, not yet changed by its own code).
struct Snapshot {
    lib: PathBuf,
    /// The writable `PT_LOAD`s, page-aligned, relative to the base.
    ranges: Vec<std::ops::Range<usize>>,
    base: Mutex<Option<usize>>,
    bytes: Mutex<Option<Bytes>>,
    events: VecSink,
}

impl Snapshot {
    fn new(lib: &Path) -> Arc<Snapshot> {
        let file = fs::read(lib).unwrap();
        let elf = goblin::elf::Elf::parse(&file).unwrap();
        let ranges = elf
            .program_headers
            .iter()
            .filter(|p| {
                p.p_type == goblin::elf::program_header::PT_LOAD
                    && p.p_flags & goblin::elf::program_header::PF_W != 0
            })
            .map(|p| {
                (p.p_vaddr as usize & !4095)
                    ..(p.p_vaddr + p.p_memsz).next_multiple_of(4096) as usize
            })
            .collect();
        Arc::new(Snapshot {
            lib: lib.to_path_buf(),
            ranges,
            base: Mutex::new(None),
            bytes: Mutex::new(None),
            events: VecSink::new(),
        })
    }

    fn take(&self) -> Vec<(usize, Vec<u8>)> {
        self.bytes
            .lock()
            .unwrap()
            .take()
            .expect("a snapshot was taken")
    }
}

impl TraceSink for Snapshot {
    fn event(&self, e: &Event) {
        self.events.event(e);
        match e {
            Event::Mapped { path, base, .. } if path == &self.lib => {
                *self.base.lock().unwrap() = Some(*base);
            }
            Event::Init { path, .. } | Event::Loaded { path, .. } if path == &self.lib => {
                let mut bytes = self.bytes.lock().unwrap();
                let base = *self.base.lock().unwrap();
                if let (None, Some(base)) = (bytes.as_ref(), base) {
                    *bytes = Some(
                        self.ranges
                            .iter()
                            .map(|r| {
                                // SAFETY: the writable segments of a mapped
                                // library are readable.
                                let b = unsafe {
                                    std::slice::from_raw_parts(
                                        (base + r.start) as *const u8,
                                        r.len(),
                                    )
                                };
                                (base + r.start, b.to_vec())
                            })
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
}

/// The stub code and table of `l`.
fn stub_bytes(l: &Library) -> Vec<(usize, Vec<u8>)> {
    let c = used(l);
    [c.stub_code, c.stub_table]
        .into_iter()
        .map(|r| {
            // SAFETY: the stub area in use is mapped readable.
            let b = unsafe { std::slice::from_raw_parts(r.start as *const u8, r.len()) };
            (r.start, b.to_vec())
        })
        .collect()
}

#[test]
fn every_test_library_relocates_from_the_cache_exactly_as_it_did_itself() {
    relocates_from_the_cache_as_it_did_itself(false);
}

/// The same in forked mode (`Options::relocation_cache_forked`): this
/// process keeps its layout between the two loads, so the hit also maps
/// the pages holding host addresses, which must be exactly what the cold
/// load wrote.
#[test]
fn every_test_library_relocates_from_a_forked_mode_cache_as_it_did_itself() {
    relocates_from_the_cache_as_it_did_itself(true);
}

fn relocates_from_the_cache_as_it_did_itself(forked: bool) {
    let _g = exclusive();
    let testlibs = common::testlibs();
    let mut names: Vec<String> = fs::read_dir(&testlibs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".so"))
        .collect();
    names.sort();
    let mut checked = Vec::new();
    // Per library: (name, cacheable pages, pages shared).
    let mut sharing: Vec<(String, usize, usize)> = Vec::new();
    for name in names {
        let lib = testlibs.join(&name);
        let cache = TempDir::private("every");
        let snap = Snapshot::new(&lib);
        let o = Options::new()
            .relocation_cache(cache.path())
            .relocation_cache_forked(forked)
            .trace(snap.clone());
        let Ok(cold) = Library::open_with(&lib, &o) else {
            continue; // libraries that do not load at all (by design)
        };
        let Some(c) = cold.relocation_cache() else {
            drop(cold);
            continue;
        };
        let base = cold.base();
        sharing.push((name.clone(), c.pages.len(), c.shared.len()));
        let mut before = snap.take();
        before.extend(stub_bytes(&cold));
        cold.close().unwrap();
        let (probe, _) = load(&lib, None);
        let unloaded = !REGION.contains(&probe.base());
        drop(probe);
        if !unloaded {
            continue; // NODELETE, or kept by another library
        }
        let snap = Snapshot::new(&lib);
        let o = Options::new()
            .relocation_cache(cache.path())
            .relocation_cache_forked(forked)
            .trace(snap.clone());
        let warm = Library::open_with(&lib, &o).unwrap();
        let events = snap.events.events();
        let w = used(&warm);
        assert_eq!(warm.base(), base, "{name}");
        if c.written {
            assert!(w.hit, "{name}: {:?}", cache_events(&events));
        }
        let mut after = snap.take();
        after.extend(stub_bytes(&warm));
        assert_eq!(before.len(), after.len(), "{name}");
        // TLS module ids and descriptors are new for every load.
        let tls = tls_words(&lib, base);
        for ((a, x), (_, y)) in before.iter().zip(&after) {
            if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i] && !tls.contains(&((a + i) & !7)))
            {
                panic!(
                    "{name}: byte {:#x} differs between the cold load and the hit: {:#x} vs {:#x}\n{:?}",
                    a + i,
                    x[i],
                    y[i],
                    cache_events(&events)
                );
            }
        }
        checked.push(name);
    }
    for must in [
        "libarith.so",
        "libdata.so",
        "libifunc.so",
        "librelr.so",
        "libtls.so",
        "libcxx.so",
        "libdiamond_a.so",
    ] {
        assert!(
            checked.iter().any(|n| n == must),
            "{must} not checked: {checked:?}"
        );
    }
    // libdata and libdiamond_a hold pointers to libc's functions: private
    // in exec mode, shared in forked mode (so the comparison above covered
    // those pages too).
    for lib in ["libdata.so", "libdiamond_a.so"] {
        let &(_, pages, shared) = sharing.iter().find(|s| s.0 == lib).unwrap();
        if forked {
            assert_eq!(shared, pages, "{lib}: every page shared in forked mode");
        } else {
            assert!(shared < pages, "{lib}: {shared} of {pages} shared");
        }
    }
}
