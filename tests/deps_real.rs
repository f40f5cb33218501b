//! Real libraries with real dependencies, loaded by soloader and checked
//! against the system loader.
//!
//! - **libpng** (`libpng16.so.16`, which needs `libz.so.1`, `libm.so.6`
//!   and `libc.so.6`): soloader loads libpng *and* libz itself, and binds
//!   libm and libc to the host. A PNG written by a small encoder in this
//!   file (stored deflate blocks, all five scanline filters, CRC-32 and
//!   Adler-32 in Rust: nothing of the host's zlib) is decoded through
//!   libpng's simplified API; libpng then encodes the pixels itself (its
//!   deflate runs in soloader's libz) and decodes them again; a PNG with a
//!   bad CRC must fail through libpng's `setjmp`/`longjmp` error path.
//! - **TLS 1.3**: a self-signed P-256 certificate made in memory with a
//!   soloader-loaded `libcrypto.so.3`, then a full handshake between a
//!   client and a server `SSL` of a soloader-loaded `libssl.so.3` over a
//!   BIO pair, one round trip of application data, and the peer's
//!   certificate verified against it. libssl's `libcrypto.so.3` must be the
//!   very copy the test opened itself.
//!
//! Each workload is written once, generic over how symbols are found: in
//! this process through [`Library::get`], and with `dlopen`/`dlsym` in a
//! child process (this test binary re-executed, filtered to the ignored
//! [`deps_real_child`] test), so this process never has any of these
//! libraries loaded by glibc. Both report the same `key=value` lines.
//!
//! Every test takes [`exclusive`]: they look at process-wide state (what the
//! system loader has loaded).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::sysref::{
    self, assert_unknown_to_system_loader, cstring_or_null, func, soloader_get, Report, Sym,
    SystemAnswer, Workload,
};
use common::{binds, canonical, exclusive, mapped_files_named};
use soloader::{Event, Library, Options, Provider, VecSink};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Selects the child's workload.
const CHILD_ENV: &str = "SOLOADER_DEPS_REAL_CHILD";
/// The ignored test the child process runs.
const CHILD_TEST: &str = "deps_real_child";

const PNG: Workload = Workload {
    key: "png",
    soname: "libpng16.so.16",
    probes: &["png_access_version_number", "zlibVersion"],
    run: png_workload,
};

const TLS: Workload = Workload {
    key: "tls",
    soname: "libssl.so.3",
    probes: &["SSL_new", "EVP_PKEY_Q_keygen"],
    run: tls_workload,
};

const WORKLOADS: [&Workload; 2] = [&PNG, &TLS];

/// The system-loader half: runs only in the child process.
#[test]
#[ignore = "the system-loader half of the comparisons; the other tests run it in a child process"]
fn deps_real_child() {
    sysref::system_loader_child(CHILD_ENV, &WORKLOADS);
}

/// Runs `w` with the system loader in a child.
fn system_loader(w: &Workload) -> SystemAnswer {
    sysref::system_loader(CHILD_TEST, CHILD_ENV, w)
}

/// The provider of every `Bind` event of `path`'s references to `symbol`.
fn bindings(events: &[Event], path: &Path, symbol: &str) -> Vec<Provider> {
    binds(events, path, symbol)
        .into_iter()
        .map(|(_, provider, _)| provider)
        .collect()
}

/// The canonical paths of the `Open` events, in order.
fn opened(events: &[Event]) -> Vec<PathBuf> {
    common::opened(events)
        .iter()
        .map(|p| canonical(p))
        .collect()
}

// ---------------------------------------------------------------------------
// A minimal PNG encoder: CRC-32, Adler-32, stored deflate blocks, filters.
// ---------------------------------------------------------------------------

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A zlib stream of stored (uncompressed) deflate blocks of at most
/// `block` bytes each.
fn zlib_stored(data: &[u8], block: usize) -> Vec<u8> {
    // CMF: deflate, 32 KiB window; FLG makes CMF*256+FLG a multiple of 31.
    let mut z = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = data.chunks(block).collect();
    for (i, c) in chunks.iter().enumerate() {
        // BFINAL in bit 0, BTYPE 00 (stored), padded to the byte.
        z.push(u8::from(i + 1 == chunks.len()));
        let len = c.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(c);
    }
    z.extend_from_slice(&adler32(data).to_be_bytes());
    z
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
const W: usize = 16;
const H: usize = 16;

/// The test image: 16x16 RGBA, every channel a different gradient.
fn gradient() -> Vec<u8> {
    let mut px = Vec::with_capacity(W * H * 4);
    for y in 0..H {
        for x in 0..W {
            px.extend_from_slice(&[
                (x * 16 + y) as u8,
                (y * 16 + x) as u8,
                ((x ^ y) * 16) as u8,
                (255 - (x + y) * 4) as u8,
            ]);
        }
    }
    px
}

/// Encodes 8-bit RGBA pixels as a PNG; row `y` uses filter `y % 5` (None,
/// Sub, Up, Average, Paeth); the zlib stream is cut into 97-byte stored
/// blocks and 211-byte IDAT chunks, so neither lines up with anything.
fn encode_png(px: &[u8], w: usize, h: usize) -> Vec<u8> {
    const BPP: usize = 4;
    let stride = w * BPP;
    let mut raw = Vec::with_capacity(h * (stride + 1));
    for y in 0..h {
        let row = &px[y * stride..(y + 1) * stride];
        let prev = if y == 0 {
            None
        } else {
            Some(&px[(y - 1) * stride..y * stride])
        };
        let filter = (y % 5) as u8;
        raw.push(filter);
        for i in 0..stride {
            let a = if i >= BPP { row[i - BPP] } else { 0 };
            let b = prev.map_or(0, |p| p[i]);
            let c = if i >= BPP {
                prev.map_or(0, |p| p[i - BPP])
            } else {
                0
            };
            let predictor = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                _ => paeth(a, b, c),
            };
            raw.push(row[i].wrapping_sub(predictor));
        }
    }
    let mut out = PNG_SIGNATURE.to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    // Bit depth 8, colour type 6 (RGBA), deflate, adaptive filters, no
    // interlace.
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    let z = zlib_stored(&raw, 97);
    for part in z.chunks(211) {
        png_chunk(&mut out, b"IDAT", part);
    }
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// The chunk types of a PNG, each CRC checked with this file's CRC-32.
fn png_chunks(png: &[u8]) -> Result<Vec<String>, String> {
    if png.get(..8) != Some(&PNG_SIGNATURE[..]) {
        return Err("no PNG signature".into());
    }
    let mut kinds = Vec::new();
    let mut at = 8;
    while at < png.len() {
        let len = png
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
            .ok_or("truncated chunk length")?;
        let body = png
            .get(at + 4..at + 8 + len)
            .ok_or("truncated chunk body")?;
        let crc = png
            .get(at + 8 + len..at + 12 + len)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
            .ok_or("truncated chunk CRC")?;
        let kind = String::from_utf8_lossy(&body[..4]).into_owned();
        if crc32(body) != crc {
            return Err(format!("bad CRC in {kind} at {at}"));
        }
        kinds.push(kind);
        at += 12 + len;
    }
    Ok(kinds)
}

// ---------------------------------------------------------------------------
// 1. libpng (+ libz, soloader-loaded; libm, libc host)
// ---------------------------------------------------------------------------

/// `png_image` from png.h (libpng 1.6).
#[repr(C)]
struct PngImage {
    opaque: *mut c_void,
    version: u32,
    width: u32,
    height: u32,
    format: u32,
    flags: u32,
    colormap_entries: u32,
    warning_or_error: u32,
    message: [c_char; 64],
}

const PNG_IMAGE_VERSION: u32 = 1;
const PNG_FORMAT_FLAG_ALPHA: u32 = 0x01;
const PNG_FORMAT_FLAG_COLOR: u32 = 0x02;
const PNG_FORMAT_RGBA: u32 = PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA;

impl PngImage {
    fn new() -> PngImage {
        PngImage {
            opaque: std::ptr::null_mut(),
            version: PNG_IMAGE_VERSION,
            width: 0,
            height: 0,
            format: 0,
            flags: 0,
            colormap_entries: 0,
            warning_or_error: 0,
            message: [0; 64],
        }
    }

    fn message(&self) -> String {
        // SAFETY: libpng keeps `message` NUL-terminated (it is zeroed here
        // first).
        unsafe { cstring_or_null(self.message.as_ptr()) }
    }
}

fn png_workload(get: Sym<'_>) -> Report {
    type VersionNumber = unsafe extern "C" fn() -> u32;
    type GetLibpngVer = unsafe extern "C" fn(*const c_void) -> *const c_char;
    type ZlibVersion = unsafe extern "C" fn() -> *const c_char;
    type BeginRead = unsafe extern "C" fn(*mut PngImage, *const c_void, usize) -> c_int;
    type FinishRead =
        unsafe extern "C" fn(*mut PngImage, *const c_void, *mut c_void, i32, *mut c_void) -> c_int;
    type WriteToMemory = unsafe extern "C" fn(
        *mut PngImage,
        *mut c_void,
        *mut usize,
        c_int,
        *const c_void,
        i32,
        *const c_void,
    ) -> c_int;
    type ImageFree = unsafe extern "C" fn(*mut PngImage);

    let mut r = Report::default();
    let pixels = gradient();
    let file = encode_png(&pixels, W, H);
    assert_eq!(
        png_chunks(&file)
            .expect("own PNG")
            .first()
            .map(String::as_str),
        Some("IHDR")
    );

    // SAFETY: every type is libpng 1.6's prototype (png.h: png_uint_32 is
    // u32, png_int_32 i32, png_alloc_size_t size_t); `PngImage` is
    // `png_image`; buffers are as large as the image they hold.
    unsafe {
        let version_number: VersionNumber = func(get, "png_access_version_number");
        let libpng_ver: GetLibpngVer = func(get, "png_get_libpng_ver");
        let zlib_version: ZlibVersion = func(get, "zlibVersion");
        let begin_read: BeginRead = func(get, "png_image_begin_read_from_memory");
        let finish_read: FinishRead = func(get, "png_image_finish_read");
        let write_to_memory: WriteToMemory = func(get, "png_image_write_to_memory");
        let image_free: ImageFree = func(get, "png_image_free");

        r.put("version_number", version_number());
        r.put("libpng_ver", cstring_or_null(libpng_ver(std::ptr::null())));
        r.put("zlib", cstring_or_null(zlib_version()));

        // Decode this file's PNG.
        let decode = |png: &[u8]| -> Result<(PngImage, Vec<u8>), String> {
            let mut img = PngImage::new();
            if begin_read(&mut img, png.as_ptr() as *const c_void, png.len()) == 0 {
                let m = img.message();
                image_free(&mut img);
                return Err(m);
            }
            let header = (img.width, img.height, img.format);
            img.format = PNG_FORMAT_RGBA;
            let mut out = vec![0u8; img.width as usize * img.height as usize * 4];
            let ok = finish_read(
                &mut img,
                std::ptr::null(),
                out.as_mut_ptr() as *mut c_void,
                0,
                std::ptr::null_mut(),
            );
            if ok == 0 {
                let m = img.message();
                image_free(&mut img);
                return Err(m);
            }
            image_free(&mut img);
            (img.width, img.height, img.format) = header;
            Ok((img, out))
        };
        let (img, out) = decode(&file).unwrap_or_else(|m| panic!("libpng decode: {m}"));
        r.put(
            "header",
            format!(
                "{}x{} format={:#x} warning_or_error={}",
                img.width, img.height, img.format, img.warning_or_error
            ),
        );
        r.put("pixels_match", out == pixels);
        r.put("pixels_crc", format!("{:08x}", crc32(&out)));

        // libpng encodes (deflate in libz), then decodes its own file.
        let mut img = PngImage::new();
        img.width = W as u32;
        img.height = H as u32;
        img.format = PNG_FORMAT_RGBA;
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = buf.len();
        let ok = write_to_memory(
            &mut img,
            buf.as_mut_ptr() as *mut c_void,
            &mut size,
            0,
            pixels.as_ptr() as *const c_void,
            0,
            std::ptr::null(),
        );
        assert!(ok != 0, "png_image_write_to_memory: {}", img.message());
        image_free(&mut img);
        buf.truncate(size);
        let kinds = png_chunks(&buf).unwrap_or_else(|e| panic!("libpng's PNG: {e}"));
        r.put("written_chunks", kinds.join(","));
        r.put("written_len", buf.len());
        r.put("written_crc", format!("{:08x}", crc32(&buf)));
        // Stored blocks would be larger than the raw scanlines: libz
        // really compressed.
        r.put("compressed", buf.len() < H * (W * 4 + 1));
        let (_, again) = decode(&buf).unwrap_or_else(|m| panic!("libpng re-decode: {m}"));
        r.put("roundtrip_match", again == pixels);

        // Errors: libpng reports them with longjmp out of its error
        // handler, back into png_safe_execute.
        let mut bad = file.clone();
        bad[8 + 8 + 13] ^= 0xff; // the IHDR CRC
        r.put(
            "bad_crc",
            decode(&bad).err().unwrap_or_else(|| "accepted".into()),
        );
        let mut bad = file.clone();
        bad[1] = b'Q';
        r.put(
            "bad_signature",
            decode(&bad).err().unwrap_or_else(|| "accepted".into()),
        );
        r.put(
            "truncated",
            decode(&file[..file.len() / 2])
                .err()
                .unwrap_or_else(|| "accepted".into()),
        );
    }
    r
}

#[test]
fn libpng_with_soloader_loaded_libz_matches_system_loader() {
    let _g = exclusive();
    assert_unknown_to_system_loader("libpng16.so.16", "before");
    assert_unknown_to_system_loader("libz.so.1", "before");
    assert!(
        mapped_files_named("libz.so").is_empty(),
        "this process must not have libz mapped before the test: {:?}",
        mapped_files_named("libz.so")
    );

    let sink = Arc::new(VecSink::new());
    let lib = Library::open_with(PNG.soname, &Options::new().trace(sink.clone()))
        .unwrap_or_else(|e| panic!("soloader: open {}: {e}", PNG.soname));
    let events = sink.events();

    // The dependencies: libz loaded by soloader, libm and libc the host's.
    let deps = lib.dependencies();
    let dep = |name: &str| {
        deps.iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("libpng has no dependency {name}: {deps:?}"))
            .clone()
    };
    assert_eq!(
        deps.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>(),
        ["libz.so.1", "libm.so.6", "libc.so.6"],
        "DT_NEEDED of libpng, in order"
    );
    let (_, zpath, zhost) = dep("libz.so.1");
    assert!(
        !zhost,
        "libz must be loaded by soloader, not bound to the host: {deps:?}"
    );
    let (_, mpath, mhost) = dep("libm.so.6");
    assert!(mhost, "libm must be bound to the host: {deps:?}");
    assert!(
        mpath.to_string_lossy().contains("libm.so.6"),
        "libm's host path: {}",
        mpath.display()
    );
    assert!(
        dep("libc.so.6").2,
        "libc must be bound to the host: {deps:?}"
    );

    // What was opened: libpng and libz, each once, nothing else — in the
    // attempt that loaded them. (libm, which this test process does not
    // have yet, is loaded by the system loader between attempts, with
    // soloader's lock released: the first attempt stops there and is
    // undone.)
    let zpath = canonical(&zpath);
    let last_attempt = events
        .iter()
        .rposition(|e| {
            matches!(
                e,
                Event::Search {
                    needed_by: None,
                    ..
                }
            )
        })
        .unwrap_or(0);
    assert_eq!(
        opened(&events[last_attempt..]),
        [canonical(lib.path()), zpath.clone()],
        "files soloader opened"
    );
    // libpng's calls into zlib bind to soloader's libz.
    // (inflateValidate is versioned: ZLIB_1.2.9.)
    for s in [
        "inflate",
        "inflateInit2_",
        "inflateValidate",
        "deflate",
        "deflateInit2_",
        "crc32",
    ] {
        let b = bindings(&events, lib.path(), s);
        assert!(
            !b.is_empty()
                && b.iter()
                    .all(|p| matches!(p, Provider::Loaded(q) if canonical(q) == zpath)),
            "libpng's {s} must bind to soloader's {}: {b:?}",
            zpath.display()
        );
    }
    // …and its maths to the host's libm (pow@GLIBC_2.29 is only there).
    let pow = bindings(&events, lib.path(), "pow");
    assert!(
        !pow.is_empty()
            && pow
                .iter()
                .all(|p| matches!(p, Provider::Host(h) if h.contains("libm.so"))),
        "libpng's pow must bind to the host's libm: {pow:?}"
    );

    let get = soloader_get(&lib);
    // The zlib the workload reaches through libpng's scope is soloader's.
    let zv = get("zlibVersion") as usize;
    let owner = soloader::lookup(zv).expect("zlibVersion is in a soloader library");
    assert_eq!(canonical(&owner.path), zpath);
    assert_eq!(owner.symbol.as_deref(), Some("zlibVersion"));

    let mine = png_workload(&get);
    drop(get);
    assert_unknown_to_system_loader("libz.so.1", "after the workload");
    assert_unknown_to_system_loader("libpng16.so.16", "after the workload");

    let system = system_loader(&PNG);
    assert_eq!(
        canonical(lib.path()),
        system.file("png_access_version_number"),
        "both loaders load the same libpng"
    );
    assert_eq!(zpath, system.file("zlibVersion"), "the same libz");
    println!("soloader: {}", mine.render());
    assert_eq!(mine.render(), system.result, "soloader vs system loader");

    assert_eq!(mine.get("version_number"), "10639");
    assert_eq!(
        mine.get("header"),
        format!("{W}x{H} format={PNG_FORMAT_RGBA:#x} warning_or_error=0")
    );
    assert_eq!(mine.get("pixels_match"), "true");
    assert_eq!(mine.get("roundtrip_match"), "true");
    assert_eq!(mine.get("compressed"), "true");
    assert_eq!(mine.get("written_chunks"), "IHDR,sRGB,IDAT,IEND");
    assert!(mine.get("bad_crc").contains("CRC"), "{mine:?}");
    assert_ne!(mine.get("bad_signature"), "accepted", "{mine:?}");
    assert_ne!(mine.get("truncated"), "accepted", "{mine:?}");

    // libpng and libz have no NODELETE: closing unmaps both.
    lib.close().expect("close libpng");
    assert!(
        mapped_files_named("libz.so").is_empty() && mapped_files_named("libpng").is_empty(),
        "closed: libz/libpng still mapped: {:?} {:?}",
        mapped_files_named("libz.so"),
        mapped_files_named("libpng")
    );
}

// ---------------------------------------------------------------------------
// 2. TLS 1.3 handshake: libssl on top of libcrypto, both soloader's.
// ---------------------------------------------------------------------------

fn tls_workload(get: Sym<'_>) -> Report {
    type Keygen =
        unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, ...) -> *mut c_void;
    type New = unsafe extern "C" fn() -> *mut c_void;
    type Free = unsafe extern "C" fn(*mut c_void);
    type SetLong = unsafe extern "C" fn(*mut c_void, c_long) -> c_int;
    type GetPtr = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
    type IntegerSet = unsafe extern "C" fn(*mut c_void, c_long) -> c_int;
    type GmtimeAdj = unsafe extern "C" fn(*mut c_void, c_long) -> *mut c_void;
    type SetPtr = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
    type AddEntry = unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        c_int,
        *const u8,
        c_int,
        c_int,
        c_int,
    ) -> c_int;
    type Sign = unsafe extern "C" fn(*mut c_void, *mut c_void, *const c_void) -> c_int;
    type Md = unsafe extern "C" fn() -> *const c_void;
    type Method = unsafe extern "C" fn() -> *const c_void;
    type CtxNew = unsafe extern "C" fn(*const c_void) -> *mut c_void;
    type Ctrl = unsafe extern "C" fn(*mut c_void, c_int, c_long, *mut c_void) -> c_long;
    type SetVerify = unsafe extern "C" fn(*mut c_void, c_int, *const c_void);
    type BioPair = unsafe extern "C" fn(*mut *mut c_void, usize, *mut *mut c_void, usize) -> c_int;
    type SetBio = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void);
    type SetState = unsafe extern "C" fn(*mut c_void);
    type Handshake = unsafe extern "C" fn(*mut c_void) -> c_int;
    type GetError = unsafe extern "C" fn(*const c_void, c_int) -> c_int;
    type Write = unsafe extern "C" fn(*mut c_void, *const c_void, c_int) -> c_int;
    type Read = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int;
    type GetStr = unsafe extern "C" fn(*const c_void) -> *const c_char;
    type GetServername = unsafe extern "C" fn(*const c_void, c_int) -> *const c_char;
    type Oneline = unsafe extern "C" fn(*const c_void, *mut c_char, c_int) -> *mut c_char;
    type VerifyResult = unsafe extern "C" fn(*const c_void) -> c_long;
    type ErrGet = unsafe extern "C" fn() -> std::ffi::c_ulong;
    type ErrString = unsafe extern "C" fn(std::ffi::c_ulong, *mut c_char, usize);

    const MBSTRING_ASC: c_int = 0x1001;
    const SSL_CTRL_SET_MIN_PROTO_VERSION: c_int = 123;
    const SSL_CTRL_SET_TLSEXT_HOSTNAME: c_int = 55;
    const TLS1_3_VERSION: c_long = 0x0304;
    const SSL_VERIFY_PEER: c_int = 1;
    const SSL_ERROR_WANT_READ: c_int = 2;
    const SSL_ERROR_WANT_WRITE: c_int = 3;
    const HOST: &CStr = c"soloader.test";

    let mut r = Report::default();
    // SAFETY: every type is OpenSSL 3's prototype (openssl/evp.h, x509.h,
    // asn1.h, ssl.h, bio.h, err.h; the macros SSL_CTX_set_min_proto_version
    // and SSL_set_tlsext_host_name are SSL_CTX_ctrl/SSL_ctrl calls);
    // EVP_PKEY_Q_keygen is variadic and takes one `const char *` curve
    // name for "EC"; every object is used between its new and free, and
    // SSL_free frees the BIOs given to SSL_set_bio.
    unsafe {
        let err_get: ErrGet = func(get, "ERR_get_error");
        let err_string: ErrString = func(get, "ERR_error_string_n");
        let errors = || {
            let mut v = Vec::new();
            loop {
                let e = err_get();
                if e == 0 {
                    break;
                }
                let mut buf = [0 as c_char; 256];
                err_string(e, buf.as_mut_ptr(), buf.len());
                v.push(cstring_or_null(buf.as_ptr()));
            }
            v.join(" | ")
        };

        // A P-256 key and a self-signed certificate.
        let keygen: Keygen = func(get, "EVP_PKEY_Q_keygen");
        let pkey = keygen(
            std::ptr::null_mut(),
            std::ptr::null(),
            c"EC".as_ptr(),
            c"P-256".as_ptr(),
        );
        assert!(!pkey.is_null(), "EVP_PKEY_Q_keygen: {}", errors());
        let bits: unsafe extern "C" fn(*const c_void) -> c_int = func(get, "EVP_PKEY_get_bits");
        r.put("key_bits", bits(pkey));

        let x509_new: New = func(get, "X509_new");
        let x509_free: Free = func(get, "X509_free");
        let set_version: SetLong = func(get, "X509_set_version");
        let serial: GetPtr = func(get, "X509_get_serialNumber");
        let integer_set: IntegerSet = func(get, "ASN1_INTEGER_set");
        let not_before: GetPtr = func(get, "X509_getm_notBefore");
        let not_after: GetPtr = func(get, "X509_getm_notAfter");
        let gmtime_adj: GmtimeAdj = func(get, "X509_gmtime_adj");
        let set_pubkey: SetPtr = func(get, "X509_set_pubkey");
        let subject: GetPtr = func(get, "X509_get_subject_name");
        let add_entry: AddEntry = func(get, "X509_NAME_add_entry_by_txt");
        let set_issuer: SetPtr = func(get, "X509_set_issuer_name");
        let sign: Sign = func(get, "X509_sign");
        let sha256: Md = func(get, "EVP_sha256");
        let oneline: Oneline = func(get, "X509_NAME_oneline");
        let pkey_free: Free = func(get, "EVP_PKEY_free");

        let cert = x509_new();
        assert!(!cert.is_null(), "X509_new");
        assert_eq!(set_version(cert, 2), 1, "X509_set_version");
        assert_eq!(integer_set(serial(cert), 0x5011), 1, "ASN1_INTEGER_set");
        assert!(!gmtime_adj(not_before(cert), -60).is_null());
        assert!(!gmtime_adj(not_after(cert), 3600).is_null());
        assert_eq!(set_pubkey(cert, pkey), 1, "X509_set_pubkey");
        let name = subject(cert);
        assert_eq!(
            add_entry(
                name,
                c"CN".as_ptr(),
                MBSTRING_ASC,
                HOST.as_ptr() as *const u8,
                -1,
                -1,
                0
            ),
            1,
            "X509_NAME_add_entry_by_txt: {}",
            errors()
        );
        assert_eq!(set_issuer(cert, name), 1, "X509_set_issuer_name");
        assert!(sign(cert, pkey, sha256()) > 0, "X509_sign: {}", errors());
        let mut buf = [0 as c_char; 128];
        r.put(
            "cert_subject",
            cstring_or_null(oneline(subject(cert), buf.as_mut_ptr(), buf.len() as c_int)),
        );

        // Two contexts: a server with the certificate, a client that
        // trusts exactly that certificate and checks the host name.
        let ctx_new: CtxNew = func(get, "SSL_CTX_new");
        let ctx_free: Free = func(get, "SSL_CTX_free");
        let server_method: Method = func(get, "TLS_server_method");
        let client_method: Method = func(get, "TLS_client_method");
        let use_cert: SetPtr = func(get, "SSL_CTX_use_certificate");
        let use_key: SetPtr = func(get, "SSL_CTX_use_PrivateKey");
        let check_key: unsafe extern "C" fn(*const c_void) -> c_int =
            func(get, "SSL_CTX_check_private_key");
        let ctx_ctrl: Ctrl = func(get, "SSL_CTX_ctrl");
        let ssl_ctrl: Ctrl = func(get, "SSL_ctrl");
        let set_verify: SetVerify = func(get, "SSL_CTX_set_verify");
        let cert_store: GetPtr = func(get, "SSL_CTX_get_cert_store");
        let store_add: SetPtr = func(get, "X509_STORE_add_cert");
        let set1_host: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int =
            func(get, "SSL_set1_host");

        let sctx = ctx_new(server_method());
        let cctx = ctx_new(client_method());
        assert!(
            !sctx.is_null() && !cctx.is_null(),
            "SSL_CTX_new: {}",
            errors()
        );
        assert_eq!(
            use_cert(sctx, cert),
            1,
            "SSL_CTX_use_certificate: {}",
            errors()
        );
        assert_eq!(
            use_key(sctx, pkey),
            1,
            "SSL_CTX_use_PrivateKey: {}",
            errors()
        );
        assert_eq!(check_key(sctx), 1, "SSL_CTX_check_private_key");
        for ctx in [sctx, cctx] {
            let rc = ctx_ctrl(
                ctx,
                SSL_CTRL_SET_MIN_PROTO_VERSION,
                TLS1_3_VERSION,
                std::ptr::null_mut(),
            );
            assert_eq!(rc, 1, "SSL_CTX_set_min_proto_version");
        }
        assert_eq!(store_add(cert_store(cctx), cert), 1, "X509_STORE_add_cert");
        set_verify(cctx, SSL_VERIFY_PEER, std::ptr::null());

        let ssl_new: GetPtr = func(get, "SSL_new");
        let ssl_free: Free = func(get, "SSL_free");
        let bio_pair: BioPair = func(get, "BIO_new_bio_pair");
        let set_bio: SetBio = func(get, "SSL_set_bio");
        let connect_state: SetState = func(get, "SSL_set_connect_state");
        let accept_state: SetState = func(get, "SSL_set_accept_state");
        let handshake: Handshake = func(get, "SSL_do_handshake");
        let get_error: GetError = func(get, "SSL_get_error");
        let write: Write = func(get, "SSL_write");
        let read: Read = func(get, "SSL_read");
        let version: GetStr = func(get, "SSL_get_version");
        let current_cipher: GetPtr = func(get, "SSL_get_current_cipher");
        let cipher_name: GetStr = func(get, "SSL_CIPHER_get_name");
        let servername: GetServername = func(get, "SSL_get_servername");
        let verify_result: VerifyResult = func(get, "SSL_get_verify_result");
        let peer_cert: GetPtr = func(get, "SSL_get1_peer_certificate");

        let client = ssl_new(cctx);
        let server = ssl_new(sctx);
        assert!(!client.is_null() && !server.is_null(), "SSL_new");
        let (mut cbio, mut sbio) = (std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(bio_pair(&mut cbio, 0, &mut sbio, 0), 1, "BIO_new_bio_pair");
        set_bio(client, cbio, cbio);
        set_bio(server, sbio, sbio);
        connect_state(client);
        accept_state(server);
        let rc = ssl_ctrl(
            client,
            SSL_CTRL_SET_TLSEXT_HOSTNAME,
            0,
            HOST.as_ptr() as *mut c_void,
        );
        assert_eq!(rc, 1, "SSL_set_tlsext_host_name");
        assert_eq!(set1_host(client, HOST.as_ptr()), 1, "SSL_set1_host");

        // Drive both ends until both are done.
        let (mut cdone, mut sdone) = (false, false);
        let mut rounds = 0;
        while !(cdone && sdone) {
            rounds += 1;
            assert!(rounds < 100, "handshake does not finish: {}", errors());
            for (ssl, done, who) in [
                (client, &mut cdone, "client"),
                (server, &mut sdone, "server"),
            ] {
                if *done {
                    continue;
                }
                let rc = handshake(ssl);
                if rc == 1 {
                    *done = true;
                } else {
                    let e = get_error(ssl, rc);
                    assert!(
                        e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE,
                        "{who} SSL_do_handshake: {rc}, SSL_get_error {e}: {}",
                        errors()
                    );
                }
            }
        }
        r.put("client_version", cstring_or_null(version(client)));
        r.put("server_version", cstring_or_null(version(server)));
        r.put(
            "client_cipher",
            cstring_or_null(cipher_name(current_cipher(client))),
        );
        r.put(
            "server_cipher",
            cstring_or_null(cipher_name(current_cipher(server))),
        );
        r.put("servername", cstring_or_null(servername(server, 0)));
        r.put("verify_result", verify_result(client));
        let peer = peer_cert(client);
        assert!(!peer.is_null(), "the client has the server's certificate");
        r.put(
            "peer_subject",
            cstring_or_null(oneline(subject(peer), buf.as_mut_ptr(), buf.len() as c_int)),
        );
        x509_free(peer);

        // Application data, both ways.
        let exchange = |from: *mut c_void, to: *mut c_void, msg: &[u8]| -> String {
            let n = write(from, msg.as_ptr() as *const c_void, msg.len() as c_int);
            assert_eq!(n, msg.len() as c_int, "SSL_write: {}", errors());
            let mut buf = [0u8; 64];
            let n = read(to, buf.as_mut_ptr() as *mut c_void, buf.len() as c_int);
            assert!(n > 0, "SSL_read: {n}: {}", errors());
            String::from_utf8_lossy(&buf[..n as usize]).into_owned()
        };
        r.put("server_got", exchange(client, server, b"ping"));
        r.put("client_got", exchange(server, client, b"pong"));

        ssl_free(client);
        ssl_free(server);
        ctx_free(cctx);
        ctx_free(sctx);
        x509_free(cert);
        pkey_free(pkey);
        r.put("errors", errors());
    }
    r
}

#[test]
fn tls13_handshake_over_soloader_libssl_and_libcrypto() {
    let _g = exclusive();
    for s in ["libssl.so.3", "libcrypto.so.3"] {
        assert_unknown_to_system_loader(s, "before");
    }

    // libcrypto first, by itself; then libssl, which must reuse it.
    let crypto_sink = Arc::new(VecSink::new());
    let crypto = Library::open_with("libcrypto.so.3", &Options::new().trace(crypto_sink.clone()))
        .expect("soloader: open libcrypto.so.3");
    let sink = Arc::new(VecSink::new());
    let ssl = Library::open_with(TLS.soname, &Options::new().trace(sink.clone()))
        .expect("soloader: open libssl.so.3");
    let events = sink.events();
    let crypto_path = canonical(crypto.path());
    assert_eq!(
        opened(&crypto_sink.events()),
        std::slice::from_ref(&crypto_path),
        "opening libcrypto opens only libcrypto"
    );
    assert_eq!(
        opened(&events),
        [canonical(ssl.path())],
        "opening libssl must open only libssl (libcrypto is already loaded)"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::AlreadyLoaded { path, .. }
            if canonical(path) == crypto_path)),
        "libssl's libcrypto.so.3 is reported as already loaded"
    );
    let deps = ssl.dependencies();
    assert_eq!(
        deps.iter()
            .map(|(n, p, host)| (
                n.as_str(),
                if *host { PathBuf::new() } else { canonical(p) },
                *host
            ))
            .filter(|(n, _, _)| *n == "libcrypto.so.3")
            .collect::<Vec<_>>(),
        [("libcrypto.so.3", crypto_path.clone(), false)],
        "libssl's libcrypto is soloader's: {deps:?}"
    );
    // The same copy: a libcrypto symbol reached through libssl's scope is
    // at the same address as through the direct handle, inside the same
    // mapping.
    // SAFETY: only addresses are taken.
    let (via_ssl, direct) = unsafe {
        (
            ssl.get::<*const c_void>("EVP_PKEY_Q_keygen")
                .expect("via libssl")
                .addr(),
            crypto
                .get::<*const c_void>("EVP_PKEY_Q_keygen")
                .expect("direct")
                .addr(),
        )
    };
    assert_eq!(via_ssl, direct, "one libcrypto, not two");
    let owner = soloader::lookup(via_ssl).expect("in a soloader library");
    assert_eq!(owner.base, crypto.base(), "same base");
    assert!(crypto.span().contains(&via_ssl));
    // libssl's imports from libcrypto bind to that copy.
    for s in ["EVP_MD_CTX_new", "X509_verify_cert", "ERR_new"] {
        let b = bindings(&events, ssl.path(), s);
        assert!(
            !b.is_empty()
                && b.iter()
                    .all(|p| matches!(p, Provider::Loaded(q) if canonical(q) == crypto_path)),
            "libssl's {s} must bind to soloader's libcrypto: {b:?}"
        );
    }

    let mine = tls_workload(&soloader_get(&ssl));
    for s in ["libssl.so.3", "libcrypto.so.3"] {
        assert_unknown_to_system_loader(s, "after the handshake");
    }

    let system = system_loader(&TLS);
    assert_eq!(canonical(ssl.path()), system.file("SSL_new"), "same libssl");
    assert_eq!(
        crypto_path,
        system.file("EVP_PKEY_Q_keygen"),
        "same libcrypto"
    );
    println!("soloader: {}", mine.render());
    assert_eq!(mine.render(), system.result, "soloader vs system loader");

    assert_eq!(mine.get("client_version"), "TLSv1.3");
    assert_eq!(mine.get("server_version"), "TLSv1.3");
    assert!(
        mine.get("client_cipher").starts_with("TLS_"),
        "a TLS 1.3 suite: {mine:?}"
    );
    assert_eq!(mine.get("client_cipher"), mine.get("server_cipher"));
    assert_eq!(mine.get("key_bits"), "256");
    assert_eq!(mine.get("cert_subject"), "/CN=soloader.test");
    assert_eq!(mine.get("peer_subject"), "/CN=soloader.test");
    assert_eq!(mine.get("servername"), "soloader.test");
    assert_eq!(mine.get("verify_result"), "0", "X509_V_OK");
    assert_eq!(mine.get("server_got"), "ping");
    assert_eq!(mine.get("client_got"), "pong");
    assert_eq!(mine.get("errors"), "");

    ssl.close().expect("close libssl");
    crypto.close().expect("close libcrypto");
}
