//! The C++ test library with libstdc++ itself loaded by soloader
//! (`Options::load_libstdcxx`): exceptions, iostreams, call_once and a
//! thread_local destructor must work the same, with libstdc++'s
//! STB_GNU_UNIQUE symbols unified process-wide. Its own test binary: the
//! host process must not have libstdc++ (nothing else here loads C++).

use soloader::{Event, Library, Options, Provider, VecSink};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

#[test]
fn cxx_with_soloader_loaded_libstdcxx() {
    let stdcxx = CString::new("libstdc++.so.6").unwrap();
    // SAFETY: asking the system loader whether it has libstdc++ (NOLOAD).
    let before = unsafe { libc::dlopen(stdcxx.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(
        before.is_null(),
        "the host must not have libstdc++ for this test"
    );

    let sink = VecSink::new();
    let opts = Options::new()
        .load_libstdcxx(true)
        .trace(Arc::new(sink.clone()));
    let l = Library::open_with(lib("libcxx.so"), &opts).unwrap();
    let deps = l.dependencies();
    let s = deps
        .iter()
        .find(|(n, _, _)| n == "libstdc++.so.6")
        .expect("needs libstdc++");
    assert!(!s.2, "libstdc++ loaded by soloader, not the host: {deps:?}");
    // SAFETY: as above.
    let after = unsafe { libc::dlopen(stdcxx.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(after.is_null(), "the system loader still has no libstdc++");

    // SAFETY: signatures from testlibs/cxx.cc.
    unsafe {
        assert_eq!(
            l.get::<extern "C" fn() -> i32>("cxx_static_ok").unwrap()(),
            1
        );
        let tc = l
            .get::<extern "C" fn(i32) -> i32>("cxx_throw_catch")
            .unwrap();
        assert_eq!(
            tc(42),
            "boom 42".len() as i32,
            "exception through soloader's libstdc++"
        );
        assert_eq!(
            l.get::<extern "C" fn(i32) -> i64>("cxx_vector_sum")
                .unwrap()(100),
            15150
        );
        let fmt = l
            .get::<extern "C" fn(*mut u8, i32, i32) -> i32>("cxx_format")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = fmt(buf.as_mut_ptr(), 64, 255);
        assert_eq!(&buf[..n as usize], b"x=255;hex=ff");
        let once = l.get::<extern "C" fn() -> i32>("cxx_call_once").unwrap();
        assert_eq!((once(), once()), (1, 1));
        let next = *l.get::<extern "C" fn() -> i32>("cxx_tl_next").unwrap();
        let destroyed = *l.get::<extern "C" fn() -> i32>("cxx_tl_destroyed").unwrap();
        let before = destroyed();
        std::thread::spawn(move || assert_eq!(next(), 5))
            .join()
            .unwrap();
        assert_eq!(
            destroyed(),
            before + 1,
            "thread_local destructor ran at thread exit"
        );
    }
    // A STB_GNU_UNIQUE symbol (a guard variable libstdc++'s own code
    // refers to) went through the process-wide table, to soloader's copy.
    let unique = "_ZGVNSt10moneypunctIcLb0EE2idE";
    let bound = sink.events().into_iter().any(|e| {
        matches!(e, Event::Bind { provider: Provider::Loaded(p), symbol, .. }
            if p.to_string_lossy().contains("libstdc++") && symbol == unique)
    });
    assert!(bound, "{unique} bound to soloader's libstdc++");
}
