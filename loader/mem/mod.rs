//! Measuring what a loaded library costs in physical memory, per segment
//! and per process, from the kernel's own accounting.
//!
//! A library's pages fall into a few kinds ([`SegmentKind`]): the headers
//! and dynamic symbol tables, text, read-only data, the RELRO part that
//! relocation writes and then makes read-only, writable data, and `.bss`.
//! File pages nobody writes stay the page cache's pages, one physical copy
//! however many processes map them; pages a process writes (relocation,
//! the zeroed `.bss` tail, the program's own stores) become private
//! anonymous copies. This module shows which is which, for any process:
//!
//! - [`Smaps`] / [`Rollup`] parse `/proc/PID/smaps`, `smaps_rollup` and
//!   `maps`: every field by name, unknown ones kept;
//! - [`Pagemap`] reads `/proc/PID/pagemap` ([`PageInfo`]: present,
//!   file-or-shared-anonymous, exclusively mapped, soft-dirty, and the frame
//!   number when permitted); [`KpageCount`] and [`KpageFlags`] read the
//!   per-frame tables when readable;
//! - [`regions`] cuts a [`crate::Library`]'s own segment list into
//!   [`Region`]s by kind (from the segments' protections and their RELRO
//!   and `.bss` ranges, never from guesses about VMAs);
//! - [`measure`] reads one process and sums its pages per kind
//!   ([`Measurement`]); [`summarize`] combines several processes, counting
//!   distinct physical frames ([`Summary`]);
//! - [`mappers`] lists the processes mapping a file.
//!
//! # Privileges
//!
//! Reading another process's `smaps` and `pagemap` needs ptrace-read
//! access (same user, or root). Without `CAP_SYS_ADMIN` the frame numbers
//! read as 0 and `/proc/kpagecount` is not readable, so: PSS comes from
//! `smaps` (truncated to whole KiB once per VMA), and distinct frames cannot
//! be counted — "shared" then only means "mapped by more than one page
//! table entry" (pagemap's exclusive bit). [`Access`] says which case
//! applies. As root, PSS is exact (Σ page size ÷ map count, per page) and
//! every frame is known.
//!
//! # Traps this module avoids
//!
//! - It never maps the measured library: whoever measures must not be a
//!   mapper (it would raise every map count). [`mappers`] finds others.
//! - Summed `smaps` `Pss` undercounts (truncation per VMA); per-page data
//!   is used when readable, and both are reported.
//! - `Rss` summed over processes counts a shared page once per process;
//!   only PSS or distinct frames add up to physical memory.
//! - Fault-around maps different neighbouring pages in each process, so
//!   sharing is proven per file page (one frame per file offset across all
//!   processes), not by comparing per-process totals.

mod pagemap;
mod smaps;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use pagemap::{KpageCount, KpageFlags, PageInfo, Pagemap};
pub use smaps::{Fields, Rollup, Smaps, Value, Vma};

use crate::Segment;

/// The system page size in bytes.
pub fn page_size() -> usize {
    crate::elf::page_size()
}

/// What part of a library a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentKind {
    /// The first read-only segment, at file offset 0: ELF and program
    /// headers, `.dynsym`, `.dynstr`, hash tables, relocation tables.
    Hdr,
    /// Executable segments.
    Text,
    /// Other read-only segments: `.rodata`, `.eh_frame`.
    Rodata,
    /// The `PT_GNU_RELRO` part: written by relocation, then read-only.
    Relro,
    /// The file-backed part of writable segments: `.data`, `.got.plt`,
    /// and the page holding the start of `.bss`.
    Data,
    /// Anonymous zero pages past the last file page of a segment.
    Bss,
    /// File bytes no `PT_LOAD` covers (section headers, symbol tables,
    /// debug information): only a copy of the whole file has them.
    Other,
}

impl SegmentKind {
    /// Every kind, in display order.
    pub const ALL: [SegmentKind; 7] = [
        SegmentKind::Hdr,
        SegmentKind::Text,
        SegmentKind::Rodata,
        SegmentKind::Relro,
        SegmentKind::Data,
        SegmentKind::Bss,
        SegmentKind::Other,
    ];

    /// The short name: `hdr`, `text`, `rodata`, `relro`, `data`, `bss`,
    /// `other`.
    pub fn name(self) -> &'static str {
        match self {
            SegmentKind::Hdr => "hdr",
            SegmentKind::Text => "text",
            SegmentKind::Rodata => "rodata",
            SegmentKind::Relro => "relro",
            SegmentKind::Data => "data",
            SegmentKind::Bss => "bss",
            SegmentKind::Other => "other",
        }
    }

    /// The kind called `name` (see [`SegmentKind::name`]).
    pub fn from_name(name: &str) -> Option<SegmentKind> {
        SegmentKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for SegmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A page-aligned address range of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// What it is.
    pub kind: SegmentKind,
    /// Where it is (page-aligned).
    pub range: Range<usize>,
    /// The file offset whose contents `range.start` holds, if the range
    /// corresponds to file bytes (also for a copy of the file in anonymous
    /// memory); `None` for `.bss`.
    pub file_offset: Option<u64>,
}

impl Region {
    /// The file offset of the page at `addr`, if the region has one.
    pub fn file_offset_of(&self, addr: usize) -> Option<u64> {
        let delta = addr.checked_sub(self.range.start)? as u64;
        self.file_offset.map(|o| o + delta)
    }
}

/// Cuts a library's segments (as [`crate::Library::segments`] gives them)
/// into page-aligned regions by kind:
///
/// - the first read-only segment, if at file offset 0: `hdr`;
/// - an executable segment: `text`;
/// - any other read-only segment: `rodata`;
/// - within any segment, its RELRO range: `relro`;
/// - the rest of a writable segment's file part: `data`;
/// - a segment's anonymous part past its last file page: `bss`.
///
/// Regions are returned sorted, non-overlapping (a page two segments share
/// goes to the first) and without empty ones.
pub fn regions(segments: &[Segment]) -> Vec<Region> {
    let page = page_size();
    let down = |a: usize| a / page * page;
    let up = |a: usize| a.div_ceil(page) * page;
    let mut sorted: Vec<&Segment> = segments.iter().collect();
    sorted.sort_by_key(|s| s.range.start);
    let mut out: Vec<Region> = Vec::new();
    let mut seen_readonly = false;
    for s in sorted {
        let exec = s.prot & libc::PROT_EXEC != 0;
        let write = s.prot & libc::PROT_WRITE != 0;
        let base = if exec {
            SegmentKind::Text
        } else if write {
            SegmentKind::Data
        } else {
            let first = !seen_readonly;
            seen_readonly = true;
            if first && s.file_offset == 0 {
                SegmentKind::Hdr
            } else {
                SegmentKind::Rodata
            }
        };
        let file = down(s.file_range.start)..up(s.file_range.end);
        let offset_at = |a: usize| s.file_offset + (a - file.start) as u64;
        let mut pieces: Vec<Region> = Vec::new();
        let mut push = |kind, range: Range<usize>, file_offset| {
            if range.start < range.end {
                pieces.push(Region {
                    kind,
                    range,
                    file_offset,
                });
            }
        };
        if file.start < file.end {
            let relro = s
                .relro
                .as_ref()
                .map(|r| down(r.start).max(file.start)..down(r.end).min(file.end))
                .filter(|r| r.start < r.end);
            match relro {
                Some(r) => {
                    push(base, file.start..r.start, Some(offset_at(file.start)));
                    push(SegmentKind::Relro, r.clone(), Some(offset_at(r.start)));
                    push(base, r.end..file.end, Some(offset_at(r.end)));
                }
                None => push(base, file.clone(), Some(offset_at(file.start))),
            }
        }
        let anon_start = if file.start < file.end {
            file.end
        } else {
            down(s.range.start)
        };
        push(SegmentKind::Bss, anon_start..up(s.range.end), None);
        for mut r in pieces {
            if let Some(last) = out.last() {
                if r.range.start < last.range.end {
                    let cut = last.range.end.min(r.range.end);
                    if let Some(o) = r.file_offset.as_mut() {
                        *o += (cut - r.range.start) as u64;
                    }
                    r.range.start = cut;
                }
            }
            if r.range.start < r.range.end {
                out.push(r);
            }
        }
    }
    out
}

/// What this process may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// Frame numbers in `pagemap` are real (non-zero): root.
    pub pfn: bool,
    /// `/proc/kpagecount` is readable: exact per-page PSS.
    pub kpagecount: bool,
    /// `/proc/kpageflags` is readable: the zero page and large folios are
    /// recognised for certain.
    pub kpageflags: bool,
}

impl Access {
    /// Whether PSS is computed per page (Σ page size ÷ map count) rather
    /// than taken from `smaps`.
    pub fn exact_pss(&self) -> bool {
        self.pfn && self.kpagecount
    }

    /// What this process can and cannot tell, in one sentence.
    pub fn describe(&self) -> &'static str {
        if self.exact_pss() {
            "frame numbers and /proc/kpagecount are readable, so PSS is exact per page and physical frames are counted"
        } else if self.pfn {
            "frame numbers are readable but /proc/kpagecount is not, so PSS comes from smaps (truncated to whole KiB per mapping); physical frames are counted"
        } else {
            "frame numbers read as 0 and /proc/kpagecount is not readable, so PSS comes from smaps (truncated to whole KiB per mapping), physical frames cannot be counted, and \"shared\" only means mapped by more than one process"
        }
    }
}

/// `smaps` fields summed over the VMAs of one kind, in bytes.
///
/// A VMA entirely inside the kind's regions counts in full. A VMA that
/// only partly overlaps them (an anonymous `.bss` merged with a neighbouring
/// mapping, say) counts in proportion to its resident pages inside, and is
/// counted in `partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmapsUsage {
    /// `Rss`.
    pub rss: u64,
    /// `Pss` (each VMA's truncated to whole KiB by the kernel).
    pub pss: u64,
    /// `Shared_Clean`.
    pub shared_clean: u64,
    /// `Shared_Dirty`.
    pub shared_dirty: u64,
    /// `Private_Clean`.
    pub private_clean: u64,
    /// `Private_Dirty`.
    pub private_dirty: u64,
    /// `Anonymous`.
    pub anonymous: u64,
    /// `Swap`.
    pub swap: u64,
    /// VMAs that contributed.
    pub vmas: usize,
    /// Of those, VMAs only partly inside (prorated).
    pub partial: usize,
}

impl SmapsUsage {
    fn add_vma(&mut self, f: &Fields, num: u64, den: u64) {
        let part = |name: &str| {
            let v = f.bytes(name);
            if num == den {
                v
            } else if den == 0 {
                0
            } else {
                (u128::from(v) * u128::from(num) / u128::from(den)) as u64
            }
        };
        self.rss += part("Rss");
        self.pss += part("Pss");
        self.shared_clean += part("Shared_Clean");
        self.shared_dirty += part("Shared_Dirty");
        self.private_clean += part("Private_Clean");
        self.private_dirty += part("Private_Dirty");
        self.anonymous += part("Anonymous");
        self.swap += part("Swap");
        self.vmas += 1;
        if num != den {
            self.partial += 1;
        }
    }

    fn add(&mut self, o: &SmapsUsage) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.shared_clean += o.shared_clean;
        self.shared_dirty += o.shared_dirty;
        self.private_clean += o.private_clean;
        self.private_dirty += o.private_dirty;
        self.anonymous += o.anonymous;
        self.swap += o.swap;
        self.vmas += o.vmas;
        self.partial += o.partial;
    }
}

/// Memory use of one kind (or of everything) in one process, or summed
/// over processes. Bytes throughout.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Usage {
    /// Address space.
    pub vsz: u64,
    /// Resident: pages with a present page table entry, not counting the
    /// shared zero page (as `smaps` `Rss`).
    pub rss: u64,
    /// Proportional share: Σ page size ÷ map count per resident page when
    /// [`Access::exact_pss`], else `smaps` `Pss`.
    pub pss: f64,
    /// Resident pages mapped by no other page table entry (pagemap's
    /// exclusive bit; `smaps` `Private_Clean + Private_Dirty`).
    pub private: u64,
    /// Resident pages mapped more than once (`rss − private`).
    pub shared: u64,
    /// Resident pages with no file behind them: in a file mapping, the
    /// copies a write made (copy-on-write); in `.bss`, touched zero-fill
    /// memory. (`smaps` `Anonymous`.)
    pub anon: u64,
    /// Resident page-cache pages (`rss − anon`).
    pub file: u64,
    /// Swapped out.
    pub swap: u64,
    /// Mapped to the shared zero page (read, never written, anonymous).
    pub zero_page: u64,
    /// Resident and soft-dirty (written since the last soft-dirty reset,
    /// or since the mapping was made).
    pub soft_dirty: u64,
    /// The `smaps` view of the same VMAs.
    pub smaps: SmapsUsage,
}

impl Usage {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Usage) {
        self.vsz += o.vsz;
        self.rss += o.rss;
        self.pss += o.pss;
        self.private += o.private;
        self.shared += o.shared;
        self.anon += o.anon;
        self.file += o.file;
        self.swap += o.swap;
        self.zero_page += o.zero_page;
        self.soft_dirty += o.soft_dirty;
        self.smaps.add(&o.smaps);
    }
}

/// One virtual page of a measured region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Its kind.
    pub kind: SegmentKind,
    /// Its `pagemap` entry.
    pub info: PageInfo,
    /// The file offset it corresponds to, if its region has one.
    pub file_page: Option<u64>,
    /// `kpagecount` of its frame, when readable.
    pub mapcount: Option<u64>,
    /// `kpageflags` of its frame, when readable.
    pub flags: Option<u64>,
}

impl Page {
    /// Mapped to the shared zero page (certain with `kpageflags`, else
    /// [`PageInfo::maybe_zero_page`]).
    pub fn zero_page(&self) -> bool {
        match self.flags {
            Some(f) => self.info.present() && f & KpageFlags::ZERO_PAGE != 0,
            None => self.info.maybe_zero_page(),
        }
    }

    /// Resident and counted in `Rss`: present and not the zero page.
    pub fn resident(&self) -> bool {
        self.info.present() && !self.zero_page()
    }

    /// A private copy: resident with no file behind it.
    pub fn anonymous(&self) -> bool {
        self.resident() && !self.info.file_or_shared_anon()
    }
}

/// One process's pages in a set of regions, summed per kind.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The process.
    pub pid: i32,
    /// The page size used.
    pub page_size: usize,
    /// What could be read.
    pub access: Access,
    /// Per kind, for every kind among the regions.
    pub kinds: BTreeMap<SegmentKind, Usage>,
    /// All regions together (the `smaps` part counts a VMA spanning two
    /// kinds once).
    pub total: Usage,
    /// Every page of every region, in region order.
    pub pages: Vec<Page>,
    /// The `smaps` records of the VMAs overlapping the regions.
    pub vmas: Vec<Vma>,
    /// The whole process's `smaps_rollup`, if readable.
    pub rollup: Option<Rollup>,
}

impl Measurement {
    /// The addresses of the anonymous (copied-on-write or touched
    /// zero-fill) resident pages of `kind`, or of every kind if `None`.
    pub fn anonymous_pages(&self, kind: Option<SegmentKind>) -> BTreeSet<usize> {
        self.pages
            .iter()
            .filter(|p| kind.is_none_or(|k| p.kind == k) && p.anonymous())
            .map(|p| p.info.addr)
            .collect()
    }
}

/// Reads process `pid`'s `smaps`, `pagemap` (and `kpagecount`/`kpageflags`
/// when readable) for `regions` and sums them per kind. Regions must not
/// overlap; a page partly inside a region counts whole.
pub fn measure(pid: i32, regions: &[Region]) -> io::Result<Measurement> {
    let page = page_size();
    let smaps = Smaps::read(pid)?;
    let pagemap = Pagemap::open(pid)?;
    let kpagecount = KpageCount::open().ok();
    let kpageflags = KpageFlags::open().ok();

    let mut pages = Vec::new();
    for r in regions {
        for info in pagemap.read(r.range.clone())? {
            let pfn = info.pfn();
            pages.push(Page {
                kind: r.kind,
                info,
                file_page: r.file_offset_of(info.addr.max(r.range.start)),
                mapcount: pfn.and_then(|p| kpagecount.as_ref()?.get(p).ok()),
                flags: pfn.and_then(|p| kpageflags.as_ref()?.get(p).ok()),
            });
        }
    }
    let any_pfn = pages.iter().any(|p| p.info.pfn().is_some());
    let any_present = pages.iter().any(|p| p.info.present());
    let access = Access {
        pfn: any_pfn || (!any_present && kpagecount.is_some()),
        kpagecount: kpagecount.is_some(),
        kpageflags: kpageflags.is_some(),
    };
    let exact = access.exact_pss()
        && pages
            .iter()
            .all(|p| !p.resident() || p.mapcount.is_some_and(|c| c > 0));

    let mut kinds: BTreeMap<SegmentKind, Usage> = BTreeMap::new();
    for r in regions {
        kinds.entry(r.kind).or_default();
    }
    let ps = page as u64;
    for p in &pages {
        let u = kinds.entry(p.kind).or_default();
        u.vsz += ps;
        if p.info.swapped() {
            u.swap += ps;
        }
        if !p.info.present() {
            continue;
        }
        if p.zero_page() {
            u.zero_page += ps;
            continue;
        }
        u.rss += ps;
        if p.info.exclusive() {
            u.private += ps;
        } else {
            u.shared += ps;
        }
        if p.info.file_or_shared_anon() {
            u.file += ps;
        } else {
            u.anon += ps;
        }
        if p.info.soft_dirty() {
            u.soft_dirty += ps;
        }
        if exact {
            u.pss += ps as f64 / p.mapcount.unwrap_or(1).max(1) as f64;
        }
    }

    // The smaps view: per VMA, which kinds' regions cover it.
    let mut vmas = Vec::new();
    let mut total_smaps = SmapsUsage::default();
    for vma in &smaps.vmas {
        let covering: Vec<&Region> = regions
            .iter()
            .filter(|r| r.range.start < vma.range.end && vma.range.start < r.range.end)
            .collect();
        if covering.is_empty() {
            continue;
        }
        vmas.push(vma.clone());
        let covered = |k: Option<SegmentKind>| -> usize {
            covering
                .iter()
                .filter(|r| k.is_none_or(|k| r.kind == k))
                .map(|r| r.range.end.min(vma.range.end) - r.range.start.max(vma.range.start))
                .sum()
        };
        let kinds_here: BTreeSet<SegmentKind> = covering.iter().map(|r| r.kind).collect();
        let whole = covered(None) >= vma.len();
        // Resident pages of the VMA, overall and per kind, only needed
        // when it is not entirely one kind.
        let mut counts: Option<(u64, HashMap<SegmentKind, u64>)> = None;
        let mut resident_counts = || -> io::Result<(u64, HashMap<SegmentKind, u64>)> {
            if let Some(c) = &counts {
                return Ok(c.clone());
            }
            let mut all = 0;
            let mut per: HashMap<SegmentKind, u64> = HashMap::new();
            for info in pagemap.read(vma.range.clone())? {
                let zero = match info.pfn().and_then(|p| kpageflags.as_ref()?.get(p).ok()) {
                    Some(f) => f & KpageFlags::ZERO_PAGE != 0,
                    None => info.maybe_zero_page(),
                };
                if !info.present() || zero {
                    continue;
                }
                all += 1;
                if let Some(r) = covering.iter().find(|r| r.range.contains(&info.addr)) {
                    *per.entry(r.kind).or_default() += 1;
                }
            }
            counts = Some((all, per));
            Ok(counts.clone().unwrap_or_default())
        };
        if whole {
            total_smaps.add_vma(&vma.fields, 1, 1);
        } else {
            let (all, per) = resident_counts()?;
            total_smaps.add_vma(&vma.fields, per.values().sum(), all);
        }
        for k in kinds_here {
            let u = kinds.entry(k).or_default();
            if covered(Some(k)) >= vma.len() {
                u.smaps.add_vma(&vma.fields, 1, 1);
            } else {
                let (all, per) = resident_counts()?;
                u.smaps
                    .add_vma(&vma.fields, per.get(&k).copied().unwrap_or(0), all);
            }
        }
    }
    if !exact {
        for u in kinds.values_mut() {
            u.pss = u.smaps.pss as f64;
        }
    }
    let mut total = Usage::default();
    for u in kinds.values() {
        total.add(u);
    }
    total.smaps = total_smaps;
    if !exact {
        total.pss = total_smaps.pss as f64;
    }
    Ok(Measurement {
        pid,
        page_size: page,
        access,
        kinds,
        total,
        pages,
        vmas,
        rollup: Rollup::read(pid).ok(),
    })
}

/// Several processes' measurements of one kind (or of everything)
/// combined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Combined {
    /// Summed over the processes.
    pub sum: Usage,
    /// Each process's, in the order given.
    pub per_process: Vec<Usage>,
    /// Distinct physical frames over all processes, when frame numbers are
    /// readable. (Frames, not bytes.)
    pub frames: Option<u64>,
    /// Distinct file pages (by file offset) resident in at least one
    /// process.
    pub file_pages: u64,
    /// The most distinct frames seen holding one file page, when frame
    /// numbers are readable: 1 means every file page has exactly one
    /// physical copy across all the processes.
    pub max_copies: Option<u64>,
    /// How many processes have at least one resident page here.
    pub mapped_by: usize,
}

/// Measurements of several processes combined, per kind and in total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// How many processes.
    pub processes: usize,
    /// What could be read in every one of them.
    pub access: Access,
    /// Per kind.
    pub kinds: BTreeMap<SegmentKind, Combined>,
    /// All kinds together.
    pub total: Combined,
}

/// Combines measurements (of processes that mapped the same file) into
/// sums, distinct frames and copies per file page.
pub fn summarize(ms: &[Measurement]) -> Summary {
    let access = Access {
        pfn: !ms.is_empty() && ms.iter().all(|m| m.access.pfn),
        kpagecount: !ms.is_empty() && ms.iter().all(|m| m.access.kpagecount),
        kpageflags: !ms.is_empty() && ms.iter().all(|m| m.access.kpageflags),
    };
    let kinds_seen: BTreeSet<SegmentKind> =
        ms.iter().flat_map(|m| m.kinds.keys().copied()).collect();
    let combine = |kind: Option<SegmentKind>| -> Combined {
        let mut c = Combined::default();
        let mut frames: BTreeSet<u64> = BTreeSet::new();
        let mut copies: HashMap<u64, BTreeSet<u64>> = HashMap::new();
        let mut file_pages: BTreeSet<u64> = BTreeSet::new();
        for m in ms {
            let u = match kind {
                Some(k) => m.kinds.get(&k).cloned().unwrap_or_default(),
                None => m.total.clone(),
            };
            if u.rss > 0 {
                c.mapped_by += 1;
            }
            c.sum.add(&u);
            c.per_process.push(u);
            for p in &m.pages {
                if kind.is_some_and(|k| p.kind != k) || !p.resident() {
                    continue;
                }
                if let Some(f) = p.file_page {
                    file_pages.insert(f);
                }
                if let Some(pfn) = p.info.pfn() {
                    frames.insert(pfn);
                    if let Some(f) = p.file_page {
                        copies.entry(f).or_default().insert(pfn);
                    }
                }
            }
        }
        c.file_pages = file_pages.len() as u64;
        if access.pfn {
            c.frames = Some(frames.len() as u64);
            c.max_copies = Some(copies.values().map(|s| s.len() as u64).max().unwrap_or(0));
        }
        c
    };
    Summary {
        processes: ms.len(),
        access,
        kinds: kinds_seen.iter().map(|&k| (k, combine(Some(k)))).collect(),
        total: combine(None),
    }
}

/// A process that maps a given file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    /// Its pid.
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
    /// How many of its VMAs map the file.
    pub vmas: usize,
}

/// The processes found mapping a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mappers {
    /// Those mapping it, by pid.
    pub found: Vec<Mapper>,
    /// Processes whose `maps` could not be read (other users' processes,
    /// without root): they may map it too.
    pub unreadable: usize,
}

/// Every process mapping `path`, matched by device and inode (or by
/// path), except those in `exclude`.
pub fn mappers(path: &Path, exclude: &[i32]) -> io::Result<Mappers> {
    let meta = std::fs::metadata(path)?;
    let dev = meta.dev();
    let want = (libc::major(dev), libc::minor(dev));
    let ino = meta.ino();
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let canonical = canonical.to_string_lossy();
    let mut out = Mappers::default();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if exclude.contains(&pid) {
            continue;
        }
        // Processes exit and permissions vary: count what cannot be read.
        let maps = match Smaps::read_maps(pid) {
            Ok(m) => m,
            Err(e) => {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    out.unreadable += 1;
                }
                continue;
            }
        };
        let n = maps
            .vmas
            .iter()
            .filter(|v| (v.inode == ino && v.dev == want) || (v.inode != 0 && v.name == canonical))
            .count();
        if n > 0 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default();
            out.found.push(Mapper { pid, comm, vmas: n });
        }
    }
    out.found.sort_by_key(|m| m.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(
        index: usize,
        range: Range<usize>,
        file: Range<usize>,
        off: u64,
        prot: i32,
        relro: Option<Range<usize>>,
    ) -> Segment {
        Segment {
            index,
            range,
            file_range: file,
            file_offset: off,
            prot,
            relro,
            bss: None,
        }
    }

    #[test]
    fn classifies_like_the_issue_says() {
        let r = libc::PROT_READ;
        let rx = r | libc::PROT_EXEC;
        let rw = r | libc::PROT_WRITE;
        let b = 0x7000_0000_0000usize;
        // libbigtext-like layout, plus an anonymous .bss tail.
        let segs = vec![
            seg(0, b..b + 0xd000, b..b + 0xd000, 0, r, None),
            seg(
                1,
                b + 0xd000..b + 0x63000,
                b + 0xd000..b + 0x63000,
                0xd000,
                rx,
                None,
            ),
            seg(
                2,
                b + 0x63000..b + 0x6c000,
                b + 0x63000..b + 0x6c000,
                0x63000,
                r,
                None,
            ),
            seg(
                3,
                b + 0x6c000..b + 0x76000,
                b + 0x6c000..b + 0x74000,
                0x6b000,
                rw,
                Some(b + 0x6c000..b + 0x73000),
            ),
        ];
        let got: Vec<(SegmentKind, usize, usize, Option<u64>)> = regions(&segs)
            .into_iter()
            .map(|x| (x.kind, x.range.start - b, x.range.end - b, x.file_offset))
            .collect();
        use SegmentKind::*;
        assert_eq!(
            got,
            vec![
                (Hdr, 0, 0xd000, Some(0)),
                (Text, 0xd000, 0x63000, Some(0xd000)),
                (Rodata, 0x63000, 0x6c000, Some(0x63000)),
                (Relro, 0x6c000, 0x73000, Some(0x6b000)),
                (Data, 0x73000, 0x74000, Some(0x72000)),
                (Bss, 0x74000, 0x76000, None),
            ]
        );
    }

    #[test]
    fn text_first_is_not_hdr_and_overlaps_are_cut() {
        let r = libc::PROT_READ;
        let rx = r | libc::PROT_EXEC;
        let b = 0x1000_0000usize;
        let segs = vec![
            seg(0, b..b + 0x3000, b..b + 0x3000, 0, rx, None),
            // Shares its first page with the text segment.
            seg(
                1,
                b + 0x2000..b + 0x5000,
                b + 0x2000..b + 0x5000,
                0x2000,
                r,
                None,
            ),
            // Only .bss.
            seg(
                2,
                b + 0x5000..b + 0x7000,
                b + 0x5000..b + 0x5000,
                0,
                r | 2,
                None,
            ),
        ];
        let got: Vec<(SegmentKind, usize, usize, Option<u64>)> = regions(&segs)
            .into_iter()
            .map(|x| (x.kind, x.range.start - b, x.range.end - b, x.file_offset))
            .collect();
        use SegmentKind::*;
        assert_eq!(
            got,
            vec![
                (Text, 0, 0x3000, Some(0)),
                (Rodata, 0x3000, 0x5000, Some(0x3000)),
                (Bss, 0x5000, 0x7000, None),
            ]
        );
    }

    #[test]
    fn measures_own_anonymous_memory() {
        let page = page_size();
        // Four read-write pages between two PROT_NONE guards, so that the
        // VMA merges with nothing another test thread maps.
        // SAFETY: a fresh anonymous private mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page * 6,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let a = p as usize + page;
        // SAFETY: the middle four pages of the mapping just made.
        let rc = unsafe {
            libc::mprotect(
                a as *mut libc::c_void,
                page * 4,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: inside the mapping just made: write page 0, read page 1.
        unsafe {
            std::ptr::write_volatile(a as *mut u8, 1);
            std::ptr::read_volatile((a + page) as *const u8);
        }
        let regions = [Region {
            kind: SegmentKind::Bss,
            range: a..a + page * 4,
            file_offset: None,
        }];
        let m = measure(std::process::id() as i32, &regions).unwrap();
        let u = &m.kinds[&SegmentKind::Bss];
        assert_eq!(u.vsz, 4 * page as u64);
        assert_eq!(u.rss, page as u64);
        assert_eq!(u.anon, page as u64);
        assert_eq!(u.private, page as u64);
        assert_eq!(u.zero_page, page as u64);
        assert_eq!(u.smaps.rss, u.rss);
        assert_eq!((u.smaps.vmas, u.smaps.partial), (1, 0));
        assert_eq!(m.anonymous_pages(None), BTreeSet::from([a]));
        let s = summarize(std::slice::from_ref(&m));
        assert_eq!(s.total.sum.rss, page as u64);
        assert_eq!(s.total.mapped_by, 1);
        // SAFETY: unmapping what this test mapped.
        unsafe { libc::munmap(p, page * 6) };
    }
}
