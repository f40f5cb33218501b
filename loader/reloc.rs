//! Relocate: one engine, fed by the architecture's constants.
//!
//! Order within an object follows glibc: `DT_RELR` packed relatives, then
//! `DT_REL`, `DT_RELA` and `DT_JMPREL` (bound eagerly); IFUNC-dependent
//! work waits until everything else in the object is done — symbol
//! relocations against an IFUNC of this same object first, then
//! `IRELATIVE`. Every target is checked to lie in a writable `PT_LOAD`
//! before it is written, and every symbol index to lie in the symbol
//! table. Each symbol is resolved once per object (a per-index cache), so
//! the loop does no allocation per entry.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;

use goblin::elf::program_header::PF_W;
use goblin::elf::sym::{STB_LOCAL, STB_WEAK, STV_DEFAULT};

use crate::arch::{self, RelocKind};
use crate::elf::dynamic::{relr_offsets, RelocTable};
use crate::elf::hash::{Name, VersionReq};
use crate::elf::page_size;
use crate::error::{Error, Result};
use crate::object::{Found, Module, Object, Scope};
use crate::tls::TlsIndex;
use crate::trace::{Event, Provider, Tracer};

/// What a relocation pass needs.
pub(crate) struct Relocator<'s> {
    pub obj: &'s Object,
    pub scope: &'s Scope<'s>,
    pub tracer: &'s Tracer,
    /// Call IFUNC resolvers (false for `check`: run nothing of the library).
    pub run_code: bool,
    /// Relocation cache (opt-in, `relcache`): skips relocations of pages
    /// mapped from a cache file, or records which pages can be cached and
    /// sends external `JUMP_SLOT`s through stubs. `None`: no effect.
    pub cache: Option<&'s crate::relcache::Session<'s>>,
}

#[derive(Clone, Copy)]
enum Resolved {
    /// Not looked up yet.
    Unknown,
    /// An address (0 for an undefined weak symbol).
    Value(usize),
    /// An IFUNC of an object not relocated yet: resolver address.
    PendingIfunc(usize),
    /// A thread-local variable: its [`TlsTarget`] in [`Resolutions::tls`]
    /// (kept aside so that this enum stays 16 bytes: one per symbol).
    Tls(u32),
}

/// This load's resolutions, by symbol index.
struct Resolutions {
    by_sym: Vec<Resolved>,
    tls: Vec<TlsTarget>,
}

/// Where a thread-local variable lives.
#[derive(Clone, Copy)]
struct TlsTarget {
    /// Module id: soloader's (bit 62 set) or glibc's.
    module: usize,
    /// `st_value`: the variable's offset in its module's block.
    offset: usize,
    /// For a host module in glibc's static TLS: the block's offset from
    /// the thread pointer.
    tp_offset: Option<isize>,
    /// Defined in a module soloader loaded.
    own: bool,
}

/// Per-type counts and written pages, kept only when tracing.
#[derive(Default)]
struct Stats {
    by_type: Vec<(&'static str, usize, BTreeSet<usize>)>,
}

impl Stats {
    fn add(&mut self, name: &'static str, addr: usize) {
        let page = addr & !(page_size() - 1);
        match self.by_type.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, c, pages)) => {
                *c += 1;
                pages.insert(page);
            }
            None => self.by_type.push((name, 1, BTreeSet::from([page]))),
        }
    }
}

struct Pending {
    target: usize,
    kind: RelocKind,
    sym: usize,
    addend: i64,
}

impl Relocator<'_> {
    fn path(&self) -> &Path {
        &self.obj.path
    }

    /// Applies every relocation of the object.
    pub(crate) fn run(&self) -> Result<()> {
        let obj = self.obj;
        if obj.dynamic.textrel {
            return Err(Error::unsupported(
                self.path(),
                "DT_TEXTREL: the library needs its code patched at load time; rebuild it with -fPIC",
            ));
        }
        let writable: Vec<(u64, u64)> = obj
            .plan
            .loads
            .iter()
            .filter(|l| l.flags & PF_W != 0)
            .map(|l| (l.vaddr, l.vaddr + l.memsz))
            .collect();
        let target = |off: u64| -> Result<usize> {
            if writable
                .iter()
                .any(|&(s, e)| off >= s && off.checked_add(8).is_some_and(|end| end <= e))
            {
                Ok(obj.addr(off))
            } else {
                Err(Error::malformed(
                    self.path(),
                    "relocation target is outside every writable PT_LOAD",
                    Some(off),
                ))
            }
        };
        let mut stats = if self.tracer.on() {
            Some(Stats::default())
        } else {
            None
        };
        let base = obj.mapping.base;

        // DT_RELR: packed relative relocations.
        for at in relr_offsets(obj.tables.relr) {
            let t = target(at)?;
            if !self.cached(t) {
                // SAFETY: `t` is 8 bytes inside a writable segment of this
                // object (checked by `target`).
                unsafe { add_base(t, base) };
                self.note_relr(t);
                if let Some(s) = &mut stats {
                    s.add(arch::RELR_NAME, t);
                }
            }
        }

        // Relocation cache: a hit resolves only the symbols of its stubs
        // and of the few entries it processes; the per-symbol tables need
        // only reach the highest of them.
        let symbols = obj.tables.symtab.len();
        let needed = self
            .cache
            .and_then(|c| c.symbols())
            .map_or(symbols, |n| n.min(symbols));
        let mut cache = Resolutions {
            by_sym: vec![Resolved::Unknown; needed],
            tls: Vec::new(),
        };
        // Resolutions remembered from an earlier load of this same file in
        // this same scope (not while tracing: the trace shows every lookup).
        let key = (!self.tracer.on() && self.run_code).then(|| self.memo_key());
        let mut memo = key
            .as_ref()
            // The whole table (a relocation cache hit needs only its first
            // `needed` entries, and gives it back complete).
            .and_then(|k| memo_take(k, symbols))
            .unwrap_or_else(|| vec![Memo::Unknown; needed]);
        // Relocation cache: on a hit, fill the stub table first (the
        // JUMP_SLOTs that point at the stubs are in cached pages, skipped).
        if let Some(c) = self.cache {
            for (n, sym) in c.stub_symbols() {
                match self.resolve(sym, &mut cache, &mut memo)? {
                    Resolved::Value(v) => c.fill_stub(n, v),
                    _ => return Err(c.inconsistent(sym)),
                }
            }
        }
        let mut later: Vec<Pending> = Vec::new();
        let mut irelative: Vec<(usize, usize)> = Vec::new();
        // With one writable segment and nothing to record, a leading run
        // of RELATIVE entries (the link editor sorts them first: the count
        // glibc reads from DT_RELACOUNT) is applied in a tight loop.
        let single = match writable[..] {
            [w] if self.cache.is_none() && stats.is_none() => Some(w),
            _ => None,
        };
        for (ti, table) in obj.tables.relocs.iter().enumerate() {
            let n = table.len();
            let first = match (table, single) {
                (RelocTable::Rela(t), Some(w)) => relative_run(t.raw(), w, base),
                _ => 0,
            };
            // Relocation cache: on a hit, only the entries whose values are
            // not in the cached pages.
            #[allow(clippy::single_range_in_vec_init)]
            let all = [first..n];
            let entries = self.cache.and_then(|c| c.entries(ti)).unwrap_or(&all);
            for i in entries.iter().cloned().flatten() {
                let (off, info, addend, has_addend) = match table {
                    RelocTable::Rela(t) => match t.get(i) {
                        Some(r) => (r.r_offset, r.r_info, r.r_addend, true),
                        None => continue,
                    },
                    RelocTable::Rel(t) => match t.get(i) {
                        Some(r) => (r.r_offset, r.r_info, 0, false),
                        None => continue,
                    },
                };
                let r_type = (info & 0xffff_ffff) as u32;
                let sym = (info >> 32) as usize;
                let kind = arch::classify(r_type);
                if kind == RelocKind::None {
                    continue;
                }
                let t = target(off)?;
                // REL keeps the addend in the word being relocated.
                let addend = if has_addend {
                    addend
                } else {
                    // SAFETY: `t` is 8 bytes inside a writable segment.
                    unsafe { (t as *const i64).read_unaligned() }
                };
                if let Some(s) = &mut stats {
                    s.add(arch::reloc_name(r_type), t);
                }
                match kind {
                    RelocKind::None => {}
                    RelocKind::Relative => {
                        // SAFETY: checked target.
                        unsafe { write(t, base.wrapping_add(addend as usize)) };
                        self.note((ti, i), t, true);
                    }
                    RelocKind::IRelative => {
                        self.note((ti, i), t, false);
                        irelative.push((t, base.wrapping_add(addend as usize)))
                    }
                    RelocKind::Absolute | RelocKind::GlobDat | RelocKind::JumpSlot => {
                        // Resolved before (the common case): no call.
                        let r = match cache.by_sym.get(sym) {
                            Some(&Resolved::Value(v)) => Resolved::Value(v),
                            _ => self.resolve(sym, &mut cache, &mut memo)?,
                        };
                        match r {
                            Resolved::Value(v) => {
                                let v = if kind == RelocKind::Absolute { v.wrapping_add(addend as usize) } else { v };
                                // Relocation cache: note whether the value is
                                // the same in every process; an external
                                // JUMP_SLOT gets its stub's address instead.
                                let v = match self.cache {
                                    Some(c) => c.value((ti, i), t, kind == RelocKind::JumpSlot, self.fixed(sym, &memo), sym, v)?,
                                    None => v,
                                };
                                // SAFETY: checked target.
                                unsafe { write(t, v) }
                            }
                            Resolved::PendingIfunc(_) => {
                                self.note((ti, i), t, false);
                                later.push(Pending {
                                    target: t,
                                    kind,
                                    sym,
                                    addend,
                                })
                            }
                            Resolved::Unknown | Resolved::Tls(_) => {
                                return Err(Error::malformed(
                                    self.path(),
                                    format!(
                                        "{} against thread-local symbol {}",
                                        arch::reloc_name(r_type),
                                        self.sym_name(sym)
                                    ),
                                    Some(off),
                                ))
                            }
                        }
                    }
                    RelocKind::Copy => {
                        return Err(Error::unsupported(
                            self.path(),
                            format!(
                                "{} against {}: copy relocations belong in executables, not shared libraries",
                                arch::reloc_name(r_type),
                                self.sym_name(sym)
                            ),
                        ))
                    }
                    RelocKind::DtpMod => {
                        self.note((ti, i), t, false);
                        let v = self.tls_target(sym, &mut cache, &mut memo)?;
                        // SAFETY: checked target.
                        unsafe { write(t, v.module) }
                    }
                    RelocKind::DtpOff => {
                        self.note((ti, i), t, false);
                        let v = self.tls_target(sym, &mut cache, &mut memo)?;
                        // SAFETY: checked target.
                        unsafe { write(t, v.offset.wrapping_add(addend as usize)) }
                    }
                    RelocKind::TpOff => {
                        self.note((ti, i), t, false);
                        let v = self.tls_target(sym, &mut cache, &mut memo)?;
                        let Some(tp) = v.tp_offset.filter(|_| !v.own) else {
                            return Err(Error::unsupported(
                                self.path(),
                                format!(
                                    "initial-exec TLS ({}) against {}{}: its variable would have to live in glibc's static TLS block, which soloader does not own; rebuild with -ftls-model=global-dynamic",
                                    arch::reloc_name(r_type),
                                    self.sym_name(sym),
                                    if v.own { "" } else { " (a host module with dynamic TLS)" }
                                ),
                            ));
                        };
                        let value = (tp as usize).wrapping_add(v.offset).wrapping_add(addend as usize);
                        // SAFETY: checked target.
                        unsafe { write(t, value) }
                    }
                    RelocKind::TlsDesc => {
                        let t2 = target(off.wrapping_add(8))?;
                        self.note((ti, i), t, false);
                        self.note((ti, i), t2, false);
                        let v = self.tls_target(sym, &mut cache, &mut memo)?;
                        let offset = v.offset.wrapping_add(addend as usize);
                        let (entry, arg) = match v.tp_offset.filter(|_| !v.own) {
                            Some(tp) => (arch::tlsdesc_return_entry(), (tp as usize).wrapping_add(offset)),
                            None => {
                                let arg = Box::new(TlsIndex {
                                    module: v.module,
                                    offset,
                                });
                                let p = &*arg as *const TlsIndex as usize;
                                match obj.tlsdesc_args.lock() {
                                    Ok(mut a) => a.push(arg),
                                    Err(e) => e.into_inner().push(arg),
                                }
                                (arch::tlsdesc_dynamic_entry(), p)
                            }
                        };
                        // SAFETY: both words of the descriptor are checked
                        // targets.
                        unsafe {
                            write(t, entry);
                            write(t2, arg);
                        }
                    }
                    RelocKind::Unsupported => {
                        return Err(Error::unsupported(
                            self.path(),
                            format!("relocation type {} ({}) at {off:#x}", r_type, arch::reloc_name(r_type)),
                        ))
                    }
                }
            }
        }

        // Relocation cache: stub code in place, cacheable pages copied if
        // resolvers are about to run.
        if let Some(c) = self.cache {
            c.before_ifunc(!later.is_empty() || !irelative.is_empty())?;
        }
        // Everything but IFUNC work is done: this object's own IFUNC
        // resolvers may now run.
        self.obj.relocated.store(true, Ordering::Release);
        let mut bound: Vec<usize> = Vec::new();
        for p in later {
            // As in glibc, the resolver runs for each relocation; the Bind
            // event reports its result, once per symbol.
            let Some(Resolved::PendingIfunc(r)) = cache.by_sym.get(p.sym).copied() else {
                continue;
            };
            let v = self.call_resolver(r, p.sym)?;
            if !bound.contains(&p.sym) {
                bound.push(p.sym);
                self.emit_bind(p.sym, Module::Loaded(obj), v);
            }
            let v = if p.kind == RelocKind::Absolute {
                v.wrapping_add(p.addend as usize)
            } else {
                v
            };
            // SAFETY: `p.target` was checked when it was queued.
            unsafe { write(p.target, v) }
        }
        for (t, resolver) in irelative {
            let v = self.call_resolver(resolver, 0)?;
            // SAFETY: checked target.
            unsafe { write(t, v) }
        }

        if let Some(k) = key.filter(|_| memo.len() == symbols) {
            memo_put(k, memo);
        }
        if let Some(s) = stats {
            for (kind, count, pages) in s.by_type {
                self.tracer.emit(|| Event::Relocations {
                    path: obj.path.clone(),
                    kind,
                    count,
                    pages: pages.into_iter().collect(),
                });
            }
        }
        Ok(())
    }

    /// Relocation cache: whether the 8 bytes at `t` came relocated from a
    /// cache file (the `DT_RELR` relocation is skipped; other tables are
    /// narrowed to the entries to process, see `Session::entries`).
    #[inline]
    fn cached(&self, t: usize) -> bool {
        self.cache.is_some_and(|c| c.cached(t))
    }

    /// Relocation cache: records a `DT_RELR` write at `t`.
    #[inline]
    fn note_relr(&self, t: usize) {
        if let Some(c) = self.cache {
            c.wrote(t);
        }
    }

    /// Relocation cache: records that `entry` (table, index) wrote at `t`;
    /// `fixed` when the value is the same in every process that loads this
    /// file at this base with this scope.
    #[inline]
    fn note(&self, entry: (usize, usize), t: usize, fixed: bool) {
        if let Some(c) = self.cache {
            c.entry(entry, t, fixed);
        }
    }

    /// Relocation cache: whether symbol `i`, as resolved (its `memo` entry
    /// says where), has the same value in every process with the same base
    /// and scope fingerprint: defined in this object or in a library the
    /// cache placed, or 0 (undefined weak). Host objects (ASLR) and
    /// soloader's own functions only in forked mode, whose fingerprint
    /// holds their addresses; IFUNC, `STB_GNU_UNIQUE` and TLS never.
    fn fixed(&self, i: usize, memo: &[Memo]) -> bool {
        match memo.get(i) {
            Some(Memo::Absolute(0)) => true,
            Some(Memo::Absolute(_)) => self.cache.is_some_and(|c| c.host_fixed()),
            Some(Memo::InScope(k, _)) => matches!(
                self.scope.modules.get(*k as usize),
                Some(Module::Loaded(o)) if crate::relcache::stable(o, self.obj)
            ),
            _ => false,
        }
    }

    fn call_resolver(&self, resolver: usize, sym: usize) -> Result<usize> {
        if !self.run_code {
            return Ok(0);
        }
        // Resolvers must lie in an executable segment of this object (for
        // IRELATIVE) or be a checked symbol (for IFUNC symbols).
        let obj = self.obj;
        let in_text = obj
            .mapping
            .segments
            .iter()
            .any(|s| s.prot & libc::PROT_EXEC != 0 && s.range.contains(&resolver));
        if sym == 0 && !in_text {
            return Err(Error::malformed(
                self.path(),
                "IRELATIVE resolver is outside the executable segments",
                Some(resolver.wrapping_sub(obj.mapping.base) as u64),
            ));
        }
        // SAFETY: the object is relocated (its IFUNC work aside) and the
        // resolver lies in its code (or is a validated IFUNC definition).
        Ok(unsafe { arch::call_ifunc_resolver(resolver) })
    }

    /// The thread-local variable a TLS relocation refers to (symbol 0:
    /// this object's own block, as in local-dynamic code).
    fn tls_target(
        &self,
        sym: usize,
        cache: &mut Resolutions,
        memo: &mut [Memo],
    ) -> Result<TlsTarget> {
        let own = |offset: usize| -> Result<TlsTarget> {
            match self.obj.tls {
                Some((module, _)) => Ok(TlsTarget {
                    module,
                    offset,
                    tp_offset: None,
                    own: true,
                }),
                None => Err(Error::malformed(
                    self.path(),
                    "TLS relocation in an object without PT_TLS",
                    None,
                )),
            }
        };
        if sym == 0 {
            return own(0);
        }
        match self.resolve(sym, cache, memo)? {
            Resolved::Tls(k) => cache
                .tls
                .get(k as usize)
                .copied()
                // Always there: `lookup` pushed it and returned its index.
                .ok_or_else(|| Error::malformed(self.path(), "lost TLS resolution", None)),
            // An undefined weak TLS reference: module 0, offset 0.
            Resolved::Value(0) => Ok(TlsTarget {
                module: 0,
                offset: 0,
                tp_offset: None,
                own: false,
            }),
            _ => Err(Error::malformed(
                self.path(),
                format!(
                    "TLS relocation against {}, which is not thread-local",
                    self.sym_name(sym)
                ),
                None,
            )),
        }
    }

    /// Traces the binding of symbol `i` (with its version, if any).
    fn emit_bind(&self, i: usize, module: Module, value: usize) {
        self.tracer.emit(|| {
            // Built only when tracing (it copies the provider's path).
            let provider = module.provider();
            let st = &self.obj.tables.symtab;
            let ndx = usize::from(st.versym(i) & 0x7fff);
            let version = (ndx >= 2)
                .then(|| self.obj.tables.versions.get(ndx))
                .flatten()
                .map(|v| String::from_utf8_lossy(&v.name).into_owned());
            Event::Bind {
                path: self.obj.path.clone(),
                symbol: self.sym_name(i),
                version,
                provider,
                value,
            }
        });
    }

    fn sym_name(&self, i: usize) -> String {
        let st = &self.obj.tables.symtab;
        match st.sym(i) {
            Some(s) if i != 0 => String::from_utf8_lossy(st.name(&s)).into_owned(),
            _ => format!("symbol #{i}"),
        }
    }

    /// Resolves symbol `i` of this object once, through the cache.
    fn resolve(&self, i: usize, cache: &mut Resolutions, memo: &mut [Memo]) -> Result<Resolved> {
        match cache.by_sym.get(i) {
            Some(Resolved::Unknown) => {}
            Some(r) => return Ok(*r),
            None => {
                return Err(Error::malformed(
                    self.path(),
                    format!("relocation names symbol index {i}, past the symbol table"),
                    None,
                ))
            }
        }
        let remembered = match memo.get(i) {
            Some(Memo::Absolute(v)) => Some(*v),
            Some(Memo::InScope(k, st_value)) => self
                .scope
                .modules
                .get(*k as usize)
                .map(|m| m.base().wrapping_add(*st_value as usize)),
            _ => None,
        };
        if let Some(v) = remembered {
            cache.by_sym[i] = Resolved::Value(v);
            return Ok(Resolved::Value(v));
        }
        let (r, m) = self.lookup(i, &mut cache.tls)?;
        cache.by_sym[i] = r;
        if let Some(slot) = memo.get_mut(i) {
            *slot = m;
        }
        Ok(r)
    }

    /// What makes this load's resolutions valid for a later one: the file
    /// being relocated, and the identity of every module in scope.
    fn memo_key(&self) -> MemoKey {
        MemoKey {
            object: (self.obj.file_id, self.obj.stamp),
            scope: self
                .scope
                .modules
                .iter()
                .map(|m| match m {
                    Module::Host(h) => ScopeId::Host(h.base, h.dynamic),
                    Module::Loaded(o) => ScopeId::File(o.file_id, o.stamp),
                })
                .collect(),
        }
    }

    /// How `found` can be remembered for a later load with the same scope.
    fn memo_of(&self, f: &Found) -> Memo {
        if f.is_tls() || f.is_ifunc() {
            return Memo::Never;
        }
        match f.module {
            Module::Host(_) => Memo::Absolute(f.raw_addr()),
            Module::Loaded(o) => self
                .scope
                .modules
                .iter()
                .position(|m| matches!(m, Module::Loaded(x) if x.id == o.id))
                .map_or(Memo::Never, |k| Memo::InScope(k as u32, f.sym.st_value)),
        }
    }

    fn lookup(&self, i: usize, tls: &mut Vec<TlsTarget>) -> Result<(Resolved, Memo)> {
        let obj = self.obj;
        let st = &obj.tables.symtab;
        if i == 0 {
            return Ok((Resolved::Value(0), Memo::Absolute(0)));
        }
        let sym = st.sym(i).ok_or_else(|| {
            Error::malformed(
                self.path(),
                format!("symbol index {i} is out of range"),
                None,
            )
        })?;
        let name_bytes = st.name(&sym);
        let bind = sym.st_info >> 4;
        let defined = sym.st_shndx != 0;
        // Local and non-default-visibility definitions bind to this object.
        let own = defined && (bind == STB_LOCAL || sym.st_other & 3 != STV_DEFAULT);
        let raw_ver = st.versym(i);
        let ndx = usize::from(raw_ver & 0x7fff);
        let version = if ndx >= 2 {
            obj.tables.versions.get(ndx).map(|v| VersionReq {
                name: &v.name,
                hash: v.hash,
                hidden: v.hidden,
            })
        } else {
            None
        };
        if !own {
            if let Some(addr) = crate::dl::provided(name_bytes) {
                self.tracer.emit(|| Event::Bind {
                    path: obj.path.clone(),
                    symbol: String::from_utf8_lossy(name_bytes).into_owned(),
                    version: version.map(|v| String::from_utf8_lossy(v.name).into_owned()),
                    provider: Provider::Loader,
                    value: addr,
                });
                return Ok((Resolved::Value(addr), Memo::Absolute(addr)));
            }
        }
        let found = if own {
            Some(Found {
                module: Module::Loaded(obj),
                sym,
            })
        } else {
            let name = Name::new(name_bytes);
            let symbolic = if obj.dynamic.symbolic {
                st.lookup(&name, version.as_ref()).map(|(_, s)| Found {
                    module: Module::Loaded(obj),
                    sym: s,
                })
            } else {
                None
            };
            symbolic.or_else(|| self.scope.lookup(&name, version.as_ref()))
        };
        let version_name = || version.map(|v| String::from_utf8_lossy(v.name).into_owned());
        let Some(f) = found else {
            if bind == STB_WEAK && !defined {
                self.tracer.emit(|| Event::Bind {
                    path: obj.path.clone(),
                    symbol: String::from_utf8_lossy(name_bytes).into_owned(),
                    version: version_name(),
                    provider: Provider::UndefinedWeak,
                    value: 0,
                });
                return Ok((Resolved::Value(0), Memo::Absolute(0)));
            }
            return Err(Error::UndefinedSymbol {
                path: obj.path.clone(),
                symbol: String::from_utf8_lossy(name_bytes).into_owned(),
                version: version_name(),
            });
        };
        // STB_GNU_UNIQUE: one definition per process, the first one seen.
        if f.sym.st_info >> 4 == STB_GNU_UNIQUE && !f.is_tls() && !f.is_ifunc() {
            let v = unique(name_bytes, &f, obj);
            self.emit_bind(i, f.module, v);
            return Ok((Resolved::Value(v), Memo::Never));
        }
        let resolved = if f.is_tls() {
            let t = match f.module {
                Module::Loaded(o) => TlsTarget {
                    module: o.tls.map(|(id, _)| id).ok_or_else(|| {
                        Error::malformed(
                            &o.path,
                            "thread-local symbol in an object without PT_TLS",
                            None,
                        )
                    })?,
                    offset: f.sym.st_value as usize,
                    tp_offset: None,
                    own: true,
                },
                Module::Host(h) => TlsTarget {
                    module: h.tls_modid,
                    offset: f.sym.st_value as usize,
                    tp_offset: h.tls_offset,
                    own: false,
                },
            };
            tls.push(t);
            Resolved::Tls(tls.len() as u32 - 1)
        } else if f.is_ifunc() {
            let pending = match f.module {
                Module::Loaded(o) => !o.relocated.load(Ordering::Acquire),
                Module::Host(_) => false,
            };
            if pending || !self.run_code {
                match f.module {
                    Module::Loaded(o) if o.id != obj.id && self.run_code => {
                        // Defined in another object that is not relocated
                        // yet: only possible in a dependency cycle.
                        return Err(Error::Runtime {
                            path: obj.path.clone(),
                            what: format!(
                                "IFUNC symbol {} is defined in {}, which is not relocated yet (relink {} with {})",
                                String::from_utf8_lossy(name_bytes),
                                o.path.display(),
                                obj.path.display(),
                                o.path.display()
                            ),
                        });
                    }
                    _ => Resolved::PendingIfunc(f.raw_addr()),
                }
            } else {
                Resolved::Value(f.value(&obj.path, name_bytes)?)
            }
        } else {
            Resolved::Value(f.raw_addr())
        };
        // A pending IFUNC is traced once its resolver has run.
        match resolved {
            Resolved::Value(v) => self.emit_bind(i, f.module, v),
            Resolved::Tls(_) => self.emit_bind(i, f.module, f.sym.st_value as usize),
            _ => {}
        }
        Ok((resolved, self.memo_of(&f)))
    }
}

/// A symbol resolution in terms that hold for every load of the same
/// file with the same modules in scope.
#[derive(Clone, Copy)]
enum Memo {
    /// Not resolved yet.
    Unknown,
    /// A fixed address: a host object's symbol, soloader's own function,
    /// or 0 for an undefined weak symbol.
    Absolute(usize),
    /// `st_value` in the scope's module number `k` (whose base changes
    /// from load to load).
    InScope(u32, u64),
    /// Resolved anew each time (IFUNC, TLS).
    Never,
}

/// A file's `(size, mtime, mtime_nsec, ctime, ctime_nsec)`.
type Stamp = (u64, i64, i64, i64, i64);

/// Identity of a module in a scope.
#[derive(Clone, PartialEq, Eq)]
enum ScopeId {
    /// A host object: where it and its `.dynamic` are (its symbol table
    /// is read only if a lookup needs it).
    Host(usize, usize),
    File((u64, u64), Stamp),
}

/// When remembered resolutions apply: same file (device, inode, size,
/// mtime), same modules in scope (host objects at the same places, files
/// with the same identity), in the same order.
#[derive(Clone, PartialEq, Eq)]
struct MemoKey {
    object: ((u64, u64), Stamp),
    scope: Vec<ScopeId>,
}

/// Process-wide memory of symbol resolutions, most recent last. Loading
/// the same library again (a plugin reloaded, a benchmark loop, a test
/// suite) skips every lookup; only IFUNC and TLS symbols are looked up
/// each time. Taken only under the loader's lock (fork safety).
static MEMO: std::sync::Mutex<Vec<(MemoKey, Vec<Memo>)>> = std::sync::Mutex::new(Vec::new());
const MEMO_ENTRIES: usize = 64;

/// Takes the remembered resolutions for `key` out of the memory if they
/// cover all `symbols` symbols (a load puts them back when it is done: no
/// copy of a table as long as the symbol table).
fn memo_take(key: &MemoKey, symbols: usize) -> Option<Vec<Memo>> {
    let mut m = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    let at = m
        .iter()
        .rposition(|(k, v)| k == key && v.len() == symbols)?;
    Some(m.remove(at).1)
}

fn memo_put(key: MemoKey, memo: Vec<Memo>) {
    let mut m = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|(k, _)| *k != key);
    if m.len() >= MEMO_ENTRIES {
        m.remove(0);
    }
    m.push((key, memo));
}

/// `STB_GNU_UNIQUE`, GNU's binding for C++ entities that must be one per
/// process (template static members, inline variables).
const STB_GNU_UNIQUE: u8 = 10;

/// One process-wide `STB_GNU_UNIQUE` definition: its address, and the id
/// of the soloader library that provides it (none for the host's).
struct UniqueDef {
    name: Box<[u8]>,
    addr: usize,
    owner: Option<u64>,
}

/// The process-wide table of `STB_GNU_UNIQUE` definitions, and the
/// libraries whose definitions other objects bound to (taken under the
/// loader's lock): the first definition of a name wins.
static UNIQUE: std::sync::Mutex<(Vec<UniqueDef>, Vec<u64>)> =
    std::sync::Mutex::new((Vec::new(), Vec::new()));

/// The address every reference to unique symbol `name` binds to. A library
/// whose definition another object comes to use is never unloaded (glibc
/// makes every library with a unique definition NODELETE; soloader only
/// those another object really binds to, so that a C++ library used alone
/// still unloads, its entries leaving the table with it).
fn unique(name: &[u8], f: &Found, requester: &Object) -> usize {
    let mut guard = UNIQUE.lock().unwrap_or_else(|e| e.into_inner());
    let (table, held) = &mut *guard;
    let (addr, owner) = match table.iter().find(|d| &d.name[..] == name) {
        Some(d) => (d.addr, d.owner),
        None => {
            let owner = match f.module {
                Module::Loaded(o) => Some(o.id),
                Module::Host(_) => None,
            };
            table.push(UniqueDef {
                name: Box::from(name),
                addr: f.raw_addr(),
                owner,
            });
            (f.raw_addr(), owner)
        }
    };
    if let Some(id) = owner {
        if id != requester.id && !held.contains(&id) {
            held.push(id);
        }
    }
    addr
}

/// Whether another object binds to one of `object`'s unique definitions
/// (then it must never be unloaded).
pub(crate) fn unique_held(object: u64) -> bool {
    UNIQUE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .1
        .contains(&object)
}

/// Removes the unique definitions of an object being unloaded.
pub(crate) fn forget_unique(object: u64) {
    let mut guard = UNIQUE.lock().unwrap_or_else(|e| e.into_inner());
    guard.0.retain(|d| d.owner != Some(object));
}

/// Applies the leading run of `R_RELATIVE` entries of the `Elf64_Rela`
/// array `rela` whose targets lie in `writable` (`[start, end)` virtual
/// addresses), for an object at `base`; returns how many it applied. The
/// first entry of another type or target ends the run (the caller's loop
/// takes it from there, with every check).
fn relative_run(rela: &[u8], (start, end): (u64, u64), base: usize) -> usize {
    let word = |e: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&e[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let mut done = 0;
    for e in rela.chunks_exact(std::mem::size_of::<goblin::elf64::reloc::Rela>()) {
        let (off, info, addend) = (word(e, 0), word(e, 8), word(e, 16));
        if info as u32 != arch::R_RELATIVE
            || off < start
            || off.checked_add(8).is_none_or(|e| e > end)
        {
            break;
        }
        // SAFETY: the 8 bytes at `off` lie in a writable segment of the
        // object mapped at `base` (checked just above).
        unsafe {
            write(
                base.wrapping_add(off as usize),
                base.wrapping_add(addend as usize),
            )
        };
        done += 1;
    }
    done
}

/// `*t += base`.
///
/// # Safety
/// `t` must be 8 writable bytes.
#[inline]
unsafe fn add_base(t: usize, base: usize) {
    // SAFETY: the caller guarantees `t` is 8 writable bytes.
    unsafe {
        let p = t as *mut usize;
        p.write_unaligned(p.read_unaligned().wrapping_add(base));
    }
}

/// `*t = v`.
///
/// # Safety
/// `t` must be 8 writable bytes.
#[inline]
unsafe fn write(t: usize, v: usize) {
    // SAFETY: the caller guarantees `t` is 8 writable bytes.
    unsafe { (t as *mut usize).write_unaligned(v) }
}
