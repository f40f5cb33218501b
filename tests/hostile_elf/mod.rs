//! Shared by the `tests/hostile_*.rs` tests: where the fields of an ELF
//! shared object are (located by parsing a pristine file with goblin), the
//! boundary values to put in them, a seeded PRNG, and `/proc/self` views
//! of soloader's footprint (mappings, reservations, file descriptors).

#![allow(dead_code)]

use std::fs;
use std::path::Path;

use goblin::elf::Elf;

// ---------------------------------------------------------------------------
// A small deterministic PRNG (SplitMix64).

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `k` distinct indices of `0..n`, in increasing order (all of them if
    /// `k >= n`).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        if k < n {
            for i in 0..k {
                let j = i + self.below(n - i);
                idx.swap(i, j);
            }
            idx.truncate(k);
            idx.sort_unstable();
        }
        idx
    }
}

// ---------------------------------------------------------------------------
// Where the fields are.

/// What a field belongs to, for per-category quotas and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    ElfHeader,
    ProgramHeader,
    Dynamic,
    Symbol,
    Hash,
    Version,
    Relocation,
    Strings,
    Other,
}

/// What kind of value a field holds, to pick meaningful boundary values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A size, count, index, offset or address.
    Number,
    /// `p_type`.
    SegmentType,
    /// `p_flags`.
    SegmentFlags,
    /// `d_tag`.
    DynTag,
    /// The type half of `r_info`.
    RelocType,
    /// `st_info`.
    SymInfo,
    /// `st_shndx`.
    Section,
}

/// One field of the file: where, how wide, what.
#[derive(Debug, Clone)]
pub struct Field {
    pub off: usize,
    pub width: usize,
    pub name: String,
    pub category: Category,
    pub kind: Kind,
}

/// The located structures of one pristine file.
pub struct Layout {
    pub size: usize,
    pub fields: Vec<Field>,
    /// Offsets at which a structure starts or ends (truncation points).
    pub boundaries: Vec<usize>,
    /// Byte ranges of the structures the loader reads (headers and
    /// tables), for biased bit flips.
    pub regions: Vec<(usize, usize)>,
    /// `.dynstr`'s file range.
    pub dynstr: Option<(usize, usize)>,
    /// Link-time end of the file-backed part of the last `PT_LOAD`, and of
    /// the whole image: addresses just past what a table may use.
    pub file_backed_end: u64,
    pub image_end: u64,
    /// Relocation entries: (file offset of the entry, `r_offset`, type).
    pub relas: Vec<(usize, u64, u32)>,
    /// `PT_LOAD`s: (vaddr, memsz, flags).
    pub loads: Vec<(u64, u64, u32)>,
    /// Every program header, as the file has it.
    pub phdrs: Vec<Phdr>,
}

/// One program header and where it is.
#[derive(Debug, Clone, Copy)]
pub struct Phdr {
    /// File offset of the header itself.
    pub at: usize,
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
    pub p_align: u64,
}

impl Phdr {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; 56] {
        let mut b = [0u8; 56];
        write_uint(&mut b, 0, 4, u64::from(self.p_type));
        write_uint(&mut b, 4, 4, u64::from(self.p_flags));
        write_uint(&mut b, 8, 8, self.p_offset);
        write_uint(&mut b, 16, 8, self.p_vaddr);
        write_uint(&mut b, 24, 8, self.p_vaddr);
        write_uint(&mut b, 32, 8, self.p_filesz);
        write_uint(&mut b, 40, 8, self.p_memsz);
        write_uint(&mut b, 48, 8, self.p_align);
        b
    }
}

impl Layout {
    /// The field called `name`, if located.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

pub fn read_uint(b: &[u8], off: usize, width: usize) -> u64 {
    let mut w = [0u8; 8];
    w[..width].copy_from_slice(&b[off..off + width]);
    u64::from_le_bytes(w)
}

pub fn write_uint(b: &mut [u8], off: usize, width: usize, v: u64) {
    b[off..off + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

struct Builder {
    fields: Vec<Field>,
    boundaries: Vec<usize>,
    regions: Vec<(usize, usize)>,
    size: usize,
}

impl Builder {
    fn add(&mut self, off: usize, width: usize, name: String, category: Category, kind: Kind) {
        if off + width <= self.size {
            self.fields.push(Field {
                off,
                width,
                name,
                category,
                kind,
            });
        }
    }

    fn num(&mut self, off: usize, width: usize, name: String, category: Category) {
        self.add(off, width, name, category, Kind::Number);
    }

    fn region(&mut self, start: usize, end: usize) {
        let end = end.min(self.size);
        if start < end {
            self.regions.push((start, end));
            self.boundaries.extend([start, end]);
        }
    }
}

/// A few representative entries of a table of `n`: the first two, a
/// middle one and the last.
fn picks(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [0, 1, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(|&i| i < n)
        .collect();
    v.dedup();
    v
}

/// Locates every field the loader reads in `bytes`, a well-formed x86-64
/// shared object.
pub fn layout(bytes: &[u8]) -> Layout {
    use Category::*;
    let elf = Elf::parse(bytes).expect("a pristine library parses");
    let size = bytes.len();
    let mut b = Builder {
        fields: Vec::new(),
        boundaries: vec![0, 1, 4, 16, 52, 63],
        regions: Vec::new(),
        size,
    };

    // ELF header.
    for (name, off, width) in [
        ("e_ident[EI_MAG]", 0, 4),
        ("e_ident[EI_CLASS]", 4, 1),
        ("e_ident[EI_DATA]", 5, 1),
        ("e_ident[EI_VERSION]", 6, 1),
        ("e_ident[EI_OSABI]", 7, 1),
        ("e_type", 16, 2),
        ("e_machine", 18, 2),
        ("e_version", 20, 4),
        ("e_entry", 24, 8),
        ("e_phoff", 32, 8),
        ("e_shoff", 40, 8),
        ("e_flags", 48, 4),
        ("e_ehsize", 52, 2),
        ("e_phentsize", 54, 2),
        ("e_phnum", 56, 2),
        ("e_shentsize", 58, 2),
        ("e_shnum", 60, 2),
        ("e_shstrndx", 62, 2),
    ] {
        b.num(off, width, name.to_string(), ElfHeader);
    }
    b.region(0, 64);

    // Program headers.
    let phoff = elf.header.e_phoff as usize;
    let phnum = elf.program_headers.len();
    b.region(phoff, phoff + 56 * phnum);
    let mut loads = Vec::new();
    let mut phdrs = Vec::new();
    for (i, ph) in elf.program_headers.iter().enumerate() {
        let at = phoff + 56 * i;
        phdrs.push(Phdr {
            at,
            p_type: ph.p_type,
            p_flags: ph.p_flags,
            p_offset: ph.p_offset,
            p_vaddr: ph.p_vaddr,
            p_filesz: ph.p_filesz,
            p_memsz: ph.p_memsz,
            p_align: ph.p_align,
        });
        b.boundaries.extend([at, at + 28, at + 56]);
        let ty = goblin::elf::program_header::pt_to_str(ph.p_type);
        b.add(
            at,
            4,
            format!("phdr[{i}] {ty} p_type"),
            ProgramHeader,
            Kind::SegmentType,
        );
        b.add(
            at + 4,
            4,
            format!("phdr[{i}] {ty} p_flags"),
            ProgramHeader,
            Kind::SegmentFlags,
        );
        for (fname, off) in [
            ("p_offset", 8),
            ("p_vaddr", 16),
            ("p_paddr", 24),
            ("p_filesz", 32),
            ("p_memsz", 40),
            ("p_align", 48),
        ] {
            b.num(
                at + off,
                8,
                format!("phdr[{i}] {ty} {fname}"),
                ProgramHeader,
            );
        }
        if ph.p_type == goblin::elf::program_header::PT_LOAD {
            loads.push((ph.p_vaddr, ph.p_memsz, ph.p_flags));
            let end = (ph.p_offset + ph.p_filesz) as usize;
            b.boundaries.extend([end.saturating_sub(1), end]);
        }
        if ph.p_type == goblin::elf::program_header::PT_DYNAMIC {
            let start = ph.p_offset as usize;
            let n = ph.p_filesz as usize / 16;
            b.region(start, start + 16 * n);
            for k in 0..n {
                let e = start + 16 * k;
                let tag = read_uint(bytes, e, 8);
                let tname = goblin::elf::dynamic::tag_to_str(tag);
                b.add(
                    e,
                    8,
                    format!("dyn[{k}] {tname} d_tag"),
                    Dynamic,
                    Kind::DynTag,
                );
                b.num(e + 8, 8, format!("dyn[{k}] {tname} d_val"), Dynamic);
                b.boundaries.push(e + 16);
                if tag == 0 {
                    break;
                }
            }
        }
    }
    let file_backed_end = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .map(|p| p.p_vaddr + p.p_filesz)
        .max()
        .unwrap_or(0);
    let image_end = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .map(|p| p.p_vaddr + p.p_memsz)
        .max()
        .unwrap_or(0);

    // Tables, by section.
    let mut dynstr = None;
    let mut relas = Vec::new();
    for sh in &elf.section_headers {
        let name = elf.shdr_strtab.get_at(sh.sh_name).unwrap_or("");
        let (start, len) = (sh.sh_offset as usize, sh.sh_size as usize);
        if sh.sh_type == goblin::elf::section_header::SHT_NOBITS || len == 0 {
            continue;
        }
        let end = start + len;
        match name {
            ".dynsym" => {
                b.region(start, end);
                for i in picks(len / 24) {
                    let e = start + 24 * i;
                    b.num(e, 4, format!("dynsym[{i}] st_name"), Symbol);
                    b.add(
                        e + 4,
                        1,
                        format!("dynsym[{i}] st_info"),
                        Symbol,
                        Kind::SymInfo,
                    );
                    b.num(e + 5, 1, format!("dynsym[{i}] st_other"), Symbol);
                    b.add(
                        e + 6,
                        2,
                        format!("dynsym[{i}] st_shndx"),
                        Symbol,
                        Kind::Section,
                    );
                    b.num(e + 8, 8, format!("dynsym[{i}] st_value"), Symbol);
                    b.num(e + 16, 8, format!("dynsym[{i}] st_size"), Symbol);
                }
            }
            ".dynstr" => {
                b.region(start, end);
                dynstr = Some((start, end));
            }
            ".gnu.hash" => {
                b.region(start, end);
                for (k, f) in ["nbuckets", "symoffset", "bloom_size", "bloom_shift"]
                    .iter()
                    .enumerate()
                {
                    b.num(start + 4 * k, 4, format!("gnu_hash {f}"), Hash);
                }
                let nbuckets = read_uint(bytes, start, 4) as usize;
                let bloom = read_uint(bytes, start + 8, 4) as usize;
                b.num(start + 16, 8, "gnu_hash bloom[0]".into(), Hash);
                let buckets = start + 16 + 8 * bloom;
                for i in picks(nbuckets) {
                    b.num(buckets + 4 * i, 4, format!("gnu_hash bucket[{i}]"), Hash);
                }
                let chain = buckets + 4 * nbuckets;
                for i in picks(end.saturating_sub(chain) / 4) {
                    b.num(chain + 4 * i, 4, format!("gnu_hash chain[{i}]"), Hash);
                }
                b.boundaries.extend([start + 16, buckets, chain]);
            }
            ".hash" => {
                b.region(start, end);
                b.num(start, 4, "hash nbucket".into(), Hash);
                b.num(start + 4, 4, "hash nchain".into(), Hash);
                let nbucket = read_uint(bytes, start, 4) as usize;
                for i in picks(nbucket) {
                    b.num(start + 8 + 4 * i, 4, format!("hash bucket[{i}]"), Hash);
                }
                let chains = start + 8 + 4 * nbucket;
                for i in picks(end.saturating_sub(chains) / 4) {
                    b.num(chains + 4 * i, 4, format!("hash chain[{i}]"), Hash);
                }
            }
            ".gnu.version" => {
                b.region(start, end);
                for i in picks(len / 2) {
                    b.num(start + 2 * i, 2, format!("versym[{i}]"), Version);
                }
            }
            ".gnu.version_d" => {
                b.region(start, end);
                let mut at = start;
                for n in 0..sh.sh_info.max(1) as usize {
                    if at + 20 > end {
                        break;
                    }
                    for (f, off, w) in [
                        ("vd_version", 0, 2),
                        ("vd_flags", 2, 2),
                        ("vd_ndx", 4, 2),
                        ("vd_cnt", 6, 2),
                        ("vd_hash", 8, 4),
                        ("vd_aux", 12, 4),
                        ("vd_next", 16, 4),
                    ] {
                        b.num(at + off, w, format!("verdef[{n}] {f}"), Version);
                    }
                    let aux = at + read_uint(bytes, at + 12, 4) as usize;
                    b.num(aux, 4, format!("verdef[{n}] vda_name"), Version);
                    b.num(aux + 4, 4, format!("verdef[{n}] vda_next"), Version);
                    let next = read_uint(bytes, at + 16, 4) as usize;
                    if next == 0 {
                        break;
                    }
                    at += next;
                }
            }
            ".gnu.version_r" => {
                b.region(start, end);
                let mut at = start;
                for n in 0..sh.sh_info.max(1) as usize {
                    if at + 16 > end {
                        break;
                    }
                    for (f, off, w) in [
                        ("vn_version", 0, 2),
                        ("vn_cnt", 2, 2),
                        ("vn_file", 4, 4),
                        ("vn_aux", 8, 4),
                        ("vn_next", 12, 4),
                    ] {
                        b.num(at + off, w, format!("verneed[{n}] {f}"), Version);
                    }
                    let aux = at + read_uint(bytes, at + 8, 4) as usize;
                    if aux + 16 <= end {
                        for (f, off, w) in [
                            ("vna_hash", 0, 4),
                            ("vna_flags", 4, 2),
                            ("vna_other", 6, 2),
                            ("vna_name", 8, 4),
                            ("vna_next", 12, 4),
                        ] {
                            b.num(aux + off, w, format!("verneed[{n}] {f}"), Version);
                        }
                    }
                    let next = read_uint(bytes, at + 12, 4) as usize;
                    if next == 0 {
                        break;
                    }
                    at += next;
                }
            }
            ".rela.dyn" | ".rela.plt" => {
                b.region(start, end);
                let n = len / 24;
                for i in 0..n {
                    let e = start + 24 * i;
                    let info = read_uint(bytes, e + 8, 8);
                    relas.push((e, read_uint(bytes, e, 8), info as u32));
                }
                for i in picks(n) {
                    let e = start + 24 * i;
                    b.num(e, 8, format!("{name}[{i}] r_offset"), Relocation);
                    b.add(
                        e + 8,
                        4,
                        format!("{name}[{i}] r_info type"),
                        Relocation,
                        Kind::RelocType,
                    );
                    b.num(e + 12, 4, format!("{name}[{i}] r_info sym"), Relocation);
                    b.num(e + 16, 8, format!("{name}[{i}] r_addend"), Relocation);
                }
            }
            ".relr.dyn" => {
                b.region(start, end);
                for i in picks(len / 8) {
                    b.num(start + 8 * i, 8, format!("relr[{i}]"), Relocation);
                }
            }
            ".init_array" | ".fini_array" => {
                b.region(start, end);
                b.num(start, 8, format!("{name}[0]"), Other);
            }
            ".eh_frame_hdr" => {
                b.region(start, end);
                b.num(start, 1, "eh_frame_hdr version".into(), Other);
                b.num(start + 1, 1, "eh_frame_hdr eh_frame_ptr_enc".into(), Other);
                b.num(start + 4, 4, "eh_frame_hdr eh_frame_ptr".into(), Other);
            }
            _ => {}
        }
    }
    b.boundaries.extend([size.saturating_sub(1)]);
    b.boundaries.retain(|&x| x < size);
    b.boundaries.sort_unstable();
    b.boundaries.dedup();
    Layout {
        size,
        fields: b.fields,
        boundaries: b.boundaries,
        regions: b.regions,
        dynstr,
        file_backed_end,
        image_end,
        relas,
        loads,
        phdrs,
    }
}

// ---------------------------------------------------------------------------
// Boundary values.

/// The values to try in `f`, whose pristine value is `orig`: 0, 1, -1,
/// huge, misaligned, pointing past the end of the file or image, and
/// values meaningful for the field's kind. Never `orig` itself.
pub fn values(f: &Field, orig: u64, l: &Layout) -> Vec<u64> {
    let mask = if f.width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * f.width)) - 1
    };
    let size = l.size as u64;
    let mut v: Vec<u64> = vec![0, 1, mask, mask >> 1, (mask >> 1) + 1];
    v.extend([orig.wrapping_add(1), orig.wrapping_add(3), orig ^ 1]);
    match f.kind {
        Kind::Number => {
            // Shift amounts and bit counts: just inside and outside 32 and
            // 64 bits.
            v.extend([31, 32, 63, 64]);
            if f.width >= 4 {
                v.extend([
                    size,
                    size + 8,
                    l.file_backed_end,
                    l.image_end,
                    l.image_end.wrapping_sub(4),
                    orig.wrapping_add(0x1000),
                    orig.wrapping_sub(8),
                ]);
            }
            if f.width == 8 {
                v.extend([
                    1 << 40,
                    1 << 47,
                    orig.wrapping_mul(2),
                    orig.wrapping_add(size),
                ]);
            }
        }
        Kind::SegmentType => v.extend([1, 2, 3, 7, 0x6474_e550, 0x6474_e551, 0x6474_e552]),
        Kind::SegmentFlags => v.extend([0, 1, 2, 4, 5, 6, 7]),
        Kind::DynTag => v.extend([1, 5, 6, 4, 0x6fff_fef5, 7, 23, 30, 0x6fff_fffb, 36]),
        Kind::RelocType => v.extend([0, 1, 5, 6, 7, 8, 16, 17, 18, 36, 37, 42, 0xff]),
        Kind::SymInfo => v.extend([0x10, 0x11, 0x12, 0x16, 0x1a, 0x20, 0x00]),
        Kind::Section => v.extend([0, 1, 0xfff1, 0xfff2, 0xff00]),
    }
    let mut out: Vec<u64> = v
        .into_iter()
        .map(|x| x & mask)
        .filter(|&x| x != orig)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------
// The process's footprint.

/// `/proc/self/maps`, one string per line.
pub fn maps_lines() -> Vec<String> {
    fs::read_to_string("/proc/self/maps")
        .expect("reading /proc/self/maps")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The lines of `/proc/self/maps` mapping a file under `dir`.
pub fn mappings_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy();
    maps_lines()
        .into_iter()
        .filter(|l| l.contains(d.as_ref()))
        .collect()
}

/// Anonymous `PROT_NONE` mappings: soloader's reservations (and gaps)
/// look like this, as do thread stack guards.
pub fn anon_reservations() -> usize {
    maps_lines()
        .iter()
        .filter(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            f.len() == 5 && f[1] == "---p" && f[4] == "0"
        })
        .count()
}

/// Open file descriptors.
pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .count()
}

/// Open file descriptors that refer to a file under `dir`.
pub fn fds_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy();
    fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains(d.as_ref()))
        .collect()
}

// ---------------------------------------------------------------------------
// Hand-made mutants.

/// Each dynamic entry: (file offset of the entry, tag, value).
pub fn dyn_entries(bytes: &[u8]) -> Vec<(usize, u64, u64)> {
    let elf = Elf::parse(bytes).expect("a pristine library parses");
    let ph = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_DYNAMIC)
        .expect("PT_DYNAMIC");
    let start = ph.p_offset as usize;
    (0..ph.p_filesz as usize / 16)
        .map(|k| {
            let at = start + 16 * k;
            (at, read_uint(bytes, at, 8), read_uint(bytes, at + 8, 8))
        })
        .collect()
}

/// `.dynstr`'s file offset and length.
pub fn dynstr(bytes: &[u8]) -> (usize, usize) {
    let elf = Elf::parse(bytes).expect("a pristine library parses");
    elf.section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".dynstr"))
        .map(|s| (s.sh_offset as usize, s.sh_size as usize))
        .expect(".dynstr")
}

/// The string at `off` in `.dynstr` (offsets as `DT_NEEDED` and `st_name`
/// hold them).
pub fn dynstr_at(bytes: &[u8], off: u64) -> String {
    let (start, len) = dynstr(bytes);
    let s = &bytes[start + off as usize..start + len];
    String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]).into_owned()
}

/// The `.dynstr` offset of `name`, which must be there.
pub fn dynstr_find(bytes: &[u8], name: &str) -> u64 {
    let (start, len) = dynstr(bytes);
    let table = &bytes[start..start + len];
    let mut want = name.as_bytes().to_vec();
    want.push(0);
    (0..table.len())
        .find(|&i| table[i..].starts_with(&want) && (i == 0 || table[i - 1] == 0))
        .unwrap_or_else(|| panic!("{name} not in .dynstr")) as u64
}

/// The `.dynsym` entries: (file offset, name, defined).
pub fn dynsyms(bytes: &[u8]) -> Vec<(usize, String, bool)> {
    let elf = Elf::parse(bytes).expect("a pristine library parses");
    let sh = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".dynsym"))
        .expect(".dynsym");
    (0..sh.sh_size as usize / 24)
        .map(|i| {
            let at = sh.sh_offset as usize + 24 * i;
            let name = dynstr_at(bytes, read_uint(bytes, at, 4));
            (at, name, read_uint(bytes, at + 6, 2) != 0)
        })
        .collect()
}
