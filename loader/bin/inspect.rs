//! `soloader inspect LIB [--json]`: what loading LIB will do, read from the
//! file alone (nothing is mapped the way a load maps, nothing runs).
//!
//! Built on [`soloader::inspect::inspect`]; this file only presents it: the
//! segments and which of their pages will be file-backed (shared with every
//! process mapping the file), zero-filled or anonymous; the dynamic
//! entries; the relocations by type with the pages they will write (and so
//! turn into private copies); symbols, versions, TLS and initialisers.
//!
//! It also holds [`Json`], the small JSON writer `inspect --json` and
//! `trace --json` share.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use soloader::inspect::{inspect, Inspection, SegmentPlan};
use soloader::Options;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  soloader inspect libz.so.1
  soloader inspect target/testlibs/libdata.so --json")]
pub struct Args {
    /// The library: a path, or a name such as `libz.so.1` searched for the
    /// way dlopen does.
    lib: PathBuf,
    /// Print JSON instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Search DIR for the library instead of LD_LIBRARY_PATH (repeatable).
    #[arg(long = "library-path", value_name = "DIR")]
    library_path: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = resolve(&args.lib, &args.library_path)?;
    let i = inspect(&path)?;
    let text = if args.json {
        let mut s = to_json(&i).render();
        s.push('\n');
        s
    } else {
        human(&i)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// The file `lib` names: a path as it is, a bare name searched for as a
/// load would (`soloader::find_library`).
pub(crate) fn resolve(lib: &Path, library_path: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let mut options = Options::new();
    if !library_path.is_empty() {
        options = options.library_path(library_path.to_vec());
    }
    Ok(soloader::find_library(&lib.to_string_lossy(), &options)?)
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

/// `12 KiB`, `1.5 MiB`, `100 B`.
pub(crate) fn size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

const DF: &[(u64, &str)] = &[
    (0x1, "ORIGIN"),
    (0x2, "SYMBOLIC"),
    (0x4, "TEXTREL"),
    (0x8, "BIND_NOW"),
    (0x10, "STATIC_TLS"),
];
const DF_1: &[(u64, &str)] = &[
    (0x1, "NOW"),
    (0x2, "GLOBAL"),
    (0x4, "GROUP"),
    (0x8, "NODELETE"),
    (0x10, "LOADFLTR"),
    (0x20, "INITFIRST"),
    (0x40, "NOOPEN"),
    (0x80, "ORIGIN"),
    (0x100, "DIRECT"),
    (0x400, "INTERPOSE"),
    (0x800, "NODEFLIB"),
    (0x1000, "NODUMP"),
    (0x8000000, "PIE"),
];

/// `BIND_NOW|ORIGIN` for the known bits of `v`, unknown ones in hex.
fn flag_names(v: u64, table: &[(u64, &str)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = v;
    for &(bit, name) in table {
        if v & bit != 0 {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    if parts.is_empty() {
        "0".to_string()
    } else {
        parts.join("|")
    }
}

/// The pages (link-time, page-aligned) of segment `s` a load writes before
/// the library runs: relocation targets and the `.bss` tail page.
fn written_pages(i: &Inspection, s: &SegmentPlan) -> BTreeSet<u64> {
    let page = page_size();
    let start = s.vaddr & !(page - 1);
    let end = start + s.file_backed;
    let mut set: BTreeSet<u64> = i
        .relocations
        .iter()
        .flat_map(|r| r.pages.iter().copied())
        .filter(|p| (start..end).contains(p))
        .collect();
    if s.zeroed_tail > 0 {
        set.insert((s.vaddr + s.filesz) & !(page - 1));
    }
    set
}

/// The human summary.
pub(crate) fn human(i: &Inspection) -> String {
    let page = page_size();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}  ({} file, ELF64 x86-64 shared object)",
        i.path.display(),
        size(i.file_size)
    );
    let _ = writeln!(
        o,
        "soname {}; needs {}",
        i.soname.as_deref().unwrap_or("(none)"),
        if i.needed.is_empty() {
            "nothing".to_string()
        } else {
            i.needed.join(", ")
        }
    );
    if let Some(r) = &i.rpath {
        let _ = writeln!(o, "RPATH {r}");
    }
    if let Some(r) = &i.runpath {
        let _ = writeln!(o, "RUNPATH {r}");
    }
    let _ = writeln!(
        o,
        "flags DT_FLAGS={} DT_FLAGS_1={}",
        flag_names(i.flags.0, DF),
        flag_names(i.flags.1, DF_1)
    );

    // Segments.
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Segments: a load reserves {} of address space for the whole span, then maps",
        size(i.span)
    );
    let _ = writeln!(
        o,
        "each PT_LOAD there from the file, MAP_PRIVATE, with its own protections."
    );
    let _ = writeln!(
        o,
        "  seg  vaddr       memsz       offset      filesz      prot  file-backed  tail-zeroed  anonymous"
    );
    for s in &i.segments {
        let _ = writeln!(
            o,
            "  {:>3}  {:<10}  {:<10}  {:<10}  {:<10}  {:<4}  {:>11}  {:>11}  {:>9}",
            s.index,
            format!("{:#x}", s.vaddr),
            format!("{:#x}", s.memsz),
            format!("{:#x}", s.offset),
            format!("{:#x}", s.filesz),
            s.prot,
            size(s.file_backed),
            size(s.zeroed_tail),
            size(s.anonymous)
        );
    }
    let mut total_file = 0u64;
    let mut total_private = 0usize;
    for s in &i.segments {
        let pages = s.file_backed / page;
        total_file += pages;
        let written = written_pages(i, s);
        total_private += written.len();
        let mut notes: Vec<String> = Vec::new();
        if s.prot.contains('x') {
            notes.push("code: read and executed in place from the page cache".into());
        } else if !s.prot.contains('w') {
            notes.push("read-only data: stays the page cache's pages".into());
        }
        if let Some((v, l)) = s.relro {
            notes.push(format!(
                "RELRO {:#x}..{:#x} ({}): written by relocation, then made read-only",
                v,
                v + l,
                size(l)
            ));
        }
        if s.zeroed_tail > 0 {
            notes.push(format!(
                ".bss starts at {:#x}: the last {} of its file page are zeroed (a write)",
                s.vaddr + s.filesz,
                size(s.zeroed_tail)
            ));
        }
        if s.anonymous > 0 {
            notes.push(format!(
                "{} of anonymous zero pages (.bss): no file, no cost until touched",
                size(s.anonymous)
            ));
        }
        if pages > 0 {
            notes.push(if written.is_empty() {
                format!(
                    "{} file-backed, none written at load: all stay shared",
                    plural(pages as usize, "page", "pages")
                )
            } else {
                format!(
                    "{} file-backed, {} written at load (private copies): {}",
                    plural(pages as usize, "page", "pages"),
                    written.len(),
                    written
                        .iter()
                        .map(|p| format!("{p:#x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            });
        }
        for n in notes {
            let _ = writeln!(o, "       seg {}: {n}", s.index);
        }
    }
    let _ = writeln!(
        o,
        "  => of {} file-backed pages, {} become private copies at load; {} stay shared",
        total_file,
        total_private,
        total_file.saturating_sub(total_private as u64)
    );
    let _ = writeln!(
        o,
        "     with every process that maps this file (until the program writes to them)."
    );

    // Relocations.
    let _ = writeln!(o);
    let total: usize = i.relocations.iter().map(|r| r.count).sum();
    let _ = writeln!(
        o,
        "Relocations: {} of {}, writing {} (each becomes a private copy):",
        plural(total, "relocation", "relocations"),
        plural(i.relocations.len(), "type", "types"),
        plural(i.relocated_pages, "page", "pages")
    );
    for r in &i.relocations {
        let pages: Vec<String> = r.pages.iter().map(|p| format!("{p:#x}")).collect();
        let shown = if pages.len() > 8 {
            format!("{} ... {}", pages[..6].join(" "), pages[pages.len() - 1])
        } else {
            pages.join(" ")
        };
        let _ = writeln!(
            o,
            "  {:<28} {:>6}   {} {}",
            r.kind,
            r.count,
            plural(r.pages.len(), "page: ", "pages:"),
            shown
        );
    }

    // Symbols and the rest.
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Symbols: {} exported (defined global/weak), {} imported (undefined); {} hash table",
        i.exported_symbols, i.imported_symbols, i.hash
    );
    let _ = writeln!(
        o,
        "Versions: {} defined, {} needed",
        i.versions.0, i.versions.1
    );
    match &i.tls {
        Some(t) => {
            let _ = writeln!(
                o,
                "TLS: {} per thread ({} initialised from the file), aligned to {}",
                size(t.memsz),
                size(t.filesz),
                t.align
            );
        }
        None => {
            let _ = writeln!(o, "TLS: none");
        }
    }
    let _ = writeln!(
        o,
        "Constructors: {} (DT_INIT + DT_INIT_ARRAY); destructors: {} (DT_FINI_ARRAY + DT_FINI)",
        i.initialisers, i.finalisers
    );

    // Dynamic section.
    let _ = writeln!(o);
    let _ = writeln!(o, "Dynamic section ({} entries):", i.dynamic.len());
    let mut needed = i.needed.iter();
    for (tag, v) in &i.dynamic {
        let value = match tag.as_str() {
            "DT_NEEDED" => needed.next().cloned().unwrap_or_else(|| format!("{v:#x}")),
            "DT_SONAME" => i.soname.clone().unwrap_or_else(|| format!("{v:#x}")),
            "DT_RPATH" => i.rpath.clone().unwrap_or_else(|| format!("{v:#x}")),
            "DT_RUNPATH" => i.runpath.clone().unwrap_or_else(|| format!("{v:#x}")),
            "DT_FLAGS" => flag_names(*v, DF),
            "DT_FLAGS_1" => flag_names(*v, DF_1),
            "DT_PLTREL" => match v {
                7 => "DT_RELA".to_string(),
                17 => "DT_REL".to_string(),
                _ => format!("{v:#x}"),
            },
            t if ["SZ", "ENT", "NUM", "COUNT"].iter().any(|e| t.ends_with(e)) => v.to_string(),
            _ => format!("{v:#x}"),
        };
        let _ = writeln!(o, "  {tag:<20} {value}");
    }
    o
}

/// The inspection as JSON.
pub(crate) fn to_json(i: &Inspection) -> Json {
    let page = page_size();
    Json::obj([
        ("path", Json::str(i.path.to_string_lossy())),
        ("file_size", Json::num(i.file_size)),
        ("page_size", Json::num(page)),
        ("span", Json::num(i.span)),
        ("soname", Json::opt_str(i.soname.as_deref())),
        (
            "needed",
            Json::Arr(i.needed.iter().map(Json::str).collect()),
        ),
        ("rpath", Json::opt_str(i.rpath.as_deref())),
        ("runpath", Json::opt_str(i.runpath.as_deref())),
        (
            "flags",
            Json::obj([
                ("DT_FLAGS", Json::str(flag_names(i.flags.0, DF))),
                ("DT_FLAGS_1", Json::str(flag_names(i.flags.1, DF_1))),
            ]),
        ),
        (
            "segments",
            Json::Arr(
                i.segments
                    .iter()
                    .map(|s| {
                        let written = written_pages(i, s);
                        Json::obj([
                            ("index", Json::num(s.index as u64)),
                            ("vaddr", Json::hex(s.vaddr)),
                            ("memsz", Json::num(s.memsz)),
                            ("offset", Json::hex(s.offset)),
                            ("filesz", Json::num(s.filesz)),
                            ("prot", Json::str(&s.prot)),
                            ("file_backed", Json::num(s.file_backed)),
                            ("zeroed_tail", Json::num(s.zeroed_tail)),
                            ("anonymous", Json::num(s.anonymous)),
                            (
                                "relro",
                                match s.relro {
                                    Some((v, l)) => {
                                        Json::obj([("vaddr", Json::hex(v)), ("len", Json::num(l))])
                                    }
                                    None => Json::Null,
                                },
                            ),
                            (
                                "pages_written_at_load",
                                Json::Arr(written.iter().map(|p| Json::hex(*p)).collect()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "relocations",
            Json::Arr(
                i.relocations
                    .iter()
                    .map(|r| {
                        Json::obj([
                            ("type", Json::str(&r.kind)),
                            ("count", Json::num(r.count as u64)),
                            (
                                "pages",
                                Json::Arr(r.pages.iter().map(|p| Json::hex(*p)).collect()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("relocated_pages", Json::num(i.relocated_pages as u64)),
        ("exported_symbols", Json::num(i.exported_symbols as u64)),
        ("imported_symbols", Json::num(i.imported_symbols as u64)),
        ("versions_defined", Json::num(i.versions.0 as u64)),
        ("versions_needed", Json::num(i.versions.1 as u64)),
        ("hash", Json::str(i.hash)),
        (
            "tls",
            match &i.tls {
                Some(t) => Json::obj([
                    ("filesz", Json::num(t.filesz)),
                    ("memsz", Json::num(t.memsz)),
                    ("align", Json::num(t.align)),
                ]),
                None => Json::Null,
            },
        ),
        ("initialisers", Json::num(i.initialisers as u64)),
        ("finalisers", Json::num(i.finalisers as u64)),
        (
            "dynamic",
            Json::Arr(
                i.dynamic
                    .iter()
                    .map(|(t, v)| Json::obj([("tag", Json::str(t)), ("value", Json::hex(*v))]))
                    .collect(),
            ),
        ),
    ])
}

/// A JSON value, built in memory and rendered with [`Json::render`]:
/// objects keep their keys in the order given; an array or object holding
/// only scalars is written on one line, anything else one member a line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    #[allow(dead_code)]
    Bool(bool),
    Num(i128),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub(crate) fn str(s: impl AsRef<str>) -> Json {
        Json::Str(s.as_ref().to_string())
    }

    pub(crate) fn opt_str(s: Option<&str>) -> Json {
        s.map_or(Json::Null, Json::str)
    }

    pub(crate) fn num(n: impl Into<i128>) -> Json {
        Json::Num(n.into())
    }

    /// An address or offset, as a `"0x…"` string.
    pub(crate) fn hex(n: impl Into<u128>) -> Json {
        Json::Str(format!("{:#x}", n.into()))
    }

    pub(crate) fn obj<K: Into<String>>(members: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    fn scalar(&self) -> bool {
        !matches!(self, Json::Arr(_) | Json::Obj(_))
    }

    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s, 0);
        s
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Str(s) => quote(out, s),
            Json::Arr(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                } else if items.iter().all(Json::scalar) {
                    out.push('[');
                    for (k, v) in items.iter().enumerate() {
                        if k > 0 {
                            out.push_str(", ");
                        }
                        v.write(out, indent);
                    }
                    out.push(']');
                } else {
                    out.push_str("[\n");
                    for (k, v) in items.iter().enumerate() {
                        push_indent(out, indent + 1);
                        v.write(out, indent + 1);
                        if k + 1 < items.len() {
                            out.push(',');
                        }
                        out.push('\n');
                    }
                    push_indent(out, indent);
                    out.push(']');
                }
            }
            Json::Obj(members) => {
                if members.is_empty() {
                    out.push_str("{}");
                } else if members.iter().all(|(_, v)| v.scalar()) {
                    out.push('{');
                    for (k, (key, v)) in members.iter().enumerate() {
                        if k > 0 {
                            out.push_str(", ");
                        }
                        quote(out, key);
                        out.push_str(": ");
                        v.write(out, indent);
                    }
                    out.push('}');
                } else {
                    out.push_str("{\n");
                    for (k, (key, v)) in members.iter().enumerate() {
                        push_indent(out, indent + 1);
                        quote(out, key);
                        out.push_str(": ");
                        v.write(out, indent + 1);
                        if k + 1 < members.len() {
                            out.push(',');
                        }
                        out.push('\n');
                    }
                    push_indent(out, indent);
                    out.push('}');
                }
            }
        }
    }
}

fn push_indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_renders() {
        let j = Json::obj([
            ("a", Json::num(1u64)),
            ("b", Json::str("x\"y\n\u{1}")),
            ("c", Json::Arr(vec![Json::Null, Json::Bool(true)])),
            ("d", Json::Arr(vec![Json::obj([("e", Json::hex(255u64))])])),
        ]);
        assert_eq!(
            j.render(),
            "{\n  \"a\": 1,\n  \"b\": \"x\\\"y\\n\\u0001\",\n  \"c\": [null, true],\n  \"d\": [\n    {\"e\": \"0xff\"}\n  ]\n}"
        );
    }

    #[test]
    fn sizes_and_flags() {
        assert_eq!(size(100), "100 B");
        assert_eq!(size(12288), "12 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(8 << 20), "8 MiB");
        assert_eq!(flag_names(0x8 | 0x40, DF), "BIND_NOW|0x40");
        assert_eq!(flag_names(0, DF_1), "0");
    }
}
