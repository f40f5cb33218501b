//! The loader's own functions as seen from a soloader library: a plugin
//! loaded through dlopen with the caller's RUNPATH, RTLD_NEXT, dladdr,
//! dlerror, dl_iterate_phdr and _dl_find_object.

use soloader::Library;
use std::ffi::CString;
use std::path::PathBuf;

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

fn mapped(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(&format!("/{name}")))
}

#[test]
fn plugin_through_soloader() {
    let l = Library::open(lib("libpluginhost.so")).unwrap();
    // SAFETY: signatures from testlibs/pluginhost.c.
    unsafe {
        let call = l.get::<extern "C" fn(i32) -> i32>("plugin_call").unwrap();
        let close = l.get::<extern "C" fn() -> i32>("plugin_close").unwrap();
        assert!(!mapped("libplugin_impl.so"));
        assert_eq!(
            call(21),
            42,
            "plugin found through the caller's RUNPATH and called"
        );
        assert!(
            mapped("libplugin_impl.so"),
            "the plugin is mapped (by soloader)"
        );
        // The system loader never saw it.
        let c = CString::new(lib("libplugin_impl.so").to_str().unwrap()).unwrap();
        assert!(libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD).is_null());
        assert_eq!(close(), 0);
        assert!(!mapped("libplugin_impl.so"), "dlclose unloaded the plugin");
        assert_eq!(call(5), 10, "and it loads again");
        assert_eq!(close(), 0);

        let ok = |n: &str| l.get::<extern "C" fn() -> i32>(n).unwrap()();
        assert_eq!(
            ok("plugin_dladdr_ok"),
            1,
            "dladdr names the function and the file"
        );
        assert_eq!(
            ok("plugin_default_self"),
            1,
            "RTLD_DEFAULT sees the caller's own scope"
        );
        assert_eq!(
            ok("plugin_iterate"),
            1,
            "dl_iterate_phdr lists soloader's library once"
        );
        assert_eq!(
            ok("plugin_error_ok"),
            1,
            "dlerror reports the failed dlopen once"
        );
        assert_eq!(
            ok("plugin_find_object_ok"),
            1,
            "_dl_find_object covers soloader's code"
        );
        let next = l
            .get::<extern "C" fn(*const i8) -> i64>("plugin_next_strlen")
            .unwrap();
        assert_eq!(
            next(c"hello".as_ptr()),
            5,
            "RTLD_NEXT reaches libc's strlen"
        );
    }
}

#[test]
fn address_lookup() {
    let l = Library::open(lib("libarith.so")).unwrap();
    // SAFETY: signature from testlibs/arith.c.
    let add = unsafe { l.get::<extern "C" fn(i32, i32) -> i32>("add").unwrap() };
    let a = add.addr();
    let at = soloader::lookup(a + 1).expect("inside libarith");
    assert_eq!(at.symbol.as_deref(), Some("add"));
    assert_eq!(at.symbol_addr, Some(a));
    assert_eq!(at.path, l.path());
    assert_eq!(l.symbol_at(a), Some(at));
    assert!(
        soloader::lookup(address_lookup as *const () as usize).is_none(),
        "not a soloader library"
    );
}
