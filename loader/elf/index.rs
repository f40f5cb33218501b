//! A name index over one object's exported definitions, for repeated
//! lookups by name (`Library::get`, `dlsym` on a handle).
//!
//! The ELF hash tables are built for the link editor's trade-off: small on
//! disk and good for a few lookups per symbol. Their cost per lookup is
//! the hash itself — djb2 (GNU) or the SysV hash, one dependent multiply
//! or shift per byte — then the Bloom word, the bucket and the chain.
//! A program that asks for the same library's symbols again and again
//! (a plugin host, an FFI wrapper that looks up per call) pays that each
//! time. This index answers an unversioned lookup with a hash that reads
//! the name eight bytes at a time, one open-addressing probe (1.25 on
//! average) and one comparison of the name in `.dynstr`. (Control bytes
//! tested eight at a time, as Abseil's "Swiss tables" do, measured slower
//! here: a second array to read for every hit.)
//!
//! It holds only what an unversioned lookup may return (glibc's
//! `check_match` with no version asked for), and it is exact: for every
//! name in the symbol table it stores the hash-table lookup's own answer
//! (so a name defined twice gets the definition the chain order picks,
//! and a symbol the hash table cannot reach is not found either; a test
//! checks this on thousands of damaged tables).
//! It is built on demand (see [`LazyIndex`]) and costs 12 bytes a slot,
//! with at least two slots per exported definition (a power of two):
//! libcrypto's 5,367 names take 192 KiB.

use goblin::elf::sym::{STT_COMMON, STT_FUNC, STT_NOTYPE, STT_OBJECT};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use goblin::elf64::sym::Sym;

use super::hash::{Name, SymTab};

/// Open-addressing table (at most half full) of `[st_name, meta,
/// st_value]` slots, `meta` 0 when empty, else `tag << 24 | plain << 23 |
/// (index + 1)` where `tag` is 8 more bits of the name's hash and `plain`
/// says the symbol is a function or data object (no IFUNC, no TLS) whose
/// `st_value` fits the slot: a probe compares the name in `.dynstr` only
/// when the tags agree, and a hit on a plain symbol needs nothing but its
/// slot. 12 bytes a slot: for libcrypto's 5,367 names, 192 KiB.
pub(crate) struct NameIndex {
    slots: Box<[[u32; 3]]>,
    mask: usize,
}

/// What the index knows of a definition.
#[derive(Clone, Copy)]
pub(crate) struct Hit {
    /// Its index in the symbol table.
    pub index: usize,
    /// `st_value`.
    pub value: u64,
    /// A function or data object: its address is the load bias plus
    /// `value`.
    pub plain: bool,
}

#[inline(always)]
fn word8(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(s) => {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        }
        None => 0,
    }
}

#[inline(always)]
fn word4(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 4) {
        Some(s) => {
            let mut w = [0u8; 4];
            w.copy_from_slice(s);
            u64::from(u32::from_le_bytes(w))
        }
        None => 0,
    }
}

/// Two words that together hold every byte of `b` (overlapping where
/// `b` is shorter than 16 bytes; fixed-size loads only, so no byte-wise
/// copy and no store-forwarding stall).
#[inline(always)]
fn ends(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    if n >= 8 {
        (word8(b, 0), word8(b, n - 8))
    } else if n >= 4 {
        (word4(b, 0), word4(b, n - 4))
    } else if n > 0 {
        (
            u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
            0,
        )
    } else {
        (0, 0)
    }
}

/// `a == b` for slices of the same length, with two loads each when they
/// are 4 to 16 bytes long.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (4..=16).contains(&n) {
        ends(a) == ends(b)
    } else {
        a == b
    }
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let m = u128::from(a ^ K).wrapping_mul(u128::from(b ^ 0xc2b2_ae3d_27d4_eb4f));
    (m as u64) ^ ((m >> 64) as u64)
}

/// The index's hash of a symbol name: the first and last eight bytes (and
/// every eight in between for longer names), mixed with the length.
#[inline]
pub(crate) fn name_hash(b: &[u8]) -> u64 {
    let n = b.len();
    let (first, last) = ends(b);
    let mut h = mix(first ^ (n as u64), last);
    let mut at = 8;
    while at + 8 < n {
        h = mix(h, word8(b, at));
        at += 8;
    }
    h
}

/// Symbols a slot can number (23 bits, index + 1).
const MAX_SYMBOLS: usize = 0x7f_ffff;
/// The tag's bits in a slot's `meta`.
const TAG: u32 = 0xff << 24;
/// The plain bit.
const PLAIN: u32 = 1 << 23;

/// A slot's tag: the hash's top 8 bits (the low bits pick the slot).
#[inline(always)]
fn tag_of(h: u64) -> u32 {
    (h >> 32) as u32 & TAG
}

fn slot(tag: u32, index: usize, sym: &Sym) -> [u32; 3] {
    let plain = matches!(
        sym.st_info & 0xf,
        STT_FUNC | STT_OBJECT | STT_NOTYPE | STT_COMMON
    ) && u32::try_from(sym.st_value).is_ok();
    [
        sym.st_name,
        tag | if plain { PLAIN } else { 0 } | (index as u32 + 1),
        sym.st_value as u32,
    ]
}

impl NameIndex {
    /// Indexes every definition of `symtab` that an unversioned lookup can
    /// return (symbols from the first the hash table can reach: below a
    /// GNU table's `symoffset` there are only undefined or local symbols).
    /// `None` if the object has more symbols than a slot can number.
    pub(crate) fn build(symtab: &SymTab) -> Option<NameIndex> {
        let n = symtab.len();
        if n >= MAX_SYMBOLS {
            return None;
        }
        let mut found: Vec<(u64, u32)> = Vec::new();
        for i in symtab.hashed_from()..n {
            let Some(sym) = symtab.sym(i) else { break };
            if !symtab.exported(i, &sym) {
                continue;
            }
            let name = symtab.name(&sym);
            if name.is_empty() {
                continue;
            }
            // What the hash table answers for this name, which is what
            // the index must answer: in a table the hash does not reach
            // (damaged, or built by a careless tool) a symbol may be there
            // and yet not found; of two definitions of one name, the hash
            // table's chain order picks one.
            if let Some((k, _)) = symtab.lookup(&Name::new(name), None) {
                found.push((name_hash(name), k as u32));
            }
        }
        // At most half full: a miss ends at the first empty slot.
        let cap = (found.len() * 2).next_power_of_two().max(8);
        let mut index = NameIndex {
            slots: vec![[0u32; 3]; cap].into_boxed_slice(),
            mask: cap - 1,
        };
        for (h, i) in found {
            index.insert(symtab, h, i as usize);
        }
        Some(index)
    }

    fn insert(&mut self, symtab: &SymTab, h: u64, i: usize) {
        let Some(sym) = symtab.sym(i) else {
            return;
        };
        let name = symtab.name(&sym);
        let tag = tag_of(h);
        let mut at = (h as usize) & self.mask;
        loop {
            let [st_name, meta, _] = self.slots[at];
            if meta == 0 {
                self.slots[at] = slot(tag, i, &sym);
                return;
            }
            if meta & TAG == tag && symtab.name_at(st_name) == name {
                // The same name again: the same answer is there.
                return;
            }
            at = (at + 1) & self.mask;
        }
    }

    /// `name`'s definition, if the object has one an unversioned lookup
    /// accepts.
    #[inline]
    pub(crate) fn get(&self, symtab: &SymTab, name: &[u8]) -> Option<Hit> {
        let h = name_hash(name);
        let tag = tag_of(h);
        let mut at = (h as usize) & self.mask;
        loop {
            debug_assert!(at < self.slots.len());
            // SAFETY: `at` is masked with `mask`, and `slots` has
            // `mask + 1` entries (a power of two, set in `build`).
            let [st_name, meta, value] = unsafe { *self.slots.get_unchecked(at) };
            if meta == 0 {
                return None;
            }
            if meta & TAG == tag && symtab.name_at_is(st_name, name) {
                return Some(Hit {
                    index: (meta & MAX_SYMBOLS as u32) as usize - 1,
                    value: u64::from(value),
                    plain: meta & PLAIN != 0,
                });
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Bytes of memory the index holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * 12
    }
}

/// Lookups by name in one symbol table after which it builds its name
/// index: few enough that a program asking repeatedly soon gets the fast
/// path, enough that one asking once or twice (most) never pays for it.
pub(crate) const INDEX_AFTER: u32 = 16;

/// A symbol table's name index, built on its [`INDEX_AFTER`]th lookup.
#[derive(Default)]
pub(crate) struct LazyIndex {
    lookups: AtomicU32,
    /// `None` inside: the table has too many symbols for an index.
    index: OnceLock<Option<NameIndex>>,
}

impl Clone for LazyIndex {
    /// A copy starts without an index (it is rebuilt on demand).
    fn clone(&self) -> Self {
        LazyIndex::default()
    }
}

impl LazyIndex {
    /// The index, if built.
    #[inline]
    pub(crate) fn built(&self) -> Option<&NameIndex> {
        self.index.get()?.as_ref()
    }

    /// The index, building it if this lookup is the [`INDEX_AFTER`]th;
    /// `None` before that (the caller uses the hash table).
    #[inline]
    pub(crate) fn counted(&self, symtab: &SymTab) -> Option<&NameIndex> {
        match self.index.get() {
            Some(ix) => ix.as_ref(),
            None if self.lookups.fetch_add(1, Ordering::Relaxed) + 1 >= INDEX_AFTER => {
                self.index.get_or_init(|| NameIndex::build(symtab)).as_ref()
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::elf::dynamic::{DynInfo, Tables};
    use crate::elf::{parse_plan, View};

    /// Every name an index holds and a set it does not hold, answered
    /// exactly as the ELF hash table answers; and the probe lengths.
    fn check_file(path: &Path) -> (usize, f64, usize) {
        let bytes = std::fs::read(path).expect("read library");
        let plan = parse_plan(path, &bytes, bytes.len() as u64).expect("plan");
        let view = View::of_file(&bytes, &plan.loads);
        let d =
            DynInfo::parse(path, &view, plan.dynamic.0, plan.dynamic.1, |v| v).expect("dynamic");
        let t = Tables::parse(path, &view, &d).expect("tables");
        let st = &t.symtab;
        let ix = NameIndex::build(st).expect("index");
        // The hash table alone, as host objects read it before their
        // tables (its chain array not bounded yet).
        let hash_only =
            crate::elf::hash::HashTable::parse(path, &view.read_only(), d.gnu_hash, d.hash)
                .expect("hash table");
        let (mut names, mut probes, mut worst, mut rejected) = (0usize, 0usize, 0usize, 0usize);
        for i in 1..st.len() {
            let sym = st.sym(i).expect("symbol");
            let name = st.name(&sym);
            let want = st.lookup(&Name::new(name), None).map(|(k, _)| k);
            let got = ix.get(st, name).map(|h| h.index);
            // The hash table alone never turns away a name it defines.
            assert!(want.is_none() || !st.rejects(&Name::new(name)));
            assert!(want.is_none() || !hash_only.rejects(&Name::new(name)));
            assert_eq!(
                got,
                want,
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(name)
            );
            // Not there: a prefix, an extension, a changed last byte.
            for other in [
                &name[..name.len().saturating_sub(1)],
                &[name, b"_x"].concat()[..],
                &[&name[..name.len().saturating_sub(1)], b"#"].concat()[..],
            ] {
                let want = st.lookup(&Name::new(other), None).map(|(k, _)| k);
                assert_eq!(ix.get(st, other).map(|h| h.index), want);
                assert!(want.is_none() || !st.rejects(&Name::new(other)));
                rejected += usize::from(st.rejects(&Name::new(other)));
            }
            if want.is_some() {
                names += 1;
                let mut at = (name_hash(name) as usize) & ix.mask;
                let mut n = 1;
                while (ix.slots[at][1] & MAX_SYMBOLS as u32) as usize != want.unwrap_or(0) + 1 {
                    at = (at + 1) & ix.mask;
                    n += 1;
                }
                probes += n;
                worst = worst.max(n);
            }
        }
        assert!(ix.bytes() <= (names * 2).next_power_of_two().max(8) * 12);
        // Most near misses are turned away by the hash table alone.
        assert!(
            rejected > names,
            "{rejected} of {} near misses rejected",
            3 * names
        );
        (names, probes as f64 / names.max(1) as f64, worst)
    }

    #[test]
    fn index_agrees_with_the_hash_tables_on_system_libraries() {
        let mut seen = 0;
        for lib in [
            "libz.so.1",
            "libsqlite3.so.0",
            "libcrypto.so.3",
            "libstdc++.so.6",
            "libm.so.6",
        ] {
            let p = Path::new("/usr/lib/x86_64-linux-gnu").join(lib);
            if !p.exists() {
                continue;
            }
            let (names, mean, worst) = check_file(&p);
            eprintln!("{lib}: {names} names, {mean:.2} probes on average, {worst} at worst");
            assert!(names > 50, "{lib}: too few names indexed");
            assert!(mean < 2.0, "{lib}: {mean} probes on average");
            seen += 1;
        }
        assert!(seen >= 3, "system libraries missing");
    }

    /// For a symbol table as damaged as validation lets through, the index
    /// still answers exactly as the hash table does: thousands of copies
    /// of a real library with bytes of `.dynsym`, `.dynstr`, the hash
    /// table and the version table changed at random.
    #[test]
    fn damaged_tables_index_as_they_hash() {
        let path = Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1");
        let Ok(good) = std::fs::read(path) else {
            return;
        };
        let plan = parse_plan(path, &good, good.len() as u64).expect("plan");
        let view = View::of_file(&good, &plan.loads);
        let d =
            DynInfo::parse(path, &view, plan.dynamic.0, plan.dynamic.1, |v| v).expect("dynamic");
        // In libz the tables lie in the first segment, where addresses are
        // file offsets: from the symbol table to the end of the string
        // table covers .dynsym, .dynstr, .gnu.hash and .gnu.version.
        let tables = [d.symtab, d.strtab, d.gnu_hash, d.versym].map(|a| a.expect("table") as usize);
        let lo = *tables.iter().min().expect("tables");
        let hi = d.strtab.expect("strtab") as usize + d.strsz.expect("strsz") as usize;
        let (mut x, mut indexed) = (0x9e37_79b9_7f4a_7c15u64, 0);
        for _ in 0..3000 {
            let mut bytes = good.clone();
            for _ in 0..1 + (x % 4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = lo + (x as usize) % (hi - lo);
                bytes[at] = (x >> 40) as u8;
            }
            let view = View::of_file(&bytes, &plan.loads);
            let Ok(t) = Tables::parse(path, &view, &d) else {
                continue;
            };
            let st = &t.symtab;
            let Some(ix) = NameIndex::build(st) else {
                continue;
            };
            indexed += 1;
            for i in 0..st.len() {
                let Some(sym) = st.sym(i) else { continue };
                let name = st.name(&sym);
                let want = st.lookup(&Name::new(name), None).map(|(k, _)| k);
                assert_eq!(ix.get(st, name).map(|h| h.index), want);
                assert!(want.is_none() || !st.rejects(&Name::new(name)));
            }
        }
        assert!(indexed > 1000, "only {indexed} damaged copies validated");
    }

    #[test]
    fn short_names_hash_and_compare_by_every_byte() {
        for n in 0..=24 {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i).collect();
            for k in 0..n {
                let mut b = a.clone();
                b[k] ^= 0x20;
                assert!(!same_bytes(&a, &b), "{n} bytes, byte {k}");
                assert_ne!(name_hash(&a), name_hash(&b), "{n} bytes, byte {k}");
            }
            assert!(same_bytes(&a, &a.clone()));
        }
    }
}
