//! What loading a library will do, read from the file alone.
//!
//! [`inspect`] runs the same parse-and-validate stage as a load, on a
//! read-only `mmap` of the file (nothing is mapped the way a load maps,
//! nothing is relocated, nothing runs), and summarises it: the segments and
//! which parts will be file-backed, zero-filled or anonymous; the dynamic
//! entries; the relocations by type and the pages they will write (and so
//! make private copies of); symbol, version, TLS and initialiser counts.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use goblin::elf::dynamic::tag_to_str;
use goblin::elf::program_header::{PF_R, PF_W, PF_X};

use crate::arch;
use crate::elf::dynamic::{
    relr_offsets, DynInfo, RelocTable, Tables, DT_RELR, DT_RELRENT, DT_RELRSZ,
};
use crate::elf::{self, page_down, page_up, View};
use crate::error::{Error, Result};

/// One `PT_LOAD` and what a load will make of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPlan {
    /// Index among the `PT_LOAD`s.
    pub index: usize,
    /// Link-time virtual address and size in memory.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// File offset and size in the file.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// Protections, as `r-x`.
    pub prot: String,
    /// Bytes of pages mapped from the file (`MAP_PRIVATE`).
    pub file_backed: u64,
    /// Bytes of the last file page past `p_filesz` that the loader zeroes
    /// (a copy-on-write write: that page becomes private).
    pub zeroed_tail: u64,
    /// Bytes of anonymous zero pages past the file pages (`.bss`).
    pub anonymous: u64,
    /// Part of this segment that `PT_GNU_RELRO` makes read-only after
    /// relocation: (vaddr, size), page-rounded as glibc does.
    pub relro: Option<(u64, u64)>,
}

/// Relocations of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelocCount {
    /// The psABI name, e.g. `R_X86_64_RELATIVE`.
    pub kind: String,
    /// How many.
    pub count: usize,
    /// The distinct pages they write (link-time, page-aligned).
    pub pages: Vec<u64>,
}

/// `PT_TLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// Bytes of the initialisation image (`.tdata`).
    pub filesz: u64,
    /// Bytes of each thread's block.
    pub memsz: u64,
    /// Alignment.
    pub align: u64,
}

/// Everything [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub file_size: u64,
    /// The `PT_LOAD`s.
    pub segments: Vec<SegmentPlan>,
    /// Bytes of address space the load reserves.
    pub span: u64,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_RPATH`.
    pub rpath: Option<String>,
    /// `DT_RUNPATH`.
    pub runpath: Option<String>,
    /// `DT_FLAGS` and `DT_FLAGS_1`.
    pub flags: (u64, u64),
    /// Every dynamic entry, as (tag name, value).
    pub dynamic: Vec<(String, u64)>,
    /// Relocations by type, in the order types first appear.
    pub relocations: Vec<RelocCount>,
    /// Distinct pages written by relocation (all types).
    pub relocated_pages: usize,
    /// Defined global and weak symbols.
    pub exported_symbols: usize,
    /// Undefined symbols.
    pub imported_symbols: usize,
    /// Versions defined (without the file's base entry) and needed.
    pub versions: (usize, usize),
    /// `gnu` or `sysv`.
    pub hash: &'static str,
    /// Thread-local storage.
    pub tls: Option<TlsInfo>,
    /// `DT_INIT` plus `DT_INIT_ARRAY` entries.
    pub initialisers: usize,
    /// `DT_FINI` plus `DT_FINI_ARRAY` entries.
    pub finalisers: usize,
}

fn prot_string(flags: u32) -> String {
    let c = |bit, ch| if flags & bit != 0 { ch } else { '-' };
    [c(PF_R, 'r'), c(PF_W, 'w'), c(PF_X, 'x')].iter().collect()
}

/// Reads and validates `path` and says what loading it will do.
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection> {
    let path = path.as_ref();
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, "open", e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, "fstat", e))?;
    if !meta.is_file() {
        return Err(Error::malformed(path, "not a regular file", None));
    }
    let size = meta.len();
    if size == 0 {
        return Err(Error::malformed(path, "empty file", Some(0)));
    }
    // SAFETY: a read-only private mapping of a file we only read; if the
    // file is truncated meanwhile, reads past its new end fault — the same
    // risk every reader of a mapped file takes (rustc, ld, gdb).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, "mmap", e))?;
    let bytes: &[u8] = &map;
    let plan = elf::parse_plan(path, bytes, size)?;
    let view = View::of_file(bytes, &plan.loads);
    let d = DynInfo::parse(path, &view, plan.dynamic.0, plan.dynamic.1, |v| v)?;
    let t = Tables::parse(path, &view, &d)?;

    let segments = plan
        .loads
        .iter()
        .map(|l| {
            let start = page_down(l.vaddr);
            let file_end = if l.filesz > 0 {
                page_up(l.vaddr + l.filesz)
            } else {
                start
            };
            let mem_end = page_up(l.vaddr + l.memsz);
            let data_end = l.vaddr + l.filesz;
            let relro = plan.relro.and_then(|(v, sz)| {
                let (a, b) = (page_down(v), page_down(v + sz));
                let (a, b) = (a.max(start), b.min(mem_end));
                (b > a).then(|| (a, b - a))
            });
            SegmentPlan {
                index: l.index,
                vaddr: l.vaddr,
                memsz: l.memsz,
                offset: l.offset,
                filesz: l.filesz,
                prot: prot_string(l.flags),
                file_backed: file_end - start,
                zeroed_tail: if l.memsz > l.filesz && l.filesz > 0 {
                    file_end.min(l.vaddr + l.memsz) - data_end
                } else {
                    0
                },
                anonymous: mem_end.saturating_sub(file_end),
                relro,
            }
        })
        .collect();

    let mut relocations: Vec<RelocCount> = Vec::new();
    let mut pages_of: Vec<BTreeSet<u64>> = Vec::new();
    let mut all_pages = BTreeSet::new();
    let mut add = |kind: &str, at: u64| {
        let page = page_down(at);
        all_pages.insert(page);
        match relocations.iter().position(|r| r.kind == kind) {
            Some(i) => {
                relocations[i].count += 1;
                pages_of[i].insert(page);
            }
            None => {
                relocations.push(RelocCount {
                    kind: kind.to_string(),
                    count: 1,
                    pages: Vec::new(),
                });
                pages_of.push(BTreeSet::from([page]));
            }
        }
    };
    for at in relr_offsets(t.relr) {
        add(arch::RELR_NAME, at);
    }
    for table in &t.relocs {
        let entries: Vec<(u64, u64)> = match table {
            RelocTable::Rela(r) => r.iter().map(|e| (e.r_offset, e.r_info)).collect(),
            RelocTable::Rel(r) => r.iter().map(|e| (e.r_offset, e.r_info)).collect(),
        };
        for (off, info) in entries {
            add(arch::reloc_name((info & 0xffff_ffff) as u32), off);
        }
    }
    for (r, p) in relocations.iter_mut().zip(pages_of) {
        r.pages = p.into_iter().collect();
    }

    let st = &t.symtab;
    let (mut exported, mut imported) = (0, 0);
    for i in 1..st.len() {
        let Some(s) = st.sym(i) else { continue };
        if s.st_shndx == 0 {
            imported += 1;
        } else if s.st_info >> 4 != goblin::elf::sym::STB_LOCAL {
            exported += 1;
        }
    }
    let count_array = |single: Option<u64>, array: Option<(u64, u64)>| {
        usize::from(single.is_some_and(|v| v != 0)) + array.map_or(0, |(_, n)| n as usize)
    };
    Ok(Inspection {
        path: path.to_path_buf(),
        file_size: size,
        segments,
        span: plan.max_vaddr - plan.min_vaddr,
        needed: t.needed.clone(),
        soname: t.soname.clone(),
        rpath: t.rpath.clone(),
        runpath: t.runpath.clone(),
        flags: (d.flags, d.flags_1),
        dynamic: d
            .entries
            .iter()
            .map(|&(tag, v)| {
                let name = match tag_to_str(tag) {
                    "UNKNOWN_TAG" => match tag {
                        DT_RELRSZ => "DT_RELRSZ".to_string(),
                        DT_RELR => "DT_RELR".to_string(),
                        DT_RELRENT => "DT_RELRENT".to_string(),
                        _ => format!("{tag:#x}"),
                    },
                    n => n.to_string(),
                };
                (name, v)
            })
            .collect(),
        relocations,
        relocated_pages: all_pages.len(),
        exported_symbols: exported,
        imported_symbols: imported,
        versions: (t.versions.defined_count(), t.versions.needs().count()),
        hash: if d.gnu_hash.is_some() { "gnu" } else { "sysv" },
        tls: plan.tls.map(|p| TlsInfo {
            filesz: p.p_filesz,
            memsz: p.p_memsz,
            align: p.p_align,
        }),
        initialisers: count_array(d.init, t.init_array),
        finalisers: count_array(d.fini, t.fini_array),
    })
}
