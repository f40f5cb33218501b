//! Fuzz target: arbitrary bytes as a shared library, through the whole
//! pipeline that runs no library code.
//!
//! The bytes are written to a memfd and handed to `soloader::check` as
//! `/proc/self/fd/N` (parse → validate → map → resolve → relocate without
//! running anything, then unmap) and to `soloader::inspect::inspect` (parse
//! and validate from a read-only mapping of the file). Either may say the
//! file is bad; neither may panic, crash, hang or leave anything behind:
//! every 256 inputs the target checks that no mapping of a fuzz memfd
//! remains and that no file descriptor leaked.
//!
//! `check` maps the mutated library into this process and relocates it
//! inside its own mapping; no code of the library runs. A mutated
//! `DT_NEEDED` may make it ask the system loader for a glibc-family
//! library, which is harmless.

#![no_main]

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;

const MEMFD_NAME: &CStr = c"soloader-fuzz";

static RUNS: AtomicUsize = AtomicUsize::new(0);
static FDS: AtomicUsize = AtomicUsize::new(0);

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Lines of `/proc/self/maps` that map one of this target's memfds.
fn leaked_mappings() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("memfd:soloader-fuzz"))
        .map(str::to_string)
        .collect()
}

/// A memfd holding `data`.
fn memfd(data: &[u8]) -> libc::c_int {
    // SAFETY: a valid C string and flags.
    let fd = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: `rest` is valid for reads of its length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        assert!(n > 0, "write to memfd: {}", std::io::Error::last_os_error());
        done += n as usize;
    }
    fd
}

fn one_line(what: &str, path: &str, e: &soloader::Error) {
    let text = e.to_string();
    assert!(!text.contains('\n'), "{what}: multi-line error: {text:?}");
    assert!(!text.is_empty(), "{what}: empty error");
    // The error names the file at fault: this one, or a dependency (a
    // mutated DT_NEEDED may name any library on the system).
    // (Display escapes control characters, so escape the name likewise.)
    let culprit: String = e
        .path()
        .display()
        .to_string()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    assert!(
        text.contains(path) || (!culprit.is_empty() && text.contains(&culprit)),
        "{what} of {path}: error does not name its file: {text}"
    );
}

fuzz_target!(|data: &[u8]| {
    let fd = memfd(data);
    let path = format!("/proc/self/fd/{fd}");
    if let Err(e) = soloader::check(&path, &soloader::Options::new()) {
        one_line("check", &path, &e);
    }
    if let Err(e) = soloader::inspect::inspect(&path) {
        one_line("inspect", &path, &e);
    }
    // SAFETY: closing the memfd this input opened.
    unsafe { libc::close(fd) };

    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        FDS.store(fd_count(), Ordering::Relaxed);
    } else if n.is_multiple_of(256) {
        let leaked = leaked_mappings();
        assert!(leaked.is_empty(), "mappings left behind: {leaked:#?}");
        let (before, now) = (FDS.load(Ordering::Relaxed), fd_count());
        assert!(now <= before, "file descriptors leaked: {before} -> {now}");
    }
});
