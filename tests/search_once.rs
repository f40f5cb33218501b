//! A library file is opened, `fstat`ed and read once per load: the
//! search's candidate check keeps what it learnt (the `fstat` and the first
//! bytes) and the loader uses it, for a root found by name, for a
//! `DT_NEEDED` dependency, and for a name given as a path (which the loader
//! itself stats and reads). Checked with `strace` on `soloader call`.

mod common;

use std::process::Command;

use common::{lib, SOLOADER};

/// One library file opened by soloader: its path and how many `fstat`s and
/// reads were made on the descriptor before it was closed.
#[derive(Debug, PartialEq)]
struct Opened {
    path: String,
    stats: usize,
    reads: usize,
}

/// The files soloader opened (`O_NONBLOCK`: its own opens, not the system
/// loader's), except `ld.so.cache`, in `strace -f` output.
fn opened_files(text: &str) -> Vec<Opened> {
    let mut done = Vec::new();
    let mut open: Vec<(String, Opened)> = Vec::new();
    for line in text.lines() {
        // "PID call(args) = ret"
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest).trim();
        let ret = call.rsplit_once(" = ").map(|(_, r)| r.trim());
        if let Some(args) = call.strip_prefix("openat(") {
            let (Some(path), Some(fd)) = (args.split('"').nth(1), ret) else {
                continue;
            };
            if args.contains("O_NONBLOCK") && path != "/etc/ld.so.cache" && !fd.starts_with('-') {
                let fd = fd.split_whitespace().next().unwrap_or(fd).to_string();
                open.push((
                    fd,
                    Opened {
                        path: path.to_string(),
                        stats: 0,
                        reads: 0,
                    },
                ));
            }
            continue;
        }
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        let fd = args.split([',', ')']).next().unwrap_or("");
        let Some(i) = open.iter().position(|(f, _)| f == fd) else {
            continue;
        };
        match name {
            "statx" | "newfstatat" | "fstat" => open[i].1.stats += 1,
            "pread64" | "read" => open[i].1.reads += 1,
            "close" => done.push(open.remove(i).1),
            _ => {}
        }
    }
    done.extend(open.into_iter().map(|(_, o)| o));
    done
}

/// `soloader call ARGS` under strace: the files it opened.
fn strace_call(args: &[&str]) -> Vec<Opened> {
    let log = std::env::temp_dir().join(format!(
        "soloader-search-once-{}-{}.txt",
        std::process::id(),
        args[0].replace('/', "_")
    ));
    let out = Command::new("strace")
        .args([
            "-f",
            "-e",
            "trace=openat,statx,newfstatat,fstat,pread64,read,close",
            "-o",
        ])
        .arg(&log)
        .arg(SOLOADER)
        .arg("call")
        .args(args)
        .env("SOLOADER_GDB", "0")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("running strace");
    let text = std::fs::read_to_string(&log).expect("reading the strace log");
    let _ = std::fs::remove_file(&log);
    assert!(
        out.status.success(),
        "strace soloader call {args:?}: {out:?}"
    );
    opened_files(&text)
}

/// Every file `args` opened was stat'ed once and read once; returns their
/// paths.
fn each_once(args: &[&str]) -> Vec<String> {
    let files = strace_call(args);
    for f in &files {
        assert_eq!(
            (f.stats, f.reads),
            (1, 1),
            "{args:?}: {} was stat'ed {} times and read {} times: {files:#?}",
            f.path,
            f.stats,
            f.reads
        );
    }
    files.into_iter().map(|f| f.path).collect()
}

fn strace_installed() {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "strace is not installed (.ci/run installs it)");
}

#[test]
fn by_name_one_stat_one_read() {
    strace_installed();
    for (name, sym) in [
        ("libz.so.1", "zlibVersion"),
        ("libsqlite3.so.0", "sqlite3_libversion"),
    ] {
        let paths = each_once(&[name, sym]);
        assert!(
            paths.iter().any(|p| p.ends_with(name)),
            "{name} was not opened: {paths:?}"
        );
    }
}

#[test]
fn by_path_and_dependencies_one_stat_one_read() {
    strace_installed();
    let z = "/lib/x86_64-linux-gnu/libz.so.1";
    assert_eq!(each_once(&[z, "zlibVersion"]), [z]);
    // By path, with dependencies found by name through its RUNPATH.
    let a = lib("libdiamond_a.so");
    let paths = each_once(&[a.to_str().expect("UTF-8 path"), "diamond_a_self"]);
    for dep in [
        "libdiamond_a.so",
        "libdiamond_b.so",
        "libdiamond_c.so",
        "libdiamond_d.so",
    ] {
        assert_eq!(
            paths.iter().filter(|p| p.ends_with(dep)).count(),
            1,
            "{dep}: {paths:?}"
        );
    }
}
