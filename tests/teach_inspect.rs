//! `soloader inspect`: snapshots of the summary for the test libraries, and
//! relocation counts that agree with `readelf -r` on real system libraries.

mod teach_util;

use std::collections::BTreeMap;
use std::process::Command;

use teach_util::*;

#[test]
fn inspect_snapshots() {
    for name in ["libarith.so", "libdata.so", "libdiamond_a.so", "libbss.so"] {
        let text = normalise(&stdout_of(&["inspect", &lib(name)]));
        insta::assert_snapshot!(format!("inspect_{name}"), text);
    }
}

#[test]
fn inspect_json_snapshot() {
    let text = stdout_of(&["inspect", &lib("libdata.so"), "--json"]);
    parse_json(&text);
    insta::assert_snapshot!("inspect_json_libdata.so", normalise(&text));
}

/// Relocation counts by type, from `readelf -rW`.
fn readelf_counts(path: &str) -> BTreeMap<String, u64> {
    let out = Command::new("readelf")
        .args(["-rW", path])
        .output()
        .expect("running readelf (binutils; .ci/run installs it)");
    assert!(out.status.success(), "readelf -rW {path} failed");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let (Some(off), Some(info), Some(kind)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let hex = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_hexdigit());
        if hex(off) && hex(info) && kind.starts_with("R_") {
            *counts.entry(kind.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn relocation_counts_match_readelf() {
    for name in ["libz.so.1", "libsqlite3.so.0"] {
        let json = parse_json(&stdout_of(&["inspect", name, "--json"]));
        let path = json.get("path").str().to_string();
        let ours: BTreeMap<String, u64> = json
            .get("relocations")
            .arr()
            .iter()
            .map(|r| (r.get("type").str().to_string(), r.get("count").num()))
            .collect();
        let theirs = readelf_counts(&path);
        assert!(!theirs.is_empty(), "readelf found no relocations in {path}");
        assert_eq!(
            ours, theirs,
            "{name} ({path}): inspect --json vs readelf -r"
        );
        // The human summary says the same total.
        let total: u64 = theirs.values().sum();
        let text = stdout_of(&["inspect", name]);
        assert!(
            text.contains(&format!(
                "Relocations: {total} relocations of {} types",
                theirs.len()
            )),
            "{text}"
        );
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("soloader-teach-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.so");
    std::fs::write(&junk, b"\x7fELF but not really an ELF file at all").unwrap();
    for args in [
        vec!["inspect", junk.to_str().unwrap()],
        vec!["inspect", "/nonexistent/libnothing.so"],
        vec!["inspect", "libnothing-at-all.so.7"],
        vec!["trace", junk.to_str().unwrap()],
        vec!["pages", junk.to_str().unwrap()],
    ] {
        let out = soloader(&args);
        assert_eq!(out.status.code(), Some(1), "soloader {args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("soloader: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
