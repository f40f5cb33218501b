//! gdb, in batch mode, stops at a breakpoint set by name on a function of a
//! library soloader loaded, and `bt` names it (through the GDB JIT
//! interface; see loader/debug.rs).

use std::process::Command;

#[test]
fn gdb_breaks_in_a_soloader_library() {
    if Command::new("gdb").arg("--version").output().is_err() {
        panic!("gdb is not installed (.ci/run installs it)");
    }
    let lib = format!("{}/libarith.so", env!("SOLOADER_TESTLIBS"));
    let out = Command::new("gdb")
        .args([
            "-nx",
            "-batch",
            "-ex",
            "set breakpoint pending on",
            "-ex",
            "break add_impl",
            "-ex",
            "run",
            "-ex",
            "bt",
            "-ex",
            "continue",
            "--args",
            env!("CARGO_BIN_EXE_soloader"),
            "call",
            &lib,
            "add",
            "40",
            "2",
            "--ret",
            "i32",
        ])
        .output()
        .expect("run gdb");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Breakpoint 1, "),
        "breakpoint not hit:\n{text}"
    );
    let bt: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        bt.first().is_some_and(|l| l.contains("add_impl")),
        "bt:\n{text}"
    );
    assert!(
        bt.get(1).is_some_and(|l| l.contains(" add ")),
        "caller named:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.trim() == "42"),
        "program finished with its result:\n{text}"
    );
}
