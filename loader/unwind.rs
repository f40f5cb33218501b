//! Unwinding through soloader's libraries: `.eh_frame` registration.
//!
//! Debian 12's `libgcc_s` finds unwind tables only through frames
//! registered with `__register_frame` or through glibc's
//! `_dl_find_object`, which knows nothing of soloader's modules. So each
//! module's `.eh_frame` (found through `PT_GNU_EH_FRAME`) is registered
//! once it is relocated, and deregistered before it is unmapped. Without
//! this a C++ exception thrown inside a soloader library terminates the
//! process.

use std::path::Path;

use crate::elf::View;
use crate::error::{Error, Result};

const DW_EH_PE_OMIT: u8 = 0xff;

/// Finds the start of `.eh_frame` from the `.eh_frame_hdr` at `vaddr`.
/// Returns the run-time address, checked to lie in the object's bytes.
pub(crate) fn eh_frame_start(
    path: &Path,
    view: &View,
    hdr: (u64, u64),
    base: usize,
) -> Result<Option<usize>> {
    let bad = |what: &str| Error::malformed(path, format!("PT_GNU_EH_FRAME: {what}"), Some(hdr.0));
    let bytes = view
        .bytes(hdr.0, 4)
        .ok_or_else(|| bad("header lies outside the file-backed segments"))?;
    let (version, enc) = (bytes[0], bytes[1]);
    if version != 1 {
        return Err(bad("unknown .eh_frame_hdr version"));
    }
    if enc == DW_EH_PE_OMIT {
        return Ok(None);
    }
    let field = hdr.0 + 4;
    let (raw, size): (i64, u64) = match enc & 0x0f {
        0x00 | 0x04 | 0x0c => (
            read(view, field, 8).ok_or_else(|| bad("eh_frame_ptr is unreadable"))?,
            8,
        ),
        0x03 => (
            read(view, field, 4).ok_or_else(|| bad("eh_frame_ptr is unreadable"))? as u32 as i64,
            4,
        ),
        0x0b => (
            read(view, field, 4).ok_or_else(|| bad("eh_frame_ptr is unreadable"))? as i32 as i64,
            4,
        ),
        _ => return Err(bad("unsupported eh_frame_ptr encoding")),
    };
    let _ = size;
    let vaddr = match enc & 0x70 {
        0x00 => raw as u64,
        0x10 => field.wrapping_add(raw as u64),
        0x30 => hdr.0.wrapping_add(raw as u64),
        _ => return Err(bad("unsupported eh_frame_ptr application")),
    };
    if view.bytes(vaddr, 4).is_none() {
        return Err(bad("eh_frame_ptr points outside the file-backed segments"));
    }
    Ok(Some(base.wrapping_add(vaddr as usize)))
}

fn read(view: &View, vaddr: u64, n: u64) -> Option<i64> {
    let b = view.bytes(vaddr, n)?;
    let mut w = [0u8; 8];
    w[..n as usize].copy_from_slice(b);
    Some(i64::from_le_bytes(w))
}

type FrameFn = unsafe extern "C" fn(*const u8);

fn frame_fn(name: &str) -> Option<FrameFn> {
    let a = crate::host::function(name, "libgcc_s.so.1")?;
    // SAFETY: the host's __register_frame/__deregister_frame take the
    // start of an .eh_frame section.
    Some(unsafe { std::mem::transmute::<usize, FrameFn>(a) })
}

/// Registers a module's `.eh_frame` with the host's unwinder. Returns
/// whether it was registered.
pub(crate) fn register(eh_frame: usize) -> bool {
    match frame_fn("__register_frame") {
        Some(f) => {
            // SAFETY: `eh_frame` is the validated start of the module's
            // relocated .eh_frame, mapped until `deregister`.
            unsafe { f(eh_frame as *const u8) };
            true
        }
        None => false,
    }
}

/// Deregisters what [`register`] registered, before the module is unmapped.
pub(crate) fn deregister(eh_frame: usize) {
    if let Some(f) = frame_fn("__deregister_frame") {
        // SAFETY: the same pointer was registered and is still mapped.
        unsafe { f(eh_frame as *const u8) };
    }
}
