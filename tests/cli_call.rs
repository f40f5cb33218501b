//! `soloader call`, run as a separate process: values, exit codes, and
//! agreement with the system loader on real libraries.

use std::path::PathBuf;
use std::process::{Command, Output};

fn lib(name: &str) -> String {
    PathBuf::from(env!("SOLOADER_TESTLIBS"))
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn soloader(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_soloader"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("running soloader")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `soloader call` and returns its stdout, trimmed; panics with the
/// stderr if it failed.
fn call(args: &[&str]) -> String {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    let out = soloader(&all);
    assert!(
        out.status.success(),
        "soloader {all:?} failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout).trim_end().to_string()
}

/// Runs `soloader call`, expecting failure with `code`; returns stderr.
fn call_fails(code: i32, args: &[&str]) -> String {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    let out = soloader(&all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "soloader {all:?}: stdout {:?} stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    text(&out.stderr)
}

/// A run-time failure: exit 1 and exactly one line `soloader: ...`.
fn assert_one_line_failure(args: &[&str], mentions: &[&str]) {
    let err = call_fails(1, args);
    assert_eq!(err.lines().count(), 1, "stderr: {err:?}");
    assert!(err.starts_with("soloader: "), "stderr: {err:?}");
    assert!(err.ends_with('\n'), "stderr: {err:?}");
    for m in mentions {
        assert!(err.contains(m), "stderr {err:?} does not mention {m:?}");
    }
}

#[test]
fn integer_arguments() {
    let arith = lib("libarith.so");
    assert_eq!(call(&[&arith, "add", "2", "3", "--ret", "i32"]), "5");
    assert_eq!(call(&[&arith, "add", "-1", "-0x10", "--ret", "i32"]), "-17");
    assert_eq!(call(&[&arith, "add", "0x10", "+1", "--ret", "i32"]), "17");
    // a + 2b + 3c + 4d + 5e + 6f, all six integer registers.
    assert_eq!(call(&[&arith, "sum6", "1", "2", "3", "4", "5", "6"]), "91");
    assert_eq!(
        call(&[&arith, "sum6", "-1", "-2", "-3", "-4", "-5", "-0x6"]),
        "-91"
    );
    // Options may come first, too.
    assert_eq!(
        call(&["--ret", "i64", &arith, "sum6", "1", "0", "0", "0", "0", "1"]),
        "7"
    );
}

#[test]
fn float_arguments() {
    let arith = lib("libarith.so");
    assert_eq!(
        call(&[&arith, "scale", "1.5", "4.0", "--ret", "f64"]),
        "6.0"
    );
    assert_eq!(
        call(&[&arith, "scale", "1.5", "f:-2", "--ret", "f64"]),
        "-3.0"
    );
    assert_eq!(
        call(&[&arith, "scale", "-2.5e3", "2e-3", "--ret", "f64"]),
        "-5.0"
    );
    assert_eq!(
        call(&[&arith, "scale", "-2.5e-3", "f:2", "--ret", "f64"]),
        "-0.005"
    );
    // a + 2b + ... + 8h, all eight vector registers.
    let ones = ["f:1"; 8];
    let mut args = vec![arith.as_str(), "fsum8"];
    args.extend_from_slice(&ones);
    args.extend_from_slice(&["--ret", "f64"]);
    assert_eq!(call(&args), "36.0");
    // Floats and integers interleaved: each class fills its own registers.
    assert_eq!(
        call(&[&arith, "add", "1.5", "40", "f:7", "2", "--ret", "i32"]),
        "42"
    );
}

#[test]
fn string_arguments_and_results() {
    let arith = lib("libarith.so");
    // 'A' + 'B' = 65 + 66.
    assert_eq!(call(&[&arith, "strsum", "s:AB"]), "131");
    assert_eq!(call(&[&arith, "strsum", "s:"]), "0");
    assert_eq!(
        call(&[&arith, "greeting", "--ret", "str"]),
        "hello from arith"
    );
    let p = call(&[&arith, "greeting", "--ret", "ptr"]);
    assert!(p.starts_with("0x") && p.len() > 3, "{p}");
    assert_eq!(call(&[&arith, "greeting", "--ret", "void"]), "");
    let uselibc = lib("libuselibc.so");
    assert_eq!(
        call(&[&uselibc, "make_greeting", "s:world", "--ret", "str"]),
        "hello, world!"
    );
}

#[test]
fn library_path_search() {
    let dir = env!("SOLOADER_TESTLIBS");
    assert_eq!(
        call(&[
            "libarith.so",
            "add",
            "2",
            "3",
            "--library-path",
            dir,
            "--ret",
            "i32"
        ]),
        "5"
    );
}

#[test]
fn variadic_function_gets_float_arguments() {
    // sqlite3_mprintf is variadic: the vector-register count in %al must
    // be set for its double argument to be read.
    assert_eq!(
        call(&[
            "libsqlite3.so.0",
            "sqlite3_mprintf",
            "s:%d-%.3f-%s",
            "7",
            "2.5",
            "s:x",
            "--ret",
            "str"
        ]),
        "7-2.500-x"
    );
}

#[test]
fn missing_symbol_is_one_line_exit_1() {
    assert_one_line_failure(
        &[&lib("libarith.so"), "no_such_function"],
        &["no_such_function"],
    );
}

#[test]
fn missing_library_is_one_line_exit_1() {
    assert_one_line_failure(
        &["libsoloader-no-such-library.so.7", "f"],
        &["libsoloader-no-such-library.so.7"],
    );
    assert_one_line_failure(
        &["/nonexistent/dir/libx.so", "f"],
        &["/nonexistent/dir/libx.so"],
    );
}

#[test]
fn data_symbol_is_not_called() {
    assert_one_line_failure(
        &[&lib("libarith.so"), "arith_add_ptr"],
        &["arith_add_ptr", "executable"],
    );
}

#[test]
fn bad_usage_exits_2() {
    let arith = lib("libarith.so");
    for args in [
        vec![arith.as_str(), "add", "hello"],
        vec![arith.as_str(), "add", "1", "--bogus"],
        vec![arith.as_str(), "add", "-x"],
        vec![arith.as_str(), "add", "99999999999999999999"],
        vec![arith.as_str(), "add", "f:x"],
        vec![arith.as_str(), "add", "--ret", "i128"],
        vec![arith.as_str()],
        vec![arith.as_str(), "sum6", "1", "2", "3", "4", "5", "6", "7"],
        vec![
            arith.as_str(),
            "sum6",
            "1",
            "2",
            "3",
            "4",
            "5",
            "s:6",
            "s:7",
        ],
        vec![
            arith.as_str(),
            "fsum8",
            "1.0",
            "2.0",
            "3.0",
            "4.0",
            "5.0",
            "6.0",
            "7.0",
            "8.0",
            "9.0",
        ],
    ] {
        let err = call_fails(2, &args);
        assert!(!err.is_empty(), "{args:?}: no message");
    }
    let out = soloader(&["no-such-subcommand"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn segments_table() {
    let arith = lib("libarith.so");
    let out = call(&[&arith, "add", "2", "3", "--ret", "i32", "--segments"]);
    assert!(out.contains(&arith), "{out}");
    assert!(out.contains("r-x"), "{out}");
    assert!(out.contains("MAP_PRIVATE"), "{out}");
    assert!(out.contains("RELRO"), "{out}");
    assert_eq!(out.lines().last(), Some("5"), "{out}");
}

/// What the system loader's copy of `lib` returns from `func`, through
/// ctypes in a separate python3 process (soloader is not involved).
fn reference(lib: &str, func: &str, restype: &str, convert: &str) -> String {
    let script = format!(
        "import ctypes\nl = ctypes.CDLL({lib:?})\nf = l.{func}\nf.restype = ctypes.{restype}\nprint({convert})\n"
    );
    let out = Command::new("python3")
        .args(["-S", "-c", &script])
        .output()
        .expect("running python3");
    assert!(out.status.success(), "python3: {}", text(&out.stderr));
    text(&out.stdout).trim_end().to_string()
}

fn same_as_system_loader(lib: &str, func: &str, ret: &str) {
    let expected = match ret {
        "str" => reference(lib, func, "c_char_p", "f().decode()"),
        "u64" => reference(lib, func, "c_uint64", "f()"),
        other => panic!("no reference for --ret {other}"),
    };
    assert!(!expected.is_empty());
    assert_eq!(call(&[lib, func, "--ret", ret]), expected, "{lib} {func}");
}

#[test]
fn zlib_version_matches_system_loader() {
    same_as_system_loader("libz.so.1", "zlibVersion", "str");
}

#[test]
fn sqlite_version_matches_system_loader() {
    same_as_system_loader("libsqlite3.so.0", "sqlite3_libversion", "str");
}

#[test]
fn expat_version_matches_system_loader() {
    same_as_system_loader("libexpat.so.1", "XML_ExpatVersion", "str");
}

#[test]
fn openssl_version_matches_system_loader() {
    same_as_system_loader("libcrypto.so.3", "OpenSSL_version_num", "u64");
}
