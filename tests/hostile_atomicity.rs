//! Failure atomicity: a load that fails — at any point — leaves the
//! process as it was. For each failure point (missing dependency,
//! unresolved symbol, bad relocation, version mismatch, failing `mmap`,
//! failing `mprotect`), both a real load (`Library::open_with`) and a
//! `check`:
//!
//! - fail with the expected typed error, whose message names the culprit;
//! - leave no mapping of any file involved, no new anonymous `PROT_NONE`
//!   reservation and no new file descriptor (the heap, and libraries the
//!   system loader brought in, may change: they are not soloader's);
//! - run no constructor: the failing libraries are mutants of `libinit.so`
//!   and of the `libdiamond_*` libraries, whose constructors append to
//!   `$SOLOADER_INIT_LOG`, and the log stays empty.
//!
//! Everything runs in a child process (its own fds, maps and environment);
//! the parent checks the child passed and reads the log. A control load at
//! the end proves the log works.
//!
//! Also here: a `DT_NEEDED` that names a glibc-family library by path must
//! not make the system loader run that file's constructors (it used to:
//! soloader passed the path to `dlopen`).

mod common;
mod hostile_elf;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::{read_log, run_child, TempDir, INIT_LOG_ENV};
use hostile_elf::*;
use soloader::{Error, Library, Options, Syscall};

const DIR_ENV: &str = "HOSTILE_DIR";

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_helper() {
    common::child_main(&[
        ("atomicity", atomicity_child),
        ("host_path", host_path_child),
    ]);
}

// ---------------------------------------------------------------------------
// The process's footprint, as far as soloader can change it.

#[derive(Debug, PartialEq)]
struct Footprint {
    /// Mappings of files in the test directory.
    mapped: Vec<String>,
    /// Anonymous PROT_NONE mappings (soloader's reservations look so).
    reservations: usize,
    /// What each open descriptor refers to.
    fds: Vec<String>,
}

fn footprint(dir: &Path) -> Footprint {
    let mut fds: Vec<String> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        // The directory handle read_dir itself holds.
        .filter(|p| !p.starts_with("/proc/"))
        .collect();
    fds.sort();
    Footprint {
        mapped: mappings_under(dir),
        reservations: anon_reservations(),
        fds,
    }
}

fn init_lines(log: &Path) -> Vec<String> {
    read_log(log)
        .into_iter()
        .filter(|l| l.starts_with("init:"))
        .collect()
}

/// Runs `attempt`, which must fail; checks the error names every one of
/// `culprits` and that the footprint and the init log are unchanged.
fn must_fail_cleanly(
    what: &str,
    dir: &Path,
    log: &Path,
    culprits: &[&str],
    attempt: impl FnOnce() -> soloader::Result<()>,
) -> Error {
    let before = footprint(dir);
    let e = match attempt() {
        Ok(()) => panic!("{what}: succeeded"),
        Err(e) => e,
    };
    let text = e.to_string();
    assert!(!text.contains('\n'), "{what}: {text:?}");
    for c in culprits {
        assert!(
            text.contains(c),
            "{what}: the error does not name {c}: {text}"
        );
    }
    let after = footprint(dir);
    assert_eq!(
        after, before,
        "{what}: the failed load left something behind ({text})"
    );
    assert_eq!(
        init_lines(log),
        Vec::<String>::new(),
        "{what}: a constructor ran"
    );
    common::result(format!("{what}: {text}"));
    e
}

fn open(path: &Path) -> soloader::Result<()> {
    Library::open_with(path, &Options::new()).map(drop)
}

fn check(path: &Path) -> soloader::Result<()> {
    soloader::check(path, &Options::new())
}

// ---------------------------------------------------------------------------
// The mutants (made by the parent, in the test directory).

/// Writes `name` in `dir`: `libinit.so` with `f` applied.
fn libinit_mutant(dir: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = fs::read(common::lib("libinit.so")).unwrap();
    f(&mut b);
    let p = dir.join(name);
    fs::write(&p, b).unwrap();
    p
}

/// Points the first `DT_NEEDED` at `string` (an existing `.dynstr`
/// string).
fn retarget_needed(b: &mut [u8], string: &str) {
    let off = dynstr_find(b, string);
    let (at, _, _) = dyn_entries(b)
        .into_iter()
        .find(|e| e.1 == 1)
        .expect("a DT_NEEDED");
    write_uint(b, at + 8, 8, off);
}

/// Renames the undefined symbol `import` to the tail of `defined_name`
/// (from its second character): a name nothing defines.
fn rename_import(b: &mut [u8], import: &str, defined_name: &str) -> String {
    let off = dynstr_find(b, defined_name) + 1;
    let (at, _, _) = dynsyms(b)
        .into_iter()
        .find(|s| s.1 == import && !s.2)
        .unwrap_or_else(|| panic!("no undefined {import}"));
    write_uint(b, at, 4, off);
    defined_name[1..].to_string()
}

struct Cases {
    missing_dep: PathBuf,
    unresolved: (PathBuf, String),
    bad_reloc: (PathBuf, u64),
    version: PathBuf,
    diamond_root: (PathBuf, String),
    fresh_init: PathBuf,
}

fn make_cases(dir: &Path) -> Cases {
    for name in [
        "libdiamond_b.so",
        "libdiamond_c.so",
        "libdiamond_d.so",
        "libinit.so",
    ] {
        fs::copy(common::lib(name), dir.join(name)).unwrap();
    }
    let missing_dep = libinit_mutant(dir, "libinit-missing-dep.so", |b| {
        retarget_needed(b, "init_order")
    });
    let mut unresolved_name = String::new();
    let unresolved = libinit_mutant(dir, "libinit-unresolved.so", |b| {
        unresolved_name = rename_import(b, "strchr", "init_legacy");
    });
    let mut target = 0;
    let bad_reloc = libinit_mutant(dir, "libinit-bad-reloc.so", |b| {
        let l = layout(b);
        // The last relocation (applied after the others succeeded) now
        // writes into the read-only first segment.
        let (entry, _, _) = *l.relas.last().unwrap();
        target = 0x10;
        write_uint(b, entry, 8, target);
    });
    let version = libinit_mutant(dir, "libinit-version.so", |b| {
        let l = layout(b);
        let f = l.field("verneed[0] vna_name").expect("a Vernaux").clone();
        let off = dynstr_find(b, "init_legacy");
        write_uint(b, f.off, 4, off);
    });
    let mut a = fs::read(common::lib("libdiamond_a.so")).unwrap();
    let renamed = rename_import(&mut a, "diamond_c", "diamond_a_self");
    let diamond_root = dir.join("libdiamond_a-unresolved.so");
    fs::write(&diamond_root, a).unwrap();
    Cases {
        missing_dep,
        unresolved: (unresolved, unresolved_name),
        bad_reloc: (bad_reloc, target),
        version,
        diamond_root: (diamond_root, renamed),
        fresh_init: dir.join("libinit.so"),
    }
}

// ---------------------------------------------------------------------------
// The child.

fn atomicity_child() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let log = PathBuf::from(std::env::var(INIT_LOG_ENV).unwrap());
    let c = make_cases(&dir);
    let (dir, log) = (dir.as_path(), log.as_path());
    let p = |p: &Path| p.display().to_string();

    for (how, run) in [("open", open as fn(&Path) -> _), ("check", check)] {
        let e = must_fail_cleanly(
            &format!("{how}: missing dependency"),
            dir,
            log,
            &["init_order", &p(&c.missing_dep)],
            || run(&c.missing_dep),
        );
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");

        let e = must_fail_cleanly(
            &format!("{how}: unresolved symbol"),
            dir,
            log,
            &[&c.unresolved.1, &p(&c.unresolved.0)],
            || run(&c.unresolved.0),
        );
        assert!(matches!(e, Error::UndefinedSymbol { .. }), "{e:?}");

        let e = must_fail_cleanly(
            &format!("{how}: bad relocation"),
            dir,
            log,
            &[
                &p(&c.bad_reloc.0),
                "relocation",
                &format!("{:#x}", c.bad_reloc.1),
            ],
            || run(&c.bad_reloc.0),
        );
        assert!(matches!(e, Error::Malformed { .. }), "{e:?}");

        let e = must_fail_cleanly(
            &format!("{how}: version mismatch"),
            dir,
            log,
            &["init_legacy", "libc.so.6", &p(&c.version)],
            || run(&c.version),
        );
        assert!(matches!(e, Error::VersionNotFound { .. }), "{e:?}");

        // Fails only after its three dependencies were mapped and
        // relocated: all of them must go again.
        let e = must_fail_cleanly(
            &format!("{how}: unresolved symbol in the root of a diamond"),
            dir,
            log,
            &[&c.diamond_root.1, &p(&c.diamond_root.0)],
            || run(&c.diamond_root.0),
        );
        assert!(matches!(e, Error::UndefinedSymbol { .. }), "{e:?}");
    }

    // Every mmap and every mprotect of a load, made to fail in turn.
    for root in [&c.fresh_init, &c.diamond_root.0] {
        for call in [Syscall::Mmap, Syscall::Mprotect] {
            let mut failed = 0;
            for n in 0.. {
                assert!(n < 200, "{call:?} failures never stop");
                let opts = Options::new().fail_syscall(call, n);
                let before = footprint(dir);
                // Once past the last call, the load of libinit succeeds
                // (and runs its constructors); the diamond's fails.
                let r = Library::open_with(root, &opts).map(|l| l.close().unwrap());
                let after = footprint(dir);
                let what = format!("{}, {call:?} #{n} failing", root.display());
                match r {
                    Err(Error::Map { op, path, .. }) => {
                        assert_eq!(
                            op,
                            if call == Syscall::Mmap {
                                "mmap"
                            } else {
                                "mprotect"
                            }
                        );
                        assert!(path.starts_with(dir), "{what}: names {}", path.display());
                        assert_eq!(after, before, "{what}: left something behind");
                        failed += 1;
                    }
                    Err(e) if root == &c.diamond_root.0 => {
                        // Past the last injected failure: the mutant's own
                        // error.
                        assert!(matches!(e, Error::UndefinedSymbol { .. }), "{what}: {e}");
                        assert_eq!(after, before, "{what}: left something behind");
                        break;
                    }
                    Err(e) => panic!("{what}: {e}"),
                    Ok(()) => {
                        assert_eq!(after, before, "{what}: close left something behind");
                        break;
                    }
                }
                // Only a load that succeeds may run constructors.
                assert_eq!(
                    init_lines(log),
                    Vec::<String>::new(),
                    "{what}: a constructor ran"
                );
            }
            assert!(failed > 0, "{call:?}: no call was made to fail");
            common::result(format!(
                "{}: {failed} {call:?} failures, each clean",
                root.display()
            ));
            if root == &c.fresh_init {
                // Exactly one load ran the constructors: the one that
                // succeeded, once per call kind.
                let inits = init_lines(log);
                assert!(!inits.is_empty(), "the successful load ran no constructor");
                fs::write(log, "").unwrap();
            }
        }
    }

    // Control: the log works.
    common::log_mark("control");
    let l = Library::open(&c.fresh_init).unwrap();
    drop(l);
}

#[test]
fn a_failed_load_leaves_nothing_and_runs_nothing() {
    let dir = TempDir::new("atomicity");
    let log = dir.join("init.log");
    let out = run_child(
        "atomicity",
        &[
            (DIR_ENV, &dir.path().to_string_lossy()),
            (INIT_LOG_ENV, &log.to_string_lossy()),
        ],
    );
    for l in &out {
        eprintln!("{l}");
    }
    let lines = read_log(&log);
    let control = lines
        .iter()
        .position(|l| l == "mark:test:control")
        .unwrap_or_else(|| panic!("the child never reached the control load: {lines:?}"));
    assert!(
        lines[..control].iter().all(|l| !l.starts_with("init:")),
        "a constructor ran before the control load: {lines:?}"
    );
    assert!(
        lines[control..].iter().any(|l| l == "init:init:ctor"),
        "the control load ran no constructor: {lines:?}"
    );
    // Every case reported.
    for what in [
        "missing dependency",
        "unresolved symbol",
        "bad relocation",
        "version mismatch",
        "root of a diamond",
    ] {
        for how in ["open", "check"] {
            assert!(
                out.iter()
                    .any(|l| l.starts_with(&format!("{how}: ")) && l.contains(what)),
                "{how}: {what} not reported: {out:#?}"
            );
        }
    }
    assert_eq!(
        out.iter()
            .filter(|l| l.contains("failures, each clean"))
            .count(),
        4
    );
}

// ---------------------------------------------------------------------------
// A glibc-family DT_NEEDED given as a path.

/// `libdiamond_d.so` whose first `DT_NEEDED` (`libc.so.6`) is replaced by
/// `needed`, written over a `.dynstr` string long enough to hold it.
fn with_needed_path(needed: &str) -> Vec<u8> {
    let mut b = fs::read(common::lib("libdiamond_d.so")).unwrap();
    let (start, len) = dynstr(&b);
    // The longest string in the table.
    let table = b[start..start + len].to_vec();
    let (off, slot) = table
        .split(|&c| c == 0)
        .scan(0usize, |pos, s| {
            let at = *pos;
            *pos += s.len() + 1;
            Some((at, s.len()))
        })
        .max_by_key(|&(_, l)| l)
        .unwrap();
    assert!(
        needed.len() <= slot,
        "{needed} does not fit in {slot} bytes"
    );
    b[start + off..start + off + needed.len()].copy_from_slice(needed.as_bytes());
    b[start + off + needed.len()] = 0;
    let (at, _, _) = dyn_entries(&b)
        .into_iter()
        .find(|e| e.1 == 1 && dynstr_at(&b, e.2) == "libc.so.6")
        .expect("DT_NEEDED libc.so.6");
    write_uint(&mut b, at + 8, 8, off as u64);
    b
}

fn host_path_child() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let log = PathBuf::from(std::env::var(INIT_LOG_ENV).unwrap());
    let victim = dir.join("victim.so");
    assert!(check(&victim).is_ok(), "{:?}", check(&victim));
    assert_eq!(
        init_lines(&log),
        Vec::<String>::new(),
        "check ran a constructor"
    );
    let l = Library::open(&victim).unwrap();
    let deps = l.dependencies();
    common::result(format!("deps={deps:?}"));
    // SAFETY: int diamond_d(void).
    let f = unsafe { l.get::<extern "C" fn() -> i32>("diamond_d") }.unwrap();
    assert_eq!(f(), 100);
    drop(l);
}

#[test]
fn a_glibc_family_dependency_named_by_path_is_the_hosts_copy() {
    // A short directory: the path must fit over a string of .dynstr.
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let dir = PathBuf::from(format!("/tmp/sl-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let _cleanup = Removed(dir.clone());
    let evil = dir.join("libm.so.6");
    // A library whose constructor logs, dressed up as libm.
    fs::copy(common::lib("libinit.so"), &evil).unwrap();
    fs::write(
        dir.join("victim.so"),
        with_needed_path(&evil.to_string_lossy()),
    )
    .unwrap();
    let log = dir.join("init.log");
    let out = run_child(
        "host_path",
        &[
            (DIR_ENV, &dir.to_string_lossy()),
            (INIT_LOG_ENV, &log.to_string_lossy()),
        ],
    );
    let lines: BTreeSet<String> = read_log(&log).into_iter().collect();
    assert!(
        lines.iter().all(|l| !l.contains(":init:")),
        "the system loader ran {}'s constructors: {lines:?}",
        evil.display()
    );
    // The victim's own constructor ran once, on the real load.
    assert!(lines.contains("init:diamond_d:ctor"), "{lines:?}");
    let deps = out.iter().find(|l| l.starts_with("deps=")).unwrap();
    assert!(
        deps.contains("libm.so.6") && deps.contains("true"),
        "{deps}"
    );
}
