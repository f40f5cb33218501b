//! End-to-end: load each basic test library with soloader and call into it.
//!
//! arith (calls of every argument class, PLT calls, per-instance state,
//! `-z now` / `-z lazy`), data (RELATIVE and symbolic relocations), bss
//! (large zero `.bss`, zeroed tail of the last file page), const, callback
//! (Rust functions called from the library), uselibc (the host's libc),
//! interpose (the host's global scope first), and the `get` API.

mod common;

use std::os::raw::{c_char, c_int, c_long, c_uint};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use soloader::{Error, Event, Library, Provider};

#[test]
#[ignore = "helper: run in a child process by other tests"]
fn child_helper() {
    common::child_main(&[]);
}

#[test]
fn arith_calls_of_every_argument_class() {
    let _g = shared();
    let l = open(&lib("libarith.so"));
    // SAFETY: every type is the prototype in testlibs/arith.c; strsum is
    // given NUL-terminated strings.
    unsafe {
        let add = l
            .get::<extern "C" fn(c_int, c_int) -> c_int>("add")
            .unwrap();
        let mul64 = l
            .get::<extern "C" fn(c_long, c_long) -> c_long>("mul64")
            .unwrap();
        let scale = l.get::<extern "C" fn(f64, f64) -> f64>("scale").unwrap();
        let sum6 = l
            .get::<extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long) -> c_long>("sum6")
            .unwrap();
        type Fsum8 = extern "C" fn(f64, f64, f64, f64, f64, f64, f64, f64) -> f64;
        let fsum8 = l.get::<Fsum8>("fsum8").unwrap();
        let greeting = l
            .get::<extern "C" fn() -> *const c_char>("greeting")
            .unwrap();
        let strsum = l
            .get::<extern "C" fn(*const c_char) -> c_long>("strsum")
            .unwrap();

        assert_eq!(add(2, 3), 5);
        assert_eq!(add(-7, 4), -3);
        assert_eq!(add(i32::MAX, 1), i32::MIN, "wrapping int addition");
        assert_eq!(mul64(1 << 40, 3), 3 << 40, "64-bit arguments and result");
        assert_eq!(mul64(-7, 6), -42);
        assert_eq!(scale(1.5, -4.0), -6.0);
        // a + 2b + ... + 6f: every one of the six integer registers counts.
        assert_eq!(sum6(1, 2, 3, 4, 5, 6), 91);
        assert_eq!(sum6(10, 20, 30, 40, 50, 60), 910);
        assert_eq!(sum6(1 << 33, 0, 0, 0, 0, 1), (1 << 33) + 6);
        // a + 2b + ... + 8h: every one of the eight SSE registers counts.
        assert_eq!(fsum8(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0), 204.0);
        assert_eq!(fsum8(0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25), 2.5);
        assert_eq!(cstr(greeting()), "hello from arith");
        assert_eq!(strsum(c"abc".as_ptr()), 97 + 98 + 99);
        assert_eq!(strsum(c"".as_ptr()), 0);
        assert_eq!(strsum(c"\xff\x01".as_ptr()), 256, "bytes are unsigned");
    }
}

#[test]
fn arith_state_is_per_instance_and_symbolic_relocations_bind_to_the_library() {
    let _g = shared();
    let (_dir, path) = private_copy("libarith.so");
    let (l, sink) = open_traced(&path);
    type Add = extern "C" fn(c_int, c_int) -> c_int;
    // SAFETY: add and arith_calls have testlibs/arith.c's types;
    // arith_add_ptr is an initialised, relocated function-pointer variable
    // of `l`, still loaded when it is read.
    unsafe {
        let add = l.get::<Add>("add").unwrap();
        let calls = l.get::<extern "C" fn() -> c_int>("arith_calls").unwrap();
        assert_eq!(calls(), 0, "fresh instance: no add() calls yet");
        for i in 0..3 {
            assert_eq!(add(i, 10), i + 10);
        }
        assert_eq!(calls(), 3);

        // A second copy is a second instance with its own counter.
        let (_dir2, path2) = private_copy("libarith.so");
        let l2 = open(&path2);
        assert_ne!(l2.base(), l.base());
        let calls2 = l2.get::<extern "C" fn() -> c_int>("arith_calls").unwrap();
        assert_eq!(calls2(), 0);
        assert_eq!(l2.get::<Add>("add").unwrap()(1, 1), 2);
        assert_eq!(calls2(), 1);
        assert_eq!(calls(), 3, "the first instance did not see that call");
        l2.close().unwrap();

        // arith_add_ptr = add_impl: an R_X86_64_64 against an exported,
        // preemptible function of the library itself.
        let ptr = l.get::<*const usize>("arith_add_ptr").unwrap();
        assert_eq!(ptr.read(), addr_of(&l, "add_impl"));
    }
    let ev = sink.events();
    assert!(
        reloc_count(&ev, &path, "R_X86_64_64") >= 1,
        "no R_X86_64_64 traced:\n{}",
        dump(&ev)
    );
    let b = binds(&ev, &path, "add_impl");
    assert!(!b.is_empty(), "no Bind of add_impl:\n{}", dump(&ev));
    for (_, provider, value) in &b {
        assert_eq!(*provider, Provider::Loaded(path.clone()));
        assert_eq!(*value, addr_of(&l, "add_impl"));
    }
    let strlen = binds(&ev, &path, "strlen");
    assert_eq!(strlen.len(), 1, "strlen bound once:\n{}", dump(&ev));
    assert!(
        matches!(&strlen[0].1, Provider::Host(h) if h.contains("libc.so")),
        "strlen provided by {:?}",
        strlen[0].1
    );
    assert_eq!(strlen[0].2, host_addr("strlen"));
}

/// `-z now` and `-z lazy` builds both load and work, and both are bound
/// eagerly: every JUMP_SLOT symbol has its Bind event before the load
/// completes.
#[test]
fn arith_now_and_lazy_variants_are_bound_eagerly() {
    let _g = shared();
    for name in ["libarith_now.so", "libarith_lazy.so", "libarith.so"] {
        let (_dir, path) = private_copy(name);
        let (l, sink) = open_traced(&path);
        let ev = sink.events();
        let loaded_at = ev
            .iter()
            .position(|e| matches!(e, Event::Loaded { .. }))
            .expect("Loaded event");
        assert!(
            reloc_count(&ev, &path, "R_X86_64_JUMP_SLOT") >= 3,
            "{name}: JUMP_SLOTs:\n{}",
            dump(&ev)
        );
        for sym in ["strlen", "mul64", "scale"] {
            let at = ev.iter().position(
                |e| matches!(e, Event::Bind { path: p, symbol, .. } if *p == path && symbol == sym),
            );
            assert!(
                at.is_some_and(|i| i < loaded_at),
                "{name}: {sym} not bound during the load:\n{}",
                dump(&ev)
            );
        }
        // SAFETY: sum6 and strsum have testlibs/arith.c's types; strsum is
        // given a NUL-terminated string.
        unsafe {
            let sum6 = l
                .get::<extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long) -> c_long>(
                    "sum6",
                )
                .unwrap();
            assert_eq!(sum6(1, 1, 1, 1, 1, 1), 21, "{name}");
            let strsum = l
                .get::<extern "C" fn(*const c_char) -> c_long>("strsum")
                .unwrap();
            assert_eq!(strsum(c"AB".as_ptr()), 131, "{name}");
        }
        l.close().unwrap();
    }
}

#[test]
fn data_relocations() {
    let _g = shared();
    let (_dir, path) = private_copy("libdata.so");
    let (l, sink) = open_traced(&path);
    // SAFETY: the functions have testlibs/data.c's types and get
    // NUL-terminated names; the pointer variables read are initialised and
    // relocated in the still-loaded `l`, and the string tables are read only
    // up to their NULL terminators.
    unsafe {
        let apply = l
            .get::<extern "C" fn(*const c_char, c_int, c_int) -> c_int>("apply")
            .unwrap();
        // The op table is {name, fn} pairs: RELATIVE relocations in RELRO.
        assert_eq!(apply(c"add".as_ptr(), 7, 5), 12);
        assert_eq!(apply(c"sub".as_ptr(), 7, 5), 2);
        assert_eq!(apply(c"mul".as_ptr(), 7, 5), 35);
        assert_eq!(apply(c"max".as_ptr(), 7, 5), 7);
        assert_eq!(apply(c"min".as_ptr(), 7, 5), 5);
        assert_eq!(apply(c"pow".as_ptr(), 7, 5), -9999);

        let op_name = l
            .get::<extern "C" fn(c_int) -> *const c_char>("op_name")
            .unwrap();
        let names: Vec<String> = (0..5).map(|i| cstr(op_name(i))).collect();
        assert_eq!(names, ["add", "sub", "mul", "max", "min"]);
        assert!(op_name(5).is_null());

        // R_X86_64_64 against data_value (addend 0) and data_array (+8).
        let read_via_ptr = l.get::<extern "C" fn() -> c_int>("read_via_ptr").unwrap();
        assert_eq!(read_via_ptr(), 1234);
        let elem2 = l
            .get::<extern "C" fn() -> c_int>("read_array_elem2")
            .unwrap();
        assert_eq!(elem2(), 30);
        let value_ptr = l.get::<*const *const c_int>("data_value_ptr").unwrap();
        assert_eq!(value_ptr.read() as usize, addr_of(&l, "data_value"));
        let elem2_ptr = l.get::<*const *const c_int>("data_array_elem2").unwrap();
        assert_eq!(elem2_ptr.read() as usize, addr_of(&l, "data_array") + 8);

        // Pointer tables: a static const one (RELRO) and an exported one.
        let string_table = l
            .get::<extern "C" fn() -> *const *const c_char>("string_table")
            .unwrap();
        let t = string_table();
        let got: Vec<String> = (0..4).map(|i| cstr(*t.add(i))).collect();
        assert_eq!(got, ["one", "two", "three", "four"]);
        assert!((*t.add(4)).is_null());
        let ds = *l.get::<*const *const c_char>("data_strings").unwrap();
        let got: Vec<String> = (0..3).map(|i| cstr(*ds.add(i))).collect();
        assert_eq!(got, ["alpha", "beta", "gamma"]);
        assert!((*ds.add(3)).is_null());
    }
    let ev = sink.events();
    assert!(
        reloc_count(&ev, &path, "R_X86_64_RELATIVE") >= 20,
        "{}",
        dump(&ev)
    );
    assert_eq!(reloc_count(&ev, &path, "R_X86_64_64"), 2, "{}", dump(&ev));
    let b = binds(&ev, &path, "data_value");
    assert_eq!(b.len(), 1, "{}", dump(&ev));
    assert_eq!(b[0].1, Provider::Loaded(path.clone()));
    assert_eq!(b[0].2, addr_of(&l, "data_value"));
}

#[test]
fn bss_is_zero_including_the_tail_of_the_last_file_page() {
    let _g = shared();
    let (_dir, path) = private_copy("libbss.so");
    let file = std::fs::read(&path).unwrap();
    let (l, sink) = open_traced(&path);
    let ev = sink.events();

    // The data segment: file bytes end part-way through a page.
    let seg = l
        .segments()
        .iter()
        .find(|s| s.bss.as_ref().is_some_and(|b| b.len() >= 8 << 20))
        .unwrap_or_else(|| panic!("no 8 MiB bss segment: {:?}", l.segments()))
        .clone();
    let bss = seg.bss.clone().unwrap();
    let tail_end = seg.file_range.end.min(bss.end);
    assert!(bss.start < tail_end, "bss starts on a page boundary?");
    // The file really has non-zero bytes where the tail lies...
    let off = seg.file_offset as usize + (bss.start - seg.file_range.start);
    let in_file = &file[off..(off + (tail_end - bss.start)).min(file.len())];
    assert!(
        in_file.iter().any(|&b| b != 0),
        "test premise: the file has non-zero bytes after p_filesz"
    );
    // ...the loader says it zeroed them...
    assert!(
        ev.contains(&Event::BssZero {
            addr: bss.start,
            len: tail_end - bss.start
        }),
        "no BssZero for {:#x}..{tail_end:#x}:\n{}",
        bss.start,
        dump(&ev)
    );
    // ...and they are zero in memory.
    // SAFETY: [bss.start, tail_end) lies in the mapped, readable segment.
    let mem = unsafe { std::slice::from_raw_parts(bss.start as *const u8, tail_end - bss.start) };
    assert!(mem.iter().all(|&b| b == 0), "tail not zeroed: {mem:?}");

    // SAFETY: every type is the prototype in testlibs/bss.c.
    unsafe {
        let size = l.get::<extern "C" fn() -> c_long>("bss_size").unwrap();
        let sum = l.get::<extern "C" fn() -> c_long>("bss_sum").unwrap();
        let set = l.get::<extern "C" fn(c_long, c_int)>("bss_set").unwrap();
        let get = l.get::<extern "C" fn(c_long) -> c_int>("bss_get").unwrap();
        let before = l
            .get::<extern "C" fn() -> c_int>("read_data_before_bss")
            .unwrap();
        let data_sum = l.get::<extern "C" fn() -> c_long>("bss_data_sum").unwrap();
        assert_eq!(size(), 8 << 20);
        assert_eq!(sum(), 0, "every byte of the 8 MiB .bss is zero");
        assert_eq!(before(), 7);
        assert_eq!(data_sum(), 15000, ".data spanning pages mapped right");
        assert_eq!(get(0), 0);
        set(0, 1);
        set(12345, 0x1ff);
        set((8 << 20) - 1, 3);
        set(8 << 20, 9); // out of range: ignored
        assert_eq!(get(0), 1);
        assert_eq!(get(12345), 0xff);
        assert_eq!(get((8 << 20) - 1), 3);
        assert_eq!(get(8 << 20), -1);
        assert_eq!(get(-1), -1);
        assert_eq!(sum(), 1 + 0xff + 3);
    }
}

#[test]
fn const_data_crc32() {
    let _g = shared();
    let l = open(&lib("libconst.so"));
    // SAFETY: crc32_of and const_message have testlibs/const.c's types;
    // crc32_of is given NUL-terminated strings.
    unsafe {
        let crc = l
            .get::<extern "C" fn(*const c_char) -> c_uint>("crc32_of")
            .unwrap();
        assert_eq!(crc(c"123456789".as_ptr()), 0xCBF4_3926);
        assert_eq!(crc(c"".as_ptr()), 0);
        assert_eq!(crc(c"a".as_ptr()), 0xE8B7_BE43);
        let msg = l
            .get::<extern "C" fn() -> *const c_char>("const_message")
            .unwrap();
        let p = msg();
        assert_eq!(cstr(p), "constant message from libconst");
        // The string lies in a read-only segment of the library.
        let seg = l
            .segments()
            .iter()
            .find(|s| s.range.contains(&(p as usize)))
            .expect("the string lies in the library");
        assert_eq!(seg.prot & libc::PROT_WRITE, 0);
    }
}

static CALLBACKS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn triple_plus_one(x: c_int) -> c_int {
    CALLBACKS.fetch_add(1, Ordering::SeqCst);
    3 * x + 1
}

extern "C" fn append_digit(acc: c_long, x: c_long) -> c_long {
    acc * 10 + x
}

#[test]
fn callbacks_into_rust() {
    let _g = shared();
    let l = open(&lib("libcallback.so"));
    // SAFETY: call_twice and fold have testlibs/callback.c's types, the
    // callbacks match the function-pointer parameters, and fold reads at
    // most the n elements of `xs`.
    unsafe {
        type Cb = extern "C" fn(c_int) -> c_int;
        let twice = l
            .get::<extern "C" fn(Cb, c_int) -> c_int>("call_twice")
            .unwrap();
        let before = CALLBACKS.load(Ordering::SeqCst);
        assert_eq!(twice(triple_plus_one, 2), 22); // 3 * (3 * 2 + 1) + 1
        assert_eq!(CALLBACKS.load(Ordering::SeqCst) - before, 2);

        type Op = extern "C" fn(c_long, c_long) -> c_long;
        let fold = l
            .get::<extern "C" fn(*const c_long, c_long, Op, c_long) -> c_long>("fold")
            .unwrap();
        let xs: [c_long; 4] = [1, 2, 3, 4];
        assert_eq!(
            fold(xs.as_ptr(), 4, append_digit, 0),
            1234,
            "left fold, in order"
        );
        assert_eq!(fold(xs.as_ptr(), 4, append_digit, 9), 91234);
        assert_eq!(fold(xs.as_ptr(), 0, append_digit, 7), 7);
    }
}

#[test]
fn uselibc_binds_to_the_host_libc() {
    let _g = shared();
    let (_dir, path) = private_copy("libuselibc.so");
    let (l, sink) = open_traced(&path);
    // SAFETY: every type is the prototype in testlibs/uselibc.c; the
    // strings are NUL-terminated, `buf` holds the n bytes format_double may
    // write, and make_greeting's result comes from the host libc's malloc,
    // so libc::free may release it.
    unsafe {
        let make = l
            .get::<extern "C" fn(*const c_char) -> *mut c_char>("make_greeting")
            .unwrap();
        let free_greeting = l
            .get::<extern "C" fn(*mut c_char)>("free_greeting")
            .unwrap();
        let g = make(c"bob".as_ptr());
        assert_eq!(cstr(g), "hello, bob!");
        free_greeting(g);
        // Allocated by the library, freed here: one malloc in the process.
        let g = make(c"alice".as_ptr());
        assert_eq!(cstr(g), "hello, alice!");
        libc::free(g.cast());

        let errno_fn = l
            .get::<extern "C" fn() -> c_int>("errno_after_bad_open")
            .unwrap();
        assert_eq!(errno_fn(), libc::ENOENT);
        let qs = l.get::<extern "C" fn() -> c_long>("use_qsort").unwrap();
        assert_eq!(qs(), 1191);
        let fmt = l
            .get::<extern "C" fn(*mut c_char, c_int, f64) -> c_int>("format_double")
            .unwrap();
        let mut buf = [0 as c_char; 16];
        assert_eq!(fmt(buf.as_mut_ptr(), 16, 1.23456), 5);
        assert_eq!(cstr(buf.as_ptr()), "1.235");
        assert_eq!(fmt(buf.as_mut_ptr(), 3, -2.5), 6, "snprintf truncates");
        assert_eq!(cstr(buf.as_ptr()), "-2");
    }
    let ev = sink.events();
    for sym in ["malloc", "free", "snprintf", "qsort", "__errno_location"] {
        let b = binds(&ev, &path, sym);
        assert_eq!(b.len(), 1, "{sym}:\n{}", dump(&ev));
        assert!(
            matches!(&b[0].1, Provider::Host(h) if h.contains("libc.so")),
            "{sym} provided by {:?}",
            b[0].1
        );
        assert_eq!(b[0].2, host_addr(sym), "{sym} bound to the host's copy");
    }
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::HostLibrary { name, .. } if name == "libc.so.6")));
    let deps = l.dependencies();
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert_eq!(deps[0].0, "libc.so.6");
    assert!(deps[0].2, "libc.so.6 is the host's: {deps:?}");
}

#[test]
fn interpose_host_global_scope_comes_first() {
    let _g = shared();
    let (_dir, path) = private_copy("libinterpose.so");
    let (l, sink) = open_traced(&path);
    let me = std::process::id() as c_int;
    // SAFETY: each is an `int f(void)` in testlibs/interpose.c.
    unsafe {
        let calls = l
            .get::<extern "C" fn() -> c_int>("lib_calls_getpid")
            .unwrap();
        let direct = l
            .get::<extern "C" fn() -> c_int>("lib_getpid_direct")
            .unwrap();
        let hook = l
            .get::<extern "C" fn() -> c_int>("host_hook_result")
            .unwrap();
        assert_eq!(calls(), me, "getpid through the PLT is libc's");
        assert_eq!(direct(), -42, "the hidden alias is the library's own");
        assert_eq!(hook(), -1, "undefined weak function resolves to 0");
    }
    let ev = sink.events();
    let b = binds(&ev, &path, "getpid");
    assert_eq!(b.len(), 1, "{}", dump(&ev));
    assert!(
        matches!(&b[0].1, Provider::Host(h) if h.contains("libc.so")),
        "getpid provided by {:?}",
        b[0].1
    );
    assert_eq!(b[0].2, host_addr("getpid"));
    let w = binds(&ev, &path, "soloader_host_hook");
    assert_eq!(w.len(), 1, "{}", dump(&ev));
    assert_eq!(w[0].1, Provider::UndefinedWeak);
    assert_eq!(w[0].2, 0);

    // The same library under the system loader behaves the same way.
    let (v, child_pid) = glibc_calls(&[
        "libinterpose.so:lib_calls_getpid:i",
        "libinterpose.so:lib_getpid_direct:i",
        "libinterpose.so:host_hook_result:i",
    ]);
    assert_eq!(v, [child_pid, -42, -1]);
}

#[test]
fn symbol_deref_copy_and_addr() {
    let _g = shared();
    let l = open(&lib("libarith.so"));
    assert_eq!(l.soname(), "libarith.so");
    assert_eq!(l.path(), lib("libarith.so"));
    let span = l.span();
    // SAFETY: `int add(int, int)` (testlibs/arith.c); arith_add_ptr is an
    // initialised, relocated function-pointer variable of the loaded `l`.
    unsafe {
        let add = l
            .get::<extern "C" fn(c_int, c_int) -> c_int>("add")
            .unwrap();
        let copy = add;
        let f: extern "C" fn(c_int, c_int) -> c_int = *add;
        assert_eq!(f(20, 22), 42);
        assert_eq!((*copy)(1, 2), 3);
        assert_eq!(add.addr(), f as usize);
        assert!(span.contains(&add.addr()));
        let text = l
            .segments()
            .iter()
            .find(|s| s.range.contains(&add.addr()))
            .expect("add lies in a segment");
        assert_ne!(text.prot & libc::PROT_EXEC, 0, "add lies in code");
        // A data symbol: the Symbol derefs to the pointer.
        let ptr = l.get::<*const usize>("arith_add_ptr").unwrap();
        assert_eq!(*ptr as usize, ptr.addr());
        assert!(span.contains(&ptr.addr()));
        assert_eq!(ptr.read(), addr_of(&l, "add_impl"));
    }
}

#[test]
fn get_of_a_missing_symbol_names_it() {
    let _g = shared();
    let path = lib("libarith.so");
    let l = open(&path);
    // SAFETY: the lookup fails; only the error is used.
    let err = unsafe { l.get::<extern "C" fn()>("no_such_symbol_here") }
        .err()
        .expect("get of a missing symbol must fail");
    match &err {
        Error::SymbolNotFound {
            path: p,
            symbol,
            version,
        } => {
            assert_eq!(p, &path);
            assert_eq!(symbol, "no_such_symbol_here");
            assert_eq!(version, &None);
        }
        other => panic!("expected SymbolNotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("no_such_symbol_here") && msg.contains("libarith.so"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    // A local (static) symbol is not exported either.
    // SAFETY: the lookup fails; only the error is used.
    assert!(matches!(
        unsafe { l.get::<usize>("add_calls") },
        Err(Error::SymbolNotFound { .. })
    ));
}

#[test]
fn get_with_a_non_pointer_sized_type_is_refused() {
    let _g = shared();
    let l = open(&lib("libarith.so"));
    // SAFETY: refused for its size; nothing is read or called.
    let e = unsafe { l.get::<u32>("add") }
        .err()
        .expect("u32 is refused");
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("add"), "{e}");
    // SAFETY: as above.
    let e = unsafe { l.get::<[usize; 2]>("add") }
        .err()
        .expect("16 bytes refused");
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    // SAFETY: as above.
    let e = unsafe { l.get_versioned::<u8>("add", "V") }
        .err()
        .expect("u8 refused");
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    // Pointer-sized non-pointer types are the caller's business.
    // SAFETY: only success is checked; the symbol is never called or read.
    assert!(unsafe { l.get::<usize>("add") }.is_ok());
}

#[test]
fn open_of_a_missing_file_is_an_error() {
    let _g = shared();
    let path = lib("libdoes_not_exist.so");
    match Library::open(&path) {
        Err(e) => assert_eq!(e.path(), path, "{e}"),
        Ok(_) => panic!("opened a file that does not exist"),
    }
}
