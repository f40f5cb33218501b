//! The system loader as the reference: a workload is written once, generic
//! over how its symbols are found ([`Sym`]). The parent runs it over a
//! library soloader loaded ([`soloader_get`]); a child process (the test
//! binary re-executed, filtered to one ignored test that calls
//! [`system_loader_child`]) runs it over glibc's `dlopen`/`dlsym`, and
//! reports its answer and the files glibc mapped ([`system_loader`]).
//! Both answers are [`Report`]s, compared as text. The parent never has
//! the library loaded by glibc ([`assert_unknown_to_system_loader`]).
//!
//! Also: typed symbol lookup ([`func`]), C strings, and OpenSSL digests
//! that several workloads compute.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::fmt::Display;
use std::path::{Path, PathBuf};

use soloader::Library;

use super::{canonical, child_selection, child_stdout, dlerror, emit, glibc_dlopen, self_test};

/// How a workload obtains a symbol's address (null when absent).
pub type Sym<'a> = &'a dyn Fn(&str) -> *const c_void;

/// A workload's answer: ordered `key=value` pairs, compared as text.
#[derive(Default, Debug)]
pub struct Report(Vec<(String, String)>);

impl Report {
    pub fn put(&mut self, key: &str, value: impl Display) {
        let v = value.to_string();
        assert!(
            !v.contains('\n') && !v.contains("; "),
            "report value for {key} must be one line without '; ': {v:?}"
        );
        self.0.push((key.to_string(), v));
    }

    pub fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("report has no {key}: {self:?}"))
    }

    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One workload, run by both loaders.
pub struct Workload {
    /// The child's selector.
    pub key: &'static str,
    /// What both loaders open.
    pub soname: &'static str,
    /// Symbols whose defining file the child reports (`dladdr`), to check
    /// both loaders used the same files.
    pub probes: &'static [&'static str],
    pub run: fn(Sym<'_>) -> Report,
}

/// The child half, the body of the ignored test the parent re-executes:
/// does nothing unless `env` names one of `workloads`; then opens it with
/// the system loader, prints the file defining each probe and the
/// workload's report.
pub fn system_loader_child(env: &str, workloads: &[&Workload]) {
    let Some(w) = child_selection(env, workloads, |w| w.key) else {
        return;
    };
    // RTLD_NOW (RTLD_LOCAL is the default); the library's constructors
    // are the system's own business.
    let handle = glibc_dlopen(Path::new(w.soname));
    let get = |sym: &str| -> *const c_void {
        let c = CString::new(sym).unwrap();
        // SAFETY: a live handle and a valid C string.
        unsafe { libc::dlsym(handle, c.as_ptr()) as *const c_void }
    };
    for probe in w.probes {
        let addr = get(probe);
        assert!(!addr.is_null(), "dlsym({probe}): {}", dlerror());
        // SAFETY: Dl_info is plain data, filled by dladdr.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let ok = unsafe { libc::dladdr(addr, &mut info) };
        assert!(ok != 0 && !info.dli_fname.is_null(), "dladdr({probe})");
        // SAFETY: dladdr returned a NUL-terminated file name.
        let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
        emit(
            "FILE:",
            format_args!("{probe}={}", canonical(Path::new(&*file)).display()),
        );
    }
    let report = (w.run)(&get);
    emit("RESULT:", report.render());
}

/// What the system loader answered in the child.
pub struct SystemAnswer {
    /// `probe -> canonical file` for each of the workload's probes.
    pub files: Vec<(String, PathBuf)>,
    /// The rendered report.
    pub result: String,
}

impl SystemAnswer {
    /// The canonical path of the file defining `probe`.
    pub fn file(&self, probe: &str) -> &Path {
        self.files
            .iter()
            .find(|(p, _)| p == probe)
            .map(|(_, f)| f.as_path())
            .unwrap_or_else(|| panic!("child reported no file for {probe}"))
    }
}

/// Runs `w` with the system loader in a child: this test binary's ignored
/// test `child_test`, which calls [`system_loader_child`] with `env`.
pub fn system_loader(child_test: &str, env: &str, w: &Workload) -> SystemAnswer {
    let mut cmd = self_test(child_test);
    cmd.env(env, w.key);
    let stdout = child_stdout(&mut cmd, &format!("system-loader child for {}", w.soname));
    let files = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FILE:"))
        .filter_map(|l| l.split_once('='))
        .map(|(p, f)| (p.to_string(), PathBuf::from(f)))
        .collect();
    let result = super::tagged(&stdout, "RESULT:").to_string();
    SystemAnswer { files, result }
}

/// The system loader does not have `soname` in this process (soloader
/// did not delegate to `dlopen`).
pub fn assert_unknown_to_system_loader(soname: &str, when: &str) {
    let name = CString::new(soname).unwrap();
    // SAFETY: RTLD_NOLOAD only looks the name up; it never loads.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if !h.is_null() {
        // SAFETY: balancing the reference RTLD_NOLOAD just took.
        unsafe { libc::dlclose(h) };
        panic!("{when}: the system loader has {soname} loaded in this process");
    }
}

/// The soloader half: the symbol getter over a loaded library (and its
/// dependencies); null when absent.
pub fn soloader_get(lib: &Library) -> impl Fn(&str) -> *const c_void + '_ {
    move |name: &str| {
        // SAFETY: only the address is taken here; the workload gives it
        // its real type.
        unsafe { lib.get::<*const c_void>(name) }
            .map(|s| *s)
            .unwrap_or(std::ptr::null())
    }
}

/// The address of `name` as the function type `T`; panics if absent.
///
/// # Safety
/// `T` must be the C type of `name` (a function pointer type).
pub unsafe fn func<T: Copy>(get: Sym<'_>, name: &str) -> T {
    assert_eq!(
        std::mem::size_of::<T>(),
        std::mem::size_of::<*const c_void>()
    );
    let p = get(name);
    assert!(!p.is_null(), "symbol {name} not found");
    // SAFETY: both pointer-sized; the caller vouches for the type.
    unsafe { std::mem::transmute_copy::<*const c_void, T>(&p) }
}

/// Copies a C string; panics on null.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
pub unsafe fn cstring(p: *const c_char) -> String {
    assert!(!p.is_null(), "null C string");
    // SAFETY: non-null and NUL-terminated (caller).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Copies a C string; `(null)` for null.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
pub unsafe fn cstring_or_null(p: *const c_char) -> String {
    if p.is_null() {
        return "(null)".into();
    }
    // SAFETY: the caller's contract.
    unsafe { cstring(p) }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// OpenSSL 3 (libcrypto) digests, over any [`Sym`].

/// `const EVP_MD *EVP_sha256(void)` and similar.
type Md = unsafe extern "C" fn() -> *const c_void;

/// `SHA256(data)`, which must return its output buffer.
///
/// # Safety
/// `get` finds libcrypto 3's symbols.
pub unsafe fn sha256(get: Sym<'_>, data: &[u8]) -> [u8; 32] {
    type Sha256 = unsafe extern "C" fn(*const u8, usize, *mut u8) -> *mut u8;
    // SAFETY: OpenSSL 3's prototype (openssl/sha.h); a 32-byte buffer.
    unsafe {
        let sha256: Sha256 = func(get, "SHA256");
        let mut md = [0u8; 32];
        let out = sha256(data.as_ptr(), data.len(), md.as_mut_ptr());
        assert_eq!(out, md.as_mut_ptr(), "SHA256 returns its output buffer");
        md
    }
}

/// SHA-256 of one million 'a', in 1000 updates of an EVP digest context.
///
/// # Safety
/// `get` finds libcrypto 3's symbols.
pub unsafe fn sha256_million_a(get: Sym<'_>) -> [u8; 32] {
    type CtxNew = unsafe extern "C" fn() -> *mut c_void;
    type CtxFree = unsafe extern "C" fn(*mut c_void);
    type Init = unsafe extern "C" fn(*mut c_void, *const c_void, *mut c_void) -> c_int;
    type Update = unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> c_int;
    type Final = unsafe extern "C" fn(*mut c_void, *mut u8, *mut c_uint) -> c_int;
    // SAFETY: OpenSSL 3's prototypes (openssl/evp.h); a 32-byte output
    // buffer (SHA-256); the context is used between new and free.
    unsafe {
        let ctx_new: CtxNew = func(get, "EVP_MD_CTX_new");
        let ctx_free: CtxFree = func(get, "EVP_MD_CTX_free");
        let evp_sha256: Md = func(get, "EVP_sha256");
        let init: Init = func(get, "EVP_DigestInit_ex");
        let update: Update = func(get, "EVP_DigestUpdate");
        let fin: Final = func(get, "EVP_DigestFinal_ex");
        let ctx = ctx_new();
        assert!(!ctx.is_null(), "EVP_MD_CTX_new");
        let md_type = evp_sha256();
        assert!(!md_type.is_null(), "EVP_sha256");
        assert_eq!(
            init(ctx, md_type, std::ptr::null_mut()),
            1,
            "EVP_DigestInit_ex"
        );
        let block = [b'a'; 1000];
        for _ in 0..1000 {
            assert_eq!(update(ctx, block.as_ptr() as *const c_void, block.len()), 1);
        }
        let mut md = [0u8; 32];
        let mut len: c_uint = 0;
        assert_eq!(fin(ctx, md.as_mut_ptr(), &mut len), 1, "EVP_DigestFinal_ex");
        ctx_free(ctx);
        assert_eq!(len, 32);
        md
    }
}

/// HMAC-SHA-256 of `data` under `key`.
///
/// # Safety
/// `get` finds libcrypto 3's symbols.
pub unsafe fn hmac_sha256(get: Sym<'_>, key: &[u8], data: &[u8]) -> [u8; 32] {
    type Hmac = unsafe extern "C" fn(
        *const c_void,
        *const c_void,
        c_int,
        *const u8,
        usize,
        *mut u8,
        *mut c_uint,
    ) -> *mut u8;
    // SAFETY: OpenSSL 3's prototypes (openssl/hmac.h, evp.h); a 32-byte
    // output buffer (SHA-256).
    unsafe {
        let hmac: Hmac = func(get, "HMAC");
        let evp_sha256: Md = func(get, "EVP_sha256");
        let mut md = [0u8; 32];
        let mut len: c_uint = 0;
        let out = hmac(
            evp_sha256(),
            key.as_ptr() as *const c_void,
            key.len() as c_int,
            data.as_ptr(),
            data.len(),
            md.as_mut_ptr(),
            &mut len,
        );
        assert!(!out.is_null() && len == 32, "HMAC");
        md
    }
}
