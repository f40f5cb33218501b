//! Symbol tables and their hash tables: GNU hash (with its Bloom filter)
//! first, SysV hash as the fallback, and glibc's matching rules.

use std::path::Path;

use goblin::elf::sym::{
    STB_LOCAL, STT_COMMON, STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE, STT_OBJECT, STT_TLS, STV_HIDDEN,
    STV_INTERNAL,
};
use goblin::elf64::sym::Sym;

use super::dynamic::cstr_at;
use super::index::{Hit, LazyIndex};
use super::versions::VersionTable;
use super::view::{Table, View};
use crate::error::{Error, Result};

const SHN_UNDEF: u16 = 0;
const SHN_ABS: u16 = 0xfff1;

/// The GNU hash of a name (djb2, 32-bit): `h = h * 33 + c` from 5381.
///
/// Computed eight bytes a step as `h * 33⁸ + Σ cᵢ * 33⁷⁻ⁱ` (all mod 2³²):
/// the eight products do not depend on each other, so the step costs one
/// multiply of latency instead of eight — the hash is most of the cost of
/// looking up a long name.
#[inline]
pub(crate) fn gnu_hash(name: &[u8]) -> u32 {
    const P: [u32; 9] = {
        let mut p = [1u32; 9];
        let mut i = 1;
        while i < 9 {
            p[i] = p[i - 1].wrapping_mul(33);
            i += 1;
        }
        p
    };
    let mut h = 5381u32;
    let mut chunks = name.chunks_exact(8);
    for c in &mut chunks {
        let mut sum = 0u32;
        for (k, &b) in c.iter().enumerate() {
            sum = sum.wrapping_add(u32::from(b).wrapping_mul(P[7 - k]));
        }
        h = h.wrapping_mul(P[8]).wrapping_add(sum);
    }
    chunks
        .remainder()
        .iter()
        .fold(h, |h, &c| h.wrapping_mul(33).wrapping_add(u32::from(c)))
}

/// The SysV ELF hash of a name.
#[inline]
pub(crate) fn sysv_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

/// A symbol name with its hashes computed once for a whole scope walk,
/// each on first use.
pub(crate) struct Name<'n> {
    pub bytes: &'n [u8],
    gnu: std::cell::Cell<Option<u32>>,
    sysv: std::cell::Cell<Option<u32>>,
}

impl<'n> Name<'n> {
    /// The GNU hash, computed on first use: a lookup answered by a name
    /// index never needs it.
    #[inline]
    pub(crate) fn gnu(&self) -> u32 {
        match self.gnu.get() {
            Some(h) => h,
            None => {
                let h = gnu_hash(self.bytes);
                self.gnu.set(Some(h));
                h
            }
        }
    }

    /// The SysV hash, computed on first use: only objects without a GNU
    /// hash table need it.
    #[inline]
    pub(crate) fn sysv(&self) -> u32 {
        match self.sysv.get() {
            Some(h) => h,
            None => {
                let h = sysv_hash(self.bytes);
                self.sysv.set(Some(h));
                h
            }
        }
    }

    /// A name to look up (nothing is hashed yet).
    pub(crate) fn new(bytes: &'n [u8]) -> Name<'n> {
        Name {
            bytes,
            gnu: std::cell::Cell::new(None),
            sysv: std::cell::Cell::new(None),
        }
    }
}

/// A version a lookup asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VersionReq<'v> {
    pub name: &'v [u8],
    pub hash: u32,
    /// The request itself is marked hidden (`vna_other & 0x8000`).
    pub hidden: bool,
}

/// A validated hash table.
#[derive(Clone, Copy)]
pub(crate) enum HashTable<'a> {
    /// `DT_GNU_HASH`.
    Gnu {
        symoffset: u32,
        shift: u32,
        bloom: Table<'a, u64>,
        buckets: Table<'a, u32>,
        /// The chain array, from its start to the end of its region; only
        /// entries below the symbol count are ever read.
        chain_addr: u64,
        chain: Table<'a, u32>,
    },
    /// `DT_HASH`.
    Sysv {
        buckets: Table<'a, u32>,
        chains: Table<'a, u32>,
    },
}

impl<'a> HashTable<'a> {
    /// Whether a GNU table says `name` is certainly not defined here: its
    /// Bloom filter turns it away, or no entry of its bucket's chain has
    /// its hash. Needs neither the symbol nor the string table. (A SysV
    /// table cannot say: `false`; nor can a table whose chain array is
    /// not bounded yet — the host objects' tables as read for this alone.)
    pub(crate) fn rejects(&self, name: &Name) -> bool {
        self.gnu_candidates(name)
            .is_some_and(|mut c| c.next().is_none() && !c.cut_short)
    }

    /// The symbol indices a GNU table's chain holds for `name`'s hash, in
    /// chain order, once its Bloom filter lets the name through (none if
    /// it does not); `None` for a SysV table.
    fn gnu_candidates(&self, name: &Name) -> Option<GnuCandidates<'a>> {
        let HashTable::Gnu {
            symoffset,
            shift,
            bloom,
            buckets,
            chain,
            ..
        } = *self
        else {
            return None;
        };
        let h = name.gnu();
        let mask = (1u64 << (h % 64)) | (1u64 << ((h >> shift) % 64));
        let passes = bloom
            .get(((h / 64) as usize) & (bloom.len() - 1))
            .is_some_and(|word| word & mask == mask);
        let bucket = buckets.get((h % buckets.len() as u32) as usize);
        Some(GnuCandidates {
            chain,
            symoffset,
            h,
            next: bucket.filter(|_| passes).unwrap_or(0),
            cut_short: passes && bucket.is_none(),
        })
    }

    /// Reads the GNU hash table if there is one, else the SysV one.
    pub(crate) fn parse(
        path: &Path,
        ro: &View<'a>,
        gnu: Option<u64>,
        sysv: Option<u64>,
    ) -> Result<HashTable<'a>> {
        let bad = |what: &str, at: u64| Error::malformed(path, what, Some(at));
        if let Some(a) = gnu {
            let hdr: Table<u32> = ro
                .table(a, 4)
                .ok_or_else(|| bad("DT_GNU_HASH header lies outside the read-only segments", a))?;
            let (nbuckets, symoffset, bloom_size, shift) = (
                hdr.get(0).unwrap_or(0),
                hdr.get(1).unwrap_or(0),
                hdr.get(2).unwrap_or(0),
                hdr.get(3).unwrap_or(0),
            );
            // The shift applies to the 32-bit hash (glibc's `l_gnu_shift`).
            if nbuckets == 0 || bloom_size == 0 || !bloom_size.is_power_of_two() || shift >= 32 {
                return Err(bad(
                    "DT_GNU_HASH: zero buckets, a Bloom size that is not a power of two, or a shift of 32 or more",
                    a,
                ));
            }
            let bloom_addr = a + 16;
            let bloom = ro
                .table::<u64>(bloom_addr, u64::from(bloom_size))
                .ok_or_else(|| {
                    bad(
                        "DT_GNU_HASH Bloom filter lies outside the read-only segments",
                        bloom_addr,
                    )
                })?;
            let buckets_addr = bloom_addr + 8 * u64::from(bloom_size);
            let buckets = ro
                .table::<u32>(buckets_addr, u64::from(nbuckets))
                .ok_or_else(|| {
                    bad(
                        "DT_GNU_HASH buckets lie outside the read-only segments",
                        buckets_addr,
                    )
                })?;
            let chain_addr = buckets_addr + 4 * u64::from(nbuckets);
            for (i, b) in buckets.iter().enumerate() {
                if b != 0 && b < symoffset {
                    return Err(bad(
                        &format!("DT_GNU_HASH bucket {i} points below symoffset"),
                        buckets_addr + 4 * i as u64,
                    ));
                }
            }
            return Ok(HashTable::Gnu {
                symoffset,
                shift,
                bloom,
                buckets,
                chain_addr,
                chain: Table::empty(),
            });
        }
        if let Some(a) = sysv {
            let hdr: Table<u32> = ro
                .table(a, 2)
                .ok_or_else(|| bad("DT_HASH header lies outside the read-only segments", a))?;
            let (nbucket, nchain) = (hdr.get(0).unwrap_or(0), hdr.get(1).unwrap_or(0));
            if nbucket == 0 {
                return Err(bad("DT_HASH has zero buckets", a));
            }
            let buckets = ro
                .table::<u32>(a + 8, u64::from(nbucket))
                .ok_or_else(|| bad("DT_HASH buckets lie outside the read-only segments", a + 8))?;
            let chains_addr = a + 8 + 4 * u64::from(nbucket);
            let chains = ro
                .table::<u32>(chains_addr, u64::from(nchain))
                .ok_or_else(|| {
                    bad(
                        "DT_HASH chains lie outside the read-only segments",
                        chains_addr,
                    )
                })?;
            if buckets.iter().chain(chains.iter()).any(|i| i >= nchain) {
                return Err(bad("DT_HASH has an index past nchain", a));
            }
            return Ok(HashTable::Sysv { buckets, chains });
        }
        Err(Error::malformed(
            path,
            "no DT_GNU_HASH or DT_HASH: cannot size the symbol table",
            None,
        ))
    }

    /// Counts the symbols (`nchain` for SysV; for GNU hash, the end of the
    /// longest chain) and finishes validating the GNU chain array.
    pub(crate) fn symbol_count(&mut self, path: &Path, ro: &View<'a>) -> Result<u64> {
        match self {
            HashTable::Sysv { chains, .. } => Ok(chains.len() as u64),
            HashTable::Gnu {
                symoffset,
                buckets,
                chain_addr,
                chain,
                ..
            } => {
                let last = buckets.iter().max().unwrap_or(0);
                if last == 0 {
                    return Ok(u64::from(*symoffset));
                }
                let all = ro.rest(*chain_addr).unwrap_or(&[]);
                let mut i = last;
                loop {
                    let off = 4 * u64::from(i - *symoffset);
                    let word = all
                        .get(off as usize..off as usize + 4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or_else(|| {
                            Error::malformed(
                                path,
                                "DT_GNU_HASH chain runs past its segment",
                                Some(*chain_addr + off),
                            )
                        })?;
                    if word & 1 == 1 {
                        break;
                    }
                    i = i.checked_add(1).ok_or_else(|| {
                        Error::malformed(path, "DT_GNU_HASH chain never ends", Some(*chain_addr))
                    })?;
                }
                let n = u64::from(i) + 1;
                *chain = ro
                    .table::<u32>(*chain_addr, n - u64::from(*symoffset))
                    .ok_or_else(|| {
                        Error::malformed(
                            path,
                            "DT_GNU_HASH chain runs past its segment",
                            Some(*chain_addr),
                        )
                    })?;
                Ok(n)
            }
        }
    }
}

/// See [`HashTable::gnu_candidates`].
struct GnuCandidates<'a> {
    chain: Table<'a, u32>,
    symoffset: u32,
    h: u32,
    /// The next symbol index to look at; 0 when the chain has ended.
    next: u32,
    /// The walk left the bucket or chain array before the chain's end.
    cut_short: bool,
}

impl Iterator for GnuCandidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.next != 0 {
            let i = self.next;
            let Some(c) = self.chain.get(i.wrapping_sub(self.symoffset) as usize) else {
                self.cut_short = true;
                self.next = 0;
                return None;
            };
            // The last entry of a chain has its low bit set.
            self.next = if c & 1 == 1 { 0 } else { i.wrapping_add(1) };
            if (c ^ self.h) >> 1 == 0 {
                return Some(i as usize);
            }
        }
        None
    }
}

/// An object's dynamic symbols, ready for lookups.
#[derive(Clone)]
pub(crate) struct SymTab<'a> {
    pub syms: Table<'a, Sym>,
    pub strtab: &'a [u8],
    hash: HashTable<'a>,
    versym: Option<Table<'a, u16>>,
    /// Version index → (name, hash) of the versions this object defines.
    defs: Vec<Option<(Box<[u8]>, u32)>>,
    /// For repeated unversioned lookups by name.
    index: LazyIndex,
}

impl<'a> SymTab<'a> {
    pub(crate) fn new(
        syms: Table<'a, Sym>,
        strtab: &'a [u8],
        hash: HashTable<'a>,
        versym: Option<Table<'a, u16>>,
        versions: &VersionTable,
    ) -> SymTab<'a> {
        SymTab {
            syms,
            strtab,
            hash,
            versym,
            defs: versions.definitions(),
            index: LazyIndex::default(),
        }
    }

    /// Number of symbols.
    pub(crate) fn len(&self) -> usize {
        self.syms.len()
    }

    /// Symbol `i`.
    #[inline]
    pub(crate) fn sym(&self, i: usize) -> Option<Sym> {
        self.syms.get(i)
    }

    /// Where symbol `i` lies in memory (for `dladdr1`).
    pub(crate) fn syms_ptr(&self, i: usize) -> *const Sym {
        self.syms.ptr(i)
    }

    /// The name of a symbol (empty if its offset is bad).
    #[inline]
    pub(crate) fn name(&self, sym: &Sym) -> &'a [u8] {
        self.name_at(sym.st_name)
    }

    /// The raw `VERSYM` entry of symbol `i` (1 = global when absent).
    #[inline]
    /// `DT_VERSYM`, one entry per symbol, if the object has one.
    pub(crate) fn versym_table(&self) -> Option<&Table<'a, u16>> {
        self.versym.as_ref()
    }

    pub(crate) fn versym(&self, i: usize) -> u16 {
        self.versym.and_then(|v| v.get(i)).unwrap_or(1)
    }

    /// Whether the hash table alone says `name` is not defined here.
    #[inline]
    pub(crate) fn rejects(&self, name: &Name) -> bool {
        self.hash.rejects(name)
    }

    /// The definition an unversioned lookup of `name` finds, from the name
    /// index if it is built (no hash-table fallback: `None` also when it
    /// is not).
    #[inline]
    pub(crate) fn indexed(&self, name: &[u8]) -> Option<Hit> {
        self.index.built()?.get(self, name)
    }

    /// What `lookup(name, None)` finds: the first lookups go through the
    /// hash table; once they repeat, from a name index.
    #[inline]
    pub(crate) fn lookup_unversioned(&self, name: &[u8]) -> Option<(usize, Sym)> {
        match self.index.counted(self) {
            Some(ix) => {
                let hit = ix.get(self, name)?;
                self.sym(hit.index).map(|s| (hit.index, s))
            }
            None => self.lookup(&Name::new(name), None),
        }
    }

    /// Finds a definition of `name` (at `version`) with glibc's rules.
    #[inline]
    pub(crate) fn lookup(&self, name: &Name, version: Option<&VersionReq>) -> Option<(usize, Sym)> {
        match &self.hash {
            HashTable::Gnu { .. } => self
                .hash
                .gnu_candidates(name)?
                .find_map(|i| self.check(i, name, version)),
            HashTable::Sysv { buckets, chains } => {
                let mut i = buckets.get((name.sysv() % buckets.len() as u32) as usize)?;
                // Each index is < nchain (validated); bound the walk too.
                for _ in 0..chains.len() {
                    if i == 0 {
                        return None;
                    }
                    if let Some(found) = self.check(i as usize, name, version) {
                        return Some(found);
                    }
                    i = chains.get(i as usize)?;
                }
                None
            }
        }
    }

    /// The first symbol index a hash table can reach (a GNU table leaves
    /// the undefined and local symbols below `symoffset` out).
    pub(crate) fn hashed_from(&self) -> usize {
        match &self.hash {
            HashTable::Gnu { symoffset, .. } => *symoffset as usize,
            HashTable::Sysv { .. } => 1,
        }
    }

    /// The end of the symbols that can be imports (undefined): a GNU hash
    /// table's `symoffset` (the link editor puts every symbol the table
    /// leaves out first), or every symbol with a SysV table.
    pub(crate) fn imports_end(&self) -> usize {
        match &self.hash {
            HashTable::Gnu { symoffset, .. } => (*symoffset as usize).min(self.len()),
            HashTable::Sysv { .. } => self.len(),
        }
    }

    /// The part of glibc's `check_match` that does not depend on the name
    /// asked for: a defined, visible, global or weak symbol of a kind a
    /// lookup may return.
    #[inline]
    fn usable(sym: &Sym) -> bool {
        let kind = sym.st_info & 0xf;
        !(sym.st_shndx == SHN_UNDEF
            || (sym.st_value == 0 && sym.st_shndx != SHN_ABS && kind != STT_TLS)
            || !matches!(
                kind,
                STT_NOTYPE | STT_OBJECT | STT_FUNC | STT_COMMON | STT_TLS | STT_GNU_IFUNC
            )
            || matches!(sym.st_other & 3, STV_HIDDEN | STV_INTERNAL)
            || sym.st_info >> 4 == STB_LOCAL)
    }

    /// Whether symbol `i` (`sym`) is a definition an unversioned lookup
    /// accepts: usable, and not a hidden version.
    pub(crate) fn exported(&self, i: usize, sym: &Sym) -> bool {
        Self::usable(sym)
            && self
                .versym
                .is_none_or(|vs| vs.get(i).is_some_and(|raw| raw & 0x8000 == 0))
    }

    /// Whether `sym`'s name is exactly `name`.
    #[inline]
    pub(crate) fn name_is(&self, sym: &Sym, name: &[u8]) -> bool {
        self.name_at_is(sym.st_name, name)
    }

    /// Whether the string at `st_name` in `.dynstr` is exactly `name`:
    /// compared in place, the name's bytes and then its NUL (no scan for
    /// the end of the stored name).
    #[inline]
    pub(crate) fn name_at_is(&self, st_name: u32, name: &[u8]) -> bool {
        let at = st_name as usize;
        let n = name.len();
        // The name and its NUL, in one bounds check.
        match at.checked_add(n).and_then(|end| self.strtab.get(at..=end)) {
            // `s` has n + 1 bytes.
            Some(s) => s[n] == 0 && super::index::same_bytes(&s[..n], name),
            None => false,
        }
    }

    /// Whether the string at `st_name` in `.dynstr` starts with `prefix`.
    #[inline]
    pub(crate) fn name_starts_with(&self, st_name: u32, prefix: &[u8]) -> bool {
        let at = st_name as usize;
        at.checked_add(prefix.len())
            .and_then(|end| self.strtab.get(at..end))
            == Some(prefix)
    }

    /// The string at `st_name` in `.dynstr` (empty if the offset is bad).
    pub(crate) fn name_at(&self, st_name: u32) -> &'a [u8] {
        cstr_at(self.strtab, u64::from(st_name)).unwrap_or(&[])
    }

    /// glibc's `check_match`: a usable definition of the right name and
    /// version.
    #[inline]
    fn check(&self, i: usize, name: &Name, version: Option<&VersionReq>) -> Option<(usize, Sym)> {
        let sym = self.syms.get(i)?;
        if !Self::usable(&sym) || !self.name_is(&sym, name.bytes) {
            return None;
        }
        if let Some(vs) = self.versym {
            let raw = vs.get(i)?;
            let ndx = raw & 0x7fff;
            let hidden = raw & 0x8000 != 0;
            match version {
                Some(req) => {
                    let same = self
                        .defs
                        .get(usize::from(ndx))
                        .and_then(|d| d.as_ref())
                        .is_some_and(|(n, h)| *h == req.hash && &n[..] == req.name);
                    // A versioned request also takes an unversioned,
                    // non-hidden definition (the object predates versions).
                    if !same && (req.hidden || ndx > 1 || hidden) {
                        return None;
                    }
                }
                None => {
                    if hidden {
                        return None;
                    }
                }
            }
        }
        Some((i, sym))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn djb2(name: &[u8]) -> u32 {
        name.iter().fold(5381u32, |h, &c| {
            h.wrapping_mul(33).wrapping_add(u32::from(c))
        })
    }

    #[test]
    fn gnu_hash_eight_bytes_a_step_is_djb2() {
        assert_eq!(gnu_hash(b""), 0x0000_1505);
        assert_eq!(gnu_hash(b"printf"), 0x156b_2bb8);
        assert_eq!(gnu_hash(b"exit"), 0x7c96_7e3f);
        // Every length across several steps, with high bytes too.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in 0..70 {
            let name: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert_eq!(gnu_hash(&name), djb2(&name), "{n} bytes");
        }
    }
}
