//! `soloader rss LIB [--procs N] [--loader soloader|dlopen|read|all]
//! [--call SYMBOL [ARG...]] [--relocation-cache DIR] [--fork] [--json]`: how
//! much of a library is physically shared between processes, and how much
//! each one pays privately.
//!
//! The parent starts N workers: by default this binary again, exec'd as
//! the hidden `rss-worker` subcommand, so each worker has its own
//! address-space layout; with `--fork`, by `fork()` without exec from the
//! parent itself, the way a pre-fork server's workers or a zygote's
//! children start, so all of them inherit the parent's layout (libc and
//! every host library at the same addresses). Each loads LIB by the chosen
//! method, optionally calls a function, reports the address ranges of the
//! library's segments on stdout (see [`Report`]), and blocks reading
//! stdin: the barrier. The parent, which never maps LIB itself (it forks
//! before anything loads it), then reads every worker's `smaps` and
//! `pagemap` through [`soloader::mem`] and prints the sums per segment, a
//! verdict per segment, and (for `--loader all`) the three methods side by
//! side. Loaders run one after the other, so that one method's workers
//! never raise the map counts another method's workers see.
//!
//! Reports are read with `poll()` in the parent's only thread: the parent
//! never has a second thread, so forking it is safe even though the child
//! then runs a whole library load (it checks `/proc/self/task` before each
//! fork). With `--fork` and `--relocation-cache`, soloader workers load
//! with [`Options::relocation_cache_forked`] and start one after another
//! (worker k+1 is forked once worker k reported): worker 0 writes the
//! cache, the others find it warm.
//!
//! Workers are always cleaned up: they share a process group that the
//! parent kills when it is done, when a worker fails, and from its
//! SIGINT/SIGTERM/SIGHUP handler; each worker also dies with its parent
//! (`PR_SET_PDEATHSIG`) and exits when its stdin reaches end of file.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::ValueEnum;
use soloader::mem::{self, Combined, Measurement, Region, SegmentKind, Summary, Usage};
use soloader::{Event, Library, Options, Segment, VecSink};

use crate::Usage as UsageError;

/// How long workers get to load the library and report.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many integer arguments (rdi, rsi, rdx, rcx, r8, r9).
const MAX_ARGS: usize = 6;

#[derive(clap::Args)]
#[command(after_help = RSS_HELP)]
pub struct Args {
    /// The library: a path, or a name such as `libsqlite3.so.0` searched
    /// for the way dlopen does.
    lib: PathBuf,
    /// Worker processes per loader.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=512))]
    procs: u32,
    /// How each worker loads the library.
    #[arg(long, value_enum, default_value_t = Choice::Soloader)]
    loader: Choice,
    /// After loading, call SYMBOL with up to 6 integer arguments
    /// (42, -1, 0x10). Put it after LIB.
    #[arg(
        long,
        num_args = 1..,
        value_names = ["SYMBOL", "ARG"],
        allow_negative_numbers = true
    )]
    call: Vec<String>,
    /// Print JSON (schema `soloader-rss/1`) instead of tables.
    #[arg(long)]
    json: bool,
    /// soloader workers share relocated pages through a relocation cache in
    /// DIR (fixed, predictable addresses). Without --fork, the first worker
    /// to load writes the cache: load once beforehand (e.g. `soloader
    /// call`) to measure a warm cache. With --fork, workers start one after
    /// another: worker 0 writes the cache, the others find it warm.
    #[arg(long = "relocation-cache", value_name = "DIR")]
    relocation_cache: Option<PathBuf>,
    /// Start the workers with fork() without exec, from this process, as a
    /// pre-fork server or a zygote does: they inherit its address-space
    /// layout (libc and every host library at the same addresses). With
    /// --relocation-cache, the cache may then also share the pages that
    /// point into host libraries (keyed by the shared layout).
    #[arg(long)]
    fork: bool,
}

const RSS_HELP: &str = "\
Columns (KiB; Σ = summed over the workers):
  size/proc     address space of the segment in one process
  Σ RSS         resident pages, counted once per process that maps them
  Σ PSS         each resident page's size divided by its map count: adds up to
                the physical memory the workers are charged for
  private/proc  pages mapped by this process only (Private_Clean + Private_Dirty)
  anon/proc     copied-on-write or zero-fill pages: no file behind them, never
                shareable
  phys          distinct physical frames over all workers (root only)

Loaders: soloader = soloader::Library; dlopen = glibc's dlopen(RTLD_NOW|RTLD_LOCAL);
read = read() the whole file into anonymous memory, mapping nothing from it.

Workers: by default each is this binary exec'd again, with its own address-space
layout. --fork: each is fork()ed without exec from the rss process, sharing its
layout (host libraries at the same addresses), like a pre-fork server's workers.
With --fork and --relocation-cache, soloader workers start one after another:
worker 0 loads cold and writes the cache (including the pages that point into
host libraries, valid for this layout only), workers 1.. find it warm. Without
--fork, the first worker to load writes the cache: warm it beforehand.

Examples:
  soloader rss libsqlite3.so.0 --procs 8 --loader all
  soloader rss ./libbigtext.so --procs 4 --call bigtext_run 1024 --json
  soloader call libcrypto.so.3 OpenSSL_version_num --relocation-cache ~/.cache/soloader
  soloader rss libcrypto.so.3 --procs 8 --relocation-cache ~/.cache/soloader
  soloader rss libsqlite3.so.0 --procs 8 --fork --relocation-cache ~/.cache/soloader";

/// The `--loader` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Choice {
    Soloader,
    Dlopen,
    Read,
    All,
}

/// One way of bringing a library into a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// `soloader::Library::open_with`.
    Soloader,
    /// `dlopen(RTLD_NOW | RTLD_LOCAL)`.
    Dlopen,
    /// `read()` into an anonymous buffer.
    Read,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Soloader => "soloader",
            Method::Dlopen => "dlopen",
            Method::Read => "read",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Method::Soloader => "loaded with soloader::Library (mmap MAP_PRIVATE per segment)",
            Method::Dlopen => "loaded with glibc's dlopen(RTLD_NOW|RTLD_LOCAL)",
            Method::Read => "read() into anonymous memory, nothing mapped from the file",
        }
    }
}

/// The hidden worker: `soloader rss-worker --loader METHOD LIB [--call
/// SYMBOL ARG...]`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// How to load.
    #[arg(long, value_enum)]
    loader: Method,
    /// The library.
    lib: PathBuf,
    /// Function to call, and its integer arguments.
    #[arg(long, num_args = 1.., allow_negative_numbers = true)]
    call: Vec<String>,
    /// Relocation cache directory (soloader workers only).
    #[arg(long = "relocation-cache", value_name = "DIR")]
    relocation_cache: Option<PathBuf>,
    /// Forked without exec from the rss process (never set on the command
    /// line: only `--fork` builds a `WorkerArgs` with it).
    #[arg(skip)]
    forked: bool,
}

// ---------------------------------------------------------------------------
// The worker

/// What a worker tells the parent, one line each, then `ready`:
///
/// ```text
/// path /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6
/// region text 7f5c1c026000 7f5c1c11a000 26000     (kind, start, end, file offset or -)
/// written 7f5c1c16f000                            (a page soloader's load wrote)
/// result 42                                       (the called function's value)
/// note --call ignored: ...
/// ready
/// ```
#[derive(Debug, Default, Clone)]
pub struct Report {
    path: PathBuf,
    regions: Vec<Region>,
    written: Option<BTreeSet<usize>>,
    result: Option<i64>,
    notes: Vec<String>,
}

impl Report {
    fn lines(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "path {}", self.path.display());
        for r in &self.regions {
            let off = r
                .file_offset
                .map(|o| format!("{o:x}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "region {} {:x} {:x} {off}",
                r.kind, r.range.start, r.range.end
            );
        }
        for p in self.written.iter().flatten() {
            let _ = writeln!(s, "written {p:x}");
        }
        if let Some(v) = self.result {
            let _ = writeln!(s, "result {v}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note {n}");
        }
        s.push_str("ready\n");
        s
    }

    /// Applies one line; `Ok(true)` at `ready`.
    fn parse_line(&mut self, line: &str) -> anyhow::Result<bool> {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let hex = |s: &str| usize::from_str_radix(s, 16).map_err(|_| anyhow!("bad address {s:?}"));
        match key {
            "ready" => return Ok(true),
            "path" => self.path = PathBuf::from(rest),
            "region" => {
                let f: Vec<&str> = rest.split(' ').collect();
                let [kind, start, end, off] = f[..] else {
                    bail!("bad region line {line:?}");
                };
                let kind =
                    SegmentKind::from_name(kind).ok_or_else(|| anyhow!("bad kind {kind:?}"))?;
                let file_offset = match off {
                    "-" => None,
                    o => Some(u64::from_str_radix(o, 16).map_err(|_| anyhow!("bad offset {o:?}"))?),
                };
                self.regions.push(Region {
                    kind,
                    range: hex(start)?..hex(end)?,
                    file_offset,
                });
            }
            "written" => {
                self.written
                    .get_or_insert_with(BTreeSet::new)
                    .insert(hex(rest)?);
            }
            "result" => self.result = rest.parse().ok(),
            "note" => self.notes.push(rest.to_string()),
            _ => bail!("unexpected line {line:?}"),
        }
        Ok(false)
    }
}

/// Runs the worker: load, call, report, wait for the parent.
pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    die_with_parent(None);
    work(args)
}

/// Makes the kernel kill this worker when its parent dies, and exits now
/// if the parent is already gone (reparented to init, or not `parent`).
fn die_with_parent(parent: Option<i32>) {
    // SAFETY: prctl/getppid take no pointers; a dead parent means exit.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        let ppid = libc::getppid();
        if ppid == 1 || parent.is_some_and(|p| p != ppid) {
            libc::_exit(1);
        }
    }
}

/// The worker after its set-up, exec'd or forked: load, call, report,
/// wait. Returns only on an error.
fn work(args: WorkerArgs) -> anyhow::Result<()> {
    let call = parse_call(&args.call)?;
    let report = match args.loader {
        Method::Soloader => {
            let (lib, report) = load_soloader(
                &args.lib,
                call.as_ref(),
                args.relocation_cache.as_deref(),
                args.forked,
            )?;
            let report = report.lines();
            barrier(&report);
            drop(lib);
            return Ok(());
        }
        Method::Dlopen => load_dlopen(&args.lib, call.as_ref())?,
        Method::Read => load_read(&args.lib, call.as_ref())?,
    };
    barrier(&report.lines());
    Ok(())
}

/// Prints the report, then blocks until stdin reaches end of file (or the
/// parent kills us), then exits without running anything of the library.
fn barrier(report: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(report.as_bytes());
    let _ = out.flush();
    drop(out);
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    // SAFETY: _exit ends the process immediately; nothing is pending.
    unsafe { libc::_exit(0) }
}

/// `SYMBOL ARG...` → symbol name and integer arguments.
fn parse_call(words: &[String]) -> anyhow::Result<Option<(String, Vec<i64>)>> {
    let Some((sym, rest)) = words.split_first() else {
        return Ok(None);
    };
    if rest.len() > MAX_ARGS {
        return Err(UsageError::err(format!(
            "--call: {} arguments, at most {MAX_ARGS} integers are supported",
            rest.len()
        )));
    }
    let args = rest
        .iter()
        .map(|a| {
            parse_int(a).ok_or_else(|| {
                UsageError::err(format!("--call: '{a}' is not an integer (42, -1, 0x10)"))
            })
        })
        .collect::<anyhow::Result<Vec<i64>>>()?;
    Ok(Some((sym.clone(), args)))
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => body.parse::<u64>().ok()?,
    };
    if neg {
        (v <= 1 << 63).then(|| (v as i64).wrapping_neg())
    } else {
        Some(v as i64)
    }
}

type IntFn = unsafe extern "C" fn(i64, i64, i64, i64, i64, i64) -> i64;

/// Calls the function at `addr` with `args` in rdi.. (the rest zero).
///
/// # Safety
/// `addr` must be a function taking at most six integer arguments and
/// returning an integer (or nothing).
unsafe fn call_at(addr: usize, args: &[i64]) -> i64 {
    let mut a = [0i64; MAX_ARGS];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the caller promises `addr` is such a function; extra
    // argument registers are ignored by the callee (System V ABI).
    unsafe {
        let f: IntFn = std::mem::transmute::<usize, IntFn>(addr);
        f(a[0], a[1], a[2], a[3], a[4], a[5])
    }
}

fn load_soloader(
    path: &Path,
    call: Option<&(String, Vec<i64>)>,
    relocation_cache: Option<&Path>,
    forked: bool,
) -> anyhow::Result<(Library, Report)> {
    let sink = VecSink::new();
    let mut options = Options::new().trace(Arc::new(sink.clone()));
    if let Some(dir) = relocation_cache {
        options = options
            .relocation_cache(dir)
            .relocation_cache_forked(forked);
    }
    let lib = Library::open_with(path, &options)
        .with_context(|| format!("soloader could not load {}", path.display()))?;
    let span = lib.span();
    let page = mem::page_size();
    let mut written = BTreeSet::new();
    for e in sink.events() {
        match e {
            Event::Relocations { pages, .. } => {
                written.extend(pages.into_iter().filter(|p| span.contains(p)));
            }
            Event::BssZero { addr, len } if len > 0 && span.contains(&addr) => {
                let mut p = addr / page * page;
                while p < addr + len {
                    written.insert(p);
                    p += page;
                }
            }
            _ => {}
        }
    }
    let mut regions = mem::regions(lib.segments());
    let mut notes = Vec::new();
    if let Some(c) = lib.relocation_cache() {
        // Pages mapped from the cache file are not private copies; the
        // stubs live outside the span but are this library's cost: they
        // count as data (the table is written by every load, the code
        // too unless it comes from the cache file).
        for p in &c.shared {
            written.remove(p);
        }
        let stub_pages = |r: &std::ops::Range<usize>| (r.start..r.end).step_by(page);
        written.extend(stub_pages(&c.stub_table));
        if !c.mapped {
            written.extend(stub_pages(&c.stub_code));
        }
        for r in [&c.stub_code, &c.stub_table] {
            if r.start < r.end {
                regions.push(mem::Region {
                    kind: SegmentKind::Data,
                    range: r.clone(),
                    file_offset: None,
                });
            }
        }
        let stubs = if c.stubs == 0 {
            "no stubs".to_string()
        } else {
            format!(
                "{} stubs; data includes the stub code ({}) and table ({}) after the span",
                c.stubs,
                kib((c.stub_code.end - c.stub_code.start) as u64),
                kib((c.stub_table.end - c.stub_table.start) as u64),
            )
        };
        notes.push(format!(
            "relocation cache {} ({}): {} of {} cacheable pages shared from the cache file, {stubs}",
            if c.hit { "hit" } else { "miss" },
            c.file.display(),
            c.shared.len(),
            c.pages.len(),
        ));
    } else if relocation_cache.is_some() {
        notes.push("relocation cache not used (see `soloader trace --relocation-cache`)".into());
    }
    let mut report = Report {
        path: std::fs::canonicalize(lib.path()).unwrap_or_else(|_| lib.path().to_path_buf()),
        regions,
        written: Some(written),
        notes,
        ..Report::default()
    };
    if let Some((sym, args)) = call {
        // SAFETY: the symbol is looked up as a plain address; calling it
        // with integer arguments is what the user asked for.
        let addr = unsafe { lib.get::<usize>(sym) }
            .with_context(|| format!("--call {sym}"))?
            .addr();
        // SAFETY: as above: the user names a function of integer arguments.
        report.result = Some(unsafe { call_at(addr, args) });
    }
    Ok((lib, report))
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dlopen error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (checked above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// One program header, the fields this file needs.
#[derive(Debug, Clone, Copy)]
struct Phdr {
    typ: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

const PT_LOAD: u32 = 1;
const PT_GNU_RELRO: u32 = 0x6474_e552;

fn prot_of(flags: u32) -> i32 {
    let mut p = 0;
    if flags & 4 != 0 {
        p |= libc::PROT_READ;
    }
    if flags & 2 != 0 {
        p |= libc::PROT_WRITE;
    }
    if flags & 1 != 0 {
        p |= libc::PROT_EXEC;
    }
    p
}

fn page_down(a: u64) -> u64 {
    a / mem::page_size() as u64 * mem::page_size() as u64
}

fn page_up(a: u64) -> u64 {
    a.div_ceil(mem::page_size() as u64) * mem::page_size() as u64
}

/// The segments as a loader maps them at load bias `base` (what glibc and
/// soloader both do: file part page-rounded, `.bss` anonymous past it,
/// RELRO with both ends rounded down).
fn mapped_segments(base: usize, phdrs: &[Phdr]) -> Vec<Segment> {
    let relro = phdrs.iter().find(|p| p.typ == PT_GNU_RELRO);
    let b = base as u64;
    phdrs
        .iter()
        .filter(|p| p.typ == PT_LOAD)
        .enumerate()
        .map(|(index, p)| {
            let start = (b + page_down(p.vaddr)) as usize;
            let file_end = (b + page_up(p.vaddr + p.filesz)) as usize;
            let end = (b + page_up(p.vaddr + p.memsz)) as usize;
            let relro = relro
                .map(|r| {
                    let s = (b + page_down(r.vaddr)) as usize;
                    let e = (b + page_down(r.vaddr + r.memsz)) as usize;
                    s.max(start)..e.min(end)
                })
                .filter(|r| r.start < r.end);
            Segment {
                index,
                range: start..end,
                file_range: start..if p.filesz > 0 { file_end } else { start },
                file_offset: page_down(p.offset),
                prot: prot_of(p.flags),
                relro,
                bss: (p.memsz > p.filesz)
                    .then(|| (b + p.vaddr + p.filesz) as usize..(b + p.vaddr + p.memsz) as usize),
            }
        })
        .collect()
}

struct PhdrSearch {
    addr: usize,
    name: CString,
    found: Option<Vec<Phdr>>,
}

/// `dl_iterate_phdr`'s callback: keeps the program headers of the object
/// loaded at `search.addr` under `search.name`.
///
/// # Safety
/// `info` must be valid for the call and `data` must point to a live
/// `PhdrSearch` (what `dl_iterate_phdr` passes on from `load_dlopen`).
unsafe extern "C" fn phdr_callback(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
    // call, and `data` is the `PhdrSearch` passed by `load_dlopen`.
    let (info, search) = unsafe { (&*info, &mut *(data as *mut PhdrSearch)) };
    if info.dlpi_addr as usize != search.addr || info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: dlpi_name is a NUL-terminated string (checked non-null).
    if unsafe { CStr::from_ptr(info.dlpi_name) } != search.name.as_c_str() {
        return 0;
    }
    let n = info.dlpi_phnum as usize;
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: the loader's program headers: dlpi_phnum entries.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, n) };
    search.found = Some(
        phdrs
            .iter()
            .map(|p| Phdr {
                typ: p.p_type,
                flags: p.p_flags,
                offset: p.p_offset,
                vaddr: p.p_vaddr,
                filesz: p.p_filesz,
                memsz: p.p_memsz,
            })
            .collect(),
    );
    1
}

fn load_dlopen(path: &Path, call: Option<&(String, Vec<i64>)>) -> anyhow::Result<Report> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid C string; the library's constructors run, as asked.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        bail!("dlopen: {}", dlerror());
    }
    let mut lm: *mut c_void = std::ptr::null_mut();
    // SAFETY: RTLD_DI_LINKMAP stores a `struct link_map *` into `lm`.
    let rc = unsafe {
        libc::dlinfo(
            handle,
            libc::RTLD_DI_LINKMAP,
            &mut lm as *mut *mut c_void as *mut c_void,
        )
    };
    if rc != 0 || lm.is_null() {
        bail!("dlinfo: {}", dlerror());
    }
    // SAFETY: `struct link_map` begins with `ElfW(Addr) l_addr; char
    // *l_name;` (link.h), and glibc keeps it alive while the handle is open.
    let (l_addr, l_name) = unsafe { (*(lm as *const usize), *(lm as *const *const c_char).add(1)) };
    if l_name.is_null() {
        bail!("dlinfo: the link map has no name");
    }
    let mut search = PhdrSearch {
        addr: l_addr,
        // SAFETY: l_name is glibc's NUL-terminated name (non-null, checked).
        name: unsafe { CStr::from_ptr(l_name) }.to_owned(),
        found: None,
    };
    // SAFETY: the callback only reads `info` and writes `search`, which
    // outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(phdr_callback),
            &mut search as *mut PhdrSearch as *mut c_void,
        )
    };
    let phdrs = search
        .found
        .ok_or_else(|| anyhow!("dl_iterate_phdr: {} not found", path.display()))?;
    let segments = mapped_segments(l_addr, &phdrs);
    // The file really mapped, from this process's own maps.
    let maps = mem::Smaps::read_maps(std::process::id() as i32)?;
    let first = segments.first().map(|s| s.range.start).unwrap_or(0);
    let mapped = maps
        .vmas
        .iter()
        .find(|v| v.range.contains(&first) && v.file_backed())
        .map(|v| PathBuf::from(&v.name))
        .ok_or_else(|| anyhow!("no mapping of {} in /proc/self/maps", path.display()))?;
    let mut report = Report {
        path: mapped,
        regions: mem::regions(&segments),
        ..Report::default()
    };
    if let Some((sym, args)) = call {
        let s = CString::new(sym.as_bytes())?;
        // SAFETY: valid handle and C string.
        let addr = unsafe { libc::dlsym(handle, s.as_ptr()) } as usize;
        if addr == 0 {
            bail!("--call {sym}: {}", dlerror());
        }
        // SAFETY: the user names a function of integer arguments.
        report.result = Some(unsafe { call_at(addr, args) });
    }
    // The handle stays open until the process exits.
    Ok(report)
}

/// The program headers of an ELF64 little-endian file image, or none.
fn parse_phdrs(image: &[u8]) -> Vec<Phdr> {
    let u16_at = |o: usize| -> Option<u16> {
        Some(u16::from_le_bytes(image.get(o..o + 2)?.try_into().ok()?))
    };
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(image.get(o..o + 4)?.try_into().ok()?))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(image.get(o..o + 8)?.try_into().ok()?))
    };
    let parse = || -> Option<Vec<Phdr>> {
        if image.get(0..6)? != b"\x7fELF\x02\x01" {
            return None;
        }
        let phoff = usize::try_from(u64_at(0x20)?).ok()?;
        let entsize = usize::from(u16_at(0x36)?);
        let count = usize::from(u16_at(0x38)?);
        if entsize < 56 {
            return None;
        }
        (0..count)
            .map(|i| {
                let o = phoff.checked_add(i.checked_mul(entsize)?)?;
                Some(Phdr {
                    typ: u32_at(o)?,
                    flags: u32_at(o + 4)?,
                    offset: u64_at(o + 8)?,
                    vaddr: u64_at(o + 16)?,
                    filesz: u64_at(o + 32)?,
                    memsz: u64_at(o + 40)?,
                })
            })
            .collect()
    };
    parse().unwrap_or_default()
}

/// The regions of a file copy at `buf`: each `PT_LOAD`'s file bytes where
/// they sit in the copy, classified as a loader would, and the bytes no
/// segment covers as `other`.
fn copy_regions(buf: usize, len: usize, phdrs: &[Phdr]) -> Vec<Region> {
    let relro = phdrs.iter().find(|p| p.typ == PT_GNU_RELRO);
    let b = buf as u64;
    let end = buf + page_up(len as u64) as usize;
    let segments: Vec<Segment> = phdrs
        .iter()
        .filter(|p| p.typ == PT_LOAD && p.filesz > 0)
        .enumerate()
        .filter_map(|(index, p)| {
            let start = (b.checked_add(page_down(p.offset))?) as usize;
            let stop =
                ((b.checked_add(page_up(p.offset.checked_add(p.filesz)?))?) as usize).min(end);
            if start >= stop {
                return None;
            }
            // RELRO's virtual addresses, translated to where the same bytes
            // sit in the file.
            let relro = relro.and_then(|r| {
                let s = r.vaddr.max(p.vaddr);
                let e = (r.vaddr + r.memsz).min(p.vaddr + p.filesz);
                (s < e).then(|| {
                    (b + p.offset + (s - p.vaddr)) as usize..(b + p.offset + (e - p.vaddr)) as usize
                })
            });
            Some(Segment {
                index,
                range: start..stop,
                file_range: start..stop,
                file_offset: page_down(p.offset),
                prot: prot_of(p.flags),
                relro,
                bss: None,
            })
        })
        .collect();
    let mut out = mem::regions(&segments);
    let mut gaps = Vec::new();
    let mut at = buf;
    for r in &out {
        if r.range.start > at {
            gaps.push(at..r.range.start);
        }
        at = at.max(r.range.end);
    }
    if at < end {
        gaps.push(at..end);
    }
    out.extend(gaps.into_iter().map(|g| Region {
        kind: SegmentKind::Other,
        file_offset: Some((g.start - buf) as u64),
        range: g,
    }));
    out.sort_by_key(|r| r.range.start);
    out
}

fn load_read(path: &Path, call: Option<&(String, Vec<i64>)>) -> anyhow::Result<Report> {
    let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let len = usize::try_from(file.metadata()?.len())?;
    let page = mem::page_size();
    let pages = page_up(len as u64) as usize;
    // A read-write buffer between two PROT_NONE guard pages, so that it
    // merges with no neighbouring anonymous mapping.
    // SAFETY: a fresh anonymous private mapping, never unmapped (the
    // worker ends with _exit).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages + 2 * page,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        bail!("mmap: {}", std::io::Error::last_os_error());
    }
    let buf = p as usize + page;
    if pages > 0 {
        // SAFETY: the middle of the mapping just made.
        let rc = unsafe {
            libc::mprotect(
                buf as *mut c_void,
                pages,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            bail!("mprotect: {}", std::io::Error::last_os_error());
        }
    }
    // SAFETY: `len` bytes at `buf` are mapped read-write and owned here.
    let image = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len) };
    file.read_exact(image)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut report = Report {
        regions: copy_regions(buf, len, &parse_phdrs(image)),
        path,
        ..Report::default()
    };
    if call.is_some() {
        report
            .notes
            .push("--call ignored for read: nothing of the file is mapped executable".into());
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// The parent: workers

/// The process group of the live workers, for the signal handler.
static WORKER_GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: c_int) {
    let group = WORKER_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill, signal and raise are async-signal-safe.
    unsafe {
        if group > 0 {
            libc::kill(-group, libc::SIGKILL);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler is valid;
        // on_signal only makes async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// One live worker: its pid and the parent's ends of its pipes.
struct Worker {
    pid: i32,
    /// Its stdin: closing it releases the barrier.
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    /// What it wrote on stderr so far (drained while waiting for reports).
    err: Vec<u8>,
    /// Already waited for: its pid may be reused, never signal it again.
    reaped: bool,
}

/// Live workers, one process group; killed and reaped on drop. Exec'd and
/// forked workers alike: a pid and three pipes each.
struct Workers {
    list: Vec<Worker>,
    group: i32,
}

impl Workers {
    fn new() -> Workers {
        Workers {
            list: Vec::new(),
            group: 0,
        }
    }

    fn pids(&self) -> Vec<i32> {
        self.list.iter().map(|w| w.pid).collect()
    }

    /// Records a started worker; the first one's pid names the group.
    fn add(&mut self, pid: i32, stdin: File, stdout: File, stderr: File) {
        if self.group == 0 {
            self.group = pid;
            WORKER_GROUP.store(pid, Ordering::SeqCst);
        }
        self.list.push(Worker {
            pid,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
            err: Vec::new(),
            reaped: false,
        });
    }

    /// Kills and reaps every worker; returns worker `i`'s stderr.
    fn kill(&mut self, i: Option<usize>) -> String {
        if self.group > 0 {
            // SAFETY: signalling our own workers' process group.
            unsafe { libc::kill(-self.group, libc::SIGKILL) };
        }
        for w in &mut self.list {
            if !w.reaped {
                // SAFETY: our own child, not reaped yet, so its pid is still
                // ours (a zombie at worst).
                unsafe { libc::kill(w.pid, libc::SIGKILL) };
                reap(w.pid);
                w.reaped = true;
            }
            w.stdin = None;
        }
        WORKER_GROUP.store(0, Ordering::SeqCst);
        self.group = 0;
        let mut err = Vec::new();
        if let Some(w) = i.and_then(|i| self.list.get_mut(i)) {
            err = std::mem::take(&mut w.err);
            if let Some(mut e) = w.stderr.take() {
                let _ = e.read_to_end(&mut err);
            }
        }
        String::from_utf8_lossy(&err).into_owned()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill(None);
    }
}

/// Waits for child `pid` to end.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on our own child, with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
}

/// What a run starts its workers from.
struct Setup<'a> {
    exe: &'a Path,
    lib: &'a Path,
    call: &'a [String],
    procs: u32,
    relocation_cache: Option<&'a Path>,
    fork: bool,
}

impl Setup<'_> {
    /// The relocation cache for `method`'s workers (soloader only).
    fn cache_for(&self, method: Method) -> Option<&Path> {
        self.relocation_cache.filter(|_| method == Method::Soloader)
    }

    /// Whether `method`'s workers start one after another, each once the
    /// previous one reported: forked soloader workers with a cache, so that
    /// worker 0 writes it and the others find it warm.
    fn one_by_one(&self, method: Method) -> bool {
        self.fork && self.cache_for(method).is_some()
    }
}

/// Starts one worker by exec'ing this binary as `rss-worker`.
fn spawn_exec(w: &mut Workers, setup: &Setup, method: Method) -> anyhow::Result<()> {
    let mut cmd = Command::new(setup.exe);
    cmd.arg("rss-worker")
        .arg("--loader")
        .arg(method.name())
        .arg(setup.lib);
    if !setup.call.is_empty() {
        cmd.arg("--call").args(setup.call);
    }
    if let Some(dir) = setup.cache_for(method) {
        cmd.arg("--relocation-cache").arg(dir);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(w.group);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", setup.exe.display()))?;
    let pid = child.id() as i32;
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    // Dropping `child` neither kills nor waits: `Workers` reaps it by pid.
    drop(child);
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        // SAFETY: our own child, never reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reap(pid);
        bail!("starting {}: no pipes", setup.exe.display());
    };
    w.add(
        pid,
        File::from(OwnedFd::from(stdin)),
        File::from(OwnedFd::from(stdout)),
        File::from(OwnedFd::from(stderr)),
    );
    Ok(())
}

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Fails unless this process has exactly one thread: forking a process
/// with other threads leaves the child with whatever locks they held
/// (malloc's, stdio's, the loader's), and the child runs a whole load.
fn single_threaded() -> anyhow::Result<()> {
    let mut count = 0;
    // A thread just joined can linger in /proc/self/task for a moment.
    for _ in 0..100 {
        count = std::fs::read_dir("/proc/self/task")
            .context("reading /proc/self/task")?
            .count();
        if count == 1 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("cannot fork workers: this process has {count} threads, and fork is only safe from a single-threaded one")
}

/// The signals the parent handles, blocked around `fork` so that neither
/// process runs the handler half set up.
fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Starts one worker by `fork()` without exec: it shares this process's
/// address-space layout. The child never returns from here.
fn spawn_fork(w: &mut Workers, setup: &Setup, method: Method) -> anyhow::Result<()> {
    single_threaded()?;
    let args = WorkerArgs {
        loader: method,
        lib: setup.lib.to_path_buf(),
        call: setup.call.to_vec(),
        relocation_cache: setup.cache_for(method).map(Path::to_path_buf),
        forked: true,
    };
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Every descriptor the child must not keep, should close_range fail:
    // the parent's ends of this worker's pipes and of the others'.
    let mut inherited: Vec<c_int> = w
        .list
        .iter()
        .flat_map(|x| [&x.stdin, &x.stdout, &x.stderr])
        .flatten()
        .map(|f| f.as_raw_fd())
        .collect();
    inherited.extend([&in_r, &in_w, &out_r, &out_w, &err_r, &err_w].map(|f| f.as_raw_fd()));
    let max_fd = inherited.iter().copied().max().unwrap_or(2);
    // Nothing buffered may be written twice (the child never flushes what
    // the parent buffered: it ends with _exit).
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let group = w.group;
    let blocked = handled_signals();
    // SAFETY: a zeroed sigset_t is valid storage for the old mask.
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set pointers.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut old_mask) };
    // SAFETY: this process has one thread (checked above), so the child
    // starts with every lock free and may run ordinary code; it ends with
    // _exit and never returns into the parent's code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        forked_child(
            parent,
            group,
            [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            max_fd,
            &old_mask,
            args,
        );
    }
    let fork_error = std::io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    if pid < 0 {
        bail!("fork: {fork_error}");
    }
    // The child joins the group itself; doing it here too closes the race
    // with a kill of the group before the child got there.
    // SAFETY: setpgid on our own child; failure (it already did, or died)
    // is harmless.
    unsafe { libc::setpgid(pid, if group == 0 { pid } else { group }) };
    drop((in_r, out_w, err_w));
    w.add(pid, File::from(in_w), File::from(out_r), File::from(err_r));
    Ok(())
}

/// The forked worker: set up as the exec'd one would be, run the worker,
/// `_exit`. `fds` are the child's ends of its stdin, stdout and stderr.
fn forked_child(
    parent: i32,
    group: i32,
    fds: [c_int; 3],
    max_fd: c_int,
    old_mask: &libc::sigset_t,
    args: WorkerArgs,
) -> ! {
    die_with_parent(Some(parent));
    // SAFETY: plain system calls on descriptors and signal dispositions of
    // this (single-threaded) child; on failure it exits at once.
    unsafe {
        // What exec would do: the parent's handlers are not ours.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
        libc::setpgid(0, group);
        // Above 2 first, so that one dup2 never overwrites another's source
        // (when the parent was started with 0, 1 or 2 closed).
        let high = fds.map(|fd| libc::fcntl(fd, libc::F_DUPFD, 3));
        if high.iter().any(|&fd| fd < 0) || (0..3).any(|i| libc::dup2(high[i], i as c_int) < 0) {
            libc::_exit(127);
        }
        // Every other descriptor of the parent: the other workers' pipes
        // must not stay open here (their ends of file would never come).
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..=max_fd.max(high[0]).max(high[1]).max(high[2]) {
                libc::close(fd);
            }
        }
    }
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(args))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("soloader: {}", crate::one_line(&e));
            1
        }
        // The panic message went to stderr (the pipe) already.
        Err(_) => 101,
    };
    let _ = std::io::stderr().flush();
    // SAFETY: ends this child at once: none of the parent's destructors,
    // atexit handlers or stdio buffers run.
    unsafe { libc::_exit(code) }
}

/// A worker exited before reporting.
#[derive(Debug)]
struct WorkerFailed {
    index: usize,
    pid: i32,
    /// The last line it wrote on stderr.
    message: String,
}

impl std::fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "worker {} (pid {}) failed: {}; all workers killed",
            self.index, self.pid, self.message
        )
    }
}

impl std::error::Error for WorkerFailed {}

/// Waits for the reports of workers `which`, reading their stdout (and
/// draining their stderr) with `poll()` in this thread: the parent starts
/// no thread, so it can fork again afterwards.
fn collect(w: &mut Workers, which: Range<usize>) -> anyhow::Result<Vec<Report>> {
    let n = which.len();
    let mut reports = vec![Report::default(); n];
    let mut ready = vec![false; n];
    let mut partial: Vec<Vec<u8>> = vec![Vec::new(); n];
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut buf = [0u8; 8192];
    while let Some(late) = ready.iter().position(|r| !r) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let i = which.start + late;
            let pid = w.list[i].pid;
            w.kill(None);
            bail!(
                "worker {i} (pid {pid}) did not report within {} s; all workers killed",
                READY_TIMEOUT.as_secs()
            );
        }
        let mut fds = Vec::new();
        let mut owners = Vec::new();
        for j in (0..n).filter(|&j| !ready[j]) {
            let x = &w.list[which.start + j];
            for (f, is_err) in [(&x.stdout, false), (&x.stderr, true)] {
                if let Some(f) = f {
                    fds.push(libc::pollfd {
                        fd: f.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    owners.push((j, is_err));
                }
            }
        }
        let ms = c_int::try_from(left.as_millis() + 1).unwrap_or(c_int::MAX);
        // SAFETY: `fds` is a valid array of fds.len() pollfd structures.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            w.kill(None);
            bail!("poll: {e}");
        }
        for (p, &(j, is_err)) in fds.iter().zip(&owners) {
            if p.revents == 0 || ready[j] {
                continue;
            }
            let i = which.start + j;
            let x = &mut w.list[i];
            let pipe = if is_err { &mut x.stderr } else { &mut x.stdout };
            let Some(f) = pipe.as_mut() else { continue };
            let got = match f.read(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if is_err {
                x.err.extend_from_slice(&buf[..got]);
                if got == 0 {
                    x.stderr = None;
                }
                continue;
            }
            let eof = got == 0;
            partial[j].extend_from_slice(&buf[..got]);
            if eof && !partial[j].is_empty() {
                partial[j].push(b'\n');
            }
            while let Some(end) = partial[j].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial[j].drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]);
                match reports[j].parse_line(&line) {
                    Ok(true) => {
                        ready[j] = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        w.kill(None);
                        bail!("worker {i}: {e}");
                    }
                }
            }
            if eof && !ready[j] {
                let pid = w.list[i].pid;
                let err = w.kill(Some(i));
                let message = err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("exited without reporting")
                    .trim()
                    .trim_start_matches("soloader: ")
                    .to_string();
                return Err(anyhow::Error::new(WorkerFailed {
                    index: i,
                    pid,
                    message,
                }));
            }
        }
    }
    Ok(reports)
}

/// The library's real path: a path as given, or a bare name searched for
/// the way a load would ([`soloader::find_library`]: it reads headers and
/// maps nothing, so the parent stays out of the measurement).
fn resolve(lib: &Path) -> anyhow::Result<PathBuf> {
    let found = if lib.as_os_str().as_bytes().contains(&b'/') {
        lib.to_path_buf()
    } else {
        soloader::find_library(&lib.to_string_lossy(), &Options::new())?
    };
    std::fs::canonicalize(&found).with_context(|| format!("{}", found.display()))
}

// ---------------------------------------------------------------------------
// The parent: measuring

/// One loader's results.
struct Run {
    method: Method,
    pids: Vec<i32>,
    /// Started one after another (forked, with a relocation cache).
    one_by_one: bool,
    reports: Vec<Report>,
    measurements: Vec<Measurement>,
    summary: Summary,
    others: mem::Mappers,
}

fn measure_run(setup: &Setup, method: Method) -> anyhow::Result<Run> {
    let mut w = Workers::new();
    let spawn = if setup.fork { spawn_fork } else { spawn_exec };
    let one_by_one = setup.one_by_one(method);
    let mut reports = Vec::new();
    for k in 0..setup.procs as usize {
        spawn(&mut w, setup, method)?;
        if one_by_one {
            reports.extend(collect(&mut w, k..k + 1)?);
        }
    }
    if !one_by_one {
        reports = collect(&mut w, 0..setup.procs as usize)?;
    }
    let pids = w.pids();
    let mut exclude = pids.clone();
    exclude.push(std::process::id() as i32);
    let others = if method == Method::Read {
        mem::Mappers::default()
    } else {
        mem::mappers(setup.lib, &exclude).unwrap_or_default()
    };
    let mut measurements = Vec::new();
    for (pid, r) in pids.iter().zip(&reports) {
        let m = mem::measure(*pid, &r.regions)
            .with_context(|| format!("measuring worker pid {pid}"))?;
        measurements.push(m);
    }
    drop(w);
    let summary = mem::summarize(&measurements);
    Ok(Run {
        method,
        pids,
        one_by_one,
        reports,
        measurements,
        summary,
        others,
    })
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let call = args.call.clone();
    parse_call(&call)?;
    install_signal_handlers();
    let exe = std::env::current_exe().context("finding the soloader binary")?;
    let lib = resolve(&args.lib)?;
    let size = std::fs::metadata(&lib).map(|m| m.len()).unwrap_or(0);
    let methods = match args.loader {
        Choice::Soloader => vec![Method::Soloader],
        Choice::Dlopen => vec![Method::Dlopen],
        Choice::Read => vec![Method::Read],
        Choice::All => vec![Method::Soloader, Method::Dlopen, Method::Read],
    };
    let setup = Setup {
        exe: &exe,
        lib: &lib,
        call: &call,
        procs: args.procs,
        relocation_cache: args.relocation_cache.as_deref(),
        fork: args.fork,
    };
    let mut runs = Vec::new();
    for m in methods {
        runs.push(measure_run(&setup, m)?);
    }
    let out = if args.json {
        json(&setup, size, &runs)
    } else {
        human(&setup, size, &runs)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Judging

/// Per kind: whether each worker's private copies are exactly the pages
/// soloader's load wrote. `None` when the loader did not report writes.
fn written_match(run: &Run, kind: Option<SegmentKind>) -> Option<(bool, Vec<u64>)> {
    let page = mem::page_size() as u64;
    let mut all = true;
    let mut bytes = Vec::new();
    for (r, m) in run.reports.iter().zip(&run.measurements) {
        let written = r.written.as_ref()?;
        let in_kind: BTreeSet<usize> = written
            .iter()
            .copied()
            .filter(|a| {
                r.regions
                    .iter()
                    .any(|x| x.range.contains(a) && kind.is_none_or(|k| x.kind == k))
            })
            .collect();
        bytes.push(in_kind.len() as u64 * page);
        all &= m.anonymous_pages(kind) == in_kind;
    }
    Some((all, bytes))
}

fn kib(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn kib_f(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

/// One value, or `min–max` when processes differ.
fn per_process(values: impl Iterator<Item = u64>) -> String {
    let v: Vec<u64> = values.collect();
    let (Some(min), Some(max)) = (v.iter().min(), v.iter().max()) else {
        return "-".into();
    };
    if min == max {
        kib(*min)
    } else {
        format!("{}–{}", min / 1024, kib(*max))
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One sentence on what a kind costs.
fn verdict(run: &Run, kind: SegmentKind, c: &Combined) -> String {
    let page = mem::page_size() as u64;
    if c.sum.rss == 0 {
        return if c.sum.vsz == 0 {
            "nothing".into()
        } else {
            format!(
                "{} reserved per process, never touched: no memory",
                per_process(c.per_process.iter().map(|u| u.vsz))
            )
        };
    }
    let mut parts = Vec::new();
    let with_file = c.per_process.iter().filter(|u| u.file > 0).count();
    let with_anon = c.per_process.iter().filter(|u| u.anon > 0).count();
    if c.sum.file > 0 {
        let (frames, copies) = file_frames(run, kind);
        match frames {
            Some(f) if copies <= 1 => parts.push(format!(
                "{} resident, one physical copy {}",
                kib(f * page),
                if with_file == 1 {
                    "in 1 process".to_string()
                } else {
                    format!("shared by {with_file} processes")
                }
            )),
            Some(f) => parts.push(format!(
                "{} of frames for its file pages: up to {copies} copies of one page",
                kib(f * page)
            )),
            None => {
                let shared = c.per_process.iter().map(|u| u.file.min(u.shared));
                parts.push(format!(
                    "{} per process from the page cache, {} of it also mapped by other processes (root can count the copies)",
                    per_process(c.per_process.iter().map(|u| u.file)),
                    per_process(shared)
                ))
            }
        }
    }
    if c.sum.anon > 0 {
        let cause = match (run.method, kind) {
            (Method::Read, _) => "an anonymous copy of the file".to_string(),
            (_, SegmentKind::Bss) => "zero-fill memory the library touched".to_string(),
            _ => match written_match(run, Some(kind)) {
                Some((true, _)) => {
                    "copied on write, exactly the pages soloader's load wrote".to_string()
                }
                Some((false, w)) => format!(
                    "copied on write (soloader's load wrote {}, the rest was written later)",
                    per_process(w.into_iter())
                ),
                None => "copied on write".to_string(),
            },
        };
        let anon = per_process(c.per_process.iter().map(|u| u.anon));
        let copies = match anon_frames(run, kind) {
            Some(f) => format!(
                "; {}, {} in all{}",
                plural(with_anon, "copy", "copies"),
                kib(f * page),
                if c.sum.file == 0 {
                    ", nothing shared"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        parts.push(format!("{anon} private per process, {cause}{copies}"));
    }
    parts.join("; ")
}

/// Distinct frames of file-backed resident pages of `kind` over all
/// workers, and the most frames seen for one file page.
fn file_frames(run: &Run, kind: SegmentKind) -> (Option<u64>, u64) {
    if !run.summary.access.pfn {
        return (None, 0);
    }
    let mut frames = BTreeSet::new();
    let mut per_page: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for m in &run.measurements {
        for p in &m.pages {
            if p.kind != kind || !p.resident() || !p.info.file_or_shared_anon() {
                continue;
            }
            if let Some(pfn) = p.info.pfn() {
                frames.insert(pfn);
                if let Some(f) = p.file_page {
                    per_page.entry(f).or_default().insert(pfn);
                }
            }
        }
    }
    let copies = per_page.values().map(|s| s.len() as u64).max().unwrap_or(0);
    (Some(frames.len() as u64), copies)
}

fn anon_frames(run: &Run, kind: SegmentKind) -> Option<u64> {
    if !run.summary.access.pfn {
        return None;
    }
    let frames: BTreeSet<u64> = run
        .measurements
        .iter()
        .flat_map(|m| m.pages.iter())
        .filter(|p| p.kind == kind && p.anonymous())
        .filter_map(|p| p.info.pfn())
        .collect();
    Some(frames.len() as u64)
}

fn total_verdict(run: &Run) -> String {
    let t = &run.summary.total;
    let n = run.summary.processes.max(1);
    let anon = per_process(t.per_process.iter().map(|u| u.anon));
    let phys = match t.frames {
        Some(f) => format!(
            "{} of physical memory for {} ({} each)",
            kib(f * mem::page_size() as u64),
            plural(n, "process", "processes"),
            kib_f(t.sum.pss / n as f64)
        ),
        None => format!(
            "{} PSS for {} ({} each)",
            kib_f(t.sum.pss),
            plural(n, "process", "processes"),
            kib_f(t.sum.pss / n as f64)
        ),
    };
    format!("{phys}; {anon} of it private to each process")
}

// ---------------------------------------------------------------------------
// Human output

/// Each column's width in characters.
fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map(|c| c.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// Columns left-aligned for the first, right-aligned after; two spaces
/// between.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let widths = widths(rows);
    let mut s = String::new();
    for r in rows {
        let mut line = String::from(indent);
        for (i, c) in r.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i == 0 {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn segment_row(name: &str, c: &Combined, frames: bool) -> Vec<String> {
    let page = mem::page_size() as u64;
    let mut row = vec![
        name.to_string(),
        per_process(c.per_process.iter().map(|u| u.vsz)),
        kib(c.sum.rss),
        kib_f(c.sum.pss),
        per_process(c.per_process.iter().map(|u| u.private)),
        per_process(c.per_process.iter().map(|u| u.anon)),
    ];
    if frames {
        row.push(
            c.frames
                .map(|f| kib(f * page))
                .unwrap_or_else(|| "-".into()),
        );
    }
    row
}

fn pid_list(pids: &[i32]) -> String {
    let contiguous = pids.windows(2).all(|w| w[1] == w[0] + 1);
    match (pids.first(), pids.last()) {
        (Some(a), Some(b)) if contiguous && pids.len() > 2 => format!("pids {a}–{b}"),
        _ => format!(
            "pid{} {}",
            if pids.len() == 1 { "" } else { "s" },
            pids.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn human(setup: &Setup, size: u64, runs: &[Run]) -> String {
    let (lib, call) = (setup.lib, setup.call);
    let mut s = String::new();
    let access = runs.first().map(|r| r.summary.access).unwrap_or_default();
    let frames = access.pfn;
    let _ = writeln!(
        s,
        "soloader rss: {} ({}), {} per loader{}{}",
        lib.display(),
        kib(size),
        plural(setup.procs as usize, "worker", "workers"),
        if setup.fork {
            ", forked without exec (one address-space layout)"
        } else {
            ""
        },
        if call.is_empty() {
            String::new()
        } else {
            format!(", each calling {}", call.join(" "))
        }
    );
    let _ = writeln!(s, "{}", access_line(access));
    for run in runs {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "== {}: {} ({}), {}",
            run.method.name(),
            plural(run.pids.len(), "worker", "workers"),
            pid_list(&run.pids),
            run.method.describe()
        );
        if let Some(v) = run.reports.first().and_then(|r| r.result) {
            let _ = writeln!(
                s,
                "   {} returned {v}",
                call.first().map(String::as_str).unwrap_or("call")
            );
        }
        if setup.fork {
            let _ = writeln!(s, "{}", fork_line(run));
        }
        // Each distinct note once, with its workers when they differ.
        let mut notes: Vec<(&str, Vec<i32>)> = Vec::new();
        for (i, r) in run.reports.iter().enumerate() {
            for n in &r.notes {
                match notes.iter_mut().find(|(t, _)| *t == n.as_str()) {
                    Some((_, who)) => who.push(i as i32),
                    None => notes.push((n, vec![i as i32])),
                }
            }
        }
        let all_same = notes.iter().all(|(_, who)| who.len() == run.reports.len());
        for (note, who) in &notes {
            if all_same {
                let _ = writeln!(s, "   note: {note}");
            } else {
                let who = pid_list(who).replacen("pid", "worker", 1);
                let _ = writeln!(s, "   note ({who}): {note}");
            }
        }
        if !run.others.found.is_empty() {
            let found = &run.others.found;
            let mut names: Vec<String> = found
                .iter()
                .take(5)
                .map(|m| format!("{} {}", m.pid, m.comm))
                .collect();
            if found.len() > 5 {
                names.push(format!("and {} more", found.len() - 5));
            }
            let _ = writeln!(
                s,
                "   warning: {} also {} this library ({}): map counts include {}, so Σ PSS is below the workers' own cost and \"shared\" includes {}",
                plural(found.len(), "other process", "other processes"),
                if found.len() == 1 { "maps" } else { "map" },
                names.join(", "),
                if found.len() == 1 { "it" } else { "them" },
                if found.len() == 1 { "it" } else { "them" },
            );
        }
        if run.others.unreadable > 0 {
            let _ = writeln!(
                s,
                "   note: the maps of {} could not be read (permission denied): if any of them maps this library, the PSS shown is lower than the workers' own cost",
                plural(run.others.unreadable, "process", "processes")
            );
        }
        let mut rows = vec![{
            let mut h: Vec<String> = [
                "segment",
                "size/proc",
                "Σ RSS",
                "Σ PSS",
                "private/proc",
                "anon/proc",
            ]
            .map(String::from)
            .to_vec();
            if frames {
                h.push("phys".into());
            }
            h
        }];
        for (k, c) in &run.summary.kinds {
            rows.push(segment_row(k.name(), c, frames));
        }
        rows.push(segment_row("total", &run.summary.total, frames));
        s.push_str(&table(&rows, "   "));
        let mut verdicts: Vec<Vec<String>> = run
            .summary
            .kinds
            .iter()
            .map(|(k, c)| vec![format!("{k}:"), verdict(run, *k, c)])
            .collect();
        verdicts.push(vec!["total:".into(), total_verdict(run)]);
        for v in verdicts {
            let _ = writeln!(s, "   {:<8}{}", v[0], v[1]);
        }
    }
    if runs.len() > 1 {
        s.push_str(&side_by_side(runs, frames));
    }
    s
}

/// How a forked run's workers started.
fn fork_line(run: &Run) -> String {
    let parent = std::process::id();
    if !run.one_by_one {
        return format!("   workers forked from pid {parent} (shared layout)");
    }
    let status = |r: &Report| {
        r.notes.iter().find_map(|n| {
            let rest = n.strip_prefix("relocation cache ")?;
            Some(if rest.starts_with("hit") {
                "hit"
            } else if rest.starts_with("miss") {
                "miss"
            } else {
                "unused"
            })
        })
    };
    let first = match run.reports.first().and_then(status) {
        Some("miss") => "worker 0 wrote the relocation cache",
        Some("hit") => "worker 0 found the relocation cache already written",
        _ => "worker 0 did not use the relocation cache",
    };
    let rest = &run.reports[run.reports.len().min(1)..];
    let warm = rest.iter().filter(|r| status(r) == Some("hit")).count();
    let others = match rest.len() {
        0 => String::new(),
        1 if warm == 1 => ", worker 1 found it warm".to_string(),
        n if warm == n => format!(", workers 1–{n} found it warm"),
        n => format!(", {warm} of workers 1–{n} found it warm"),
    };
    format!(
        "   workers forked from pid {parent} (shared layout), one after another; {first}{others}"
    )
}

fn access_line(access: mem::Access) -> String {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    format!(
        "{}: {}",
        if root { "as root" } else { "without root" },
        access.describe()
    )
}

fn side_by_side(runs: &[Run], frames: bool) -> String {
    let mut s = String::new();
    let n = runs.first().map(|r| r.summary.processes).unwrap_or(0);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "== side by side: Σ PSS = physical memory charged to the {n} workers; anon/proc = private copies per process{}",
        if frames { "; phys = distinct frames" } else { "" }
    );
    let per = if frames { 3 } else { 2 };
    let mut head2 = vec!["segment".to_string()];
    for _ in runs {
        head2.push("Σ PSS".into());
        head2.push("anon/proc".into());
        if frames {
            head2.push("phys".into());
        }
    }
    let mut rows = vec![head2];
    let kinds: BTreeSet<SegmentKind> = runs
        .iter()
        .flat_map(|r| r.summary.kinds.keys().copied())
        .collect();
    let page = mem::page_size() as u64;
    let cells = |c: Option<&Combined>| -> Vec<String> {
        let mut v = match c {
            Some(c) => vec![
                kib_f(c.sum.pss),
                per_process(c.per_process.iter().map(|u| u.anon)),
            ],
            None => vec!["-".into(), "-".into()],
        };
        if frames {
            v.push(
                c.and_then(|c| c.frames)
                    .map(|f| kib(f * page))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        v
    };
    for k in kinds {
        let mut row = vec![k.name().to_string()];
        for r in runs {
            row.extend(cells(r.summary.kinds.get(&k)));
        }
        rows.push(row);
    }
    let mut row = vec!["total".to_string()];
    for r in runs {
        row.extend(cells(Some(&r.summary.total)));
    }
    rows.push(row);
    // One centred `── name ──` over each loader's columns.
    let w = widths(&rows);
    let mut groups = format!("   {}", " ".repeat(w.first().copied().unwrap_or(0)));
    for (i, r) in runs.iter().enumerate() {
        let cols = &w[(1 + i * per).min(w.len())..(1 + (i + 1) * per).min(w.len())];
        let span = cols.iter().sum::<usize>() + 2 * cols.len().saturating_sub(1);
        let name = format!(" {} ", r.method.name());
        let fill = span.saturating_sub(name.chars().count());
        let _ = write!(
            groups,
            "  {}{name}{}",
            "─".repeat(fill / 2),
            "─".repeat(fill - fill / 2)
        );
    }
    s.push_str(&groups);
    s.push('\n');
    s.push_str(&table(&rows, "   "));
    let find = |m: Method| runs.iter().find(|r| r.method == m);
    let max_anon = |r: &Run| {
        r.summary
            .total
            .per_process
            .iter()
            .map(|u| u.anon)
            .max()
            .unwrap_or(0)
    };
    if let (Some(so), Some(dl)) = (find(Method::Soloader), find(Method::Dlopen)) {
        let (a, b) = (max_anon(so), max_anon(dl));
        let _ = writeln!(
            s,
            "   soloader vs dlopen: {} vs {} private per process ({}); {} vs {} Σ PSS",
            kib(a),
            kib(b),
            if a <= b {
                "soloader pays no more than glibc"
            } else {
                "soloader pays MORE than glibc"
            },
            kib_f(so.summary.total.sum.pss),
            kib_f(dl.summary.total.sum.pss)
        );
        if let Some(text) = so.summary.kinds.get(&SegmentKind::Text) {
            if let (Some(f), copies) = file_frames(so, SegmentKind::Text) {
                let _ = writeln!(
                    s,
                    "   soloader's text: {} in {} for {} processes",
                    kib(f * page),
                    if copies <= 1 {
                        "one physical copy".to_string()
                    } else {
                        format!("up to {copies} copies of a page")
                    },
                    text.mapped_by
                );
            }
        }
    }
    if let Some(rd) = find(Method::Read) {
        let _ = writeln!(
            s,
            "   read: {} per process, {} in all: every process holds its own copy of the whole file",
            kib(max_anon(rd)),
            kib_f(rd.summary.total.sum.pss)
        );
    }
    s
}

// ---------------------------------------------------------------------------
// JSON

/// A JSON value, written by hand (stable key order, no dependency).
enum J {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

impl J {
    fn write(&self, out: &mut String, indent: usize) {
        let pad = |n: usize| "  ".repeat(n);
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            J::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f:.1}");
            }
            J::Float(_) => out.push_str("null"),
            J::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        '\r' => out.push_str("\\r"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            J::Arr(v) if v.is_empty() => out.push_str("[]"),
            J::Arr(v) if v.iter().all(|x| matches!(x, J::Int(_) | J::Float(_))) => {
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    x.write(out, indent);
                }
                out.push(']');
            }
            J::Arr(v) => {
                out.push_str("[\n");
                for (i, x) in v.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    x.write(out, indent + 1);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
            J::Obj(v) if v.is_empty() => out.push_str("{}"),
            J::Obj(v) => {
                out.push_str("{\n");
                for (i, (k, x)) in v.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    let _ = write!(out, "\"{k}\": ");
                    x.write(out, indent + 1);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push('}');
            }
        }
    }
}

fn ju(v: u64) -> J {
    J::Int(i128::from(v))
}

fn jhex(v: usize) -> J {
    J::Str(format!("{v:#x}"))
}

fn usage_json(u: &Usage) -> Vec<(&'static str, J)> {
    vec![
        ("vsz", ju(u.vsz)),
        ("rss", ju(u.rss)),
        ("pss", J::Float(u.pss)),
        ("private", ju(u.private)),
        ("shared", ju(u.shared)),
        ("anon", ju(u.anon)),
        ("file", ju(u.file)),
        ("swap", ju(u.swap)),
        ("zero_page", ju(u.zero_page)),
        ("soft_dirty", ju(u.soft_dirty)),
        (
            "smaps",
            J::Obj(vec![
                ("rss", ju(u.smaps.rss)),
                ("pss", ju(u.smaps.pss)),
                ("shared_clean", ju(u.smaps.shared_clean)),
                ("shared_dirty", ju(u.smaps.shared_dirty)),
                ("private_clean", ju(u.smaps.private_clean)),
                ("private_dirty", ju(u.smaps.private_dirty)),
                ("anonymous", ju(u.smaps.anonymous)),
                ("swap", ju(u.smaps.swap)),
                ("vmas", ju(u.smaps.vmas as u64)),
                ("partial_vmas", ju(u.smaps.partial as u64)),
            ]),
        ),
    ]
}

fn combined_json(run: &Run, kind: Option<SegmentKind>, c: &Combined) -> J {
    let page = mem::page_size() as u64;
    let mut v = vec![(
        "kind",
        J::Str(kind.map(|k| k.name()).unwrap_or("total").to_string()),
    )];
    v.push(("processes_mapping", ju(c.mapped_by as u64)));
    v.extend(usage_json(&c.sum));
    let col = |f: &dyn Fn(&Usage) -> u64| J::Arr(c.per_process.iter().map(|u| ju(f(u))).collect());
    v.push((
        "per_process",
        J::Obj(vec![
            ("vsz", col(&|u| u.vsz)),
            ("rss", col(&|u| u.rss)),
            (
                "pss",
                J::Arr(c.per_process.iter().map(|u| J::Float(u.pss)).collect()),
            ),
            ("private", col(&|u| u.private)),
            ("anon", col(&|u| u.anon)),
            ("smaps_rss", col(&|u| u.smaps.rss)),
            ("smaps_pss", col(&|u| u.smaps.pss)),
        ]),
    ));
    v.push(("frames", c.frames.map(ju).unwrap_or(J::Null)));
    v.push(("phys", c.frames.map(|f| ju(f * page)).unwrap_or(J::Null)));
    v.push(("file_pages", ju(c.file_pages)));
    v.push(("max_copies", c.max_copies.map(ju).unwrap_or(J::Null)));
    match written_match(run, kind) {
        Some((ok, bytes)) => {
            v.push(("written", J::Arr(bytes.into_iter().map(ju).collect())));
            v.push(("written_match", J::Bool(ok)));
        }
        None => {
            v.push(("written", J::Null));
            v.push(("written_match", J::Null));
        }
    }
    v.push((
        "verdict",
        J::Str(match kind {
            Some(k) => verdict(run, k, c),
            None => total_verdict(run),
        }),
    ));
    J::Obj(v)
}

fn json(setup: &Setup, size: u64, runs: &[Run]) -> String {
    let (lib, procs, call) = (setup.lib, setup.procs, setup.call);
    let access = runs.first().map(|r| r.summary.access).unwrap_or_default();
    let call_j = match call.split_first() {
        None => J::Null,
        Some((sym, args)) => J::Obj(vec![
            ("symbol", J::Str(sym.clone())),
            (
                "args",
                J::Arr(
                    args.iter()
                        .map(|a| J::Int(i128::from(parse_int(a).unwrap_or(0))))
                        .collect(),
                ),
            ),
        ]),
    };
    let runs_j = runs
        .iter()
        .map(|run| {
            let workers = run
                .pids
                .iter()
                .zip(&run.reports)
                .zip(&run.measurements)
                .map(|((pid, r), m)| {
                    J::Obj(vec![
                        ("pid", J::Int(i128::from(*pid))),
                        (
                            "result",
                            r.result.map(|v| J::Int(i128::from(v))).unwrap_or(J::Null),
                        ),
                        (
                            "regions",
                            J::Arr(
                                r.regions
                                    .iter()
                                    .map(|x| {
                                        J::Obj(vec![
                                            ("kind", J::Str(x.kind.name().into())),
                                            ("start", jhex(x.range.start)),
                                            ("end", jhex(x.range.end)),
                                            (
                                                "file_offset",
                                                x.file_offset.map(ju).unwrap_or(J::Null),
                                            ),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                        (
                            "notes",
                            J::Arr(r.notes.iter().map(|n| J::Str(n.clone())).collect()),
                        ),
                        (
                            "written_pages",
                            r.written
                                .as_ref()
                                .map(|w| ju(w.len() as u64))
                                .unwrap_or(J::Null),
                        ),
                        (
                            "rollup",
                            m.rollup
                                .as_ref()
                                .map(|ro| {
                                    J::Obj(vec![
                                        ("rss", ju(ro.fields.bytes("Rss"))),
                                        ("pss", ju(ro.fields.bytes("Pss"))),
                                    ])
                                })
                                .unwrap_or(J::Null),
                        ),
                    ])
                })
                .collect();
            J::Obj(vec![
                ("loader", J::Str(run.method.name().into())),
                ("workers", J::Arr(workers)),
                ("unchecked_processes", ju(run.others.unreadable as u64)),
                (
                    "other_mappers",
                    J::Arr(
                        run.others
                            .found
                            .iter()
                            .map(|m| {
                                J::Obj(vec![
                                    ("pid", J::Int(i128::from(m.pid))),
                                    ("comm", J::Str(m.comm.clone())),
                                    ("vmas", ju(m.vmas as u64)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                (
                    "segments",
                    J::Arr(
                        run.summary
                            .kinds
                            .iter()
                            .map(|(k, c)| combined_json(run, Some(*k), c))
                            .collect(),
                    ),
                ),
                ("total", combined_json(run, None, &run.summary.total)),
            ])
        })
        .collect();
    let doc = J::Obj(vec![
        ("schema", J::Str("soloader-rss/1".into())),
        (
            "library",
            J::Obj(vec![
                ("path", J::Str(lib.display().to_string())),
                ("size", ju(size)),
            ]),
        ),
        ("procs", ju(u64::from(procs))),
        ("fork", J::Bool(setup.fork)),
        ("page_size", ju(mem::page_size() as u64)),
        (
            "access",
            J::Obj(vec![
                ("pfn", J::Bool(access.pfn)),
                ("kpagecount", J::Bool(access.kpagecount)),
                ("kpageflags", J::Bool(access.kpageflags)),
                (
                    "pss",
                    J::Str(if access.exact_pss() { "pages" } else { "smaps" }.into()),
                ),
            ]),
        ),
        ("call", call_j),
        ("runs", J::Arr(runs_j)),
    ]);
    let mut out = String::new();
    doc.write(&mut out, 0);
    out.push('\n');
    out
}
