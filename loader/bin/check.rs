//! `soloader check LIB [--json]`: would LIB load? Everything a load does
//! short of running the library's code — find it, parse and validate every
//! header and table, map it and the dependencies it would load, bind its
//! symbols and apply its relocations — then unmap it all again. No IFUNC
//! resolver, no constructor and no destructor runs, so this is safe on any
//! file (see "Trust model" in the README).
//!
//! Built on [`soloader::check`]. Prints OK with what was mapped and
//! relocated, or fails (exit status 1) with the loader's typed error on one
//! line. `--json` prints `{"ok": …, "error": …}` on stdout either way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use soloader::{Error, Event, Options, VecSink};

#[derive(clap::Args)]
#[command(after_help = "\
Exit status: 0 if LIB would load, 1 if not (the error on stderr, one line).

Examples:
  soloader check libz.so.1
  soloader check ./untrusted.so --json")]
pub struct Args {
    /// The library: a path, or a name such as `libz.so.1` searched for the
    /// way dlopen does.
    lib: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Search DIR for the library and its dependencies, instead of
    /// LD_LIBRARY_PATH (repeatable).
    #[arg(long = "library-path", value_name = "DIR")]
    library_path: Vec<PathBuf>,
}

/// What the trace of a successful check says.
#[derive(Default)]
struct Summary {
    /// Files soloader mapped (the library first, then its dependencies).
    mapped: Vec<PathBuf>,
    /// Dependencies bound to the host process's copy.
    host: Vec<String>,
    /// Relocations applied, by type.
    relocations: BTreeMap<&'static str, usize>,
}

impl Summary {
    fn of(events: &[Event]) -> Summary {
        let mut s = Summary::default();
        for e in events {
            match e {
                // An undone attempt: what counts is the next one.
                Event::Deferred { .. } => s = Summary::default(),
                Event::Open { path, .. } => s.mapped.push(path.clone()),
                Event::HostLibrary { name, .. } if !s.host.contains(name) => {
                    s.host.push(name.clone())
                }
                Event::Relocations { kind, count, .. } => {
                    *s.relocations.entry(kind).or_default() += count
                }
                _ => {}
            }
        }
        s
    }

    fn total_relocations(&self) -> usize {
        self.relocations.values().sum()
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let sink = VecSink::new();
    let mut options = Options::new().trace(Arc::new(sink.clone()));
    if !args.library_path.is_empty() {
        options = options.library_path(args.library_path.clone());
    }
    let result = soloader::check(&args.lib, &options);
    let summary = Summary::of(&sink.events());
    let text = if args.json {
        json(&args.lib, &result, &summary)
    } else if result.is_ok() {
        human(&args.lib, &summary)
    } else {
        String::new()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    // The error itself is reported by main, on stderr, with exit status 1.
    result.map_err(anyhow::Error::new)
}

fn human(lib: &Path, s: &Summary) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{}: OK: would load; mapped, relocated and unmapped again, no code of it ran",
        lib.display()
    );
    for (i, p) in s.mapped.iter().enumerate() {
        let role = if i == 0 { "library" } else { "dependency" };
        let _ = writeln!(t, "  {role:<10}  {}", p.display());
    }
    for h in &s.host {
        let _ = writeln!(t, "  {:<10}  {h} (the host's copy)", "host");
    }
    let _ = writeln!(t, "  relocations {}", s.total_relocations());
    for (kind, n) in &s.relocations {
        let _ = writeln!(t, "    {kind:<24} {n}");
    }
    t
}

/// The error's variant, for machines.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Io { .. } => "io",
        Error::Malformed { .. } => "malformed",
        Error::Unsupported { .. } => "unsupported",
        Error::NotFound { .. } => "not_found",
        Error::UndefinedSymbol { .. } => "undefined_symbol",
        Error::VersionNotFound { .. } => "version_not_found",
        Error::SymbolNotFound { .. } => "symbol_not_found",
        Error::Map { .. } => "map",
        Error::Host { .. } => "host",
        Error::Runtime { .. } => "runtime",
        _ => "other",
    }
}

/// `{"path":…,"ok":true,"error":null,"mapped":[…],"host":[…],"relocations":N}`
/// or `{"path":…,"ok":false,"error":{"kind":…,"file":…,"message":…}}`.
fn json(lib: &Path, result: &soloader::Result<()>, s: &Summary) -> String {
    let mut t = String::new();
    let _ = write!(t, "{{\"path\":{},", json_str(&lib.to_string_lossy()));
    match result {
        Ok(()) => {
            let list = |v: &mut dyn Iterator<Item = String>| {
                v.map(|x| json_str(&x)).collect::<Vec<_>>().join(",")
            };
            let _ = write!(
                t,
                "\"ok\":true,\"error\":null,\"mapped\":[{}],\"host\":[{}],\"relocations\":{}",
                list(&mut s.mapped.iter().map(|p| p.to_string_lossy().into_owned())),
                list(&mut s.host.iter().cloned()),
                s.total_relocations()
            );
        }
        Err(e) => {
            let _ = write!(
                t,
                "\"ok\":false,\"error\":{{\"kind\":\"{}\",\"file\":{},\"message\":{}}}",
                kind(e),
                json_str(&e.path().to_string_lossy()),
                json_str(&e.to_string())
            );
        }
    }
    t.push_str("}\n");
    t
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn json_reports_the_error_kind_and_file() {
        let e = soloader::check("/nonexistent/libnothing.so", &Options::new()).unwrap_err();
        let j = json(
            Path::new("/nonexistent/libnothing.so"),
            &Err(e),
            &Summary::default(),
        );
        assert!(
            j.starts_with(r#"{"path":"/nonexistent/libnothing.so","ok":false,"error":{"kind":""#),
            "{j}"
        );
        assert!(j.contains(r#""file":"/nonexistent/libnothing.so""#), "{j}");
        assert!(j.ends_with("}}\n"), "{j}");
    }
}
