//! End-to-end: linking between libraries.
//!
//! Symbol versions, IFUNC and IRELATIVE, breadth-first lookup order,
//! dependencies found through `DT_RUNPATH`/`DT_RPATH` `$ORIGIN`, the
//! diamond (each library once, dependency-ordered init/fini), the errors of
//! loads that cannot link, and reference counting of reopened libraries.
//! Where the system loader is the reference, it runs in a child process.

mod common;

use std::os::raw::c_int;
use std::path::{Path, PathBuf};

use common::*;
use soloader::{Error, Event, Library, Options, Provider};

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_helper() {
    common::child_main(&[]);
}

type IntFn = extern "C" fn() -> c_int;

fn call(l: &Library, name: &str) -> c_int {
    // SAFETY: every symbol this is used with is an `int f(void)`.
    unsafe { l.get::<IntFn>(name) }.unwrap_or_else(|e| panic!("{e}"))()
}

fn call_versioned(l: &Library, name: &str, version: &str) -> c_int {
    // SAFETY: as for `call`.
    unsafe { l.get_versioned::<IntFn>(name, version) }.unwrap_or_else(|e| panic!("{e}"))()
}

#[test]
fn versioned_lookup_default_and_explicit() {
    let _g = shared();
    let path = lib("libversioned.so");
    let l = open(&path);
    assert_eq!(call(&l, "vfunc"), 2, "unversioned lookup finds the default");
    assert_eq!(
        call_versioned(&l, "vfunc", "VERS_1"),
        1,
        "hidden version by name"
    );
    assert_eq!(call_versioned(&l, "vfunc", "VERS_2"), 2);
    assert_eq!(call(&l, "vplain"), 10);
    assert_eq!(call_versioned(&l, "vplain", "VERS_1"), 10);
    // SAFETY: only the address is taken.
    let v1 = unsafe { l.get_versioned::<usize>("vfunc", "VERS_1") }
        .unwrap()
        .addr();
    // SAFETY: only the address is taken.
    let v2 = unsafe { l.get_versioned::<usize>("vfunc", "VERS_2") }
        .unwrap()
        .addr();
    assert_ne!(v1, v2);
    assert_eq!(addr_of(&l, "vfunc"), v2);
    // SAFETY: vfunc is an `int f(void)` (testlibs/versioned.c); this lookup
    // must fail, and a found symbol would not be called.
    match unsafe { l.get_versioned::<IntFn>("vfunc", "VERS_9") } {
        Err(Error::SymbolNotFound {
            path: p,
            symbol,
            version,
        }) => {
            assert_eq!(p, path);
            assert_eq!(symbol, "vfunc");
            assert_eq!(version.as_deref(), Some("VERS_9"));
        }
        Err(e) => panic!("expected SymbolNotFound, got {e:?}"),
        Ok(_) => panic!("found vfunc@VERS_9"),
    }
    // vplain exists only at VERS_1.
    // SAFETY: vplain is an `int vplain(void)`; the lookup fails.
    assert!(matches!(
        unsafe { l.get_versioned::<IntFn>("vplain", "VERS_2") },
        Err(Error::SymbolNotFound { .. })
    ));
}

#[test]
fn needhidden_binds_the_hidden_version_it_asks_for() {
    let _g = exclusive();
    let path = lib("libneedhidden.so");
    let (l, sink) = open_traced(&path);
    assert_eq!(call(&l, "call_old_vfunc"), 1, "bound to vfunc@VERS_1");
    assert_eq!(call(&l, "call_new_vfunc"), 2, "bound to vfunc@@VERS_2");
    let ev = sink.events();
    let mut b = binds(&ev, &path, "vfunc");
    b.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(b.len(), 2, "two references to vfunc:\n{}", dump(&ev));
    let versioned = lib("libversioned.so");
    // SAFETY: only the address is taken.
    let v1 = unsafe { l.get_versioned::<usize>("vfunc", "VERS_1") }
        .unwrap()
        .addr();
    // SAFETY: only the address is taken.
    let v2 = unsafe { l.get_versioned::<usize>("vfunc", "VERS_2") }
        .unwrap()
        .addr();
    assert_eq!(
        b,
        vec![
            (
                Some("VERS_1".into()),
                Provider::Loaded(versioned.clone()),
                v1
            ),
            (
                Some("VERS_2".into()),
                Provider::Loaded(versioned.clone()),
                v2
            ),
        ]
    );
    let deps = l.dependencies();
    assert_eq!(deps[0], ("libversioned.so".into(), versioned, false));
}

/// glibc's `resolver_calls()` after the same steps as soloader's.
const IFUNC_STEPS: &[&str] = &[
    "libifunc.so:resolver_calls:i",
    "libifunc.so:ifunc_answer:i",
    "libifunc.so:resolver_calls:i",
    "libifunc.so:call_ifunc_answer:i",
    "libifunc.so:call_hidden_ifunc:i",
    "libifunc.so:call_ifunc_via_ptr:i",
    "libifunc.so:resolver_calls:i",
];

#[test]
fn ifunc_and_irelative() {
    let _g = shared();
    let (_dir, path) = private_copy("libifunc.so");
    let (l, sink) = open_traced(&path);
    // The same steps as IFUNC_STEPS, on a fresh instance.
    let mut ours = vec![call(&l, "resolver_calls")];
    // SAFETY: `int ifunc_answer(void)` (testlibs/ifunc.c); get gives the
    // resolver's result, a function of that type.
    let answer = unsafe { l.get::<IntFn>("ifunc_answer") }.unwrap();
    ours.push(answer());
    ours.push(call(&l, "resolver_calls"));
    ours.push(call(&l, "call_ifunc_answer"));
    ours.push(call(&l, "call_hidden_ifunc"));
    ours.push(call(&l, "call_ifunc_via_ptr"));
    ours.push(call(&l, "resolver_calls"));
    let ours: Vec<i64> = ours.into_iter().map(i64::from).collect();
    let (glibc, _) = glibc_calls(IFUNC_STEPS);
    assert_eq!(ours, glibc, "soloader vs glibc, steps {IFUNC_STEPS:?}");
    assert_eq!(&ours[1..2], &[42]);
    assert_eq!(&ours[3..6], &[42, 7, 42]);

    // get() returns the resolver's result, which is also what the data
    // pointer (R_X86_64_64 against the IFUNC) holds.
    // SAFETY: ifunc_answer_ptr is an `int (*)(void)` variable, pointer-sized;
    // only its address and value are used.
    let ptr = unsafe { l.get::<*const usize>("ifunc_answer_ptr") }.unwrap();
    // SAFETY: an initialised, relocated variable of `l`, which is still loaded.
    assert_eq!(unsafe { ptr.read() }, answer.addr());
    let ev = sink.events();
    assert_eq!(
        reloc_count(&ev, &path, "R_X86_64_IRELATIVE"),
        1,
        "{}",
        dump(&ev)
    );
    let b = binds(&ev, &path, "ifunc_answer");
    assert!(!b.is_empty(), "{}", dump(&ev));
    for (_, provider, _) in b {
        assert_eq!(provider, Provider::Loaded(path.clone()));
    }
}

/// `Event::Bind::value` is documented as "the address it resolved to"; for
/// an IFUNC that is the resolver's result (what the GOT slot holds), not
/// the resolver itself.
#[test]
fn ifunc_bind_event_reports_the_resolved_address() {
    let _g = shared();
    let (_dir, path) = private_copy("libifunc.so");
    let (l, sink) = open_traced(&path);
    let resolved = addr_of(&l, "ifunc_answer");
    let ev = sink.events();
    let b = binds(&ev, &path, "ifunc_answer");
    assert!(!b.is_empty(), "{}", dump(&ev));
    for (_, _, value) in b {
        assert_eq!(value, resolved, "{}", dump(&ev));
    }
}

#[test]
fn lookup_is_breadth_first_in_dt_needed_order() {
    let _g = shared();
    let ab = open(&lib("libdup_ab.so"));
    let ba = open(&lib("libdup_ba.so"));
    assert_eq!(call(&ab, "who"), 'a' as c_int);
    assert_eq!(call(&ba, "who"), 'b' as c_int);
    assert_eq!(
        call(&ab, "which"),
        'a' as c_int,
        "get searches the handle's list"
    );
    assert_eq!(call(&ba, "which"), 'b' as c_int);
    let names: Vec<String> = ab.dependencies().into_iter().map(|d| d.0).collect();
    assert_eq!(names, ["libdup_a.so", "libdup_b.so", "libc.so.6"]);
    let names: Vec<String> = ba.dependencies().into_iter().map(|d| d.0).collect();
    assert_eq!(names, ["libdup_b.so", "libdup_a.so", "libc.so.6"]);
}

/// Loads `root` with no library path (so only the library's own
/// RPATH/RUNPATH can find its dependencies) and returns the library.
fn open_without_library_path(root: &Path) -> (Library, soloader::VecSink) {
    let (opts, sink) = traced();
    let opts = opts.library_path(Vec::new());
    let l = Library::open_with(root, &opts).unwrap_or_else(|e| panic!("{e}"));
    (l, sink)
}

/// The successful `SearchTry` events: (path, source).
fn found_paths(events: &[Event]) -> Vec<(PathBuf, &'static str)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SearchTry {
                path,
                source,
                found: true,
            } => Some((path.clone(), *source)),
            _ => None,
        })
        .collect()
}

/// The successful `SearchTry` events for files named `name`.
fn found(events: &[Event], name: &str) -> Vec<(PathBuf, &'static str)> {
    found_paths(events)
        .into_iter()
        .filter(|(p, _)| p.file_name().is_some_and(|f| f == name))
        .collect()
}

#[test]
fn rpath_origin_finds_the_dependency_next_to_the_library() {
    let _g = exclusive();
    for dir in [None, Some(private_copies(&["librpath.so", "libarith.so"]))] {
        let base = dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_else(testlibs);
        let (l, sink) = open_without_library_path(&base.join("librpath.so"));
        // SAFETY: int rpath_add(int, int).
        let f = unsafe { l.get::<extern "C" fn(c_int, c_int) -> c_int>("rpath_add") }.unwrap();
        assert_eq!(f(2, 40), 42);
        let deps = l.dependencies();
        assert_eq!(
            deps[0],
            ("libarith.so".into(), base.join("libarith.so"), false),
            "from {}",
            base.display()
        );
        assert_eq!(deps[1].0, "libc.so.6");
        assert!(deps[1].2);
        let ev = sink.events();
        assert_eq!(
            found(&ev, "libarith.so"),
            [(base.join("libarith.so"), "RPATH")],
            "{}",
            dump(&ev)
        );
        assert_eq!(
            opened(&ev),
            [base.join("librpath.so"), base.join("libarith.so")]
        );
        l.close().unwrap();
    }
}

#[test]
fn runpath_origin_finds_dependencies_next_to_the_library() {
    let _g = exclusive();
    let names = [
        "libdiamond_a.so",
        "libdiamond_b.so",
        "libdiamond_c.so",
        "libdiamond_d.so",
    ];
    let dir = private_copies(&names);
    let (l, sink) = open_without_library_path(&dir.join("libdiamond_a.so"));
    assert_eq!(call(&l, "diamond_a"), 494);
    let ev = sink.events();
    let mut got = opened(&ev);
    got.sort();
    let want: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    assert_eq!(got, want, "{}", dump(&ev));
    for n in &names[1..] {
        assert_eq!(found(&ev, n), [(dir.join(n), "RUNPATH")], "{}", dump(&ev));
    }
    let deps = l.dependencies();
    assert_eq!(
        deps[0],
        ("libdiamond_b.so".into(), dir.join("libdiamond_b.so"), false)
    );
    assert_eq!(
        deps[1],
        ("libdiamond_c.so".into(), dir.join("libdiamond_c.so"), false)
    );
}

fn diamond(letter: char) -> PathBuf {
    lib(&format!("libdiamond_{letter}.so"))
}

#[test]
fn diamond_loads_each_library_once_and_orders_init_and_fini() {
    let _g = exclusive();
    let (l, sink) = open_traced(&diamond('a'));
    assert_eq!(call(&l, "diamond_a"), 494);
    assert_eq!(call(&l, "diamond_b"), 198);
    assert_eq!(call(&l, "diamond_c"), 199);
    assert_eq!(call(&l, "diamond_d"), 100);
    assert_eq!(call(&l, "diamond_a_self"), 'a' as c_int);
    assert_eq!(call(&l, "diamond_d_self"), 'd' as c_int);

    let deps = l.dependencies();
    assert_eq!(
        deps[..2],
        [
            ("libdiamond_b.so".into(), diamond('b'), false),
            ("libdiamond_c.so".into(), diamond('c'), false),
        ]
    );
    assert_eq!(deps.len(), 3, "{deps:?}");
    assert!(deps[2].2, "libc.so.6 is the host's: {deps:?}");

    let ev = sink.events();
    // Each file opened and mapped once, although d is needed twice.
    for c in ['a', 'b', 'c', 'd'] {
        let p = diamond(c);
        assert_eq!(
            opened(&ev).iter().filter(|o| **o == p).count(),
            1,
            "{}:\n{}",
            p.display(),
            dump(&ev)
        );
        let heads: Vec<MapLine> = maps_of(&p).into_iter().filter(|m| m.offset == 0).collect();
        assert_eq!(heads.len(), 1, "{} mapped once: {heads:?}", p.display());
    }
    let searched_d = ev
        .iter()
        .filter(|e| matches!(e, Event::Search { name, .. } if name == "libdiamond_d.so"))
        .count();
    assert_eq!(searched_d, 2, "needed by b and by c:\n{}", dump(&ev));

    // Initialisers: each library once, after its dependencies.
    let order = lib_order(&inits(&ev));
    assert_eq!(order.len(), 4, "{order:?}");
    let pos = |c: char| order.iter().position(|p| *p == diamond(c)).unwrap();
    assert!(pos('d') < pos('b') && pos('d') < pos('c'), "{order:?}");
    assert!(pos('b') < pos('a') && pos('c') < pos('a'), "{order:?}");
    assert!(finis(&ev).is_empty());

    l.close().unwrap();
    let ev = sink.events();
    let fini_order = lib_order(&finis(&ev));
    let mut rev = order.clone();
    rev.reverse();
    assert_eq!(fini_order, rev, "finalisers in reverse init order");
    let mut gone = unloaded(&ev);
    gone.sort();
    assert_eq!(gone, ['a', 'b', 'c', 'd'].map(diamond));
    for c in ['a', 'b', 'c', 'd'] {
        assert!(maps_of(&diamond(c)).is_empty(), "{c} still mapped");
    }
}

/// The libraries of a list of Init/Fini events, each once, in first-seen
/// order.
fn lib_order(events: &[(PathBuf, String, usize)]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for (p, _, _) in events {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

#[test]
fn missing_symbol_is_an_undefined_symbol_error() {
    let _g = shared();
    let path = lib("libmissing.so");
    let err = Library::open(&path).expect_err("libmissing must not load");
    match &err {
        Error::UndefinedSymbol {
            path: p,
            symbol,
            version,
        } => {
            assert_eq!(p, &path);
            assert_eq!(symbol, "soloader_no_such_function");
            assert_eq!(version, &None);
        }
        other => panic!("expected UndefinedSymbol, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(msg.contains("libmissing.so"), "{msg}");
    assert!(msg.contains("soloader_no_such_function"), "{msg}");
}

#[test]
fn a_host_library_the_system_loader_refuses_names_who_needed_it() {
    let _g = shared();
    // libarith with its DT_NEEDED "libc.so.6" turned into "libc.so.9": a
    // glibc-family name, which only the system loader may load, and it
    // has no such file.
    let dir = TempDir::private("hostneed");
    let path = dir.copy_lib_needing("libarith.so", "libc.so.9");
    let err = Library::open(&path).expect_err("libc.so.9 does not exist");
    match &err {
        Error::Host {
            name, needed_by, ..
        } => {
            assert_eq!(name, "libc.so.9");
            assert_eq!(needed_by.as_deref(), Some(path.as_path()));
        }
        other => panic!("expected Error::Host, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("needed by") && msg.contains("libarith.so"),
        "{msg}"
    );
}

#[test]
fn missing_dependency_is_a_not_found_error() {
    let _g = shared();
    let path = lib("libneedmissing.so");
    let err = Library::open(&path).expect_err("libneedmissing must not load");
    match &err {
        Error::NotFound {
            name,
            needed_by,
            tried,
        } => {
            assert_eq!(name, "libghost.so");
            assert_eq!(needed_by.as_deref(), Some(path.as_path()));
            assert!(
                tried.contains(&lib("libghost.so")),
                "RUNPATH $ORIGIN was tried: {tried:?}"
            );
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(msg.contains("libghost.so"), "{msg}");
    assert!(msg.contains("libneedmissing.so"), "{msg}");
}

#[test]
fn executable_stack_is_refused() {
    let _g = shared();
    let path = lib("libexecstack.so");
    let err = Library::open(&path).expect_err("libexecstack must not load");
    match &err {
        Error::Unsupported { path: p, what } => {
            assert_eq!(p, &path);
            assert!(what.to_lowercase().contains("stack"), "{what}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn reopening_shares_the_instance_and_closing_both_unloads_it() {
    let _g = exclusive();
    let path = lib("libconst.so");
    let (opts1, sink1) = traced();
    let (opts2, sink2) = traced();
    let h1 = Library::open_with(&path, &opts1).unwrap();
    let h2 = Library::open_with(&path, &opts2).unwrap();
    assert_eq!(h1.base(), h2.base());
    assert_eq!(h1.span(), h2.span());
    assert_eq!(opened(&sink1.events()), std::slice::from_ref(&path));
    let ev2 = sink2.events();
    assert!(
        opened(&ev2).is_empty(),
        "second open maps nothing:\n{}",
        dump(&ev2)
    );
    assert!(!ev2.iter().any(|e| matches!(e, Event::Mmap { .. })));
    assert!(ev2.contains(&Event::Loaded {
        path: path.clone(),
        base: h1.base()
    }));

    h1.close().unwrap();
    assert!(!maps_of(&path).is_empty(), "still open through h2");
    assert!(unloaded(&sink1.events()).is_empty());
    // SAFETY: `unsigned crc32_of(const char *)` (testlibs/const.c), given a
    // NUL-terminated string while h2 keeps the library loaded.
    assert_eq!(
        unsafe { h2.get::<extern "C" fn(*const std::os::raw::c_char) -> u32>("crc32_of") }.unwrap()(
            c"123456789".as_ptr()
        ),
        0xCBF4_3926
    );
    h2.close().unwrap();
    assert!(maps_of(&path).is_empty(), "unmapped after the last close");
    let all: Vec<Event> = sink1.events().into_iter().chain(sink2.events()).collect();
    assert_eq!(unloaded(&all), std::slice::from_ref(&path));

    // And a new open is a new load.
    let (opts3, sink3) = traced();
    let h3 = Library::open_with(&path, &opts3).unwrap();
    assert_eq!(opened(&sink3.events()), std::slice::from_ref(&path));
    drop(h3);
    assert!(maps_of(&path).is_empty(), "Drop unloads too");
}

/// Differential: the same calls through soloader (here) and through the
/// system loader (in a child process) give the same answers.
#[test]
fn agrees_with_the_system_loader() {
    let _g = exclusive();
    let specs = [
        "libdiamond_a.so:diamond_a:i",
        "libdiamond_a.so:diamond_b:i",
        "libdiamond_a.so:diamond_c:i",
        "libdiamond_a.so:diamond_d:i",
        "libdup_ab.so:who:i",
        "libdup_ab.so:which:i",
        "libdup_ba.so:who:i",
        "libdup_ba.so:which:i",
        "libversioned.so:vfunc:i",
        "libversioned.so:vplain:i",
        "libneedhidden.so:call_old_vfunc:i",
        "libneedhidden.so:call_new_vfunc:i",
        "librpath.so:rpath_add:i:40,2",
        "libarith.so:sum6:l:1,2,3,4,5,6",
        "libarith.so:mul64:l:-3000000000,3",
        "libbigtext.so:bigtext_count:l",
        "libbigtext.so:bigtext_run:l:1024",
        "libbigtext.so:bigtext_run:l:3",
        "libbss.so:bss_sum:l",
        "libbss.so:bss_data_sum:l",
        "libbss.so:read_data_before_bss:i",
        "libdata.so:read_via_ptr:i",
        "libdata.so:read_array_elem2:i",
        "libuselibc.so:use_qsort:l",
        "libuselibc.so:errno_after_bad_open:i",
        "libifunc.so:call_hidden_ifunc:i",
        "libifunc.so:call_ifunc_via_ptr:i",
        "libinterpose.so:lib_getpid_direct:i",
        "libinterpose.so:host_hook_result:i",
        "libinit.so:init_seen_envp_ok:i",
    ];
    let ours = soloader_calls(&specs);
    let (theirs, _) = glibc_calls(&specs);
    let diff: Vec<String> = specs
        .iter()
        .zip(ours.iter().zip(&theirs))
        .filter(|(_, (a, b))| a != b)
        .map(|(s, (a, b))| format!("{s}: soloader {a}, glibc {b}"))
        .collect();
    assert!(diff.is_empty(), "differences:\n{}", diff.join("\n"));
}

#[test]
fn options_library_path_is_used_for_bare_names() {
    let _g = exclusive();
    let (opts, sink) = traced();
    let opts: Options = opts.library_path(vec![testlibs()]);
    let l = Library::open_with("libdup_ab.so", &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.path(), lib("libdup_ab.so"));
    assert_eq!(call(&l, "who"), 'a' as c_int);
    assert_eq!(
        found(&sink.events(), "libdup_ab.so"),
        [(lib("libdup_ab.so"), "LD_LIBRARY_PATH")]
    );
}

#[test]
fn shared_dependencies_stay_until_their_last_user_closes() {
    let _g = exclusive();
    let (a, b) = (lib("libdup_a.so"), lib("libdup_b.so"));
    let ab = open(&lib("libdup_ab.so"));
    let (opts, sink) = traced();
    let ba = Library::open_with(lib("libdup_ba.so"), &opts).unwrap();
    // libdup_ba's dependencies are libdup_ab's: not opened again.
    assert_eq!(opened(&sink.events()), [lib("libdup_ba.so")]);
    assert_eq!(call(&ba, "who"), 'b' as c_int);
    ab.close().unwrap();
    assert!(maps_of(&lib("libdup_ab.so")).is_empty());
    assert!(
        !maps_of(&a).is_empty() && !maps_of(&b).is_empty(),
        "still needed"
    );
    assert_eq!(call(&ba, "who"), 'b' as c_int);
    assert_eq!(call(&ba, "which"), 'b' as c_int);

    // A dependency opened by itself is the same instance, and outlives
    // the library that brought it in.
    let da = open(&a);
    let heads: Vec<MapLine> = maps_of(&a).into_iter().filter(|m| m.offset == 0).collect();
    assert_eq!(heads.len(), 1, "one copy of libdup_a: {heads:?}");
    assert_eq!(heads[0].start, da.base(), "the handle is on that copy");
    let (opts, sink) = traced();
    let ba_a = Library::open_with(&a, &opts).unwrap();
    assert_eq!(ba_a.base(), da.base());
    assert!(opened(&sink.events()).is_empty());
    drop(ba_a);
    ba.close().unwrap();
    assert!(
        maps_of(&b).is_empty(),
        "libdup_b unloaded with its last user"
    );
    assert!(!maps_of(&a).is_empty(), "libdup_a is still open");
    assert_eq!(call(&da, "which"), 'a' as c_int);
    da.close().unwrap();
    assert!(maps_of(&a).is_empty());
}

#[test]
fn already_loaded_dependencies_are_traced() {
    let _g = exclusive();
    let ab = open(&lib("libdup_ab.so"));
    let (opts, sink) = traced();
    let ba = Library::open_with(lib("libdup_ba.so"), &opts).unwrap();
    let ev = sink.events();
    let shared: Vec<PathBuf> = ev
        .iter()
        .filter_map(|e| match e {
            Event::AlreadyLoaded { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        shared,
        [lib("libdup_b.so"), lib("libdup_a.so")],
        "{}",
        dump(&ev)
    );
    drop(ba);
    drop(ab);
}

#[test]
fn the_same_file_by_another_path_is_the_same_instance() {
    let _g = exclusive();
    let dir = TempDir::new("symlink");
    let link = dir.join("another-name.so");
    std::os::unix::fs::symlink(lib("libversioned.so"), &link).unwrap();
    let l1 = open(&lib("libversioned.so"));
    let (opts, sink) = traced();
    let l2 = Library::open_with(&link, &opts).unwrap();
    assert_eq!(l1.base(), l2.base(), "identified by device and inode");
    assert!(
        opened(&sink.events()).is_empty(),
        "{}",
        dump(&sink.events())
    );
    assert_eq!(l2.soname(), "libversioned.so");
    drop(l1);
    assert_eq!(call(&l2, "vplain"), 10);
}

#[test]
fn a_dependency_lacking_a_needed_version_is_a_version_not_found_error() {
    let _g = exclusive();
    // libneedhidden next to a "libversioned.so" that is really libarith:
    // found by RUNPATH, but it defines neither VERS_1 nor VERS_2.
    let dir = private_copies(&["libneedhidden.so"]);
    std::fs::copy(lib("libarith.so"), dir.join("libversioned.so")).unwrap();
    let root = dir.join("libneedhidden.so");
    let err = Library::open(&root).expect_err("must not load");
    match &err {
        Error::VersionNotFound {
            path,
            version,
            dependency,
        } => {
            assert_eq!(path, &root);
            assert!(version == "VERS_1" || version == "VERS_2", "{version}");
            assert_eq!(dependency, "libversioned.so");
        }
        other => panic!("expected VersionNotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(!msg.contains('\n') && msg.contains("VERS_"), "{msg}");
    assert!(maps_of(&dir.join("libversioned.so")).is_empty());
    assert!(maps_of(&root).is_empty());
}
