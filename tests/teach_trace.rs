//! `soloader trace`: snapshots of the explained trace of real loads of the
//! test libraries, the `--json` form against `readelf` on libz, and the
//! memory system calls of a load compared with what `strace` saw.

mod teach_util;

use std::collections::BTreeMap;
use std::process::Command;

use teach_util::*;

#[test]
fn trace_snapshots() {
    for (name, call) in [
        ("libarith.so", &["add", "2", "3"][..]),
        ("libdata.so", &["read_array_elem2"][..]),
        ("libdiamond_a.so", &["diamond_a"][..]),
        ("libbss.so", &["bss_data_sum"][..]),
    ] {
        let path = lib(name);
        let mut args = vec!["trace", path.as_str(), "--ret", "i32", "--call"];
        args.extend_from_slice(call);
        let text = normalise(&stdout_of(&args));
        insta::assert_snapshot!(format!("trace_{name}"), text);
    }
}

/// (type, count) of `readelf -rW`.
fn readelf_counts(path: &str) -> BTreeMap<String, u64> {
    let out = Command::new("readelf")
        .args(["-rW", path])
        .output()
        .expect("running readelf");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() >= 3
            && w[0].bytes().all(|b| b.is_ascii_hexdigit())
            && w[1].bytes().all(|b| b.is_ascii_hexdigit())
            && w[2].starts_with("R_")
        {
            *counts.entry(w[2].to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The example: every mmap is MAP_PRIVATE, the relocation counts
/// are readelf's, and each binding says who provided it.
#[test]
fn libz_trace_json() {
    let json = parse_json(&stdout_of(&[
        "trace",
        "libz.so.1",
        "--call",
        "zlibVersion",
        "--ret",
        "str",
        "--json",
    ]));
    let events = json.get("events").arr();
    let path = events
        .iter()
        .find(|e| e.get("event").str() == "open")
        .expect("an open event")
        .get("path")
        .str()
        .to_string();
    let mmaps: Vec<_> = events
        .iter()
        .filter(|e| e.get("event").str() == "mmap")
        .collect();
    assert!(mmaps.len() >= 4, "one per segment at least: {mmaps:?}");
    for m in &mmaps {
        assert!(m.get("flags").str().starts_with("MAP_PRIVATE"), "{m:?}");
    }
    let mut ours: BTreeMap<String, u64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.get("event").str() == "relocations")
    {
        *ours.entry(e.get("type").str().to_string()).or_insert(0) += e.get("count").num();
    }
    assert_eq!(ours, readelf_counts(&path));
    let binds: Vec<_> = events
        .iter()
        .filter(|e| e.get("event").str() == "bind")
        .collect();
    let free = binds
        .iter()
        .find(|b| b.get("symbol").str() == "free")
        .expect("free is bound");
    assert_eq!(free.get("provider").get("kind").str(), "host");
    assert_eq!(free.get("version").str(), "GLIBC_2.2.5");
    assert!(binds
        .iter()
        .any(|b| b.get("provider").get("kind").str() == "soloader"));
    let call = json.get("call");
    // zlibVersion() is the version in the real file's name (libz.so.1.2.13).
    let real = std::fs::canonicalize(&path).expect("resolving libz.so.1");
    let real = real.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        Some(call.get("result").str()),
        real.strip_prefix("libz.so."),
        "{call:?}"
    );
    let phases: Vec<&str> = json
        .get("phases")
        .arr()
        .iter()
        .map(|p| p.get("phase").str())
        .collect();
    assert_eq!(phases, ["load", "relocate", "initialise", "call", "unload"]);
}

/// One memory system call: (name, address, length, protections, flags,
/// file offset) with the fields that do not apply empty.
type MemCall = (String, u64, u64, String, String, u64);

fn num(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap_or(u64::MAX),
        None if s == "NULL" => 0,
        None => s.parse().unwrap_or(u64::MAX),
    }
}

/// The memory calls in `strace -f -o` output, from the first `openat` of
/// `lib` on, successful ones only.
fn strace_calls(text: &str, lib: &str) -> Vec<MemCall> {
    let mut out = Vec::new();
    let mut started = false;
    for line in text.lines() {
        // "PID  name(args) = ret"
        let line = line.trim_start();
        let line = line
            .split_once(char::is_whitespace)
            .map(|(_, rest)| rest.trim_start())
            .unwrap_or(line);
        if line.starts_with("openat(") && line.contains(&format!("\"{lib}\"")) {
            started = true;
        }
        if !started {
            continue;
        }
        let Some((call, rest)) = line.split_once('(') else {
            continue;
        };
        let Some((args, ret)) = rest.rsplit_once(')') else {
            continue;
        };
        let Some(ret) = ret.trim_start().strip_prefix('=') else {
            continue;
        };
        let ret = ret.split_whitespace().next().unwrap_or("");
        if ret.starts_with('-') {
            continue;
        }
        let a: Vec<&str> = args.split(", ").collect();
        let c = match (call, a.len()) {
            ("mmap", 6) => (
                "mmap".to_string(),
                num(ret),
                num(a[1]),
                a[2].to_string(),
                a[3].to_string(),
                num(a[5]),
            ),
            ("mprotect", 3) => (
                "mprotect".to_string(),
                num(a[0]),
                num(a[1]),
                a[2].to_string(),
                String::new(),
                0,
            ),
            ("munmap", 2) => (
                "munmap".to_string(),
                num(a[0]),
                num(a[1]),
                String::new(),
                String::new(),
                0,
            ),
            ("madvise", 3) => (
                "madvise".to_string(),
                num(a[0]),
                num(a[1]),
                String::new(),
                String::new(),
                0,
            ),
            _ => continue,
        };
        out.push(c);
    }
    out
}

/// The memory calls in `trace --json`, and the address ranges the loader
/// reserved.
fn traced_calls(json: &Json) -> (Vec<MemCall>, Vec<(u64, u64)>) {
    let mut calls = Vec::new();
    let mut regions = Vec::new();
    for e in json.get("events").arr() {
        let kind = e.get("event").str();
        let c = match kind {
            "mmap" => {
                if e.get("purpose").str().starts_with("reserve") {
                    regions.push((
                        e.get("addr").hex(),
                        e.get("addr").hex() + e.get("len").num(),
                    ));
                }
                (
                    "mmap".to_string(),
                    e.get("addr").hex(),
                    e.get("len").num(),
                    e.get("prot").str().to_string(),
                    e.get("flags").str().to_string(),
                    e.get("offset").hex(),
                )
            }
            "mprotect" => (
                "mprotect".to_string(),
                e.get("addr").hex(),
                e.get("len").num(),
                e.get("prot").str().to_string(),
                String::new(),
                0,
            ),
            "munmap" | "madvise" => (
                kind.to_string(),
                e.get("addr").hex(),
                e.get("len").num(),
                String::new(),
                String::new(),
                0,
            ),
            _ => continue,
        };
        calls.push(c);
    }
    (calls, regions)
}

#[test]
fn trace_agrees_with_strace() {
    let strace_ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(strace_ok, "strace is not installed (.ci/run installs it)");
    for name in ["libbss.so", "libdiamond_a.so"] {
        let path = lib(name);
        let log = std::env::temp_dir().join(format!(
            "soloader-teach-strace-{}-{name}.txt",
            std::process::id()
        ));
        let out = Command::new("strace")
            .args(["-f", "-e", "trace=%memory,openat", "-o"])
            .arg(&log)
            .arg(env!("CARGO_BIN_EXE_soloader"))
            .args(["trace", &path, "--json"])
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .expect("running strace");
        assert!(
            out.status.success(),
            "strace soloader trace {name}: {out:?}"
        );
        let json = parse_json(&String::from_utf8_lossy(&out.stdout));
        let text = std::fs::read_to_string(&log).expect("reading the strace log");
        let _ = std::fs::remove_file(&log);

        let (traced, regions) = traced_calls(&json);
        assert!(!regions.is_empty() && traced.len() > regions.len());
        let inside = |c: &MemCall| {
            regions
                .iter()
                .any(|&(lo, hi)| c.1 < hi && lo < c.1.saturating_add(c.2))
        };
        let seen: Vec<MemCall> = strace_calls(&text, &path)
            .into_iter()
            .filter(|c| inside(c))
            .collect();
        // The loader's calls, in order, are exactly the trace's; whatever
        // strace saw in those ranges afterwards came after the unload (the
        // trace's last call), from someone else reusing the addresses.
        assert!(
            seen.len() >= traced.len(),
            "{name}: strace saw {} loader calls, the trace has {}:\nstrace: {seen:#?}\ntrace: {traced:#?}",
            seen.len(),
            traced.len()
        );
        assert_eq!(
            &seen[..traced.len()],
            &traced[..],
            "{name}: strace and the trace disagree"
        );
    }
}
