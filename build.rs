//! Builds the C test libraries in `testlibs/` into `<target dir>/testlibs/`
//! and tells the crate where they are through `SOLOADER_TESTLIBS`
//! (`env!("SOLOADER_TESTLIBS")` in tests, benches and the CLI).
//!
//! Every library is listed once in [`LIBS`]; adding one is one line there.
//! Libraries are compiled in parallel, each as soon as the test libraries it
//! links against are built, and each `.so` is written under a temporary name
//! and renamed into place, so a concurrently running test never sees a
//! half-written file.

use std::collections::HashMap;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{self, Command};
use std::sync::{Condvar, Mutex};
use std::thread;

/// Flags giving a library `DT_RUNPATH $ORIGIN` (one compiler argument).
const RUNPATH: &str = "-Wl,--enable-new-dtags,-rpath,$ORIGIN";
/// Flags giving a library the legacy `DT_RPATH $ORIGIN` (one compiler argument).
const RPATH: &str = "-Wl,--disable-new-dtags,-rpath,$ORIGIN";

/// Flags used for every library, before the per-library ones.
const COMMON_FLAGS: &[&str] = &["-shared", "-fPIC", "-O1", "-g", "-Wall", "-Wextra"];

/// One test library: (output file name, sources in `testlibs/`, extra
/// compiler/linker flags, test libraries it links against).
///
/// In flags, `{src}` stands for the absolute `testlibs/` source directory.
/// A linked library `x` is passed as `-lx`, so `libx.so` must appear earlier
/// in the table (checked). Every library also gets `-Wl,-soname,<name>`.
/// Link order of the last column is the `DT_NEEDED` order.
type Lib = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

#[rustfmt::skip]
const LIBS: &[Lib] = &[
    // Plain calls, PLT/GOT, R_X86_64_64 / GLOB_DAT / JUMP_SLOT.
    ("libarith.so",       &["arith.c"],       &[],                 &[]),
    ("libarith_now.so",   &["arith.c"],       &["-Wl,-z,now"],     &[]),
    ("libarith_lazy.so",  &["arith.c"],       &["-Wl,-z,lazy"],    &[]),
    // Data relocations.
    ("libdata.so",        &["data.c"],        &[],                 &[]),
    // p_memsz > p_filesz, zeroed tail of the last file page.
    ("libbss.so",         &["bss.c"],         &[],                 &[]),
    // Read-only data.
    ("libconst.so",       &["const.c"],       &[],                 &[]),
    // DT_INIT/DT_FINI, init/fini arrays with priorities.
    ("libinit.so",        &["init.c"],        &["-Wl,-init,init_legacy", "-Wl,-fini,fini_legacy"], &[]),
    // Init/fini order over a dependency diamond: a -> (b, c) -> d.
    ("libdiamond_d.so",   &["diamond.c"],     &["-DNAME=\"d\"", "-DLETTER=d", RUNPATH], &[]),
    ("libdiamond_b.so",   &["diamond.c"],     &["-DNAME=\"b\"", "-DLETTER=b", "-DDEP1=d", RUNPATH], &["diamond_d"]),
    ("libdiamond_c.so",   &["diamond.c"],     &["-DNAME=\"c\"", "-DLETTER=c", "-DDEP1=d", RUNPATH], &["diamond_d"]),
    ("libdiamond_a.so",   &["diamond.c"],     &["-DNAME=\"a\"", "-DLETTER=a", "-DDEP1=b", "-DDEP2=c", RUNPATH], &["diamond_b", "diamond_c"]),
    // Symbol versioning: definitions, then a reference to a hidden version.
    ("libversioned.so",   &["versioned.c"],   &["-Wl,--version-script={src}/versioned.map"], &[]),
    ("libneedhidden.so",  &["needhidden.c"],  &[RUNPATH],          &["versioned"]),
    // STT_GNU_IFUNC, R_X86_64_IRELATIVE.
    ("libifunc.so",       &["ifunc.c"],       &[],                 &[]),
    // Host function pointers called from the library.
    ("libcallback.so",    &["callback.c"],    &[],                 &[]),
    // Binding to the process's libc.
    ("libuselibc.so",     &["uselibc.c"],     &[],                 &[]),
    // Lookup order (getpid interposition), weak undefined symbol. Keeps
    // DT_NEEDED libc.so.6 (gcc passes --as-needed by default on Debian).
    ("libinterpose.so",   &["interpose.c"],   &["-Wl,--no-as-needed"], &[]),
    // Same symbol in two libraries; DT_NEEDED order decides.
    ("libdup_a.so",       &["dup.c"],         &["-DWHICH='a'"],    &[]),
    ("libdup_b.so",       &["dup.c"],         &["-DWHICH='b'"],    &[]),
    ("libdup_ab.so",      &["dupuser.c"],     &[RUNPATH],          &["dup_a", "dup_b"]),
    ("libdup_ba.so",      &["dupuser.c"],     &[RUNPATH],          &["dup_b", "dup_a"]),
    // Undefined, non-weak symbol that nothing provides.
    ("libmissing.so",     &["missing.c"],     &[],                 &[]),
    // The host's RTLD_GLOBAL libraries are in the global scope: the user
    // imports from the provider without needing it.
    ("libglobalprovider.so", &["globalprovider.c"], &[],             &[]),
    ("libglobaluser.so",  &["globaluser.c"],  &[],                 &[]),
    // A constructor that calls back into the program (lock-order test).
    ("libctorhook.so",    &["ctorhook.c"],    &[],                 &[]),
    // PT_GNU_STACK with PF_X: must be refused.
    ("libexecstack.so",   &["execstack.c"],   &["-Wl,-z,execstack"], &[]),
    // DT_NEEDED on a library that is not there (libghost.so is LINK_ONLY).
    ("libghost.so",       &["ghost.c"],       &[],                 &[]),
    ("libneedmissing.so", &["needmissing.c"], &[RUNPATH],          &["ghost"]),
    // Legacy DT_RPATH with $ORIGIN.
    ("librpath.so",       &["rpath.c"],       &[RPATH],            &["arith"]),
    // Large text segment, relocated table over several pages.
    ("libbigtext.so",     &["bigtext.c"],     &[],                 &[]),
    // Thread-local storage: general-dynamic, TLS descriptors, initial-exec
    // against the host's libc (allowed) and against itself (refused).
    ("libtls.so",         &["tls.c"],         &[],                 &[]),
    ("libtls_desc.so",    &["tls.c"],         &["-mtls-dialect=gnu2"], &[]),
    ("libtls_hostie.so",  &["tls_hostie.c"],  &[],                 &[]),
    ("libtls_ie.so",      &["tls_ie.c"],      &[],                 &[]),
    // The C++ library: exceptions, libstdc++, static ctors, thread_local.
    ("libcxx.so",         &["cxx.cc"],        &["-std=c++17"],     &[]),
    // A library that dlopens a plugin found through its own $ORIGIN.
    ("libplugin_impl.so", &["plugin_impl.c"], &[],                 &[]),
    ("libpluginhost.so",  &["pluginhost.c"],  &[RUNPATH],          &[]),
    // A constructor that calls back into the loader (reentrant lock).
    ("libreenter.so",     &["reenter.c"],     &[RUNPATH],          &[]),
    // Only a SysV hash table; packed relative relocations (DT_RELR).
    ("libsysvhash.so",    &["sysvhash.c"],    &["-Wl,--hash-style=sysv"], &[]),
    ("librelr.so",        &["relr.c"],        &["-Wl,-z,pack-relative-relocs"], &[]),
];

/// Libraries built into `OUT_DIR` instead of the testlibs directory: they
/// exist only to be linked against, and must be absent at run time.
const LINK_ONLY: &[&str] = &["libghost.so"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src_dir = manifest_dir.join("testlibs");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/soloader-HASH/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or_else(|| panic!("OUT_DIR {} has too few components", out_dir.display()));
    let lib_dir = target_dir.join("testlibs");
    fs::create_dir_all(&lib_dir).unwrap_or_else(|e| panic!("creating {}: {e}", lib_dir.display()));
    let lib_dir = fs::canonicalize(&lib_dir).unwrap_or(lib_dir);

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", src_dir.display());
    let mut entries: Vec<PathBuf> = fs::read_dir(&src_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", src_dir.display()))
        .map(|e| e.expect("reading testlibs entry").path())
        .collect();
    entries.sort();
    for path in &entries {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=CXX");
    println!("cargo:rustc-env=SOLOADER_TESTLIBS={}", lib_dir.display());

    check_table();

    // A link-only library left behind by an older build would defeat its
    // purpose; make sure it is not where tests look.
    for name in LINK_ONLY {
        let _ = fs::remove_file(lib_dir.join(name));
    }

    let ctx = Ctx {
        src_dir,
        lib_dir,
        out_dir,
    };
    let failures = build_all(&ctx);
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        eprintln!(
            "error: {} test librar{} failed to build",
            failures.len(),
            if failures.len() == 1 { "y" } else { "ies" }
        );
        process::exit(1);
    }
}

struct Ctx {
    src_dir: PathBuf,
    lib_dir: PathBuf,
    out_dir: PathBuf,
}

fn lib_file(link: &str) -> String {
    format!("lib{link}.so")
}

/// Every linked library must be built earlier in the table, and names must
/// be unique.
fn check_table() {
    for (i, (name, sources, _, links)) in LIBS.iter().enumerate() {
        assert!(!sources.is_empty(), "{name}: no sources");
        assert!(
            !LIBS[..i].iter().any(|l| l.0 == *name),
            "{name} appears twice in LIBS"
        );
        for link in *links {
            let file = lib_file(link);
            assert!(
                LIBS[..i].iter().any(|l| l.0 == file),
                "{name} links against {file}, which must come earlier in LIBS"
            );
        }
    }
    for name in LINK_ONLY {
        assert!(
            LIBS.iter().any(|l| l.0 == *name),
            "LINK_ONLY {name} is not in LIBS"
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
}

/// Compiles all of `LIBS` with up to `NUM_JOBS` compilers at once, each
/// library once the libraries it links against are done. Returns the error
/// reports of the ones that failed (or were skipped because a dependency
/// failed).
fn build_all(ctx: &Ctx) -> Vec<String> {
    let jobs = env::var("NUM_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .or_else(|| thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);

    let index: HashMap<&str, usize> = LIBS.iter().enumerate().map(|(i, l)| (l.0, i)).collect();
    let deps: Vec<Vec<usize>> = LIBS
        .iter()
        .map(|l| l.3.iter().map(|d| index[lib_file(d).as_str()]).collect())
        .collect();

    let state = Mutex::new(vec![State::Pending; LIBS.len()]);
    let changed = Condvar::new();
    let failures = Mutex::new(Vec::new());

    thread::scope(|scope| {
        for _ in 0..jobs.min(LIBS.len()) {
            scope.spawn(|| loop {
                // Claim the first pending library whose dependencies are
                // finished; stop when nothing is pending.
                let claimed = {
                    let mut st = state.lock().unwrap();
                    loop {
                        if !st.contains(&State::Pending) {
                            break None;
                        }
                        let ready = (0..LIBS.len()).find(|&i| {
                            st[i] == State::Pending
                                && deps[i]
                                    .iter()
                                    .all(|&d| matches!(st[d], State::Done | State::Failed))
                        });
                        match ready {
                            Some(i) => {
                                st[i] = State::Running;
                                let dep_failed = deps[i].iter().any(|&d| st[d] == State::Failed);
                                break Some((i, dep_failed));
                            }
                            None => st = changed.wait(st).unwrap(),
                        }
                    }
                };
                let Some((i, dep_failed)) = claimed else {
                    break;
                };
                let result = if dep_failed {
                    Err(format!(
                        "{}: not built because a library it links against failed",
                        LIBS[i].0
                    ))
                } else {
                    build_one(ctx, &LIBS[i])
                };
                let ok = result.is_ok();
                if let Err(report) = result {
                    failures.lock().unwrap().push(report);
                }
                state.lock().unwrap()[i] = if ok { State::Done } else { State::Failed };
                changed.notify_all();
            });
        }
    });

    failures.into_inner().unwrap()
}

/// The compiler command for a library: `$CC` (or `$CXX` if any source is
/// C++), which may carry its own leading arguments (e.g. "ccache gcc").
fn compiler(sources: &[&str]) -> Command {
    let cxx = sources.iter().any(|s| {
        let ext = Path::new(s)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        matches!(ext, "cc" | "cpp" | "cxx" | "C")
    });
    let (var, default) = if cxx { ("CXX", "c++") } else { ("CC", "cc") };
    let value = env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    let mut words = value.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap());
    cmd.args(words);
    cmd
}

fn build_one(ctx: &Ctx, lib: &Lib) -> Result<(), String> {
    let (name, sources, flags, links) = *lib;
    let dest_dir = if LINK_ONLY.contains(&name) {
        &ctx.out_dir
    } else {
        &ctx.lib_dir
    };
    let dest = dest_dir.join(name);
    let tmp = dest_dir.join(format!(".{name}.tmp.{}", process::id()));
    let src = ctx.src_dir.to_str().expect("testlibs path is not UTF-8");

    let mut cmd = compiler(sources);
    cmd.args(COMMON_FLAGS);
    cmd.arg(format!("-I{src}"));
    for flag in flags {
        cmd.arg(flag.replace("{src}", src));
    }
    cmd.arg(format!("-Wl,-soname,{name}"));
    cmd.arg("-o").arg(&tmp);
    for source in sources {
        cmd.arg(ctx.src_dir.join(source));
    }
    if !links.is_empty() {
        let mut l = OsString::from("-L");
        l.push(&ctx.lib_dir);
        cmd.arg(l);
        let mut l = OsString::from("-L");
        l.push(&ctx.out_dir);
        cmd.arg(l);
        // Lets ld find the dependencies' own DT_NEEDED entries.
        let mut l = OsString::from("-Wl,-rpath-link,");
        l.push(&ctx.lib_dir);
        cmd.arg(l);
        cmd.arg("-Wl,--no-as-needed");
        for link in links {
            cmd.arg(format!("-l{link}"));
        }
    }

    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .map_err(|e| format!("{name}: could not run the C compiler ({shown}): {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "{name}: compilation failed ({})\ncommand: {shown}\n{}{stderr}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
        ));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={name}: {line}");
    }
    fs::rename(&tmp, &dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!(
            "{name}: renaming {} to {}: {e}",
            tmp.display(),
            dest.display()
        )
    })
}
