//! Parse and validate: the first stage of the pipeline.
//!
//! Nothing here trusts the file. The ELF header and program headers are
//! checked into a [`LoadPlan`] before anything is mapped; the dynamic
//! section and every table it points to are checked into
//! [`dynamic::Tables`] through a [`View`], which only hands out byte ranges
//! that lie inside the file-backed part of a `PT_LOAD`. The same code runs
//! on the file (for `inspect`/`check`) and on the mapped image (when
//! loading).
//!
//! The data types are goblin's `elf64` structures, named after the spec.

pub(crate) mod dynamic;
pub(crate) mod hash;
pub(crate) mod index;
pub(crate) mod versions;
mod view;

use std::path::Path;

use goblin::elf::header::{ELFCLASS64, ELFDATA2LSB, ELFMAG, ET_DYN, EV_CURRENT, SELFMAG};
use goblin::elf::program_header::*;
use goblin::elf64::header::Header;
use goblin::elf64::program_header::ProgramHeader;

use crate::error::{Error, Result};

pub(crate) use view::View;

/// Plain-old-data ELF structures that may be read from any bytes.
///
/// # Safety
/// Implementors must be `repr(C)` with no padding-sensitive invariants: any
/// bit pattern is a valid value.
pub(crate) unsafe trait Pod: Sized {}
// SAFETY: goblin's elf64 structures are repr(C) integers only.
unsafe impl Pod for Header {}
// SAFETY: as above.
unsafe impl Pod for ProgramHeader {}
// SAFETY: as above.
unsafe impl Pod for goblin::elf64::dynamic::Dyn {}
// SAFETY: as above.
unsafe impl Pod for goblin::elf64::sym::Sym {}
// SAFETY: as above.
unsafe impl Pod for goblin::elf64::reloc::Rela {}
// SAFETY: as above.
unsafe impl Pod for goblin::elf64::reloc::Rel {}
// SAFETY: as above.
unsafe impl Pod for goblin::elf64::section_header::SectionHeader {}
// SAFETY: integers: any bits are valid.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}

/// Reads a `T` at `off` in `bytes`, if it fits.
#[inline]
pub(crate) fn read<T: Pod>(bytes: &[u8], off: usize) -> Option<T> {
    let end = off.checked_add(std::mem::size_of::<T>())?;
    let src = bytes.get(off..end)?;
    // SAFETY: `src` holds size_of::<T>() bytes and T is Pod (any bits are a
    // valid T); read_unaligned copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(src.as_ptr() as *const T) })
}

/// The page size; 4 KiB on every x86-64 Linux, read once from the kernel.
pub(crate) fn page_size() -> usize {
    use std::sync::OnceLock;
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}

/// Rounds down to a page boundary.
#[inline]
pub(crate) fn page_down(x: u64) -> u64 {
    x & !(page_size() as u64 - 1)
}

/// Rounds up to a page boundary (saturating at the top).
#[inline]
pub(crate) fn page_up(x: u64) -> u64 {
    let p = page_size() as u64;
    page_down(x.saturating_add(p - 1))
}

/// One validated `PT_LOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    /// Index among the `PT_LOAD`s.
    pub index: usize,
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    /// `PF_*` flags.
    pub flags: u32,
}

impl LoadSegment {
    /// `PROT_*` bits for this segment.
    pub(crate) fn prot(&self) -> i32 {
        let mut p = 0;
        if self.flags & PF_R != 0 {
            p |= libc::PROT_READ;
        }
        if self.flags & PF_W != 0 {
            p |= libc::PROT_WRITE;
        }
        if self.flags & PF_X != 0 {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// What the program headers say about how to place the object, validated.
#[derive(Debug, Clone)]
pub(crate) struct LoadPlan {
    pub loads: Vec<LoadSegment>,
    /// Page-aligned lowest `p_vaddr`.
    pub min_vaddr: u64,
    /// Page-aligned end of the highest `p_vaddr + p_memsz`.
    pub max_vaddr: u64,
    /// The largest power-of-two `p_align` (at least the page size).
    pub align: u64,
    /// `PT_DYNAMIC` (vaddr, size).
    pub dynamic: (u64, u64),
    /// `PT_GNU_RELRO` (vaddr, memsz).
    pub relro: Option<(u64, u64)>,
    /// `PT_TLS` program header, if any.
    pub tls: Option<ProgramHeader>,
    /// `PT_GNU_EH_FRAME` (vaddr, size): the unwinder's index.
    pub eh_frame_hdr: Option<(u64, u64)>,
    /// The program headers as the file has them (for `dl_iterate_phdr`).
    pub phdrs: Vec<ProgramHeader>,
}

/// Upper bound on the address span an object may ask for (1 TiB): beyond
/// this a "library" is a hostile or corrupt file, not a big library.
const MAX_SPAN: u64 = 1 << 40;

/// Parses and checks the ELF header and program headers from the start of
/// the file. `head` must hold at least the program headers (the caller
/// reads more if [`needed_len`] says so); `file_size` bounds every offset.
pub(crate) fn parse_plan(path: &Path, head: &[u8], file_size: u64) -> Result<LoadPlan> {
    let bad = |what: &str, off: Option<u64>| Error::malformed(path, what, off);
    let h = parse_header(path, head)?;
    let phdrs = read_phdrs(path, &h, head)?;

    let mut loads = Vec::new();
    let mut dynamic = None;
    let mut relro = None;
    let mut tls = None;
    let mut eh_frame_hdr = None;
    let mut align: u64 = page_size() as u64;
    let page = page_size() as u64;
    for (i, ph) in phdrs.iter().enumerate() {
        let at = Some(
            h.e_phoff
                .saturating_add((i as u64) * u64::from(h.e_phentsize)),
        );
        match ph.p_type {
            PT_LOAD => {
                if ph.p_memsz == 0 {
                    continue; // glibc skips empty segments
                }
                if ph.p_filesz > ph.p_memsz {
                    return Err(bad("PT_LOAD p_filesz is larger than p_memsz", at));
                }
                let file_end = ph.p_offset.checked_add(ph.p_filesz);
                if file_end.is_none_or(|e| e > file_size) {
                    return Err(bad("PT_LOAD extends past the end of the file", at));
                }
                if ph
                    .p_vaddr
                    .checked_add(ph.p_memsz)
                    .is_none_or(|e| e > MAX_SPAN)
                {
                    return Err(bad("PT_LOAD address range is out of bounds", at));
                }
                if ph.p_vaddr % page != ph.p_offset % page {
                    return Err(bad("PT_LOAD address/offset not page-aligned", at));
                }
                if ph.p_align > 1 {
                    if !ph.p_align.is_power_of_two() {
                        return Err(bad("PT_LOAD p_align is not a power of two", at));
                    }
                    if ph.p_align > 1 << 30 {
                        return Err(bad("PT_LOAD p_align is larger than 1 GiB", at));
                    }
                    align = align.max(ph.p_align);
                }
                if let Some(prev) = loads.last() {
                    let prev: &LoadSegment = prev;
                    if ph.p_vaddr < prev.vaddr + prev.memsz {
                        return Err(bad(
                            "PT_LOAD segments overlap or are not sorted by address",
                            at,
                        ));
                    }
                    // Each segment is mapped over whole pages: one that
                    // starts in the previous one's last page would replace
                    // that page (with its own protection — a read-only one
                    // would make relocation targets of a writable one fault).
                    // No linker emits this; glibc maps it regardless.
                    if page_down(ph.p_vaddr) < page_up(prev.vaddr + prev.memsz) {
                        return Err(bad(
                            "PT_LOAD starts in the last page of the previous PT_LOAD: \
                             mapping it would replace part of that segment",
                            at,
                        ));
                    }
                }
                loads.push(LoadSegment {
                    index: loads.len(),
                    vaddr: ph.p_vaddr,
                    memsz: ph.p_memsz,
                    offset: ph.p_offset,
                    filesz: ph.p_filesz,
                    flags: ph.p_flags,
                });
            }
            PT_DYNAMIC => {
                if dynamic.is_some() {
                    return Err(bad("more than one PT_DYNAMIC", at));
                }
                dynamic = Some((ph.p_vaddr, ph.p_memsz.min(ph.p_filesz), at));
            }
            PT_GNU_RELRO => relro = Some((ph.p_vaddr, ph.p_memsz, at)),
            PT_TLS => {
                if ph.p_filesz > ph.p_memsz || (ph.p_align > 1 && !ph.p_align.is_power_of_two()) {
                    return Err(bad("PT_TLS sizes or alignment are inconsistent", at));
                }
                tls = Some(*ph)
            }
            PT_GNU_EH_FRAME => eh_frame_hdr = Some((ph.p_vaddr, ph.p_memsz)),
            PT_GNU_STACK if ph.p_flags & PF_X != 0 => {
                return Err(Error::unsupported(
                    path,
                    "PT_GNU_STACK asks for an executable stack (PF_X); refusing, as a stack \
                     made executable for one library is executable for the whole process",
                ));
            }
            PT_INTERP => {
                return Err(Error::unsupported(
                    path,
                    "the file has PT_INTERP: it is a program, not a shared library",
                ))
            }
            _ => {}
        }
    }
    let first = loads
        .first()
        .ok_or_else(|| bad("no PT_LOAD segment", None))?;
    let last = loads
        .last()
        .ok_or_else(|| bad("no PT_LOAD segment", None))?;
    let min_vaddr = page_down(first.vaddr);
    let max_vaddr = page_up(last.vaddr + last.memsz);

    let (dyn_vaddr, dyn_size, dyn_at) = dynamic.ok_or_else(|| {
        bad(
            "no PT_DYNAMIC: not a dynamically linked shared object",
            None,
        )
    })?;
    if dyn_size == 0 {
        return Err(bad(
            "PT_DYNAMIC is empty (a separate debug-info file?)",
            dyn_at,
        ));
    }
    if !inside_file_part(&loads, dyn_vaddr, dyn_size) {
        return Err(bad(
            "PT_DYNAMIC lies outside the file-backed part of every PT_LOAD",
            dyn_at,
        ));
    }
    let relro = match relro {
        Some((v, sz, at)) if sz > 0 => {
            if !loads
                .iter()
                .any(|l| v >= l.vaddr && v.saturating_add(sz) <= l.vaddr + l.memsz)
            {
                return Err(bad("PT_GNU_RELRO lies outside every PT_LOAD", at));
            }
            Some((v, sz))
        }
        _ => None,
    };
    Ok(LoadPlan {
        loads,
        min_vaddr,
        max_vaddr,
        align,
        dynamic: (dyn_vaddr, dyn_size),
        relro,
        tls,
        eh_frame_hdr,
        phdrs,
    })
}

fn inside_file_part(loads: &[LoadSegment], vaddr: u64, len: u64) -> bool {
    loads
        .iter()
        .any(|l| vaddr >= l.vaddr && vaddr.saturating_add(len) <= l.vaddr + l.filesz)
}

/// How many bytes from the start of the file [`parse_plan`] needs.
pub(crate) fn needed_len(path: &Path, head: &[u8]) -> Result<usize> {
    let h = parse_header(path, head)?;
    let len = h
        .e_phoff
        .saturating_add(u64::from(h.e_phnum) * u64::from(h.e_phentsize));
    usize::try_from(len).map_err(|_| Error::malformed(path, "e_phoff is out of range", Some(32)))
}

/// Checks the ELF identification and header fields.
pub(crate) fn parse_header(path: &Path, head: &[u8]) -> Result<Header> {
    let bad = |what: &str, off: u64| Error::malformed(path, what, Some(off));
    if head.len() < SELFMAG || &head[..SELFMAG] != ELFMAG {
        return Err(Error::malformed(
            path,
            "not an ELF file (bad magic)",
            Some(0),
        ));
    }
    let h: Header = read(head, 0).ok_or_else(|| bad("file too short for an ELF header", 0))?;
    if h.e_ident[goblin::elf::header::EI_CLASS] != ELFCLASS64 {
        return Err(bad("not a 64-bit ELF file (EI_CLASS)", 4));
    }
    if h.e_ident[goblin::elf::header::EI_DATA] != ELFDATA2LSB {
        return Err(bad("not a little-endian ELF file (EI_DATA)", 5));
    }
    if h.e_ident[goblin::elf::header::EI_VERSION] != EV_CURRENT {
        return Err(bad("unknown ELF version (EI_VERSION)", 6));
    }
    if h.e_machine != crate::arch::EM_HOST {
        return Err(bad(
            &format!(
                "e_machine {} ({}) is not this host's ({})",
                h.e_machine,
                goblin::elf::header::machine_to_str(h.e_machine),
                goblin::elf::header::machine_to_str(crate::arch::EM_HOST)
            ),
            18,
        ));
    }
    if h.e_type != ET_DYN {
        return Err(bad(
            &format!(
                "e_type is {} , not ET_DYN: only shared objects can be loaded",
                goblin::elf::header::et_to_str(h.e_type)
            ),
            16,
        ));
    }
    if usize::from(h.e_phentsize) != std::mem::size_of::<ProgramHeader>() {
        return Err(bad("e_phentsize is not the size of an Elf64_Phdr", 54));
    }
    if h.e_phnum == 0 || h.e_phnum == 0xffff {
        return Err(bad(
            "e_phnum is 0 or PN_XNUM: no usable program headers",
            56,
        ));
    }
    if h.e_phoff < std::mem::size_of::<Header>() as u64 || !h.e_phoff.is_multiple_of(8) {
        return Err(bad("e_phoff overlaps the ELF header or is misaligned", 32));
    }
    Ok(h)
}

fn read_phdrs(path: &Path, h: &Header, head: &[u8]) -> Result<Vec<ProgramHeader>> {
    let mut out = Vec::with_capacity(usize::from(h.e_phnum));
    for i in 0..usize::from(h.e_phnum) {
        let off = (h.e_phoff as usize).saturating_add(i * std::mem::size_of::<ProgramHeader>());
        let ph: ProgramHeader = read(head, off).ok_or_else(|| {
            Error::malformed(
                path,
                "program header table extends past the end of the file",
                Some(off as u64),
            )
        })?;
        out.push(ph);
    }
    Ok(out)
}
