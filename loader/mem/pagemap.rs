//! `/proc/PID/pagemap`, `/proc/kpagecount`, `/proc/kpageflags`.
//!
//! `pagemap` holds one little-endian `u64` per virtual page, at offset
//! `(vaddr / page size) × 8`. Any process that may ptrace-read the target
//! can read the flag bits; the frame number (PFN) reads as 0 without
//! `CAP_SYS_ADMIN`. `kpagecount` and `kpageflags` hold one `u64` per PFN
//! and are readable by root only (mode 0400).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Bits 0–54: the frame number (or swap type and offset when swapped).
const PFN_MASK: u64 = (1 << 55) - 1;
const SOFT_DIRTY: u64 = 1 << 55;
const EXCLUSIVE: u64 = 1 << 56;
const UFFD_WP: u64 = 1 << 57;
const GUARD: u64 = 1 << 58;
const FILE_OR_SHARED_ANON: u64 = 1 << 61;
const SWAPPED: u64 = 1 << 62;
const PRESENT: u64 = 1 << 63;

/// How many entries one `pread` asks for.
const CHUNK: usize = 4096;

/// One virtual page's `pagemap` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageInfo {
    /// The page's virtual address.
    pub addr: usize,
    /// The raw 64-bit entry.
    pub raw: u64,
}

impl PageInfo {
    /// Bit 63: a page table entry maps a frame in this process.
    pub fn present(&self) -> bool {
        self.raw & PRESENT != 0
    }

    /// Bit 62: swapped out.
    pub fn swapped(&self) -> bool {
        self.raw & SWAPPED != 0
    }

    /// Bit 61: a page-cache (file) page or a shared anonymous page. Clear
    /// on a present page of a `MAP_PRIVATE` file mapping means the page is
    /// a private copy-on-write copy.
    pub fn file_or_shared_anon(&self) -> bool {
        self.raw & FILE_OR_SHARED_ANON != 0
    }

    /// Bit 56: mapped by exactly one page table entry in the whole system
    /// (this one). Meaningful only when present.
    pub fn exclusive(&self) -> bool {
        self.raw & EXCLUSIVE != 0
    }

    /// Bit 55: written since the last `clear_refs` soft-dirty reset.
    pub fn soft_dirty(&self) -> bool {
        self.raw & SOFT_DIRTY != 0
    }

    /// Bit 57: userfaultfd write-protected.
    pub fn uffd_wp(&self) -> bool {
        self.raw & UFFD_WP != 0
    }

    /// Bit 58: a guard region (`MADV_GUARD_INSTALL`, Linux 6.15).
    pub fn guard(&self) -> bool {
        self.raw & GUARD != 0
    }

    /// The physical frame number, if present and readable (non-zero: the
    /// kernel reports 0 to callers without `CAP_SYS_ADMIN`).
    pub fn pfn(&self) -> Option<u64> {
        let pfn = self.raw & PFN_MASK;
        (self.present() && pfn != 0).then_some(pfn)
    }

    /// Present, no file behind it, and not exclusive: with no `fork` in
    /// play this is the shared zero page (a read of never-written
    /// anonymous memory), which `smaps` does not count in `Rss`. Confirm
    /// with [`KpageFlags::ZERO_PAGE`] when `kpageflags` is readable.
    pub fn maybe_zero_page(&self) -> bool {
        self.present() && !self.file_or_shared_anon() && !self.exclusive()
    }
}

/// An open `/proc/PID/pagemap`.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
    page: usize,
}

impl Pagemap {
    /// Opens `/proc/PID/pagemap`.
    pub fn open(pid: i32) -> io::Result<Pagemap> {
        let path = format!("/proc/{pid}/pagemap");
        let file =
            File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        Ok(Pagemap {
            file,
            page: super::page_size(),
        })
    }

    /// The entries of every page overlapping `range`, in address order.
    /// Pages past the end of the address space read as 0 (not present).
    pub fn read(&self, range: Range<usize>) -> io::Result<Vec<PageInfo>> {
        let first = range.start / self.page;
        let last = range.end.div_ceil(self.page);
        let count = last.saturating_sub(first);
        let mut out = Vec::with_capacity(count);
        let mut buf = vec![0u8; CHUNK.min(count.max(1)) * 8];
        let mut index = first;
        while index < last {
            let n = CHUNK.min(last - index);
            let bytes = &mut buf[..n * 8];
            let got = read_full_at(&self.file, bytes, (index as u64).saturating_mul(8))?;
            bytes[got..].fill(0);
            for (i, e) in bytes.chunks_exact(8).enumerate() {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(e);
                out.push(PageInfo {
                    addr: (index + i) * self.page,
                    raw: u64::from_le_bytes(raw),
                });
            }
            index += n;
        }
        Ok(out)
    }
}

/// `pread` until `buf` is full or end of file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A per-PFN table: `/proc/kpagecount` or `/proc/kpageflags`.
#[derive(Debug)]
struct PfnTable {
    file: File,
}

impl PfnTable {
    fn open(path: &str) -> io::Result<PfnTable> {
        let file =
            File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        Ok(PfnTable { file })
    }

    fn get(&self, pfn: u64) -> io::Result<u64> {
        let mut raw = [0u8; 8];
        let got = read_full_at(&self.file, &mut raw, pfn.saturating_mul(8))?;
        if got != 8 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("no entry for PFN {pfn:#x}"),
            ));
        }
        Ok(u64::from_le_bytes(raw))
    }
}

/// `/proc/kpagecount`: how many page table entries map each frame, over
/// all processes (on kernels with `CONFIG_NO_PAGE_MAPCOUNT`, the average
/// over the frame's folio). Root only.
#[derive(Debug)]
pub struct KpageCount(PfnTable);

impl KpageCount {
    /// Opens `/proc/kpagecount` (`EACCES` without root).
    pub fn open() -> io::Result<KpageCount> {
        PfnTable::open("/proc/kpagecount").map(KpageCount)
    }

    /// The map count of frame `pfn`.
    pub fn get(&self, pfn: u64) -> io::Result<u64> {
        self.0.get(pfn)
    }
}

/// `/proc/kpageflags`: the `KPF_*` flags of each frame. Root only.
#[derive(Debug)]
pub struct KpageFlags(PfnTable);

impl KpageFlags {
    /// `KPF_DIRTY`.
    pub const DIRTY: u64 = 1 << 4;
    /// `KPF_LRU`.
    pub const LRU: u64 = 1 << 5;
    /// `KPF_MMAP`: mapped by some process.
    pub const MMAP: u64 = 1 << 11;
    /// `KPF_ANON`: anonymous (a copy-on-write copy in a file mapping).
    pub const ANON: u64 = 1 << 12;
    /// `KPF_COMPOUND_HEAD`: first page of a large folio.
    pub const COMPOUND_HEAD: u64 = 1 << 15;
    /// `KPF_COMPOUND_TAIL`: other pages of a large folio.
    pub const COMPOUND_TAIL: u64 = 1 << 16;
    /// `KPF_KSM`: merged by KSM.
    pub const KSM: u64 = 1 << 21;
    /// `KPF_THP`: part of a large (rmappable) folio.
    pub const THP: u64 = 1 << 22;
    /// `KPF_ZERO_PAGE`: the shared zero page.
    pub const ZERO_PAGE: u64 = 1 << 24;

    /// Opens `/proc/kpageflags` (`EACCES` without root).
    pub fn open() -> io::Result<KpageFlags> {
        PfnTable::open("/proc/kpageflags").map(KpageFlags)
    }

    /// The flags of frame `pfn`.
    pub fn get(&self, pfn: u64) -> io::Result<u64> {
        self.0.get(pfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        // What `nobody` reads for a mapped library page (memory.md §3).
        let p = PageInfo {
            addr: 0,
            raw: 0xa100000000000000,
        };
        assert!(p.present() && p.file_or_shared_anon() && p.exclusive());
        assert!(!p.swapped() && !p.soft_dirty());
        assert_eq!(p.pfn(), None);
        let p = PageInfo {
            addr: 0,
            raw: PRESENT | SOFT_DIRTY | 0x1234,
        };
        assert_eq!(p.pfn(), Some(0x1234));
        assert!(p.maybe_zero_page());
    }

    #[test]
    fn reads_own_pages() {
        let page = crate::mem::page_size();
        let v = vec![1u8; page * 3];
        let start = v.as_ptr() as usize / page * page;
        let pm = Pagemap::open(std::process::id() as i32).unwrap();
        let e = pm.read(start..start + page * 3).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].addr, start);
        assert!(e.iter().all(|p| p.present() && !p.file_or_shared_anon()));
        // Far past the end of user space: nothing, no error.
        let top = usize::MAX / page * page - page * 4;
        let e = pm.read(top..top + page * 2).unwrap();
        assert!(e.iter().all(|p| !p.present()));
        drop(v);
    }
}
