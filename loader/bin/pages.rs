//! `soloader pages LIB [--call SYMBOL [ARG...]] [--svg FILE] [--json]`: a
//! page-by-page map of every segment of LIB at three moments of a real
//! load: right after mapping, after relocation, and after the call (or,
//! without `--call`, once loaded, constructors run).
//!
//! The first two moments are taken by a trace sink, inside the load: when
//! the `Mapped` event of the library arrives (the segments are mapped,
//! nothing relocated yet) and when its `Relro` event arrives (relocation
//! done; for a library without RELRO, at the first `Init` or `Loaded`
//! event). The third is taken by the command itself.
//!
//! Each page's state comes from `/proc/self/pagemap` (bit 63 present, 62
//! swapped, 61 file page or shared anonymous, 56 mapped exactly once) and,
//! when readable (root), `/proc/kpagecount` for how many page tables in the
//! whole system map that physical page, read with `soloader::mem`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context};
use soloader::inspect::{inspect, Inspection};
use soloader::mem::{KpageCount, Pagemap};
use soloader::{Event, Library, Options, TraceSink};

use crate::call::Ret;
use crate::inspect::{size, Json};
use crate::trace::CallSpec;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  soloader pages target/testlibs/libbigtext.so --call bigtext_run 1024
  soloader pages libz.so.1 --call zlibVersion --ret str --svg libz-pages.svg")]
pub struct Args {
    /// The library: a path, or a name such as `libz.so.1` searched for the
    /// way dlopen does.
    lib: PathBuf,
    /// After the load, call SYMBOL with the arguments that follow, as
    /// `soloader call` does; the third moment is after this call.
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
    /// Also write the map as an SVG picture to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Pages per line of text.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=512))]
    width: u16,
    /// Search DIR for the library and its dependencies, instead of
    /// LD_LIBRARY_PATH (repeatable).
    #[arg(long = "library-path", value_name = "DIR")]
    library_path: Vec<PathBuf>,
    /// Share relocated pages between processes through a cache in DIR
    /// (the library gets a fixed, predictable address: no ASLR for it).
    #[arg(long = "relocation-cache", value_name = "DIR")]
    relocation_cache: Option<PathBuf>,
}

const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;
const EXCLUSIVE: u64 = 1 << 56;

/// What a page is, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum State {
    /// No page table entry: never touched (or reclaimed).
    NotResident,
    /// Swapped out.
    Swapped,
    /// A page-cache page of the file, mapped read-only/clean: shared.
    Cache,
    /// An anonymous page in the file-backed part: copy-on-write happened.
    PrivateCopy,
    /// An anonymous page past the file (`.bss`) that was written.
    DirtyAnon,
    /// The shared zero page (anonymous memory read but never written).
    ZeroPage,
}

impl State {
    const ALL: [State; 6] = [
        State::NotResident,
        State::Cache,
        State::PrivateCopy,
        State::DirtyAnon,
        State::ZeroPage,
        State::Swapped,
    ];

    fn name(self) -> &'static str {
        match self {
            State::NotResident => "not resident",
            State::Swapped => "swapped",
            State::Cache => "page cache",
            State::PrivateCopy => "private copy",
            State::DirtyAnon => "dirty anonymous",
            State::ZeroPage => "zero page",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            State::NotResident => {
                ".    not resident: no page table entry yet; the first touch faults it in (lazy)"
            }
            State::Cache => {
                "1-9  resident, the page cache's own page (clean, shared with every process\n     \
                 mapping the file); the digit is how many page tables map it system-wide\n     \
                 (+ for 10 or more; * for more than one when /proc/kpagecount is unreadable)"
            }
            State::PrivateCopy => {
                "P    private copy: a write (relocation, .bss zeroing, the program) made\n     \
                 copy-on-write give this process its own dirty copy of the file page"
            }
            State::DirtyAnon => "D    dirty anonymous page (.bss past the file, written)",
            State::ZeroPage => "z    the shared zero page (.bss read but never written)",
            State::Swapped => "s    swapped out",
        }
    }

    /// One line, for the SVG legend.
    fn short_legend(self) -> &'static str {
        match self {
            State::NotResident => {
                "not resident: no page table entry yet (lazy: faults in on first touch)"
            }
            State::Cache => {
                "the page cache's own page: clean, shared with every process mapping the file"
            }
            State::PrivateCopy => {
                "private copy: written, so copy-on-write gave this process its own page"
            }
            State::DirtyAnon => "dirty anonymous page (.bss past the file, written)",
            State::ZeroPage => "the shared zero page (.bss read, never written)",
            State::Swapped => "swapped out",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            State::NotResident => "#e4e4e4",
            State::Swapped => "#9b59b6",
            State::Cache => "#3b82c4",
            State::PrivateCopy => "#f39c12",
            State::DirtyAnon => "#d62728",
            State::ZeroPage => "#f7e08a",
        }
    }
}

/// One page at one moment: its raw pagemap entry and map count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    pub raw: u64,
    /// From `/proc/kpagecount`, when readable.
    pub mapcount: Option<u64>,
}

impl Page {
    fn state(&self, file_part: bool) -> State {
        let r = self.raw;
        if r & PRESENT == 0 {
            return if r & SWAPPED != 0 {
                State::Swapped
            } else {
                State::NotResident
            };
        }
        if r & FILE_OR_SHARED != 0 {
            State::Cache
        } else if file_part {
            State::PrivateCopy
        } else if r & EXCLUSIVE != 0 {
            State::DirtyAnon
        } else {
            State::ZeroPage
        }
    }

    fn char(&self, file_part: bool) -> char {
        match self.state(file_part) {
            State::NotResident => '.',
            State::Swapped => 's',
            State::PrivateCopy => 'P',
            State::DirtyAnon => 'D',
            State::ZeroPage => 'z',
            State::Cache => match self.mapcount {
                Some(n @ 1..=9) => char::from(b'0' + n as u8),
                Some(0) => '1',
                Some(_) => '+',
                None if self.raw & EXCLUSIVE != 0 => '1',
                None => '*',
            },
        }
    }

    fn describe(&self, file_part: bool) -> String {
        let s = self.state(file_part);
        let mut d = s.name().to_string();
        if s != State::NotResident {
            if let Some(n) = self.mapcount {
                let _ = write!(
                    d,
                    ", mapped by {n} page table{}",
                    if n == 1 { "" } else { "s" }
                );
            } else if self.raw & EXCLUSIVE != 0 {
                d.push_str(", mapped once (exclusive)");
            }
        }
        d
    }
}

/// A uniform part of a segment: its file-backed pages or its anonymous
/// `.bss` pages.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub segment: usize,
    pub prot: String,
    /// Link-time start (page-aligned) and page count.
    pub vaddr: u64,
    pub pages: usize,
    pub file: bool,
    /// File offset of the first page, for a file part.
    pub offset: u64,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// The parts of every segment, from the file's inspection.
pub(crate) fn parts(i: &Inspection) -> Vec<Part> {
    let page = page_size();
    let mut v = Vec::new();
    for s in &i.segments {
        let start = s.vaddr & !(page - 1);
        if s.file_backed > 0 {
            v.push(Part {
                segment: s.index,
                prot: s.prot.clone(),
                vaddr: start,
                pages: (s.file_backed / page) as usize,
                file: true,
                offset: s.offset & !(page - 1),
            });
        }
        if s.anonymous > 0 {
            v.push(Part {
                segment: s.index,
                prot: s.prot.clone(),
                vaddr: start + s.file_backed,
                pages: (s.anonymous / page) as usize,
                file: false,
                offset: 0,
            });
        }
    }
    v
}

/// `/proc/self/pagemap` and, if readable, `/proc/kpagecount`, through
/// `soloader::mem`.
pub(crate) struct PageReader {
    pagemap: Pagemap,
    kpagecount: Option<KpageCount>,
    page: u64,
}

impl PageReader {
    pub(crate) fn open() -> anyhow::Result<PageReader> {
        let pagemap = Pagemap::open(std::process::id() as i32)?;
        Ok(PageReader {
            pagemap,
            kpagecount: KpageCount::open().ok(),
            page: page_size(),
        })
    }

    pub(crate) fn counts_readable(&self) -> bool {
        self.kpagecount.is_some()
    }

    /// The entries of `count` pages from `addr` (page-aligned). If pagemap
    /// cannot be read, every page reads as not present.
    pub(crate) fn read(&self, addr: u64, count: usize) -> Vec<Page> {
        let start = addr as usize;
        let end = start.saturating_add(count.saturating_mul(self.page as usize));
        let infos = self.pagemap.read(start..end).unwrap_or_default();
        let mut pages: Vec<Page> = infos
            .iter()
            .take(count)
            .map(|info| Page {
                raw: info.raw,
                mapcount: match (&self.kpagecount, info.pfn()) {
                    (Some(k), Some(pfn)) => k.get(pfn).ok(),
                    _ => None,
                },
            })
            .collect();
        pages.resize(
            count,
            Page {
                raw: 0,
                mapcount: None,
            },
        );
        pages
    }
}

/// Every part's pages at one moment.
pub(crate) type Snapshot = Vec<Vec<Page>>;

fn snapshot(reader: &PageReader, base: usize, parts: &[Part]) -> Snapshot {
    parts
        .iter()
        .map(|p| reader.read(base as u64 + p.vaddr, p.pages))
        .collect()
}

/// The trace sink that takes the first two snapshots inside the load.
struct PageSink {
    reader: PageReader,
    parts: Vec<Part>,
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    root: Option<(PathBuf, usize)>,
    mapped: Option<Snapshot>,
    relocated: Option<Snapshot>,
    relocated_at: Option<&'static str>,
    pages_written: BTreeSet<usize>,
}

impl TraceSink for PageSink {
    fn event(&self, event: &Event) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            // An undone attempt: the next one maps the library again.
            Event::Deferred { .. } => {
                st.root = None;
                st.mapped = None;
                st.pages_written.clear();
            }
            Event::Mapped { path, base, .. } if st.root.is_none() => {
                st.root = Some((path.clone(), *base));
                st.mapped = Some(snapshot(&self.reader, *base, &self.parts));
            }
            Event::Relocations { path, pages, .. }
                if st.root.as_ref().is_some_and(|r| &r.0 == path) =>
            {
                st.pages_written.extend(pages.iter().copied());
            }
            Event::Relro { path, .. } | Event::Init { path, .. } | Event::Loaded { path, .. }
                if st.relocated.is_none() =>
            {
                let Some((root, base)) = st.root.clone() else {
                    return;
                };
                let when = match event {
                    Event::Relro { .. } if root == *path => "RELRO protected",
                    Event::Relro { .. } => return,
                    Event::Init { .. } => "before the first constructor",
                    _ => "loaded",
                };
                st.relocated = Some(snapshot(&self.reader, base, &self.parts));
                st.relocated_at = Some(when);
            }
            _ => {}
        }
    }
}

/// Everything `pages` found.
pub(crate) struct PageMap {
    pub path: PathBuf,
    pub base: usize,
    pub parts: Vec<Part>,
    pub moments: Vec<String>,
    pub snaps: Vec<Snapshot>,
    pub counts_readable: bool,
    /// Link-time pages relocation wrote.
    pub relocated: Vec<u64>,
    pub call: Option<(String, Option<String>)>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = CallSpec::parse(args.call.as_deref(), args.ret)?;
    let path = crate::inspect::resolve(&args.lib, &args.library_path)?;
    let mut options = Options::new();
    if !args.library_path.is_empty() {
        options = options.library_path(args.library_path.clone());
    }
    if let Some(dir) = &args.relocation_cache {
        options = options.relocation_cache(dir);
    }
    let map = collect(&path, options, spec.as_ref())?;
    let mut out = std::io::stdout().lock();
    let text = if args.json {
        let mut s = to_json(&map).render();
        s.push('\n');
        s
    } else {
        render(&map, usize::from(args.width))
    };
    out.write_all(text.as_bytes())
        .context("writing to stdout")?;
    if let Some(svg_path) = &args.svg {
        std::fs::write(svg_path, svg(&map))
            .with_context(|| format!("writing {}", svg_path.display()))?;
        if !args.json {
            writeln!(out, "\nwrote {}", svg_path.display()).context("writing to stdout")?;
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// Loads `path`, snapshots its pages at the three moments, closes it.
pub(crate) fn collect(
    path: &Path,
    options: Options,
    spec: Option<&CallSpec>,
) -> anyhow::Result<PageMap> {
    let info = inspect(path)?;
    let parts = parts(&info);
    let sink = Arc::new(PageSink {
        reader: PageReader::open()?,
        parts: parts.clone(),
        state: Mutex::new(SinkState::default()),
    });
    let lib = Library::open_with(path, &options.trace(sink.clone()))?;
    let mut call = None;
    let third = match spec {
        Some(spec) => {
            let v = spec.invoke(&lib)?;
            let what = spec.display();
            call = Some((what.clone(), v));
            format!("after {what}")
        }
        None => "loaded (constructors run)".to_string(),
    };
    let last = snapshot(&sink.reader, lib.base(), &parts);
    let st = std::mem::take(&mut *sink.state.lock().unwrap_or_else(PoisonError::into_inner));
    let (Some((_, base)), Some(mapped), Some(relocated)) = (st.root, st.mapped, st.relocated)
    else {
        bail!(
            "{}: the load did not report its mapping (already loaded?)",
            path.display()
        );
    };
    if base != lib.base() {
        bail!("{}: the first library mapped is not LIB", path.display());
    }
    let counts_readable = sink.reader.counts_readable();
    lib.close()?;
    Ok(PageMap {
        path: path.to_path_buf(),
        base,
        parts,
        moments: vec![
            "right after mapping".to_string(),
            format!(
                "after relocation ({})",
                st.relocated_at.unwrap_or("relocated")
            ),
            third,
        ],
        snaps: vec![mapped, relocated, last],
        counts_readable,
        relocated: st
            .pages_written
            .iter()
            .map(|p| p.wrapping_sub(base) as u64)
            .collect(),
        call,
    })
}

fn part_label(p: &Part) -> String {
    let page = page_size();
    if p.file {
        format!(
            "segment {} {} vaddr {:#x}..{:#x}: file offset {:#x}, {} page{}",
            p.segment,
            p.prot,
            p.vaddr,
            p.vaddr + p.pages as u64 * page,
            p.offset,
            p.pages,
            if p.pages == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "segment {} {} vaddr {:#x}..{:#x}: .bss, anonymous, {} page{}",
            p.segment,
            p.prot,
            p.vaddr,
            p.vaddr + p.pages as u64 * page,
            p.pages,
            if p.pages == 1 { "" } else { "s" }
        )
    }
}

/// The state letters of part `k` at moment `m`.
fn row(map: &PageMap, m: usize, k: usize) -> String {
    let file = map.parts[k].file;
    map.snaps[m][k].iter().map(|p| p.char(file)).collect()
}

/// Pages per state, per moment.
fn totals(map: &PageMap) -> Vec<Vec<usize>> {
    map.snaps
        .iter()
        .map(|snap| {
            State::ALL
                .iter()
                .map(|s| {
                    snap.iter()
                        .zip(&map.parts)
                        .map(|(pages, part)| {
                            pages.iter().filter(|p| p.state(part.file) == *s).count()
                        })
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// The text map.
pub(crate) fn render(map: &PageMap, width: usize) -> String {
    let mut o = String::new();
    let page = page_size();
    let _ = writeln!(
        o,
        "soloader pages: {} at base {:#x}, page size {}",
        map.path.display(),
        map.base,
        size(page)
    );
    let letters = ['A', 'B', 'C'];
    for (l, m) in letters.iter().zip(&map.moments) {
        let _ = writeln!(o, "  {l} = {m}");
    }
    if let Some((what, Some(v))) = &map.call {
        let _ = writeln!(o, "  {what} returned {v}");
    }
    let _ = writeln!(o);
    for s in State::ALL {
        for line in s.legend().lines() {
            let _ = writeln!(o, "  {line}");
        }
    }
    if !map.counts_readable {
        let _ = writeln!(
            o,
            "  (/proc/kpagecount is not readable: run as root for exact map counts)"
        );
    }
    for (k, part) in map.parts.iter().enumerate() {
        let _ = writeln!(o);
        let _ = writeln!(o, "{}", part_label(part));
        let rows: Vec<String> = (0..map.snaps.len()).map(|m| row(map, m, k)).collect();
        let chunks = part.pages.div_ceil(width);
        let mut prev: Option<Vec<&str>> = None;
        let mut repeated = 0usize;
        let mut repeat_from = 0usize;
        for c in 0..chunks {
            let lo = c * width;
            let hi = (lo + width).min(part.pages);
            let cur: Vec<&str> = rows.iter().map(|r| &r[lo..hi]).collect();
            if prev.as_ref() == Some(&cur) && hi - lo == width {
                if repeated == 0 {
                    repeat_from = lo;
                }
                repeated += 1;
                continue;
            }
            if repeated > 0 {
                let _ = writeln!(
                    o,
                    "  pages {repeat_from}..{lo}: {repeated} more row{} like the one above",
                    if repeated == 1 { "" } else { "s" }
                );
                repeated = 0;
            }
            for (m, r) in cur.iter().enumerate() {
                if m == 0 {
                    let _ = writeln!(o, "  {lo:>5}  {} {r}", letters[m]);
                } else {
                    let _ = writeln!(o, "         {} {r}", letters[m]);
                }
            }
            prev = Some(cur);
        }
        if repeated > 0 {
            let _ = writeln!(
                o,
                "  pages {repeat_from}..{}: {repeated} more row{} like the one above",
                part.pages,
                if repeated == 1 { "" } else { "s" }
            );
        }
    }
    let _ = writeln!(o);
    let t = totals(map);
    let _ = writeln!(
        o,
        "  {:<15} {:>5}    {:>5}    {:>5}",
        "pages", "A", "B", "C"
    );
    for (i, s) in State::ALL.iter().enumerate() {
        if t.iter().all(|m| m[i] == 0) {
            continue;
        }
        let _ = writeln!(
            o,
            "  {:<15} {:>5}    {:>5}    {:>5}",
            s.name(),
            t[0][i],
            t[1][i],
            t[2][i]
        );
    }
    if !map.relocated.is_empty() {
        let _ = writeln!(
            o,
            "relocation wrote {} page{}: vaddr {}",
            map.relocated.len(),
            if map.relocated.len() == 1 { "" } else { "s" },
            map.relocated
                .iter()
                .map(|p| format!("{p:#x}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    o
}

/// The map as JSON: per part, one state string per moment.
pub(crate) fn to_json(map: &PageMap) -> Json {
    let parts = map
        .parts
        .iter()
        .enumerate()
        .map(|(k, p)| {
            Json::obj([
                ("segment", Json::num(p.segment as u64)),
                ("kind", Json::str(if p.file { "file" } else { "anonymous" })),
                ("prot", Json::str(&p.prot)),
                ("vaddr", Json::hex(p.vaddr)),
                ("pages", Json::num(p.pages as u64)),
                (
                    "states",
                    Json::Arr(
                        (0..map.snaps.len())
                            .map(|m| Json::str(row(map, m, k)))
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    Json::obj([
        ("library", Json::str(map.path.to_string_lossy())),
        ("base", Json::hex(map.base as u64)),
        ("page_size", Json::num(page_size())),
        ("kpagecount", Json::Bool(map.counts_readable)),
        (
            "moments",
            Json::Arr(map.moments.iter().map(Json::str).collect()),
        ),
        ("parts", Json::Arr(parts)),
        (
            "relocated_pages",
            Json::Arr(map.relocated.iter().map(|p| Json::hex(*p)).collect()),
        ),
        (
            "call",
            match &map.call {
                Some((what, v)) => Json::obj([
                    ("call", Json::str(what)),
                    ("result", Json::opt_str(v.as_deref())),
                ]),
                None => Json::Null,
            },
        ),
    ])
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// The map as an SVG picture: one cell per page, one colour per state,
/// the three moments side by side, every part labelled.
pub(crate) fn svg(map: &PageMap) -> String {
    const CELL: usize = 10;
    const GAP: usize = 1;
    const COLS: usize = 32;
    const PANEL_GAP: usize = 30;
    const MARGIN: usize = 20;
    const LABEL_H: usize = 30;
    let page = page_size();
    let panel_w = COLS * (CELL + GAP);
    let legend_h = 30 + 18 * State::ALL.len();
    let head_h = 50;
    let parts_h: usize = map
        .parts
        .iter()
        .map(|p| LABEL_H + p.pages.div_ceil(COLS) * (CELL + GAP) + 10)
        .sum();
    let width = 2 * MARGIN + 3 * panel_w + 2 * PANEL_GAP;
    let height = MARGIN + head_h + legend_h + 30 + parts_h + MARGIN;
    let mut o = String::new();
    let _ = writeln!(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        o,
        "<title>soloader pages: {}</title>",
        xml_escape(&map.path.to_string_lossy())
    );
    let _ = writeln!(
        o,
        "<rect class=\"background\" x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    let mut y = MARGIN + 16;
    let _ = writeln!(
        o,
        "<text x=\"{MARGIN}\" y=\"{y}\" font-size=\"16\" font-weight=\"bold\">{}</text>",
        xml_escape(&format!(
            "{}: page by page, at three moments of a real load",
            map.path.display()
        ))
    );
    y += 20;
    let _ = writeln!(
        o,
        "<text x=\"{MARGIN}\" y=\"{y}\">{}</text>",
        xml_escape(&format!(
            "base {:#x}, page size {}; one cell per page, {COLS} pages per row; a digit: how many page tables map that page; hover a cell for details",
            map.base,
            size(page)
        ))
    );
    y += 24;
    for (i, s) in State::ALL.iter().enumerate() {
        let ly = y + i * 18;
        let _ = writeln!(
            o,
            "<rect class=\"legend\" x=\"{MARGIN}\" y=\"{ly}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\" stroke=\"#888\" stroke-width=\"0.5\"/>",
            s.colour()
        );
        let text = s.short_legend();
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            MARGIN + CELL + 8,
            ly + CELL - 1,
            xml_escape(text)
        );
    }
    y += legend_h;
    for (m, moment) in map.moments.iter().enumerate() {
        let x = MARGIN + m * (panel_w + PANEL_GAP);
        let _ = writeln!(
            o,
            "<text x=\"{x}\" y=\"{y}\" font-size=\"14\" font-weight=\"bold\">{}</text>",
            xml_escape(&format!("{}. {moment}", m + 1))
        );
    }
    y += 14;
    for (k, part) in map.parts.iter().enumerate() {
        let label_y = y + 18;
        for m in 0..map.snaps.len() {
            let x0 = MARGIN + m * (panel_w + PANEL_GAP);
            let _ = writeln!(
                o,
                "<text x=\"{x0}\" y=\"{label_y}\" font-size=\"11\">{}</text>",
                xml_escape(&format!(
                    "seg {} {} {} ({} p.)",
                    part.segment,
                    part.prot,
                    if part.file { "file" } else { ".bss anon" },
                    part.pages
                ))
            );
            let y0 = y + LABEL_H;
            for (n, p) in map.snaps[m][k].iter().enumerate() {
                let cx = x0 + (n % COLS) * (CELL + GAP);
                let cy = y0 + (n / COLS) * (CELL + GAP);
                let st = p.state(part.file);
                let vaddr = part.vaddr + n as u64 * page;
                let _ = writeln!(
                    o,
                    "<rect class=\"page\" x=\"{cx}\" y=\"{cy}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\"><title>{}</title></rect>",
                    st.colour(),
                    xml_escape(&format!(
                        "segment {} page {n} (vaddr {vaddr:#x}, address {:#x}): {}",
                        part.segment,
                        map.base as u64 + vaddr,
                        p.describe(part.file)
                    ))
                );
                // How many page tables map a shared page, when known.
                if let (State::Cache, Some(count @ 2..)) = (st, p.mapcount) {
                    let label = if count > 9 {
                        "+".to_string()
                    } else {
                        count.to_string()
                    };
                    let _ = writeln!(
                        o,
                        "<text class=\"count\" x=\"{}\" y=\"{}\" font-size=\"8\" fill=\"#ffffff\" text-anchor=\"middle\" pointer-events=\"none\">{label}</text>",
                        cx + CELL / 2,
                        cy + CELL - 2
                    );
                }
            }
        }
        y += LABEL_H + part.pages.div_ceil(COLS) * (CELL + GAP) + 10;
    }
    let _ = writeln!(o, "</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_pages() {
        let p = |raw| Page {
            raw,
            mapcount: None,
        };
        assert_eq!(p(0).state(true), State::NotResident);
        assert_eq!(p(PRESENT | FILE_OR_SHARED).state(true), State::Cache);
        assert_eq!(p(PRESENT | EXCLUSIVE).state(true), State::PrivateCopy);
        assert_eq!(p(PRESENT | EXCLUSIVE).state(false), State::DirtyAnon);
        assert_eq!(p(PRESENT).state(false), State::ZeroPage);
        assert_eq!(p(SWAPPED).state(false), State::Swapped);
        assert_eq!(p(PRESENT | FILE_OR_SHARED | EXCLUSIVE).char(true), '1');
        assert_eq!(p(PRESENT | FILE_OR_SHARED).char(true), '*');
        let q = Page {
            raw: PRESENT | FILE_OR_SHARED,
            mapcount: Some(12),
        };
        assert_eq!(q.char(true), '+');
    }

    #[test]
    fn escapes_xml() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
