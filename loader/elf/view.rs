//! A bounds-checked window on an object's virtual addresses.

use std::marker::PhantomData;

use super::{LoadSegment, Pod};

/// Readable bytes of an object, addressed by link-time virtual address.
///
/// A `View` covers only the file-backed part (`p_vaddr .. p_vaddr +
/// p_filesz`) of each `PT_LOAD`: the part that is real bytes both in the
/// file and in the mapped image. Every table the loader reads (dynamic
/// section, symbols, strings, hash tables, versions, relocations) must lie
/// there, so one check serves both the file and the image.
#[derive(Clone)]
pub(crate) struct View<'a> {
    regions: Vec<Region>,
    _life: PhantomData<&'a [u8]>,
}

#[derive(Clone, Copy)]
struct Region {
    vaddr: u64,
    len: u64,
    ptr: *const u8,
    writable: bool,
}

// SAFETY: a View only reads immutable bytes that outlive it ('a).
unsafe impl Send for View<'_> {}
// SAFETY: as above.
unsafe impl Sync for View<'_> {}

impl<'a> View<'a> {
    /// A view of the file's bytes: `p_vaddr` maps to `file[p_offset..]`.
    /// Segments whose file range does not fit `file` are left out.
    pub(crate) fn of_file(file: &'a [u8], loads: &[LoadSegment]) -> View<'a> {
        let regions = loads
            .iter()
            .filter_map(|l| {
                let end = l.offset.checked_add(l.filesz)?;
                let bytes =
                    file.get(usize::try_from(l.offset).ok()?..usize::try_from(end).ok()?)?;
                Some(Region {
                    vaddr: l.vaddr,
                    len: l.filesz,
                    ptr: bytes.as_ptr(),
                    writable: l.flags & goblin::elf::program_header::PF_W != 0,
                })
            })
            .collect();
        View {
            regions,
            _life: PhantomData,
        }
    }

    /// A view of the mapped image at load bias `base`.
    ///
    /// # Safety
    /// Each segment's `[base + p_vaddr, base + p_vaddr + p_filesz)` must be
    /// mapped readable for as long as the view lives, and not written
    /// concurrently through another path while it is read.
    pub(crate) unsafe fn of_image(base: usize, loads: &[LoadSegment]) -> View<'a> {
        let regions = loads
            .iter()
            .map(|l| Region {
                vaddr: l.vaddr,
                len: l.filesz,
                ptr: (base as u64).wrapping_add(l.vaddr) as usize as *const u8,
                writable: l.flags & goblin::elf::program_header::PF_W != 0,
            })
            .collect();
        View {
            regions,
            _life: PhantomData,
        }
    }

    /// The same view without the writable segments. Tables the loader
    /// reads while it relocates (symbols, strings, hashes, versions,
    /// relocations) must come from here, so that no relocation can write
    /// into a table while it is being read.
    pub(crate) fn read_only(&self) -> View<'a> {
        View {
            regions: self
                .regions
                .iter()
                .filter(|r| !r.writable)
                .copied()
                .collect(),
            _life: PhantomData,
        }
    }

    /// The `len` bytes at `vaddr`, if they lie inside one region.
    #[inline]
    pub(crate) fn bytes(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let end = vaddr.checked_add(len)?;
        for r in &self.regions {
            if vaddr >= r.vaddr && end <= r.vaddr + r.len {
                let off = (vaddr - r.vaddr) as usize;
                // SAFETY: [off, off+len) is inside the region, which the
                // constructor guarantees is readable for 'a.
                return Some(unsafe { std::slice::from_raw_parts(r.ptr.add(off), len as usize) });
            }
        }
        None
    }

    /// The bytes from `vaddr` to the end of its region.
    pub(crate) fn rest(&self, vaddr: u64) -> Option<&'a [u8]> {
        let r = self
            .regions
            .iter()
            .find(|r| vaddr >= r.vaddr && vaddr < r.vaddr + r.len)?;
        self.bytes(vaddr, r.vaddr + r.len - vaddr)
    }

    /// A table of `count` `T`s at `vaddr`, checked to fit.
    pub(crate) fn table<T: Pod>(&self, vaddr: u64, count: u64) -> Option<Table<'a, T>> {
        let size = count.checked_mul(std::mem::size_of::<T>() as u64)?;
        let b = self.bytes(vaddr, size)?;
        Some(Table {
            bytes: b,
            _t: PhantomData,
        })
    }
}

/// A checked array of `T` read from a [`View`].
pub(crate) struct Table<'a, T> {
    bytes: &'a [u8],
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Table<'_, T> {}

impl<'a, T: Pod> Table<'a, T> {
    /// An empty table.
    pub(crate) fn empty() -> Table<'a, T> {
        Table {
            bytes: &[],
            _t: PhantomData,
        }
    }

    /// Number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() / std::mem::size_of::<T>()
    }

    /// Entry `i`, if in range.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<T> {
        super::read(self.bytes, i.checked_mul(std::mem::size_of::<T>())?)
    }

    /// The entries' bytes (a whole number of entries).
    #[inline]
    pub(crate) fn raw(&self) -> &'a [u8] {
        self.bytes
    }

    /// The address of entry `i` (past the end if out of range).
    pub(crate) fn ptr(&self, i: usize) -> *const T {
        self.bytes
            .as_ptr()
            .wrapping_add(i.saturating_mul(std::mem::size_of::<T>())) as *const T
    }

    /// Iterates over the entries.
    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + 'a
    where
        T: 'a,
    {
        let t = *self;
        (0..t.len()).filter_map(move |i| t.get(i))
    }
}
