use soloader::Library;
use std::path::PathBuf;

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

#[test]
fn arith_add() {
    let l = Library::open(lib("libarith.so")).unwrap();
    // SAFETY: `int add(int, int)` (testlibs/arith.c).
    let add = unsafe { l.get::<extern "C" fn(i32, i32) -> i32>("add").unwrap() };
    assert_eq!(add(2, 3), 5);
}

#[test]
fn zlib_version() {
    let l = Library::open("libz.so.1").unwrap();
    // SAFETY: `const char *zlibVersion(void)` (zlib.h).
    let v = unsafe {
        l.get::<extern "C" fn() -> *const std::os::raw::c_char>("zlibVersion")
            .unwrap()
    };
    // SAFETY: zlibVersion returns a static NUL-terminated string.
    let s = unsafe { std::ffi::CStr::from_ptr(v()) };
    assert_eq!(s.to_str().unwrap(), "1.2.13");
}

fn cstr(p: *const std::os::raw::c_char) -> String {
    // SAFETY: callers pass only the static NUL-terminated version strings
    // returned by the libraries' version functions below.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn sqlite_version() {
    let l = Library::open("libsqlite3.so.0").unwrap();
    // SAFETY: `const char *sqlite3_libversion(void)` (sqlite3.h).
    let v = unsafe {
        l.get::<extern "C" fn() -> *const std::os::raw::c_char>("sqlite3_libversion")
            .unwrap()
    };
    assert_eq!(cstr(v()), "3.40.1");
}

#[test]
fn crypto_version() {
    let l = Library::open("libcrypto.so.3").unwrap();
    // SAFETY: `unsigned long OpenSSL_version_num(void)` (openssl/crypto.h);
    // unsigned long is 64 bits on x86-64.
    let v = unsafe {
        l.get::<extern "C" fn() -> u64>("OpenSSL_version_num")
            .unwrap()
    };
    assert!(v() > 0x30000000);
}

#[test]
fn expat_version() {
    let l = Library::open("libexpat.so.1").unwrap();
    // SAFETY: `const XML_LChar *XML_ExpatVersion(void)` (expat.h); XML_LChar
    // is char in the system's (non-wchar_t) build.
    let v = unsafe {
        l.get::<extern "C" fn() -> *const std::os::raw::c_char>("XML_ExpatVersion")
            .unwrap()
    };
    assert!(cstr(v()).starts_with("expat_"));
}
