//! `soloader trace LIB [--call SYMBOL [ARG...]] [--json]`: every step of a
//! real load, in order, explained in the spirit of glibc's `LD_DEBUG`.
//!
//! The steps come from the loader itself, through the trace sink of
//! [`soloader::Options::trace`]: the search (each path tried), every
//! `mmap`, `mprotect` and `munmap` the loader makes (printed the way
//! `strace` prints them, flags decoded), the `.bss` zeroing, the
//! relocations per type with the pages they wrote, each symbol binding and
//! who provided it, RELRO, each constructor; then the call, if asked for,
//! and the unload.
//!
//! Page faults per phase come from `getrusage(RUSAGE_SELF)`, read by the
//! sink as each event arrives (nothing is printed until the load is over,
//! so printing costs no faults). Work is reported after it is done (an
//! `mmap` after the call returned, a batch of relocations after it was
//! applied), so the faults between two events are counted in the phase of
//! the later one; the faults taken by a constructor come after its `Init`
//! event and before the next event, which is also in the "initialise"
//! phase.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use soloader::{Event, Library, Options, Provider, TraceSink};

use crate::call::{self, Arg, Ret};
use crate::inspect::{size, Json};
use crate::Usage;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  soloader trace libz.so.1 --call zlibVersion --ret str
  soloader trace target/testlibs/libdiamond_a.so
  soloader trace target/testlibs/libarith.so --call add 2 3 --ret i32 --json")]
pub struct Args {
    /// The library: a path, or a name such as `libz.so.1` searched for the
    /// way dlopen does.
    lib: PathBuf,
    /// After the load, call SYMBOL with the arguments that follow, as
    /// `soloader call` does (integers, floats, s:strings).
    #[arg(
        long = "call",
        value_name = "SYMBOL [ARG]",
        num_args = 1..,
        allow_negative_numbers = true
    )]
    call: Option<Vec<String>>,
    /// How to read the call's return value.
    #[arg(long, value_enum, default_value_t = Ret::I64)]
    ret: Ret,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Search DIR for the library and its dependencies, instead of
    /// LD_LIBRARY_PATH (repeatable).
    #[arg(long = "library-path", value_name = "DIR")]
    library_path: Vec<PathBuf>,
    /// Share relocated pages between processes through a cache in DIR
    /// (the library gets a fixed, predictable address: no ASLR for it).
    #[arg(long = "relocation-cache", value_name = "DIR")]
    relocation_cache: Option<PathBuf>,
}

/// `--call SYMBOL [ARG...]`, parsed.
pub(crate) struct CallSpec {
    pub symbol: String,
    pub args: Vec<Arg>,
    pub words: Vec<String>,
    pub ret: Ret,
}

impl CallSpec {
    /// Parses the words after `--call` (a usage error if an argument does
    /// not parse or there are too many).
    pub(crate) fn parse(words: Option<&[String]>, ret: Ret) -> anyhow::Result<Option<CallSpec>> {
        let Some(words) = words else { return Ok(None) };
        let Some((symbol, rest)) = words.split_first() else {
            return Err(Usage::err("--call needs a SYMBOL"));
        };
        let args = rest
            .iter()
            .map(|w| call::parse_arg(w).map_err(Usage::err))
            .collect::<anyhow::Result<Vec<Arg>>>()?;
        call::check_counts(&args)?;
        Ok(Some(CallSpec {
            symbol: symbol.clone(),
            args,
            words: rest.to_vec(),
            ret,
        }))
    }

    /// `add(2, 3)`.
    pub(crate) fn display(&self) -> String {
        format!("{}({})", self.symbol, self.words.join(", "))
    }

    /// Calls it in `lib`.
    pub(crate) fn invoke(&self, lib: &Library) -> anyhow::Result<Option<String>> {
        call::invoke(lib, &self.symbol, &self.args, self.ret)
    }
}

/// `(minor, major)` page faults of this process so far.
pub(crate) fn faults() -> (u64, u64) {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid
    // initial value for it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return (0, 0);
        }
        (ru.ru_minflt as u64, ru.ru_majflt as u64)
    }
}

/// The phases of a traced run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum Phase {
    #[default]
    Load,
    Relocate,
    Init,
    Call,
    Unload,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Load,
        Phase::Relocate,
        Phase::Init,
        Phase::Call,
        Phase::Unload,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Relocate => "relocate",
            Phase::Init => "initialise",
            Phase::Call => "call",
            Phase::Unload => "unload",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Phase::Load => "find the files and map their segments",
            Phase::Relocate => "apply relocations, bind symbols, protect RELRO",
            Phase::Init => "run the constructors",
            Phase::Call => "call into the library",
            Phase::Unload => "run the destructors and unmap",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Phase::Load => {
                "A name is searched for like dlopen does; each file is opened, its headers\n\
                 read with pread, address space reserved for the whole span and every\n\
                 PT_LOAD mapped there from the file, MAP_PRIVATE. Nothing of the file is\n\
                 read by mmap: a page arrives when it is first touched (a page fault)."
            }
            Phase::Relocate => {
                "Each relocation writes an address into a data page. The first write to a\n\
                 page of a MAP_PRIVATE file mapping copies it (copy-on-write): from then on\n\
                 this process has its own copy, no longer shared with the page cache.\n\
                 Each import is bound to the first definition in the search order:\n\
                 [host] is the process's own copy (always for the glibc family),\n\
                 [soloader] a library soloader loaded, \"soloader itself\" a function the\n\
                 loader provides (dlopen, __tls_get_addr, ...)."
            }
            Phase::Init => {
                "DT_INIT, then DT_INIT_ARRAY, dependencies first: the library's own code\n\
                 runs for the first time (its text pages fault in as they execute)."
            }
            Phase::Call => {
                "The code runs in place: text pages are the page cache's pages, mapped\n\
                 into this process on first execution."
            }
            Phase::Unload => {
                "DT_FINI_ARRAY backwards, then DT_FINI, then the whole span is unmapped."
            }
        }
    }

    /// The earliest phase an event can belong to.
    fn of(e: &Event) -> Phase {
        match e {
            Event::Bind { .. } | Event::Relocations { .. } | Event::Relro { .. } => Phase::Relocate,
            // Populating the pages relocation is about to write.
            Event::Madvise { advice: 23, .. } => Phase::Relocate,
            Event::Init { .. } | Event::Loaded { .. } => Phase::Init,
            Event::Fini { .. } | Event::Unloaded { .. } => Phase::Unload,
            _ => Phase::Load,
        }
    }
}

/// One thing the recorder saw: an event, or a mark the command made (the
/// load returned, the call started, …), with the page faults so far.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub phase: Phase,
    pub event: Option<Event>,
    pub faults: (u64, u64),
}

/// A trace sink that keeps every event with the process's page-fault
/// counts at that moment, and the phase it belongs to.
#[derive(Default)]
pub(crate) struct Recorder {
    steps: Mutex<(Phase, Vec<Step>)>,
}

impl Recorder {
    pub(crate) fn new() -> Arc<Recorder> {
        let r = Recorder::default();
        {
            let mut g = r.lock();
            let v = &mut g.1;
            v.reserve(1 << 14);
            // Touch the room for the steps now, so that recording them does
            // not add page faults to the phases being measured.
            let room = v.capacity() - v.len();
            // SAFETY: the `room` elements past `len` are allocated spare
            // capacity; zero bytes are written there and never read as
            // `Step`s (pushes overwrite them).
            unsafe { std::ptr::write_bytes(v.as_mut_ptr().add(v.len()), 0, room) };
        }
        let rec = Arc::new(r);
        rec.mark(Phase::Load);
        rec
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Phase, Vec<Step>)> {
        self.steps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a mark: from now on, events belong to `phase` or later.
    pub(crate) fn mark(&self, phase: Phase) {
        let f = faults();
        let mut g = self.lock();
        g.0 = g.0.max(phase);
        let phase = g.0;
        g.1.push(Step {
            phase,
            event: None,
            faults: f,
        });
    }

    pub(crate) fn steps(&self) -> Vec<Step> {
        self.lock().1.clone()
    }
}

impl TraceSink for Recorder {
    fn event(&self, event: &Event) {
        let f = faults();
        let mut g = self.lock();
        g.0 = g.0.max(Phase::of(event));
        let phase = g.0;
        g.1.push(Step {
            phase,
            event: Some(event.clone()),
            faults: f,
        });
    }
}

/// Faults per phase: the faults between two steps count in the later
/// step's phase.
pub(crate) fn phase_faults(steps: &[Step]) -> Vec<(Phase, u64, u64)> {
    let mut out: Vec<(Phase, u64, u64)> = Vec::new();
    for w in steps.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let minor = b.faults.0.saturating_sub(a.faults.0);
        let major = b.faults.1.saturating_sub(a.faults.1);
        match out.last_mut() {
            Some(last) if last.0 == b.phase => {
                last.1 += minor;
                last.2 += major;
            }
            _ => out.push((b.phase, minor, major)),
        }
    }
    out
}

/// What a traced run produced.
pub(crate) struct Run {
    pub lib: PathBuf,
    pub steps: Vec<Step>,
    pub call: Option<(String, Option<String>)>,
    pub error: Option<anyhow::Error>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = CallSpec::parse(args.call.as_deref(), args.ret)?;
    let mut options = Options::new();
    if !args.library_path.is_empty() {
        options = options.library_path(args.library_path.clone());
    }
    if let Some(dir) = &args.relocation_cache {
        options = options.relocation_cache(dir);
    }
    let rec = Recorder::new();
    let r = traced_run(&args.lib, options, &rec, spec.as_ref());
    let text = if args.json {
        let mut s = to_json(&r).render();
        s.push('\n');
        s
    } else {
        render(&r)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    match r.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Loads `lib` with `rec` as the trace sink, calls `spec` if given, then
/// closes the library: every step is in `rec`.
fn traced_run(lib: &Path, options: Options, rec: &Arc<Recorder>, spec: Option<&CallSpec>) -> Run {
    let options = options.trace(rec.clone());
    let mut run = Run {
        lib: lib.to_path_buf(),
        steps: Vec::new(),
        call: None,
        error: None,
    };
    match Library::open_with(lib, &options) {
        Ok(l) => {
            rec.mark(Phase::Init);
            if let Some(spec) = spec {
                rec.mark(Phase::Call);
                match spec.invoke(&l) {
                    Ok(v) => run.call = Some((spec.display(), v)),
                    Err(e) => run.error = Some(e),
                }
                rec.mark(Phase::Call);
            }
            rec.mark(Phase::Unload);
            if let Err(e) = l.close() {
                run.error.get_or_insert(e.into());
            }
            rec.mark(Phase::Unload);
        }
        Err(e) => {
            rec.mark(Phase::Load);
            run.error = Some(e.into());
        }
    }
    run.steps = rec.steps();
    run
}

/// `PROT_READ|PROT_EXEC`, `PROT_NONE`.
pub(crate) fn prot_names(prot: i32) -> String {
    let mut v = Vec::new();
    for (bit, name) in [
        (libc::PROT_READ, "PROT_READ"),
        (libc::PROT_WRITE, "PROT_WRITE"),
        (libc::PROT_EXEC, "PROT_EXEC"),
    ] {
        if prot & bit != 0 {
            v.push(name.to_string());
        }
    }
    let rest = prot & !(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    if v.is_empty() {
        "PROT_NONE".to_string()
    } else {
        v.join("|")
    }
}

/// `MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS`.
pub(crate) fn map_flag_names(flags: i32) -> String {
    let table = [
        (libc::MAP_SHARED, "MAP_SHARED"),
        (libc::MAP_PRIVATE, "MAP_PRIVATE"),
        (libc::MAP_FIXED, "MAP_FIXED"),
        (libc::MAP_ANONYMOUS, "MAP_ANONYMOUS"),
        (libc::MAP_GROWSDOWN, "MAP_GROWSDOWN"),
        (libc::MAP_DENYWRITE, "MAP_DENYWRITE"),
        (libc::MAP_EXECUTABLE, "MAP_EXECUTABLE"),
        (libc::MAP_LOCKED, "MAP_LOCKED"),
        (libc::MAP_NORESERVE, "MAP_NORESERVE"),
        (libc::MAP_POPULATE, "MAP_POPULATE"),
        (libc::MAP_NONBLOCK, "MAP_NONBLOCK"),
        (libc::MAP_STACK, "MAP_STACK"),
        (libc::MAP_HUGETLB, "MAP_HUGETLB"),
        (libc::MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"),
    ];
    let mut v = Vec::new();
    let mut rest = flags;
    for (bit, name) in table {
        if flags & bit == bit && bit != 0 {
            v.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    if v.is_empty() {
        "0".to_string()
    } else {
        v.join("|")
    }
}

fn advice_name(advice: i32) -> String {
    match advice {
        libc::MADV_NORMAL => "MADV_NORMAL".into(),
        libc::MADV_RANDOM => "MADV_RANDOM".into(),
        libc::MADV_SEQUENTIAL => "MADV_SEQUENTIAL".into(),
        libc::MADV_WILLNEED => "MADV_WILLNEED".into(),
        libc::MADV_DONTNEED => "MADV_DONTNEED".into(),
        22 => "MADV_POPULATE_READ".into(),
        23 => "MADV_POPULATE_WRITE".into(),
        a => a.to_string(),
    }
}

/// The last path component, for short mentions.
fn short(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn provider_text(p: &Provider) -> String {
    match p {
        Provider::Host(name) => format!("{} [host]", short(Path::new(name))),
        Provider::Loaded(path) => format!("{} [soloader]", short(path)),
        Provider::Loader => "soloader itself".to_string(),
        Provider::UndefinedWeak => "nothing (undefined weak)".to_string(),
    }
}

fn provider_json(p: &Provider) -> Json {
    match p {
        Provider::Host(name) => Json::obj([("kind", Json::str("host")), ("name", Json::str(name))]),
        Provider::Loaded(path) => Json::obj([
            ("kind", Json::str("soloader")),
            ("name", Json::str(path.to_string_lossy())),
        ]),
        Provider::Loader => Json::obj([("kind", Json::str("loader"))]),
        Provider::UndefinedWeak => Json::obj([("kind", Json::str("undefined-weak"))]),
    }
}

/// The load bias of every library mapped in `steps`, by path.
fn bases(steps: &[Step]) -> HashMap<PathBuf, usize> {
    steps
        .iter()
        .filter_map(|s| match &s.event {
            Some(Event::Mapped { path, base, .. }) => Some((path.clone(), *base)),
            _ => None,
        })
        .collect()
}

/// One event as a line (or a few) of text.
fn event_text(e: &Event, bases: &HashMap<PathBuf, usize>) -> String {
    match e {
        Event::Search { name, needed_by } => {
            let how = if name.contains('/') {
                "a path: no search"
            } else {
                "searching"
            };
            match needed_by {
                Some(by) => format!("find library={name} [needed by {}]; {how}", short(by)),
                None => format!("find library={name}; {how}"),
            }
        }
        Event::SearchTry {
            path,
            source,
            found,
        } => format!(
            "  trying file={} ({source}){}",
            path.display(),
            if *found { "  => found" } else { "" }
        ),
        Event::HostLibrary {
            name,
            path,
            newly_loaded,
        } => format!(
            "  host library={name} => {path}: the process's own copy is used, never loaded twice{}",
            if *newly_loaded {
                " (the system loader loaded it first)"
            } else {
                ""
            }
        ),
        Event::Deferred { name, needed_by } => format!(
            "  deferred: {name} (needed by {}) must come from the system loader, which does not have it yet: \
             this attempt is undone, soloader's lock released, the system loader loads it, and the load starts again",
            needed_by.display()
        ),
        Event::AlreadyLoaded { path, refcount } => format!(
            "  already loaded: file={} ({refcount} open handles): shared, not mapped again",
            path.display()
        ),
        Event::Open { path, size: n } => format!(
            "file={} [{}]: opened; ELF and program headers read with pread",
            path.display(),
            size(*n)
        ),
        Event::Mmap {
            addr,
            len,
            prot,
            flags,
            offset,
            purpose,
        } => {
            let at = if flags & libc::MAP_FIXED != 0 {
                format!("{addr:#x}")
            } else {
                "NULL".to_string()
            };
            let fd = if flags & libc::MAP_ANONYMOUS != 0 {
                "-1"
            } else {
                "fd"
            };
            format!(
                "mmap({at}, {len:#x}, {}, {}, {fd}, {offset:#x}) = {addr:#x}\n      # {purpose}: {}{}",
                prot_names(*prot),
                map_flag_names(*flags),
                size(*len as u64),
                mmap_note(*prot, *flags)
            )
        }
        Event::Mprotect {
            addr,
            len,
            prot,
            purpose,
        } => format!(
            "mprotect({addr:#x}, {len:#x}, {}) = 0\n      # {purpose}: {}",
            prot_names(*prot),
            size(*len as u64)
        ),
        Event::Munmap { addr, len, purpose } => format!(
            "munmap({addr:#x}, {len:#x}) = 0\n      # {purpose}: {}",
            size(*len as u64)
        ),
        Event::Madvise { addr, len, advice } => {
            let what = if *advice == 23 {
                "faulted in, writable, in one call: the pages relocation is about to\n      \
                 # write, each now a private copy (instead of one fault per page)"
            } else {
                "advice on how these pages will be used"
            };
            format!(
                "madvise({addr:#x}, {len:#x}, {}) = 0\n      # {}: {what}",
                advice_name(*advice),
                size(*len as u64)
            )
        }
        Event::BssZero { addr, len } => format!(
            "zero .bss {addr:#x}..{:#x} ({len} bytes): the tail of the last file page held\n      # other bytes of the file; writing zeros there makes that page a private copy",
            addr + len
        ),
        Event::Close { path } => format!(
            "file={}: closed (the mappings keep the file itself referenced)",
            path.display()
        ),
        Event::Mapped { path, base, size: n } => format!(
            "mapped file={}: base {base:#x}, span {}",
            path.display(),
            size(*n as u64)
        ),
        Event::Relocations {
            path,
            kind,
            count,
            pages,
        } => {
            let base = bases.get(path).copied().unwrap_or(0);
            let list: Vec<String> = pages
                .iter()
                .map(|p| format!("{:#x}", p.wrapping_sub(base)))
                .collect();
            let shown = if list.len() > 8 {
                format!("{} ... {}", list[..6].join(" "), list[list.len() - 1])
            } else {
                list.join(" ")
            };
            format!(
                "relocated {kind} x{count} in {}: wrote {} {} (vaddr {shown})",
                short(path),
                pages.len(),
                if pages.len() == 1 { "page" } else { "pages" }
            )
        }
        Event::Bind {
            path,
            symbol,
            version,
            provider,
            value,
        } => format!(
            "binding file {} to {}: normal symbol `{symbol}'{} = {value:#x}",
            short(path),
            provider_text(provider),
            version
                .as_ref()
                .map(|v| format!(" [{v}]"))
                .unwrap_or_default()
        ),
        Event::Relro { path, addr, len } => format!(
            "RELRO of {}: {addr:#x}..{:#x} ({}) is read-only from now on",
            short(path),
            addr + len,
            size(*len as u64)
        ),
        Event::Init {
            path,
            kind,
            addr,
            function,
        } => {
            format!("calling init: {} {kind} at {addr:#x}{}", path.display(), named(function))
        }
        Event::Fini {
            path,
            kind,
            addr,
            function,
        } => {
            format!("calling fini: {} {kind} at {addr:#x}{}", path.display(), named(function))
        }
        Event::Loaded { path, base } => {
            format!("loaded: {} at base {base:#x}", path.display())
        }
        Event::Unloaded { path } => format!("unloaded: {}", path.display()),
        Event::RelocationCache {
            path,
            what,
            file,
            detail,
            pages,
        } => {
            let mut line = format!("relocation cache: {} {what}", short(path));
            if let Some(f) = file {
                let _ = write!(line, " ({})", f.display());
            }
            if !detail.is_empty() {
                let _ = write!(line, ": {detail}");
            }
            if !pages.is_empty() {
                let _ = write!(line, " [{} {}]", pages.len(), if pages.len() == 1 { "page" } else { "pages" });
            }
            line
        }
    }
}

fn mmap_note(prot: i32, flags: i32) -> &'static str {
    if prot == libc::PROT_NONE {
        "; address space only, no memory"
    } else if flags & libc::MAP_ANONYMOUS != 0 {
        "; zero pages, allocated when first touched"
    } else if flags & libc::MAP_PRIVATE != 0 {
        if prot & libc::PROT_WRITE != 0 {
            "; the page cache's pages until written, then private copies"
        } else {
            "; the page cache's pages, shared with every process mapping the file"
        }
    } else {
        ""
    }
}

fn faults_line(minor: u64, major: u64) -> String {
    format!("  -- page faults in this phase: {minor} minor, {major} major")
}

/// The human trace.
/// " (name)" for an initialiser or finaliser with a dynamic symbol.
fn named(function: &Option<String>) -> String {
    function
        .as_ref()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default()
}

pub(crate) fn render(r: &Run) -> String {
    let mut o = String::new();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = writeln!(o, "soloader trace: loading {} (pid {pid})", r.lib.display());
    let bases = bases(&r.steps);
    let totals = phase_faults(&r.steps);
    let mut current: Option<Phase> = None;
    let mut relocating: Option<PathBuf> = None;
    let close_phase = |o: &mut String, p: Phase| {
        if let Some(&(_, minor, major)) = totals.iter().find(|t| t.0 == p) {
            let _ = writeln!(o, "{}", faults_line(minor, major));
        }
    };
    let open_phase = |o: &mut String, p: Phase, current: &mut Option<Phase>| {
        if *current == Some(p) {
            return;
        }
        if let Some(c) = *current {
            close_phase(o, c);
        }
        *current = Some(p);
        let n = Phase::ALL.iter().position(|&x| x == p).unwrap_or(0) + 1;
        let _ = writeln!(o);
        let _ = writeln!(o, "== {n}. {}: {} ==", p.name(), p.title());
        for line in p.explain().lines() {
            let _ = writeln!(o, "   {}", line.trim());
        }
        let _ = writeln!(o);
    };
    for s in &r.steps {
        let Some(e) = &s.event else {
            // A mark: the call happens between the two Call marks.
            if s.phase == Phase::Call && current != Some(Phase::Call) {
                open_phase(&mut o, Phase::Call, &mut current);
                if let Some((what, value)) = &r.call {
                    let _ = writeln!(o, "call {what} => {}", value.as_deref().unwrap_or("(void)"));
                }
            }
            continue;
        };
        open_phase(&mut o, s.phase, &mut current);
        match e {
            Event::Bind { path, .. } | Event::Relocations { path, .. }
                if relocating.as_ref() != Some(path) =>
            {
                relocating = Some(path.clone());
                let _ = writeln!(o, "  relocation processing: {}", path.display());
            }
            _ => {}
        }
        let indent = match e {
            Event::Bind { .. } | Event::Relocations { .. } => "  ",
            _ => "",
        };
        for line in event_text(e, &bases).lines() {
            let _ = writeln!(o, "  {indent}{line}");
        }
    }
    if let Some(c) = current {
        close_phase(&mut o, c);
    }
    if let Some(e) = &r.error {
        let _ = writeln!(o);
        let _ = writeln!(o, "the load failed: {e:#}");
    }
    o
}

fn event_json(e: &Event) -> Vec<(&'static str, Json)> {
    let p = |path: &Path| Json::str(path.to_string_lossy());
    match e {
        Event::Search { name, needed_by } => vec![
            ("event", Json::str("search")),
            ("name", Json::str(name)),
            ("needed_by", needed_by.as_deref().map_or(Json::Null, p)),
        ],
        Event::SearchTry {
            path,
            source,
            found,
        } => vec![
            ("event", Json::str("search-try")),
            ("path", p(path)),
            ("source", Json::str(source)),
            ("found", Json::Bool(*found)),
        ],
        Event::Deferred { name, needed_by } => vec![
            ("event", Json::str("deferred")),
            ("name", Json::str(name)),
            ("needed_by", p(needed_by)),
        ],
        Event::HostLibrary {
            name,
            path,
            newly_loaded,
        } => vec![
            ("event", Json::str("host-library")),
            ("name", Json::str(name)),
            ("path", Json::str(path)),
            ("newly_loaded", Json::Bool(*newly_loaded)),
        ],
        Event::AlreadyLoaded { path, refcount } => vec![
            ("event", Json::str("already-loaded")),
            ("path", p(path)),
            ("refcount", Json::num(*refcount as u64)),
        ],
        Event::Open { path, size: n } => vec![
            ("event", Json::str("open")),
            ("path", p(path)),
            ("size", Json::num(*n)),
        ],
        Event::Mmap {
            addr,
            len,
            prot,
            flags,
            offset,
            purpose,
        } => vec![
            ("event", Json::str("mmap")),
            ("addr", Json::hex(*addr as u64)),
            ("len", Json::num(*len as u64)),
            ("prot", Json::str(prot_names(*prot))),
            ("flags", Json::str(map_flag_names(*flags))),
            ("offset", Json::hex(*offset)),
            ("purpose", Json::str(purpose)),
        ],
        Event::Mprotect {
            addr,
            len,
            prot,
            purpose,
        } => vec![
            ("event", Json::str("mprotect")),
            ("addr", Json::hex(*addr as u64)),
            ("len", Json::num(*len as u64)),
            ("prot", Json::str(prot_names(*prot))),
            ("purpose", Json::str(purpose)),
        ],
        Event::Munmap { addr, len, purpose } => vec![
            ("event", Json::str("munmap")),
            ("addr", Json::hex(*addr as u64)),
            ("len", Json::num(*len as u64)),
            ("purpose", Json::str(purpose)),
        ],
        Event::Madvise { addr, len, advice } => vec![
            ("event", Json::str("madvise")),
            ("addr", Json::hex(*addr as u64)),
            ("len", Json::num(*len as u64)),
            ("advice", Json::str(advice_name(*advice))),
        ],
        Event::BssZero { addr, len } => vec![
            ("event", Json::str("bss-zero")),
            ("addr", Json::hex(*addr as u64)),
            ("len", Json::num(*len as u64)),
        ],
        Event::Close { path } => vec![("event", Json::str("close")), ("path", p(path))],
        Event::Mapped {
            path,
            base,
            size: n,
        } => vec![
            ("event", Json::str("mapped")),
            ("path", p(path)),
            ("base", Json::hex(*base as u64)),
            ("size", Json::num(*n as u64)),
        ],
        Event::Relocations {
            path,
            kind,
            count,
            pages,
        } => vec![
            ("event", Json::str("relocations")),
            ("path", p(path)),
            ("type", Json::str(kind)),
            ("count", Json::num(*count as u64)),
            (
                "pages",
                Json::Arr(pages.iter().map(|a| Json::hex(*a as u64)).collect()),
            ),
        ],
        Event::Bind {
            path,
            symbol,
            version,
            provider,
            value,
        } => vec![
            ("event", Json::str("bind")),
            ("path", p(path)),
            ("symbol", Json::str(symbol)),
            ("version", Json::opt_str(version.as_deref())),
            ("provider", provider_json(provider)),
            ("value", Json::hex(*value as u64)),
        ],
        Event::Relro { path, addr, len } => vec![
            ("event", Json::str("relro")),
            ("path", p(path)),
            ("addr", Json::hex(*addr as u64)),
            ("len", Json::num(*len as u64)),
        ],
        Event::Init {
            path,
            kind,
            addr,
            function,
        } => vec![
            ("event", Json::str("init")),
            ("path", p(path)),
            ("kind", Json::str(kind)),
            ("addr", Json::hex(*addr as u64)),
            ("function", Json::opt_str(function.as_deref())),
        ],
        Event::Fini {
            path,
            kind,
            addr,
            function,
        } => vec![
            ("event", Json::str("fini")),
            ("path", p(path)),
            ("kind", Json::str(kind)),
            ("addr", Json::hex(*addr as u64)),
            ("function", Json::opt_str(function.as_deref())),
        ],
        Event::Loaded { path, base } => vec![
            ("event", Json::str("loaded")),
            ("path", p(path)),
            ("base", Json::hex(*base as u64)),
        ],
        Event::Unloaded { path } => vec![("event", Json::str("unloaded")), ("path", p(path))],
        Event::RelocationCache {
            path,
            what,
            file,
            detail,
            pages,
        } => vec![
            ("event", Json::str("relocation_cache")),
            ("path", p(path)),
            ("what", Json::str(what)),
            ("file", file.as_deref().map_or(Json::Null, p)),
            ("detail", Json::str(detail)),
            (
                "pages",
                Json::Arr(pages.iter().map(|a| Json::hex(*a as u64)).collect()),
            ),
        ],
    }
}

/// The trace as JSON.
pub(crate) fn to_json(r: &Run) -> Json {
    // SAFETY: getpid and sysconf have no preconditions.
    let (pid, page) = unsafe { (libc::getpid(), libc::sysconf(libc::_SC_PAGESIZE)) };
    let mut events = Vec::new();
    let mut prev = r.steps.first().map_or((0, 0), |s| s.faults);
    for s in &r.steps {
        // Faults since the previous step: the work this event reports.
        let (minor, major) = (
            s.faults.0.saturating_sub(prev.0),
            s.faults.1.saturating_sub(prev.1),
        );
        prev = s.faults;
        let Some(e) = &s.event else { continue };
        let mut m = vec![("phase", Json::str(s.phase.name()))];
        m.extend(event_json(e));
        m.push(("minor_faults_before", Json::num(minor)));
        m.push(("major_faults_before", Json::num(major)));
        events.push(Json::obj(m));
    }
    let phases = phase_faults(&r.steps)
        .into_iter()
        .map(|(p, minor, major)| {
            Json::obj([
                ("phase", Json::str(p.name())),
                ("minor_faults", Json::num(minor)),
                ("major_faults", Json::num(major)),
            ])
        })
        .collect();
    Json::obj([
        ("library", Json::str(r.lib.to_string_lossy())),
        ("pid", Json::num(pid)),
        ("page_size", Json::num(page)),
        ("events", Json::Arr(events)),
        ("phases", Json::Arr(phases)),
        (
            "call",
            match &r.call {
                Some((what, value)) => Json::obj([
                    ("call", Json::str(what)),
                    ("result", Json::opt_str(value.as_deref())),
                ]),
                None => Json::Null,
            },
        ),
        (
            "error",
            r.error
                .as_ref()
                .map_or(Json::Null, |e| Json::str(format!("{e:#}"))),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flags() {
        assert_eq!(prot_names(0), "PROT_NONE");
        assert_eq!(
            prot_names(libc::PROT_READ | libc::PROT_EXEC),
            "PROT_READ|PROT_EXEC"
        );
        assert_eq!(
            map_flag_names(libc::MAP_PRIVATE | libc::MAP_FIXED),
            "MAP_PRIVATE|MAP_FIXED"
        );
        assert_eq!(
            map_flag_names(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE"
        );
        assert_eq!(map_flag_names(0), "0");
    }

    #[test]
    fn negative_call_arguments() {
        let os = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
        assert_eq!(
            crate::call::normalize_numbers(os(&[
                "soloader", "trace", "l", "--call", "add", "-0x10", "-1", "--svg", "-x"
            ])),
            os(&["soloader", "trace", "l", "--call", "add", "-16", "-1", "--svg", "-x"])
        );
    }

    #[test]
    fn faults_go_to_the_later_phase() {
        let step = |phase, f| Step {
            phase,
            event: None,
            faults: (f, 0),
        };
        let steps = [
            step(Phase::Load, 0),
            step(Phase::Load, 3),
            step(Phase::Relocate, 10),
            step(Phase::Relocate, 11),
            step(Phase::Init, 20),
        ];
        assert_eq!(
            phase_faults(&steps),
            vec![
                (Phase::Load, 3, 0),
                (Phase::Relocate, 8, 0),
                (Phase::Init, 9, 0)
            ]
        );
    }
}
