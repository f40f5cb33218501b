//! Helpers for the `tests/teach_*.rs` tests of `soloader inspect`, `trace`,
//! `pages` and `demo`: running the binary, normalising its output for
//! snapshots (addresses, pids, fault counts, file sizes), a small JSON
//! parser (shared with other tests: `tests/common/json.rs`) and an XML
//! well-formedness check.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The directory of the test libraries.
pub fn testlibs() -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS"))
}

/// The path of test library `name`, as a string.
pub fn lib(name: &str) -> String {
    testlibs().join(name).to_string_lossy().into_owned()
}

/// Runs `soloader ARGS` without `LD_LIBRARY_PATH` (cargo sets one).
pub fn soloader(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_soloader"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("running soloader")
}

/// Runs `soloader ARGS`, panics unless it succeeds, returns stdout.
pub fn stdout_of(args: &[&str]) -> String {
    let out = soloader(args);
    assert!(
        out.status.success(),
        "soloader {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Replaces what changes from run to run, or between machines with the
/// same system, so that the output can be snapshot:
/// - the test library directory by `[TESTLIBS]`;
/// - run-time addresses (hex numbers of 9 digits or more) by `[A1]`,
///   `[A2]`, … numbered per distinct value in order of appearance, so
///   that equal addresses stay visibly equal;
/// - `pid N` by `pid [PID]`;
/// - page-fault counts by `[N]`;
/// - file sizes (they include debug information, which records the build
///   directory) by `[SIZE]`;
/// - search candidates in `glibc-hwcaps` subdirectories (which ones are
///   tried depends on the CPU).
pub fn normalise(text: &str) -> String {
    let dir = testlibs().to_string_lossy().into_owned();
    let text = text.replace(&dir, "[TESTLIBS]");
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = String::new();
    for line in text.lines() {
        if line.contains("/glibc-hwcaps/") {
            continue;
        }
        let line = replace_addresses(line, &mut names);
        let line = replace_after(
            &line,
            "pid ",
            |w| w.chars().all(|c| c.is_ascii_digit()),
            "[PID]",
        );
        let line = if line.contains("page faults") || line.contains("_faults\"") {
            replace_numbers(&line)
        } else {
            line
        };
        let line = replace_sizes(&line);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn replace_addresses(line: &str, names: &mut HashMap<String, usize>) -> String {
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'0' && i + 1 < b.len() && b[i + 1] == b'x' {
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j - (i + 2) >= 9 {
                let value = line[i..j].to_string();
                let n = names.len() + 1;
                let k = *names.entry(value).or_insert(n);
                out.push_str(&format!("[A{k}]"));
                i = j;
                continue;
            }
            out.push_str(&line[i..j]);
            i = j;
            continue;
        }
        let c = line[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Replaces the word after each `prefix` by `with` when `is` accepts it.
fn replace_after(line: &str, prefix: &str, is: impl Fn(&str) -> bool, with: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(p) = rest.find(prefix) {
        out.push_str(&rest[..p + prefix.len()]);
        rest = &rest[p + prefix.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        if end > 0 && is(&rest[..end]) {
            out.push_str(with);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Every decimal number in the line becomes `[N]`.
fn replace_numbers(line: &str) -> String {
    let mut out = String::new();
    let mut digits = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push_str("[N]");
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out
}

/// `[18.8 KiB]` after `file=…`, `(18.8 KiB file` in inspect's first line,
/// `"file_size": 19136` in JSON.
fn replace_sizes(line: &str) -> String {
    let mut line = line.to_string();
    if line.contains("file=") && line.contains("]: opened") {
        if let (Some(a), Some(b)) = (line.find(" ["), line.find("]: opened")) {
            if a < b {
                line = format!("{} [SIZE]{}", &line[..a], &line[b + 1..]);
            }
        }
    }
    if let Some(b) = line.find(" file, ELF64") {
        if let Some(a) = line[..b].rfind('(') {
            line = format!("{}([SIZE]{}", &line[..a], &line[b..]);
        }
    }
    if let Some(a) = line.find("\"file_size\": ") {
        let start = a + "\"file_size\": ".len();
        let end = line[start..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(line.len(), |e| start + e);
        line = format!("{}[SIZE]{}", &line[..start], &line[end..]);
    }
    line
}

// ---------------------------------------------------------------------------
// JSON

#[path = "../common/json.rs"]
mod json;

// Not every teach_* test uses both.
#[allow(unused_imports)]
pub use json::{parse_json, Json};

// ---------------------------------------------------------------------------
// XML

/// Checks that `text` is one well-formed XML element (after an optional
/// declaration): tags nest and match, attributes are quoted and unique,
/// entities are the predefined ones. Returns the number of elements per
/// name.
pub fn check_xml(text: &str) -> HashMap<String, usize> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut stack: Vec<String> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut roots = 0;
    while i < b.len() {
        if b[i] == b'<' {
            if text[i..].starts_with("<?") {
                let end = text[i..].find("?>").expect("unterminated <?") + i;
                i = end + 2;
                continue;
            }
            if text[i..].starts_with("<!--") {
                let end = text[i..].find("-->").expect("unterminated comment") + i;
                i = end + 3;
                continue;
            }
            let end = text[i..].find('>').expect("unterminated tag") + i;
            let tag = &text[i + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack
                    .pop()
                    .unwrap_or_else(|| panic!("</{name}> closes nothing"));
                assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
                let name = &body[..name_end];
                assert!(
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':' || c == '_'),
                    "bad element name {name:?}"
                );
                check_attributes(&body[name_end..]);
                if stack.is_empty() {
                    roots += 1;
                }
                *counts.entry(name.to_string()).or_insert(0) += 1;
                if !self_closing {
                    stack.push(name.to_string());
                }
            }
            i = end + 1;
        } else {
            if b[i] == b'&' {
                let end = text[i..].find(';').expect("unterminated entity") + i;
                let ent = &text[i + 1..end];
                assert!(
                    ["amp", "lt", "gt", "quot", "apos"].contains(&ent) || ent.starts_with('#'),
                    "unknown entity &{ent};"
                );
            } else if stack.is_empty() {
                assert!(
                    b[i].is_ascii_whitespace(),
                    "text outside the root element at byte {i}"
                );
            }
            i += 1;
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert_eq!(roots, 1, "one root element");
    counts
}

fn check_attributes(s: &str) {
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("attribute without value: {rest:?}"));
        let name = rest[..eq].trim();
        assert!(!seen.contains(&name), "duplicate attribute {name}");
        seen.push(name);
        let after = rest[eq + 1..].trim_start();
        let q = after.chars().next().expect("attribute value");
        assert!(q == '"' || q == '\'', "unquoted attribute {name}");
        let close = after[1..].find(q).expect("unterminated attribute value") + 1;
        let value = &after[1..close];
        assert!(!value.contains('<'), "'<' in attribute {name}");
        rest = after[close + 1..].trim_start();
    }
}
