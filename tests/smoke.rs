use soloader::Library;
use std::path::PathBuf;

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

#[test]
fn arith_add() {
    let l = Library::open(lib("libarith.so")).unwrap();
    let add = unsafe { l.get::<extern "C" fn(i32, i32) -> i32>("add").unwrap() };
    assert_eq!(add(2, 3), 5);
}

#[test]
fn zlib_version() {
    let l = Library::open("libz.so.1").unwrap();
    let v = unsafe {
        l.get::<extern "C" fn() -> *const std::os::raw::c_char>("zlibVersion")
            .unwrap()
    };
    let s = unsafe { std::ffi::CStr::from_ptr(v()) };
    assert_eq!(s.to_str().unwrap(), "1.2.13");
}
