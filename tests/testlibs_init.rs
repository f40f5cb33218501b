//! End-to-end: initialisers and finalisers.
//!
//! libinit: `DT_INIT`, prioritised `DT_INIT_ARRAY` constructors and their
//! `(argc, argv, envp)` arguments, finalisers in reverse on close, once
//! only with two handles, and at process exit for libraries left open.
//! libdiamond_*: dependency order over a diamond.
//!
//! The libraries log to `$SOLOADER_INIT_LOG`. The environment is
//! process-wide, so every test that needs the log runs its loads in a child
//! process (this binary's `child_helper`) with the variable set only there;
//! the same steps under the system loader run in another child, and the
//! logs are compared.
//!
//! Not covered: a constructor calling back into soloader — no test library
//! has such a constructor.

mod common;

use std::os::raw::{c_char, c_int};
use std::path::{Path, PathBuf};

use common::*;
use soloader::Library;

const INIT_ORDER: [&str; 4] = ["DT_INIT", "ctor101", "ctor102", "ctor"];
const FINI_ORDER: [&str; 4] = ["dtor", "dtor102", "dtor101", "DT_FINI"];

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_helper() {
    common::child_main(&[
        ("so_close", || so_steps("libinit.so", Steps::Close)),
        ("glibc_close", || glibc_steps("libinit.so", Steps::Close)),
        ("so_two_handles", || {
            so_steps("libinit.so", Steps::TwoHandles)
        }),
        ("glibc_two_handles", || {
            glibc_steps("libinit.so", Steps::TwoHandles)
        }),
        ("so_exit", || so_steps("libinit.so", Steps::Exit)),
        ("glibc_exit", || glibc_steps("libinit.so", Steps::Exit)),
        ("so_diamond_close", || {
            so_steps("libdiamond_a.so", Steps::Close)
        }),
        ("glibc_diamond_close", || {
            glibc_steps("libdiamond_a.so", Steps::Close)
        }),
        ("so_diamond_exit", || {
            so_steps("libdiamond_a.so", Steps::Exit)
        }),
        ("glibc_diamond_exit", || {
            glibc_steps("libdiamond_a.so", Steps::Exit)
        }),
    ]);
}

#[derive(Clone, Copy)]
enum Steps {
    /// open; mark opened; close; mark closed.
    Close,
    /// open; open; mark opened; close; mark closed1; close; mark closed2.
    TwoHandles,
    /// open; mark opened; leave it open; mark returning; exit.
    Exit,
}

/// The steps with soloader (in a child process).
fn so_steps(name: &str, steps: Steps) {
    let path = lib(name);
    let h1 = open(&path);
    match steps {
        Steps::Close => {
            log_mark("opened");
            h1.close().unwrap();
            log_mark("closed");
        }
        Steps::TwoHandles => {
            let h2 = open(&path);
            log_mark("opened");
            h1.close().unwrap();
            log_mark("closed1");
            h2.close().unwrap();
            log_mark("closed2");
        }
        Steps::Exit => {
            log_mark("opened");
            std::mem::forget(h1);
            log_mark("returning");
        }
    }
}

/// The same steps with the system loader (in a child process).
fn glibc_steps(name: &str, steps: Steps) {
    let path = lib(name);
    let h1 = glibc_dlopen(&path);
    // SAFETY: closing handles this function opened.
    unsafe {
        match steps {
            Steps::Close => {
                log_mark("opened");
                assert_eq!(libc::dlclose(h1), 0);
                log_mark("closed");
            }
            Steps::TwoHandles => {
                let h2 = glibc_dlopen(&path);
                log_mark("opened");
                assert_eq!(libc::dlclose(h1), 0);
                log_mark("closed1");
                assert_eq!(libc::dlclose(h2), 0);
                log_mark("closed2");
            }
            Steps::Exit => {
                log_mark("opened");
                log_mark("returning");
            }
        }
    }
}

/// Runs a child scenario with a fresh init log and returns the log.
fn logged(scenario: &str) -> Vec<String> {
    let dir = TempDir::new(scenario);
    let log = dir.join("init.log");
    run_child(scenario, &[(INIT_LOG_ENV, log.to_str().unwrap())]);
    read_log(&log)
}

fn init_lines(which: &[&str]) -> Vec<String> {
    which.iter().map(|w| format!("init:init:{w}")).collect()
}

fn fini_lines(which: &[&str]) -> Vec<String> {
    which.iter().map(|w| format!("fini:init:{w}")).collect()
}

fn mark(label: &str) -> String {
    format!("mark:test:{label}")
}

#[test]
fn close_runs_finalisers_in_reverse_order() {
    let log = logged("so_close");
    let mut want = init_lines(&INIT_ORDER);
    want.push(mark("opened"));
    want.extend(fini_lines(&FINI_ORDER));
    want.push(mark("closed"));
    assert_eq!(log, want);
    assert_eq!(log, logged("glibc_close"), "soloader vs glibc");
}

#[test]
fn finalisers_run_once_when_the_last_of_two_handles_closes() {
    let log = logged("so_two_handles");
    let mut want = init_lines(&INIT_ORDER);
    want.push(mark("opened"));
    want.push(mark("closed1"));
    want.extend(fini_lines(&FINI_ORDER));
    want.push(mark("closed2"));
    assert_eq!(log, want);
    assert_eq!(log, logged("glibc_two_handles"), "soloader vs glibc");
}

#[test]
fn libraries_left_open_are_finalised_at_exit() {
    let log = logged("so_exit");
    let mut want = init_lines(&INIT_ORDER);
    want.push(mark("opened"));
    want.push(mark("returning"));
    want.extend(fini_lines(&FINI_ORDER));
    assert_eq!(log, want);
    assert_eq!(log, logged("glibc_exit"), "soloader vs glibc");
}

/// The diamond letters in the order their `kind` ("init"/"fini") lines
/// appear in the log; each letter must appear exactly once.
fn letters(log: &[String], kind: &str) -> Vec<char> {
    let v: Vec<char> = log
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{kind}:diamond_")))
        .map(|rest| {
            assert!(rest.ends_with(":ctor") || rest.ends_with(":dtor"), "{rest}");
            rest.chars().next().unwrap()
        })
        .collect();
    let mut sorted = v.clone();
    sorted.sort();
    assert_eq!(sorted, ['a', 'b', 'c', 'd'], "{kind} lines: {log:?}");
    v
}

/// Every library initialised after its dependencies, finalised in reverse.
fn check_diamond_order(who: &str, log: &[String], marks: &[&str]) {
    let init = letters(log, "init");
    let fini = letters(log, "fini");
    let pos = |c: char| init.iter().position(|&x| x == c).unwrap();
    assert!(
        pos('d') < pos('b') && pos('d') < pos('c') && pos('b') < pos('a') && pos('c') < pos('a'),
        "{who}: init order {init:?}"
    );
    let mut rev = init.clone();
    rev.reverse();
    assert_eq!(fini, rev, "{who}: fini order is the reverse of init order");
    // Initialisers before the first mark, finalisers after the given ones.
    let at = |line: &str| log.iter().position(|l| l == line).unwrap();
    let last_init = log.iter().rposition(|l| l.starts_with("init:")).unwrap();
    let first_fini = log.iter().position(|l| l.starts_with("fini:")).unwrap();
    assert!(last_init < at(&mark(marks[0])), "{who}: {log:?}");
    for m in &marks[1..] {
        assert!(at(&mark(m)) < first_fini, "{who}: {log:?}");
    }
}

#[test]
fn diamond_init_and_fini_order_on_close() {
    let ours = logged("so_diamond_close");
    let glibc = logged("glibc_diamond_close");
    check_diamond_order("glibc", &glibc, &["opened"]);
    check_diamond_order("soloader", &ours, &["opened"]);
    let closed = mark("closed");
    assert_eq!(ours.last(), Some(&closed), "finalised by close: {ours:?}");
    assert_eq!(ours, glibc, "soloader vs glibc 2.36's order");
}

#[test]
fn diamond_finalised_at_exit_in_dependency_order() {
    let ours = logged("so_diamond_exit");
    let glibc = logged("glibc_diamond_exit");
    check_diamond_order("glibc", &glibc, &["opened", "returning"]);
    check_diamond_order("soloader", &ours, &["opened", "returning"]);
    assert_eq!(ours, glibc, "soloader vs glibc 2.36's order");
}

// --- In-process tests: no log needed -------------------------------------

type StrFn = extern "C" fn() -> *const c_char;
type IntFn = extern "C" fn() -> c_int;

fn get_str(l: &Library, name: &str) -> Option<String> {
    // SAFETY: `const char *f(void)`.
    let p = unsafe { l.get::<StrFn>(name) }.unwrap()();
    (!p.is_null()).then(|| cstr(p))
}

fn get_int(l: &Library, name: &str) -> c_int {
    // SAFETY: `int f(void)`.
    unsafe { l.get::<IntFn>(name) }.unwrap()()
}

fn kinds(events: &[(PathBuf, String, usize)], path: &Path) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.0 == path)
        .map(|e| e.1.clone())
        .collect()
}

#[test]
fn initialisers_run_in_order_with_argc_argv_envp() {
    let _g = shared();
    let (_dir, path) = private_copy("libinit.so");
    let (l, sink) = open_traced(&path);
    assert_eq!(
        get_str(&l, "init_order").as_deref(),
        Some("DT_INIT,ctor101,ctor102,ctor")
    );
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(get_int(&l, "init_seen_argc") as usize, args.len());
    assert_eq!(get_str(&l, "init_seen_argv0"), args.first().cloned());
    assert_eq!(get_int(&l, "init_seen_envp_ok"), 1);

    // The trace: DT_INIT (init_legacy) first, then DT_INIT_ARRAY in index
    // order (crt's frame_dummy, ctor101, ctor102, ctor).
    let ev = sink.events();
    let init = inits(&ev);
    let k = kinds(&init, &path);
    assert_eq!(k.len(), 5, "{}", dump(&ev));
    assert_eq!(k[0], "DT_INIT");
    for (i, kind) in k[1..].iter().enumerate() {
        assert_eq!(*kind, format!("DT_INIT_ARRAY[{i}]"));
    }
    assert_eq!(init[0].2, addr_of(&l, "init_legacy"));
    let init_at = ev
        .iter()
        .position(|e| matches!(e, soloader::Event::Init { .. }))
        .unwrap();
    let loaded_at = ev
        .iter()
        .position(|e| matches!(e, soloader::Event::Loaded { .. }))
        .unwrap();
    assert!(init_at < loaded_at);
    assert!(finis(&ev).is_empty());

    let fini_legacy = addr_of(&l, "fini_legacy");
    l.close().unwrap();
    let ev = sink.events();
    let fini = finis(&ev);
    let k = kinds(&fini, &path);
    // DT_FINI_ARRAY backwards (dtor, dtor102, dtor101, crt's
    // __do_global_dtors_aux), then DT_FINI.
    assert_eq!(
        k,
        [
            "DT_FINI_ARRAY[3]",
            "DT_FINI_ARRAY[2]",
            "DT_FINI_ARRAY[1]",
            "DT_FINI_ARRAY[0]",
            "DT_FINI"
        ],
        "{}",
        dump(&ev)
    );
    assert_eq!(fini[4].2, fini_legacy);
    let fini_at = ev
        .iter()
        .position(|e| matches!(e, soloader::Event::Fini { .. }))
        .unwrap();
    let unloaded_at = ev
        .iter()
        .position(|e| matches!(e, soloader::Event::Unloaded { .. }))
        .unwrap();
    assert!(fini_at < unloaded_at, "finalisers run before unmapping");
}

#[test]
fn a_second_handle_runs_no_initialisers_and_only_the_last_close_finalises() {
    let _g = shared();
    let (_dir, path) = private_copy("libinit.so");
    let (l1, sink1) = open_traced(&path);
    let (l2, sink2) = open_traced(&path);
    assert_eq!(l1.base(), l2.base());
    assert_eq!(kinds(&inits(&sink1.events()), &path).len(), 5);
    assert!(
        inits(&sink2.events()).is_empty(),
        "{}",
        dump(&sink2.events())
    );
    assert_eq!(
        get_str(&l2, "init_order").as_deref(),
        Some("DT_INIT,ctor101,ctor102,ctor"),
        "constructors ran once"
    );
    l1.close().unwrap();
    assert!(finis(&sink1.events()).is_empty());
    assert_eq!(get_int(&l2, "init_seen_envp_ok"), 1, "still usable");
    l2.close().unwrap();
    assert_eq!(kinds(&finis(&sink2.events()), &path).len(), 5);
    assert!(finis(&sink1.events()).is_empty());
}
