//! Letting gdb see soloader's libraries: the GDB JIT interface.
//!
//! glibc's `_r_debug.r_map` is glibc's own list, walked by glibc with
//! private `link_map` fields: splicing foreign nodes into it can crash the
//! host. gdb's JIT interface is the safe door: the process keeps a list of
//! in-memory ELF "symbol files" in `__jit_debug_descriptor` and calls the
//! empty `__jit_debug_register_code` after each change, where gdb keeps a
//! breakpoint. For each library soloader gives gdb a copy of the file whose
//! allocated sections, program headers and symbols are moved to where the
//! library really is, so `break name` and `bt` work with the library's
//! symbols. Its DWARF is hidden from gdb (section names changed): its
//! addresses are link-time ones and would send breakpoints to the wrong
//! place. The price: `info sharedlibrary` does not list these libraries.
//!
//! Registration costs a read and a copy of the file per load, so it is
//! done only when a debugger is attached when soloader first loads
//! something (`TracerPid` in `/proc/self/status`), or when the environment
//! says `SOLOADER_GDB=1` (`0` turns it off).

use std::os::raw::c_char;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use goblin::elf64::header::Header;
use goblin::elf64::program_header::ProgramHeader;
use goblin::elf64::section_header::SectionHeader;
use goblin::elf64::sym::Sym;

use crate::elf::read;

const JIT_NOACTION: u32 = 0;
const JIT_REGISTER_FN: u32 = 1;
const JIT_UNREGISTER_FN: u32 = 2;
const SHF_ALLOC: u64 = 2;
const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;

/// gdb's `struct jit_code_entry`.
#[repr(C)]
pub(crate) struct JitCodeEntry {
    next_entry: *mut JitCodeEntry,
    prev_entry: *mut JitCodeEntry,
    symfile_addr: *const c_char,
    symfile_size: u64,
}

/// gdb's `struct jit_descriptor`.
#[repr(C)]
pub struct JitDescriptor {
    version: u32,
    action_flag: u32,
    relevant_entry: *mut JitCodeEntry,
    first_entry: *mut JitCodeEntry,
}

/// The descriptor gdb reads. Its name is fixed by gdb's JIT interface.
#[no_mangle]
#[used]
pub static mut __jit_debug_descriptor: JitDescriptor = JitDescriptor {
    version: 1,
    action_flag: JIT_NOACTION,
    relevant_entry: std::ptr::null_mut(),
    first_entry: std::ptr::null_mut(),
};

/// gdb sets a breakpoint here and reads the descriptor when it is hit.
#[no_mangle]
#[inline(never)]
pub extern "C" fn __jit_debug_register_code() {
    // Keep the call from being optimised away.
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Serialises changes to the descriptor list.
static LIST: Mutex<()> = Mutex::new(());

/// One library registered with gdb; unregisters itself when dropped.
pub(crate) struct Registration {
    entry: Box<JitCodeEntry>,
    _symfile: Vec<u8>,
}

// SAFETY: the entry is only touched under LIST, and the symfile is owned.
unsafe impl Send for Registration {}
// SAFETY: as above.
unsafe impl Sync for Registration {}

/// Whether to register libraries with a debugger.
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("SOLOADER_GDB").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TracerPid:").map(|v| v.trim() != "0"))
            })
            .unwrap_or(false),
    })
}

/// Registers the library at `path`, loaded with bias `base`, with gdb.
pub(crate) fn register(path: &Path, base: usize) -> Option<Registration> {
    let mut symfile = std::fs::read(path).ok()?;
    relocate_symfile(&mut symfile, base as u64)?;
    let mut entry = Box::new(JitCodeEntry {
        next_entry: std::ptr::null_mut(),
        prev_entry: std::ptr::null_mut(),
        symfile_addr: symfile.as_ptr() as *const c_char,
        symfile_size: symfile.len() as u64,
    });
    let _g = LIST.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the descriptor is only changed under LIST; the entry and the
    // symfile live in the Registration until it unregisters them.
    unsafe {
        let d = &raw mut __jit_debug_descriptor;
        entry.next_entry = (*d).first_entry;
        if !(*d).first_entry.is_null() {
            (*(*d).first_entry).prev_entry = &mut *entry;
        }
        (*d).first_entry = &mut *entry;
        (*d).relevant_entry = &mut *entry;
        (*d).action_flag = JIT_REGISTER_FN;
        __jit_debug_register_code();
    }
    Some(Registration {
        entry,
        _symfile: symfile,
    })
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _g = LIST.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the entry is in the list (added by `register`), which is
        // only changed under LIST.
        unsafe {
            let d = &raw mut __jit_debug_descriptor;
            let e: *mut JitCodeEntry = &mut *self.entry;
            if !(*e).prev_entry.is_null() {
                (*(*e).prev_entry).next_entry = (*e).next_entry;
            } else {
                (*d).first_entry = (*e).next_entry;
            }
            if !(*e).next_entry.is_null() {
                (*(*e).next_entry).prev_entry = (*e).prev_entry;
            }
            (*d).relevant_entry = e;
            (*d).action_flag = JIT_UNREGISTER_FN;
            __jit_debug_register_code();
        }
    }
}

fn write<T>(buf: &mut [u8], off: usize, v: T) -> Option<()> {
    let end = off.checked_add(std::mem::size_of::<T>())?;
    let dst = buf.get_mut(off..end)?;
    // SAFETY: `dst` has exactly size_of::<T>() bytes; T is a plain ELF
    // structure written unaligned.
    unsafe { std::ptr::write_unaligned(dst.as_mut_ptr() as *mut T, v) };
    Some(())
}

/// Moves every address in an ELF file image by `bias`: allocated section
/// addresses, program headers, and defined symbols of `.symtab` and
/// `.dynsym`; and renames `.debug_*` sections so gdb ignores the DWARF.
fn relocate_symfile(buf: &mut [u8], bias: u64) -> Option<()> {
    let h: Header = read(buf, 0)?;
    for i in 0..usize::from(h.e_phnum) {
        let off = (h.e_phoff as usize).checked_add(i * std::mem::size_of::<ProgramHeader>())?;
        let mut ph: ProgramHeader = read(buf, off)?;
        ph.p_vaddr = ph.p_vaddr.wrapping_add(bias);
        ph.p_paddr = ph.p_paddr.wrapping_add(bias);
        write(buf, off, ph)?;
    }
    let shoff = h.e_shoff as usize;
    let shdrs: Vec<(usize, SectionHeader)> = (0..usize::from(h.e_shnum))
        .filter_map(|i| {
            let off = shoff.checked_add(i * std::mem::size_of::<SectionHeader>())?;
            Some((off, read(buf, off)?))
        })
        .collect();
    let shstr = shdrs
        .get(usize::from(h.e_shstrndx))
        .map(|(_, s)| (s.sh_offset as usize, s.sh_size as usize));
    for (off, sh) in &shdrs {
        let mut s = *sh;
        if s.sh_flags & SHF_ALLOC != 0 {
            s.sh_addr = s.sh_addr.wrapping_add(bias);
            write(buf, *off, s)?;
        }
        if s.sh_type == SHT_SYMTAB || s.sh_type == SHT_DYNSYM {
            let n = s.sh_size as usize / std::mem::size_of::<Sym>();
            for k in 0..n {
                let so = (s.sh_offset as usize).checked_add(k * std::mem::size_of::<Sym>())?;
                let Some(mut sym) = read::<Sym>(buf, so) else {
                    break;
                };
                let kind = sym.st_info & 0xf;
                if sym.st_shndx != 0 && sym.st_shndx < 0xff00 && kind != goblin::elf::sym::STT_TLS {
                    sym.st_value = sym.st_value.wrapping_add(bias);
                    write(buf, so, sym)?;
                }
            }
        }
        if let Some((str_off, str_size)) = shstr {
            let name = str_off.checked_add(s.sh_name as usize)?;
            if (s.sh_name as usize) < str_size && buf.get(name..name + 7) == Some(b".debug_") {
                buf[name + 1] = b'x'; // ".xebug_…": not DWARF to gdb
            }
        }
    }
    Some(())
}
