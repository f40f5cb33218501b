//! End-to-end: what a load does to the address space, checked against
//! `/proc/self/maps` and `/proc/self/fd`.
//!
//! Segments are private file mappings with their own protections, RELRO is
//! read-only, `.bss` past the file is anonymous, the trace's `mmap`s are
//! exactly the reservation plus one per file-backed part and one per
//! anonymous `.bss` part, and neither a close nor a failed load (whatever
//! step fails) leaves a mapping or a file descriptor behind. Last, a
//! concurrency smoke test.
//!
//! Every test here asserts on process-wide state, so each holds the
//! binary's exclusive lock for its whole run.

mod common;

use std::os::raw::{c_char, c_int, c_long};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use soloader::{Error, Event, Library, Options, Segment, Syscall, VecSink};

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_helper() {
    common::child_main(&[]);
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// Checks one segment against `/proc/self/maps`, page by page: the
/// file-backed part is a private mapping of `path` at the right offset with
/// the segment's protection (read-only in RELRO), the rest anonymous.
fn check_segment(path: &Path, seg: &Segment, maps: &[MapLine]) {
    let p = path.to_string_lossy();
    let ino = inode(path);
    let want = perms_of(seg.prot);
    let mut a = seg.file_range.start;
    while a < seg.file_range.end {
        let m = line_at(maps, a)
            .unwrap_or_else(|| panic!("{p}: segment {} page {a:#x} not mapped", seg.index));
        let relro = seg.relro.as_ref().is_some_and(|r| r.contains(&a));
        let perms = if relro { "r--p" } else { want.as_str() };
        assert_eq!(
            m.perms, perms,
            "{p}: segment {} page {a:#x}: {m:?}",
            seg.index
        );
        assert_eq!(
            m.path, p,
            "{p}: segment {} page {a:#x} is file-backed",
            seg.index
        );
        assert_eq!(m.inode, ino, "{p}: {m:?}");
        assert_eq!(
            m.offset + (a - m.start) as u64,
            seg.file_offset + (a - seg.file_range.start) as u64,
            "{p}: segment {} page {a:#x} maps the right file offset: {m:?}",
            seg.index
        );
        a += page();
    }
    while a < seg.range.end {
        let m = line_at(maps, a)
            .unwrap_or_else(|| panic!("{p}: segment {} bss page {a:#x} not mapped", seg.index));
        assert_eq!(m.perms, want, "{p}: bss page {a:#x}: {m:?}");
        assert_eq!(m.inode, 0, "{p}: bss page {a:#x} is anonymous: {m:?}");
        assert!(
            m.path.is_empty(),
            "{p}: bss page {a:#x} is anonymous: {m:?}"
        );
        a += page();
    }
}

/// Every page of the library's span is a segment's or `PROT_NONE`.
fn check_library(l: &Library) {
    let maps = maps();
    for seg in l.segments() {
        check_segment(l.path(), seg, &maps);
    }
    let span = l.span();
    let mut a = span.start;
    while a < span.end {
        if !l.segments().iter().any(|s| s.range.contains(&a)) {
            let m = line_at(&maps, a).expect("gap pages stay reserved");
            assert_eq!(m.perms, "---p", "gap page {a:#x}: {m:?}");
        }
        a += page();
    }
}

#[test]
fn executable_segment_is_a_private_read_execute_file_mapping() {
    let _g = exclusive();
    for name in ["libbigtext.so", "libarith.so"] {
        let path = lib(name);
        let l = open(&path);
        let text: Vec<&Segment> = l
            .segments()
            .iter()
            .filter(|s| s.prot & libc::PROT_EXEC != 0)
            .collect();
        assert_eq!(text.len(), 1, "{name}: {:?}", l.segments());
        let seg = text[0];
        assert!(!seg.file_range.is_empty());
        let maps = maps();
        let lines: Vec<&MapLine> = maps
            .iter()
            .filter(|m| m.start < seg.file_range.end && seg.file_range.start < m.end)
            .collect();
        assert!(!lines.is_empty());
        for m in lines {
            assert_eq!(m.perms, "r-xp", "{name}: {m:?}");
            assert_eq!(m.path, path.to_string_lossy(), "{name}: {m:?}");
            assert_eq!(m.inode, inode(&path), "{name}: {m:?}");
        }
        check_segment(&path, seg, &maps);
        if name == "libbigtext.so" {
            assert!(
                seg.file_range.len() > 300 << 10,
                "several hundred KiB of text"
            );
            // SAFETY: `long bigtext_count(void)` and `const char *bigtext_name(long)`
            // (testlibs/bigtext.c); bigtext_name gives NUL-terminated names or NULL.
            unsafe {
                let count = l.get::<extern "C" fn() -> c_long>("bigtext_count").unwrap();
                let name_of = l
                    .get::<extern "C" fn(c_long) -> *const c_char>("bigtext_name")
                    .unwrap();
                assert_eq!(count(), 1024);
                assert_eq!(cstr(name_of(0)), "f_0000");
                assert_eq!(cstr(name_of(1023)), "f_1777");
                assert!(name_of(1024).is_null());
            }
        }
    }
}

#[test]
fn every_segment_appears_in_maps_with_its_protection() {
    let _g = exclusive();
    for name in [
        "libarith.so",
        "libdata.so",
        "libbss.so",
        "libbigtext.so",
        "libinit.so",
        "libifunc.so",
        "libuselibc.so",
        "libdiamond_a.so",
        "libdiamond_d.so",
    ] {
        let l = open(&lib(name));
        assert!(l.segments().len() >= 2, "{name}: {:?}", l.segments());
        check_library(&l);
    }
}

#[test]
fn relro_is_read_only_after_the_load() {
    let _g = exclusive();
    for name in ["libarith.so", "libdata.so", "libbigtext.so"] {
        let path = lib(name);
        let (l, sink) = open_traced(&path);
        let relro: Vec<_> = l
            .segments()
            .iter()
            .filter_map(|s| s.relro.clone())
            .collect();
        assert_eq!(relro.len(), 1, "{name}: {:?}", l.segments());
        let r = relro[0].clone();
        assert!(!r.is_empty() && r.start % page() == 0 && r.end % page() == 0);
        let maps = maps();
        let mut a = r.start;
        while a < r.end {
            let m = line_at(&maps, a).unwrap();
            assert_eq!(m.perms, "r--p", "{name}: RELRO page {a:#x}: {m:?}");
            assert_eq!(m.path, path.to_string_lossy());
            a += page();
        }
        let ev = sink.events();
        let relro_at = ev
            .iter()
            .position(|e| {
                *e == Event::Relro {
                    path: path.clone(),
                    addr: r.start,
                    len: r.len(),
                }
            })
            .unwrap_or_else(|| panic!("{name}: no Relro event:\n{}", dump(&ev)));
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Mprotect { addr, len, prot, .. }
                if *addr == r.start && *len == r.len() && *prot == libc::PROT_READ)),
            "{name}: no mprotect(PROT_READ) of RELRO:\n{}",
            dump(&ev)
        );
        // Every relocation was applied before RELRO was made read-only.
        let last_reloc = ev
            .iter()
            .rposition(|e| matches!(e, Event::Relocations { .. }))
            .unwrap();
        assert!(last_reloc < relro_at, "{name}:\n{}", dump(&ev));
        if name == "libbigtext.so" {
            let rel = relocations(&ev, &path);
            let (_, count, pages) = rel
                .iter()
                .find(|r| r.0 == "R_X86_64_RELATIVE")
                .expect("RELATIVE relocations");
            assert!(*count >= 2048, "{count}");
            let in_relro = pages.iter().filter(|p| r.contains(p)).count();
            assert!(
                in_relro >= 6,
                "the table spans several RELRO pages: {pages:x?}"
            );
            // SAFETY: long bigtext_run(long).
            let run = unsafe { l.get::<extern "C" fn(c_long) -> c_long>("bigtext_run") }.unwrap();
            let (glibc, _) = glibc_calls(&["libbigtext.so:bigtext_run:l:1024"]);
            assert_eq!(run(1024), glibc[0], "checksum over all 1024 table entries");
        }
    }
}

#[test]
fn bss_beyond_the_file_is_anonymous() {
    let _g = exclusive();
    let path = lib("libbss.so");
    let l = open(&path);
    let seg = l
        .segments()
        .iter()
        .find(|s| s.bss.is_some())
        .expect("a segment with .bss")
        .clone();
    let bss = seg.bss.clone().unwrap();
    assert!(bss.end - bss.start >= 8 << 20);
    assert!(
        bss.start < seg.file_range.end,
        "bss starts in the last file page"
    );
    assert!(
        seg.range.end > seg.file_range.end,
        "and goes on past the file"
    );
    assert_eq!(seg.range.end, bss.end.div_ceil(page()) * page());
    let maps = maps();
    check_segment(&path, &seg, &maps);
    // SAFETY: int bss_get(long).
    let get = unsafe { l.get::<extern "C" fn(c_long) -> c_int>("bss_get") }.unwrap();
    assert_eq!(get((8 << 20) - 1), 0);
}

/// The Mmap events of each file, in order, attributed by the preceding
/// `Open`.
fn mmaps_by_file(events: &[Event]) -> Vec<(PathBuf, Vec<Event>)> {
    let mut out: Vec<(PathBuf, Vec<Event>)> = Vec::new();
    for e in events {
        match e {
            Event::Open { path, .. } => out.push((path.clone(), Vec::new())),
            Event::Mmap { .. } => out
                .last_mut()
                .expect("mmap before any open")
                .1
                .push(e.clone()),
            _ => {}
        }
    }
    out
}

#[test]
fn mmap_events_are_one_reservation_plus_the_segments() {
    let _g = exclusive();
    for name in [
        "libarith.so",
        "libbss.so",
        "libbigtext.so",
        "libinit.so",
        "libdiamond_a.so",
    ] {
        let (l, sink) = open_traced(&lib(name));
        let ev = sink.events();
        let groups = mmaps_by_file(&ev);
        assert!(!groups.is_empty());
        for (path, mmaps) in &groups {
            // Another handle on the same (shared) instance, for its layout.
            let h = open(path);
            let segs = h.segments();
            let span = h.span();
            let file_parts = segs.iter().filter(|s| !s.file_range.is_empty()).count();
            let anon_parts = segs
                .iter()
                .filter(|s| s.range.end > s.file_range.end.max(s.range.start))
                .count();
            assert_eq!(
                mmaps.len(),
                1 + file_parts + anon_parts,
                "{}: {mmaps:#?}",
                path.display()
            );
            let Event::Mmap {
                addr,
                len,
                prot,
                flags,
                offset,
                ..
            } = &mmaps[0]
            else {
                unreachable!()
            };
            assert_eq!(*prot, libc::PROT_NONE, "reservation first: {mmaps:#?}");
            assert_ne!(*flags & libc::MAP_ANONYMOUS, 0);
            assert_ne!(*flags & libc::MAP_PRIVATE, 0);
            assert_eq!(*flags & libc::MAP_FIXED, 0, "the kernel chooses the place");
            assert_eq!(*offset, 0);
            assert!(*addr <= span.start && addr + len >= span.end);
            let mut rest = mmaps[1..].iter();
            for s in segs {
                if !s.file_range.is_empty() {
                    let e = rest.next().expect("a file mapping per segment");
                    let Event::Mmap {
                        addr,
                        len,
                        prot,
                        flags,
                        offset,
                        ..
                    } = e
                    else {
                        unreachable!()
                    };
                    assert_eq!(
                        (*addr, *len, *prot, *offset),
                        (
                            s.file_range.start,
                            s.file_range.len(),
                            s.prot,
                            s.file_offset
                        ),
                        "{}: segment {}",
                        path.display(),
                        s.index
                    );
                    assert_eq!(
                        *flags & (libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_SHARED),
                        libc::MAP_PRIVATE | libc::MAP_FIXED,
                        "{e:?}"
                    );
                    assert_eq!(*flags & libc::MAP_ANONYMOUS, 0, "{e:?}");
                }
                let anon_start = s.file_range.end.max(s.range.start);
                if s.range.end > anon_start {
                    let e = rest.next().expect("an anonymous mapping for .bss");
                    let Event::Mmap {
                        addr,
                        len,
                        prot,
                        flags,
                        ..
                    } = e
                    else {
                        unreachable!()
                    };
                    assert_eq!(
                        (*addr, *len, *prot),
                        (anon_start, s.range.end - anon_start, s.prot),
                        "{e:?}"
                    );
                    let want = libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS;
                    assert_eq!(*flags & want, want, "{e:?}");
                }
            }
            assert!(
                ev.contains(&Event::Mapped {
                    path: path.clone(),
                    base: h.base(),
                    size: span.len()
                }),
                "{}",
                dump(&ev)
            );
        }
        let want_files = if name == "libdiamond_a.so" { 4 } else { 1 };
        assert_eq!(groups.len(), want_files, "{name}");
        drop(l);
    }
}

fn diamond_files() -> Vec<PathBuf> {
    ["a", "b", "c", "d"]
        .iter()
        .map(|c| lib(&format!("libdiamond_{c}.so")))
        .collect()
}

#[test]
fn close_unmaps_everything_and_closes_every_fd() {
    let _g = exclusive();
    let fds = fd_count();
    let files = diamond_files();
    let (l, sink) = open_traced(&files[0]);
    assert_eq!(fd_count(), fds, "the files are closed once mapped");
    let closes = sink
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Close { .. }))
        .count();
    assert_eq!(closes, 4);
    for f in &files {
        assert!(!maps_of(f).is_empty(), "{} mapped", f.display());
    }
    let span = l.span();
    l.close().unwrap();
    let ev = sink.events();
    for f in &files {
        assert!(maps_of(f).is_empty(), "{} still mapped", f.display());
    }
    let mut gone = unloaded(&ev);
    gone.sort();
    assert_eq!(gone, files);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Munmap { addr, len, .. }
            if *addr == span.start && *len == span.len())),
        "the root's whole span is unmapped:\n{}",
        dump(&ev)
    );
    assert_eq!(fd_count(), fds);
}

/// Asserts that nothing of `files` is mapped and no fd leaked.
fn assert_clean(what: &str, files: &[PathBuf], fds: usize) {
    for f in files {
        let m = maps_of(f);
        assert!(m.is_empty(), "{what}: {} left mapped: {m:?}", f.display());
    }
    assert_eq!(fd_count(), fds, "{what}: fd leaked");
}

#[test]
fn failed_loads_leave_no_mapping_and_no_fd() {
    let _g = exclusive();
    let fds = fd_count();
    // Loads that fail by themselves.
    for (name, files) in [
        ("libmissing.so", vec![lib("libmissing.so")]),
        ("libneedmissing.so", vec![lib("libneedmissing.so")]),
        ("libexecstack.so", vec![lib("libexecstack.so")]),
    ] {
        let (opts, sink) = traced();
        let r = Library::open_with(lib(name), &opts);
        assert!(r.is_err(), "{name} loaded");
        assert_clean(name, &files, fds);
        // Whatever was mapped was unmapped.
        let ev = sink.events();
        let mapped = ev
            .iter()
            .filter(|e| matches!(e, Event::Mapped { .. }))
            .count();
        let unmapped = ev
            .iter()
            .filter(|e| matches!(e, Event::Munmap { purpose, .. } if !purpose.contains("trim")))
            .count();
        assert_eq!(mapped, unmapped, "{name}:\n{}", dump(&ev));
    }

    // Injected failures of every mmap and every mprotect of a load.
    let cases: Vec<(&str, Vec<PathBuf>)> = vec![
        ("libarith.so", vec![lib("libarith.so")]),
        ("libbss.so", vec![lib("libbss.so")]),
        ("librpath.so", vec![lib("librpath.so"), lib("libarith.so")]),
        ("libdiamond_a.so", diamond_files()),
    ];
    for (name, files) in &cases {
        for call in [Syscall::Mmap, Syscall::Mprotect] {
            let mut failures = 0;
            let mut n = 0;
            let calls_in_a_load = loop {
                let sink = VecSink::new();
                let opts = Options::new()
                    .trace(Arc::new(sink.clone()))
                    .fail_syscall(call, n);
                let what = format!("{name}, {call:?} #{n} failing");
                match Library::open_with(lib(name), &opts) {
                    Err(e) => {
                        match &e {
                            Error::Map { op, source, .. } => {
                                let want = match call {
                                    Syscall::Mmap => "mmap",
                                    Syscall::Mprotect => "mprotect",
                                };
                                assert_eq!(*op, want, "{what}: {e}");
                                assert_eq!(source.raw_os_error(), Some(libc::ENOMEM), "{what}");
                            }
                            other => panic!("{what}: expected Error::Map, got {other:?}"),
                        }
                        assert_clean(&what, files, fds);
                        failures += 1;
                    }
                    Ok(l) => {
                        // Nothing of the failed attempts lingers: this load
                        // opened and mapped every file afresh.
                        let ev = sink.events();
                        let mut got = opened(&ev);
                        got.sort();
                        let mut want = files.clone();
                        want.sort();
                        assert_eq!(got, want, "{what}: a fresh load");
                        let count = ev
                            .iter()
                            .filter(|e| {
                                matches!(
                                    (call, e),
                                    (Syscall::Mmap, Event::Mmap { .. })
                                        | (Syscall::Mprotect, Event::Mprotect { .. })
                                )
                            })
                            .count();
                        l.close().unwrap();
                        assert_clean(&format!("{name} closed"), files, fds);
                        break count;
                    }
                }
                n += 1;
                assert!(n < 100, "{name}: {call:?} failures never stop");
            };
            // Every call of the load was made to fail once.
            assert_eq!(failures, calls_in_a_load, "{name}, {call:?}");
            if call == Syscall::Mmap {
                assert!(failures > 4 * files.len(), "{name}: {failures} mmaps");
            } else {
                assert!(failures >= files.len(), "{name}: a RELRO mprotect each");
            }
        }
    }
}

#[test]
fn concurrent_open_call_close() {
    let _g = exclusive();
    let diamond = lib("libdiamond_a.so");
    let arith = lib("libarith.so");
    std::thread::scope(|s| {
        for t in 0..8 {
            let (diamond, arith) = (&diamond, &arith);
            s.spawn(move || {
                for i in 0..200 {
                    let d = open(diamond);
                    let a = open(arith);
                    // SAFETY: diamond_a and diamond_d are `int f(void)` (testlibs/diamond.c),
                    // add is `int add(int, int)` (testlibs/arith.c).
                    unsafe {
                        let da = d.get::<extern "C" fn() -> c_int>("diamond_a").unwrap();
                        let dd = d.get::<extern "C" fn() -> c_int>("diamond_d").unwrap();
                        let add = a
                            .get::<extern "C" fn(c_int, c_int) -> c_int>("add")
                            .unwrap();
                        assert_eq!(da(), 494);
                        assert_eq!(dd(), 100);
                        assert_eq!(add(t, i), t + i);
                    }
                    if i % 2 == 0 {
                        d.close().unwrap();
                        a.close().unwrap();
                    } else {
                        a.close().unwrap();
                        d.close().unwrap();
                    }
                }
            });
        }
    });
    let mut files = diamond_files();
    files.push(arith);
    for f in &files {
        assert!(maps_of(f).is_empty(), "{} still mapped", f.display());
    }
}

#[test]
fn a_failed_load_leaves_already_loaded_dependencies_alone() {
    let _g = exclusive();
    let arith = lib("libarith.so");
    let rpath = lib("librpath.so");
    let keep = open(&arith);
    let base = keep.base();
    let fds = fd_count();
    // SAFETY: int add(int, int).
    let add = unsafe { keep.get::<extern "C" fn(c_int, c_int) -> c_int>("add") }.unwrap();
    for call in [Syscall::Mmap, Syscall::Mprotect] {
        let mut n = 0;
        loop {
            let opts = Options::new().fail_syscall(call, n);
            match Library::open_with(&rpath, &opts) {
                Err(e) => {
                    assert!(matches!(e, Error::Map { .. }), "{e:?}");
                    assert_clean(
                        &format!("librpath, {call:?} #{n}"),
                        std::slice::from_ref(&rpath),
                        fds,
                    );
                    let heads = maps_of(&arith)
                        .into_iter()
                        .filter(|m| m.offset == 0)
                        .count();
                    assert_eq!(heads, 1, "libarith still mapped, once");
                    assert_eq!(add(20, 22), 42);
                }
                Ok(l) => {
                    assert_eq!(l.dependencies()[0].1, arith);
                    // SAFETY: int rpath_add(int, int).
                    let f = unsafe { l.get::<extern "C" fn(c_int, c_int) -> c_int>("rpath_add") }
                        .unwrap();
                    assert_eq!(f(1, 2), 3);
                    break;
                }
            }
            n += 1;
            assert!(n < 100);
        }
    }
    assert_eq!(keep.base(), base);
    drop(keep);
    assert!(maps_of(&arith).is_empty());
}
