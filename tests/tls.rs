use soloader::Library;
use std::path::PathBuf;
fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

fn run(name: &str) {
    let l = Library::open(lib(name)).unwrap();
    // SAFETY: `long tls_increment(long)` (testlibs/tls.c; long is 64-bit).
    let inc = unsafe { l.get::<extern "C" fn(i64) -> i64>("tls_increment").unwrap() };
    // SAFETY: `long tls_get(void)` (testlibs/tls.c).
    let get = unsafe { l.get::<extern "C" fn() -> i64>("tls_get").unwrap() };
    // SAFETY: `int tls_local_bump(void)` (testlibs/tls.c).
    let bump = unsafe { l.get::<extern "C" fn() -> i32>("tls_local_bump").unwrap() };
    // SAFETY: `long tls_buf_sum_then_fill(int)` (testlibs/tls.c).
    let fill = unsafe {
        l.get::<extern "C" fn(i32) -> i64>("tls_buf_sum_then_fill")
            .unwrap()
    };
    // SAFETY: `int tls_errno_gd(int)` (testlibs/tls.c).
    let errno_gd = unsafe { l.get::<extern "C" fn(i32) -> i32>("tls_errno_gd").unwrap() };
    assert_eq!(get(), 100);
    assert_eq!(inc(5), 105);
    assert_eq!(bump(), 8);
    assert_eq!(fill(1), 0);
    assert_eq!(fill(2), 64);
    assert_eq!(errno_gd(4321), 4321);
    let (inc, get) = (*inc, *get);
    let hs: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    inc(i);
                }
                get()
            })
        })
        .collect();
    let vals: Vec<i64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(*v, 100 + 1000 * i as i64);
    }
    assert_eq!(get(), 105);
}
#[test]
fn gd() {
    run("libtls.so");
}
#[test]
fn desc() {
    run("libtls_desc.so");
}
#[test]
fn hostie() {
    let l = Library::open(lib("libtls_hostie.so")).unwrap();
    // SAFETY: `int tls_errno_ie(int)` (testlibs/tls_hostie.c).
    let f = unsafe { l.get::<extern "C" fn(i32) -> i32>("tls_errno_ie").unwrap() };
    assert_eq!(f(777), 777);
}
#[test]
fn ie_refused() {
    let e = Library::open(lib("libtls_ie.so")).unwrap_err();
    println!("{e}");
    assert!(e.to_string().contains("ie_var"));
}
