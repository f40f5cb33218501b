//! The dynamic section and the tables it points to, validated.

use std::path::Path;

use goblin::elf::dynamic::*;
use goblin::elf64::dynamic::Dyn;
use goblin::elf64::reloc::{Rel, Rela};
use goblin::elf64::sym::Sym;

use super::hash::{HashTable, SymTab};
use super::versions::{self, VersionTable};
use super::view::{Table, View};
use crate::error::{Error, Result};

/// `DT_RELRSZ`, `DT_RELR`, `DT_RELRENT` (gABI 2022; not in goblin's list).
pub(crate) const DT_RELRSZ: u64 = 35;
/// Address of the packed relative relocations.
pub(crate) const DT_RELR: u64 = 36;
/// Size of one RELR entry.
pub(crate) const DT_RELRENT: u64 = 37;

/// Upper bound on dynamic entries read (a real object has < 100).
const MAX_DYN: usize = 4096;

/// The raw values of the dynamic entries the loader uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct DynInfo {
    pub needed: Vec<u64>,
    pub soname: Option<u64>,
    pub rpath: Option<u64>,
    pub runpath: Option<u64>,
    pub strtab: Option<u64>,
    pub strsz: Option<u64>,
    pub symtab: Option<u64>,
    pub syment: Option<u64>,
    pub hash: Option<u64>,
    pub gnu_hash: Option<u64>,
    pub rela: Option<u64>,
    pub relasz: Option<u64>,
    pub relaent: Option<u64>,
    pub rel: Option<u64>,
    pub relsz: Option<u64>,
    pub relent: Option<u64>,
    pub jmprel: Option<u64>,
    pub pltrelsz: Option<u64>,
    pub pltrel: Option<u64>,
    pub relr: Option<u64>,
    pub relrsz: Option<u64>,
    pub relrent: Option<u64>,
    pub init: Option<u64>,
    pub fini: Option<u64>,
    pub init_array: Option<u64>,
    pub init_arraysz: Option<u64>,
    pub fini_array: Option<u64>,
    pub fini_arraysz: Option<u64>,
    pub versym: Option<u64>,
    pub verdef: Option<u64>,
    pub verdefnum: Option<u64>,
    pub verneed: Option<u64>,
    pub verneednum: Option<u64>,
    pub flags: u64,
    pub flags_1: u64,
    pub textrel: bool,
    pub bind_now: bool,
    pub symbolic: bool,
    /// Every entry, in order, for `inspect`.
    pub entries: Vec<(u64, u64)>,
}

impl DynInfo {
    /// Reads `PT_DYNAMIC` at (`vaddr`, `size`). `unbias` turns an address
    /// value into a link-time virtual address: the identity for a file or a
    /// freshly mapped image, and "subtract the load bias" for objects the
    /// system loader has already relocated (glibc rewrites `d_ptr` in
    /// place).
    pub(crate) fn parse(
        path: &Path,
        view: &View,
        vaddr: u64,
        size: u64,
        unbias: impl Fn(u64) -> u64,
    ) -> Result<DynInfo> {
        let count = (size / std::mem::size_of::<Dyn>() as u64) as usize;
        let table: Table<Dyn> = view
            .table(vaddr, count as u64)
            .ok_or_else(|| Error::malformed(path, "PT_DYNAMIC is not readable", Some(vaddr)))?;
        let mut d = DynInfo::default();
        let mut terminated = false;
        for e in table.iter().take(MAX_DYN) {
            let v = e.d_val;
            match e.d_tag {
                DT_NULL => {
                    terminated = true;
                    break;
                }
                DT_NEEDED => d.needed.push(v),
                DT_SONAME => d.soname = Some(v),
                DT_RPATH => d.rpath = Some(v),
                DT_RUNPATH => d.runpath = Some(v),
                DT_STRTAB => d.strtab = Some(unbias(v)),
                DT_STRSZ => d.strsz = Some(v),
                DT_SYMTAB => d.symtab = Some(unbias(v)),
                DT_SYMENT => d.syment = Some(v),
                DT_HASH => d.hash = Some(unbias(v)),
                DT_GNU_HASH => d.gnu_hash = Some(unbias(v)),
                DT_RELA => d.rela = Some(unbias(v)),
                DT_RELASZ => d.relasz = Some(v),
                DT_RELAENT => d.relaent = Some(v),
                DT_REL => d.rel = Some(unbias(v)),
                DT_RELSZ => d.relsz = Some(v),
                DT_RELENT => d.relent = Some(v),
                DT_JMPREL => d.jmprel = Some(unbias(v)),
                DT_PLTRELSZ => d.pltrelsz = Some(v),
                DT_PLTREL => d.pltrel = Some(v),
                DT_RELR => d.relr = Some(unbias(v)),
                DT_RELRSZ => d.relrsz = Some(v),
                DT_RELRENT => d.relrent = Some(v),
                DT_INIT => d.init = Some(unbias(v)),
                DT_FINI => d.fini = Some(unbias(v)),
                DT_INIT_ARRAY => d.init_array = Some(unbias(v)),
                DT_INIT_ARRAYSZ => d.init_arraysz = Some(v),
                DT_FINI_ARRAY => d.fini_array = Some(unbias(v)),
                DT_FINI_ARRAYSZ => d.fini_arraysz = Some(v),
                DT_VERSYM => d.versym = Some(unbias(v)),
                DT_VERDEF => d.verdef = Some(unbias(v)),
                DT_VERDEFNUM => d.verdefnum = Some(v),
                DT_VERNEED => d.verneed = Some(unbias(v)),
                DT_VERNEEDNUM => d.verneednum = Some(v),
                DT_FLAGS => d.flags = v,
                DT_FLAGS_1 => d.flags_1 = v,
                DT_TEXTREL => d.textrel = true,
                DT_BIND_NOW => d.bind_now = true,
                DT_SYMBOLIC => d.symbolic = true,
                _ => {}
            }
            d.entries.push((e.d_tag, v));
        }
        if !terminated {
            return Err(Error::malformed(
                path,
                "dynamic section has no DT_NULL terminator",
                Some(vaddr),
            ));
        }
        if d.flags & DF_TEXTREL != 0 {
            d.textrel = true;
        }
        if d.flags & DF_BIND_NOW != 0 || d.flags_1 & DF_1_NOW != 0 {
            d.bind_now = true;
        }
        if d.flags & DF_SYMBOLIC != 0 {
            d.symbolic = true;
        }
        Ok(d)
    }

    /// `DF_1_NODELETE`.
    pub(crate) fn nodelete(&self) -> bool {
        self.flags_1 & DF_1_NODELETE != 0
    }
}

/// A table of relocations, with or without addends.
#[derive(Clone, Copy)]
pub(crate) enum RelocTable<'a> {
    /// `Elf64_Rela` entries.
    Rela(Table<'a, Rela>),
    /// `Elf64_Rel` entries (the addend is read from the target).
    Rel(Table<'a, Rel>),
}

impl RelocTable<'_> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            RelocTable::Rela(t) => t.len(),
            RelocTable::Rel(t) => t.len(),
        }
    }
}

/// Every table the loader needs, each checked to lie inside the object's
/// read-only, file-backed bytes, with sizes and entry sizes checked.
pub(crate) struct Tables<'a> {
    pub symtab: SymTab<'a>,
    pub versions: VersionTable,
    pub needed: Vec<String>,
    pub soname: Option<String>,
    pub rpath: Option<String>,
    pub runpath: Option<String>,
    /// Relocation tables in glibc's processing order: `DT_REL`, `DT_RELA`,
    /// then `DT_JMPREL`.
    pub relocs: Vec<RelocTable<'a>>,
    /// `DT_RELR` words.
    pub relr: Table<'a, u64>,
    /// `DT_INIT_ARRAY` (vaddr, count); read after relocation.
    pub init_array: Option<(u64, u64)>,
    /// `DT_FINI_ARRAY` (vaddr, count).
    pub fini_array: Option<(u64, u64)>,
}

impl<'a> Tables<'a> {
    /// The symbol and version tables alone, checked as far as lookups
    /// need (every table in bounds): what a host object, loaded and in use
    /// by the system loader, is read for. [`Tables::parse`] checks the rest.
    pub(crate) fn symbols(
        path: &Path,
        view: &View<'a>,
        d: &DynInfo,
    ) -> Result<(SymTab<'a>, VersionTable)> {
        let bad = |what: &str, at: Option<u64>| Error::malformed(path, what, at);
        let ro = view.read_only();
        let strtab_addr = d.strtab.ok_or_else(|| bad("no DT_STRTAB", None))?;
        let strsz = d.strsz.ok_or_else(|| bad("no DT_STRSZ", None))?;
        let strtab = ro.bytes(strtab_addr, strsz).ok_or_else(|| {
            bad(
                "DT_STRTAB/DT_STRSZ lies outside the read-only file-backed segments",
                Some(strtab_addr),
            )
        })?;
        if d.syment
            .is_some_and(|e| e != std::mem::size_of::<Sym>() as u64)
        {
            return Err(bad("DT_SYMENT is not the size of an Elf64_Sym", None));
        }
        let symtab_addr = d.symtab.ok_or_else(|| bad("no DT_SYMTAB", None))?;
        let mut hash = HashTable::parse(path, &ro, d.gnu_hash, d.hash)?;
        let nsyms = hash.symbol_count(path, &ro)?;
        let syms: Table<Sym> = ro.table(symtab_addr, nsyms).ok_or_else(|| {
            bad(
                &format!("DT_SYMTAB with {nsyms} symbols lies outside the read-only segments"),
                Some(symtab_addr),
            )
        })?;
        let versym = match d.versym {
            Some(a) => Some(
                ro.table::<u16>(a, nsyms)
                    .ok_or_else(|| bad("DT_VERSYM lies outside the read-only segments", Some(a)))?,
            ),
            None => None,
        };
        let versions = versions::parse(path, &ro, strtab, d)?;
        Ok((SymTab::new(syms, strtab, hash, versym, &versions), versions))
    }

    /// Validates every table `d` names against `view`.
    pub(crate) fn parse(path: &Path, view: &View<'a>, d: &DynInfo) -> Result<Tables<'a>> {
        let bad = |what: &str, at: Option<u64>| Error::malformed(path, what, at);
        let ro = view.read_only();
        let (symtab, versions) = Self::symbols(path, view, d)?;
        let strtab = symtab.strtab;
        let string = |what: &str, off: u64| -> Result<String> {
            cstr_at(strtab, off)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .ok_or_else(|| {
                    bad(
                        &format!("{what} string offset {off:#x} is outside DT_STRTAB"),
                        d.strtab,
                    )
                })
        };
        let needed = d
            .needed
            .iter()
            .map(|&o| string("DT_NEEDED", o))
            .collect::<Result<Vec<_>>>()?;
        let soname = d.soname.map(|o| string("DT_SONAME", o)).transpose()?;
        let rpath = d.rpath.map(|o| string("DT_RPATH", o)).transpose()?;
        let runpath = d.runpath.map(|o| string("DT_RUNPATH", o)).transpose()?;
        // Every symbol's version index names a version (lookups would
        // only miss a symbol whose index names none: a file that has one
        // is refused before it is used).
        if let Some(vs) = symtab.versym_table() {
            for (i, v) in vs.iter().enumerate() {
                let ndx = usize::from(v & 0x7fff);
                if ndx >= 2 && versions.get(ndx).is_none() {
                    return Err(bad(
                        &format!("DT_VERSYM entry {i} names version index {ndx}, which no VERDEF/VERNEED defines"),
                        Some(d.versym.unwrap_or(0) + 2 * i as u64),
                    ));
                }
            }
        }

        let mut relocs = Vec::new();
        if let Some(t) = reloc_table::<Rel>(path, &ro, "DT_REL", d.rel, d.relsz, d.relent)? {
            relocs.push(RelocTable::Rel(t));
        }
        let rela = reloc_table::<Rela>(path, &ro, "DT_RELA", d.rela, d.relasz, d.relaent)?;
        if let Some(t) = rela {
            relocs.push(RelocTable::Rela(t));
        }
        if let Some(jmprel) = d.jmprel {
            let size = d
                .pltrelsz
                .ok_or_else(|| bad("DT_JMPREL without DT_PLTRELSZ", None))?;
            // With -z now, ld often makes .rela.plt follow .rela.dyn and
            // counts it in DT_RELASZ too; do not apply it twice.
            let inside_rela = match (d.rela, d.relasz) {
                (Some(a), Some(sz)) => {
                    jmprel >= a && jmprel.saturating_add(size) <= a.saturating_add(sz)
                }
                _ => false,
            };
            if !inside_rela {
                match d.pltrel {
                    Some(DT_RELA) | None => {
                        let t = reloc_table::<Rela>(
                            path,
                            &ro,
                            "DT_JMPREL",
                            Some(jmprel),
                            Some(size),
                            None,
                        )?;
                        relocs.extend(t.map(RelocTable::Rela));
                    }
                    Some(DT_REL) => {
                        let t = reloc_table::<Rel>(
                            path,
                            &ro,
                            "DT_JMPREL",
                            Some(jmprel),
                            Some(size),
                            None,
                        )?;
                        relocs.extend(t.map(RelocTable::Rel));
                    }
                    Some(other) => {
                        return Err(bad(
                            &format!("DT_PLTREL is {other}, neither DT_REL nor DT_RELA"),
                            None,
                        ))
                    }
                }
            }
        }
        let relr = match (d.relr, d.relrsz) {
            (Some(a), Some(sz)) => {
                if d.relrent.is_some_and(|e| e != 8) || sz % 8 != 0 {
                    return Err(bad("DT_RELRENT/DT_RELRSZ is not a multiple of 8", Some(a)));
                }
                ro.table::<u64>(a, sz / 8)
                    .ok_or_else(|| bad("DT_RELR lies outside the read-only segments", Some(a)))?
            }
            (None, None) => Table::empty(),
            _ => return Err(bad("DT_RELR and DT_RELRSZ must come together", None)),
        };

        let init_array = array(path, view, "DT_INIT_ARRAY", d.init_array, d.init_arraysz)?;
        let fini_array = array(path, view, "DT_FINI_ARRAY", d.fini_array, d.fini_arraysz)?;
        Ok(Tables {
            symtab,
            versions,
            needed,
            soname,
            rpath,
            runpath,
            relocs,
            relr,
            init_array,
            fini_array,
        })
    }
}

fn reloc_table<'a, T: super::Pod>(
    path: &Path,
    ro: &View<'a>,
    name: &str,
    addr: Option<u64>,
    size: Option<u64>,
    ent: Option<u64>,
) -> Result<Option<Table<'a, T>>> {
    let entsz = std::mem::size_of::<T>() as u64;
    match (addr, size) {
        (None, None) | (None, Some(0)) => Ok(None),
        (Some(a), Some(sz)) => {
            if ent.is_some_and(|e| e != entsz) || sz % entsz != 0 {
                return Err(Error::malformed(
                    path,
                    format!("{name}: size {sz:#x} or entry size is not a multiple of {entsz}"),
                    Some(a),
                ));
            }
            ro.table::<T>(a, sz / entsz).map(Some).ok_or_else(|| {
                Error::malformed(
                    path,
                    format!("{name} lies outside the read-only segments"),
                    Some(a),
                )
            })
        }
        _ => Err(Error::malformed(
            path,
            format!("{name} without its size"),
            addr,
        )),
    }
}

fn array(
    path: &Path,
    view: &View,
    name: &str,
    addr: Option<u64>,
    size: Option<u64>,
) -> Result<Option<(u64, u64)>> {
    match (addr, size) {
        (None, _) | (_, Some(0)) => Ok(None),
        (Some(a), Some(sz)) => {
            if sz % 8 != 0 || a % 8 != 0 || view.bytes(a, sz).is_none() {
                return Err(Error::malformed(
                    path,
                    format!(
                        "{name} (size {sz:#x}) is misaligned or outside the file-backed segments"
                    ),
                    Some(a),
                ));
            }
            Ok(Some((a, sz / 8)))
        }
        (Some(a), None) => Err(Error::malformed(
            path,
            format!("{name} without its size"),
            Some(a),
        )),
    }
}

/// The addresses `DT_RELR` words relocate: an even word is an address
/// (and the next one follows it); an odd word is a bitmap of the 63 words
/// after the last address covered.
pub(crate) fn relr_offsets(words: Table<'_, u64>) -> impl Iterator<Item = u64> + '_ {
    let mut next = 0u64;
    words.iter().flat_map(move |word| {
        let (start, bits) = if word & 1 == 0 {
            next = word.wrapping_add(8);
            (word, 1u64)
        } else {
            let start = next;
            next = next.wrapping_add(63 * 8);
            (start, word >> 1)
        };
        (0..64u64)
            .take_while(move |i| bits >> i != 0)
            .filter(move |i| (bits >> i) & 1 == 1)
            .map(move |i| start.wrapping_add(8 * i))
    })
}

/// The NUL-terminated string at `off` in `strtab`, without the NUL.
#[inline]
pub(crate) fn cstr_at(strtab: &[u8], off: u64) -> Option<&[u8]> {
    let rest = strtab.get(usize::try_from(off).ok()?..)?;
    // CStr's search for the NUL is memchr: much faster than a byte loop.
    std::ffi::CStr::from_bytes_until_nul(rest)
        .ok()
        .map(|c| c.to_bytes())
}
