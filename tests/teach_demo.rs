//! `soloader demo`: each experiment runs and reports what the kernel did.

mod teach_util;

use teach_util::*;

#[test]
fn private_vs_shared() {
    let out = stdout_of(&["demo", "private-vs-shared"]);
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{out}"))
            .to_string()
    };
    assert!(line("does not see it").contains("\"original\""), "{out}");
    assert!(line("seen! page 1").contains("\"SHARED!!\""), "{out}");
    assert!(
        line("never reaches the file").contains("\"original\""),
        "{out}"
    );
    assert!(
        line("SHARED's write is in the file").contains("\"SHARED!!\""),
        "{out}"
    );
    assert!(out.contains("page 0: a private anonymous copy; page 1: the page cache's page"));
}

#[test]
fn unmappable() {
    let out = stdout_of(&["demo", "unmappable"]);
    let result = |what: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("no line for {what}:\n{out}"))
            .to_string()
    };
    assert!(result("a regular file").contains("OK"), "{out}");
    assert!(result("a pipe").contains("ENODEV"), "{out}");
    assert!(result("a UNIX stream socket").contains("ENODEV"), "{out}");
    assert!(result("the memfd").contains("OK"), "{out}");
}

#[test]
fn lazy() {
    let out = stdout_of(&["demo", "lazy", "--size", "8"]);
    let row = |what: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no row {what}:\n{out}"))[34..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let before = row("after mmap, nothing read");
    assert_eq!(before[1], "0", "nothing mapped after mmap: {out}");
    let first = out
        .lines()
        .find(|l| l.starts_with("read 1 byte of page"))
        .unwrap();
    let mapped: usize = first[34..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(mapped >= 1, "{out}");
}

#[test]
fn mmap_vs_read() {
    let out = stdout_of(&["demo", "mmap-vs-read", &lib("libbigtext.so")]);
    let copied = out
        .lines()
        .find(|l| l.trim_start().starts_with("bytes copied"))
        .expect("bytes copied row");
    let words: Vec<&str> = copied.split_whitespace().collect();
    assert_eq!(&words[2..4], ["0", "B"], "mmap copies nothing: {copied}");
    assert!(out.contains("second process"), "{out}");
}
