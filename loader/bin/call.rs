//! `soloader call LIB SYMBOL [ARG...]`: load a library with soloader and
//! call one function in it, System V x86-64 style.
//!
//! Arguments are classified as C would pass them: integers and string
//! pointers go to `rdi, rsi, rdx, rcx, r8, r9` in order, floats (as
//! `double`) to `xmm0`..`xmm7` in order, whatever their interleaving on the
//! command line. The function is called through the prototype
//! `fn(i64, ...)` with all six integer and all eight vector registers
//! filled (unused ones with 0): for a non-variadic callee the extra
//! registers are simply ignored, and a variadic callee (`printf`-like) gets
//! the `%al` upper bound on vector registers it needs, because the call
//! itself is variadic. Arguments on the stack (a seventh integer, a ninth
//! float), `float` (not `double`) parameters or results, and structures by
//! value are not supported.

use std::ffi::{c_char, CStr, CString, OsString};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;
use soloader::{Library, Options, Segment};

use crate::Usage;

/// Integer (and pointer) argument registers: rdi, rsi, rdx, rcx, r8, r9.
const INT_REGS: usize = 6;
/// Vector argument registers: xmm0..xmm7.
const FLOAT_REGS: usize = 8;

#[derive(clap::Args)]
#[command(after_help = ARG_HELP)]
pub struct Args {
    /// The library: a path, or a name such as `libz.so.1` searched for the
    /// way dlopen does.
    lib: PathBuf,
    /// The function to call.
    symbol: String,
    /// Arguments: integers (42, -1, 0x10, -0x10), floats (1.5, -2.5e3,
    /// f:2 forces a float) and strings (s:hello passes a pointer to a
    /// NUL-terminated copy).
    #[arg(value_name = "ARG", value_parser = parse_arg, allow_negative_numbers = true)]
    args: Vec<Arg>,
    /// How to read the return value.
    #[arg(long, value_enum, default_value_t = Ret::I64)]
    ret: Ret,
    /// Before calling, print the mapped segments (addresses, file offsets,
    /// protections, file-backed or anonymous, RELRO).
    #[arg(long)]
    segments: bool,
    /// Search DIR for the library and its dependencies, instead of
    /// LD_LIBRARY_PATH (repeatable).
    #[arg(long = "library-path", value_name = "DIR")]
    library_path: Vec<PathBuf>,
    /// Share relocated pages between processes through a cache in DIR
    /// (the library gets a fixed, predictable address: no ASLR for it).
    #[arg(long = "relocation-cache", value_name = "DIR")]
    relocation_cache: Option<PathBuf>,
}

const ARG_HELP: &str = "\
Integer and string arguments fill rdi, rsi, rdx, rcx, r8, r9 in order (at most 6);
float arguments fill xmm0..xmm7 in order (at most 8), passed as C `double`.
The value is printed on stdout as --ret says: i32 (low 32 bits, signed), i64,
u64, f64 (from xmm0), str (the C string returned; \"(null)\" for NULL), ptr
(hex), or void (nothing).

Examples:
  soloader call libz.so.1 zlibVersion --ret str
  soloader call ./libarith.so add 2 3 --ret i32 --segments
  soloader call ./libarith.so scale 1.5 -2 --ret f64   (-2 is an integer: use f:-2)";

/// One command-line argument, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// An integer or the bits of one, for an integer register.
    Int(i64),
    /// A `double`, for a vector register.
    Float(f64),
    /// A string, passed as a pointer (an integer register).
    Str(CString),
}

/// How to interpret the return registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Ret {
    /// The low 32 bits of rax, signed (C `int`).
    I32,
    /// rax, signed (C `long`).
    I64,
    /// rax, unsigned (C `unsigned long`).
    U64,
    /// xmm0 (C `double`).
    F64,
    /// The NUL-terminated string rax points to.
    Str,
    /// rax as an address, in hex.
    Ptr,
    /// Nothing.
    Void,
}

const ARG_FORMS: &str =
    "expected an integer (42, -1, 0x10), a float (1.5, -2.5e3, f:2) or a string (s:hello)";

/// Whether `s` is written as an integer: optional sign, then decimal digits
/// or `0x` and hex digits.
fn integer_like(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Parses an integer-like `s` (see [`integer_like`]). Positive values up to
/// `u64::MAX` are accepted and passed as their bits; negative ones down to
/// `i64::MIN`.
fn parse_int(s: &str) -> Result<i64, String> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => body.parse::<u64>(),
    }
    .map_err(|_| format!("integer '{s}' does not fit in 64 bits"))?;
    if !negative {
        // Values above i64::MAX are passed as their bit pattern.
        return Ok(magnitude as i64);
    }
    if magnitude > 1 << 63 {
        return Err(format!("integer '{s}' is below the 64-bit minimum"));
    }
    Ok((magnitude as i64).wrapping_neg())
}

fn parse_float(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("cannot parse '{s}' as a float"))
}

/// Parses one argument (clap's value parser for `ARG`).
pub fn parse_arg(s: &str) -> Result<Arg, String> {
    if let Some(text) = s.strip_prefix("s:") {
        return CString::new(text)
            .map(Arg::Str)
            .map_err(|_| "a string argument cannot contain a NUL byte".to_string());
    }
    if let Some(num) = s.strip_prefix("f:") {
        return parse_float(num).map(Arg::Float);
    }
    if integer_like(s) {
        return parse_int(s).map(Arg::Int);
    }
    // A float must look like a number (so that `inf` or `nan` are not
    // taken for one by accident: write f:inf).
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        if let Ok(x) = s.parse::<f64>() {
            return Ok(Arg::Float(x));
        }
    }
    Err(format!("cannot parse '{s}': {ARG_FORMS}"))
}

/// Rewrites the negative numeric arguments of `call` (and of `trace` and
/// `pages`, whose `--call` takes the same arguments) that clap
/// would take for flags (`-0x10`, `-2.5e-3`, `-.5`) into equivalent forms it
/// takes as values: an integer into decimal (`-16`, which clap accepts as a
/// negative number), a float into `f:` form. Other words are left alone;
/// nothing after `--` or in a flag's value is touched.
pub fn normalize_numbers(argv: Vec<OsString>) -> Vec<OsString> {
    let Some(sub) = argv
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
    else {
        return argv;
    };
    // `trace` and `pages` take the same arguments after `--call`.
    if !["call", "trace", "pages"].iter().any(|c| argv[sub] == *c) {
        return argv;
    }
    let mut out = Vec::with_capacity(argv.len());
    let mut rest = argv.into_iter().enumerate();
    let mut flag_value_next = false;
    for (i, a) in rest.by_ref() {
        if i <= sub {
            out.push(a);
            continue;
        }
        if a == "--" {
            out.push(a);
            break;
        }
        let value_of_flag = std::mem::replace(
            &mut flag_value_next,
            ["--ret", "--library-path", "--svg", "--width"]
                .iter()
                .any(|f| a == *f),
        );
        let rewritten = match a.to_str() {
            Some(s) if !value_of_flag && looks_negative_number(s) => match parse_arg(s) {
                Ok(Arg::Int(v)) => Some(OsString::from(v.to_string())),
                Ok(Arg::Float(_)) => Some(OsString::from(format!("f:{s}"))),
                _ => None,
            },
            _ => None,
        };
        out.push(rewritten.unwrap_or(a));
    }
    out.extend(rest.map(|(_, a)| a));
    out
}

fn looks_negative_number(s: &str) -> bool {
    s.strip_prefix('-')
        .is_some_and(|b| b.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
}

/// The prototype every function is called through: all argument registers
/// are passed, and the call is variadic so that `%al` is set.
type IntFn = unsafe extern "C" fn(i64, ...) -> i64;
/// The same, reading the result from xmm0.
type FloatFn = unsafe extern "C" fn(i64, ...) -> f64;

pub fn run(args: Args) -> anyhow::Result<()> {
    check_counts(&args.args)?;

    let mut options = Options::new();
    if !args.library_path.is_empty() {
        options = options.library_path(args.library_path.clone());
    }
    if let Some(dir) = &args.relocation_cache {
        options = options.relocation_cache(dir);
    }
    let lib = Library::open_with(&args.lib, &options)?;
    let mut out = std::io::stdout().lock();
    if args.segments {
        print_segments(&mut out, &lib)?;
    }
    // Whatever the library prints should come out after what we printed.
    out.flush().context("writing to stdout")?;
    let value = invoke(&lib, &args.symbol, &args.args, args.ret)?;
    if let Some(v) = value {
        writeln!(out, "{v}").context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    drop(out);
    lib.close()?;
    Ok(())
}

/// A usage error if `args` need more registers than the convention has.
pub(crate) fn check_counts(args: &[Arg]) -> anyhow::Result<()> {
    let ints = args.iter().filter(|a| !matches!(a, Arg::Float(_))).count();
    let floats = args.len() - ints;
    if ints > INT_REGS {
        return Err(Usage::err(format!(
            "{ints} integer/string arguments: at most {INT_REGS} are supported (rdi, rsi, rdx, rcx, r8, r9)"
        )));
    }
    if floats > FLOAT_REGS {
        return Err(Usage::err(format!(
            "{floats} float arguments: at most {FLOAT_REGS} are supported (xmm0..xmm7)"
        )));
    }
    Ok(())
}

/// Looks `symbol` up in `lib`, calls it with `args` (see the module docs)
/// and returns the result formatted as `ret` says (`None` for `void`).
/// C stdio is flushed after the call.
pub(crate) fn invoke(
    lib: &Library,
    symbol: &str,
    args: &[Arg],
    ret: Ret,
) -> anyhow::Result<Option<String>> {
    check_counts(args)?;
    // SAFETY: a function pointer is pointer-sized, as `get` requires. The
    // type is only right if SYMBOL is a function; the address is checked to
    // be executable before the call, and whether its parameters match the
    // arguments given is the user's responsibility (as with any FFI call).
    let sym = unsafe { lib.get::<IntFn>(symbol)? };
    let addr = sym.addr();
    if let Some(false) = executable(addr) {
        bail!(
            "{}: {} at {addr:#x} is not in executable memory (a data symbol?); refusing to call it",
            lib.path().display(),
            symbol
        );
    }

    // The strings live in `args` until after the call.
    let mut int_regs = [0i64; INT_REGS];
    let mut float_regs = [0f64; FLOAT_REGS];
    let (mut ni, mut nf) = (0, 0);
    for a in args {
        match a {
            Arg::Int(v) => {
                int_regs[ni] = *v;
                ni += 1;
            }
            Arg::Str(s) => {
                int_regs[ni] = s.as_ptr() as i64;
                ni += 1;
            }
            Arg::Float(x) => {
                float_regs[nf] = *x;
                nf += 1;
            }
        }
    }
    let [i0, i1, i2, i3, i4, i5] = int_regs;
    let [x0, x1, x2, x3, x4, x5, x6, x7] = float_regs;

    let value = if ret == Ret::F64 {
        // SAFETY: same address, viewed as returning a double; both are
        // plain function pointers of the same size.
        let f: FloatFn = unsafe { std::mem::transmute::<IntFn, FloatFn>(*sym) };
        // SAFETY: calls library code at an executable address with the
        // arguments the user gave (see the module docs for the convention).
        let r = unsafe { f(i0, i1, i2, i3, i4, i5, x0, x1, x2, x3, x4, x5, x6, x7) };
        Some(format!("{r:?}"))
    } else {
        // SAFETY: as above.
        let r = unsafe { (*sym)(i0, i1, i2, i3, i4, i5, x0, x1, x2, x3, x4, x5, x6, x7) };
        match ret {
            Ret::I32 => Some((r as i32).to_string()),
            Ret::I64 => Some(r.to_string()),
            Ret::U64 => Some((r as u64).to_string()),
            Ret::Ptr => Some(format!("{:#x}", r as usize)),
            Ret::Str => Some(if r == 0 {
                "(null)".to_string()
            } else {
                // SAFETY: the user said the function returns a C string;
                // it is read before the library is closed.
                unsafe { CStr::from_ptr(r as usize as *const c_char) }
                    .to_string_lossy()
                    .into_owned()
            }),
            Ret::Void | Ret::F64 => None,
        }
    };
    // SAFETY: fflush(NULL) flushes every C stdio stream; the library may
    // have written to C's stdout buffer.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    Ok(value)
}

/// Whether `addr` is in an executable mapping of this process, per
/// `/proc/self/maps` (`None` if that cannot be read).
fn executable(addr: usize) -> Option<bool> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            return Some(perms.contains('x'));
        }
    }
    Some(false)
}

fn prot_string(prot: i32) -> String {
    let bit = |b: i32, c: char| if prot & b != 0 { c } else { '-' };
    [
        bit(libc::PROT_READ, 'r'),
        bit(libc::PROT_WRITE, 'w'),
        bit(libc::PROT_EXEC, 'x'),
    ]
    .iter()
    .collect()
}

fn size_string(n: usize) -> String {
    if n >= 1024 && n & 1023 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// One row of the segment table: a part of a segment with uniform backing
/// and protection.
struct Piece {
    range: std::ops::Range<usize>,
    offset: Option<u64>,
    prot: i32,
    note: String,
}

/// Splits a segment into its RELRO part, the rest of its file-backed part,
/// and its anonymous part.
fn pieces(s: &Segment) -> Vec<Piece> {
    let mut v = Vec::new();
    let file = s.file_range.clone();
    let offset_at = |a: usize| s.file_offset + (a - file.start) as u64;
    let mut cursor = file.start;
    if let Some(relro) = &s.relro {
        let lo = relro.start.max(file.start);
        let hi = relro.end.min(file.end);
        if lo < hi {
            if cursor < lo {
                v.push(Piece {
                    range: cursor..lo,
                    offset: Some(offset_at(cursor)),
                    prot: s.prot,
                    note: String::new(),
                });
            }
            v.push(Piece {
                range: lo..hi,
                offset: Some(offset_at(lo)),
                prot: libc::PROT_READ,
                note: format!("RELRO: {} until relocated, then r--", prot_string(s.prot)),
            });
            cursor = hi;
        }
    }
    if cursor < file.end {
        v.push(Piece {
            range: cursor..file.end,
            offset: Some(offset_at(cursor)),
            prot: s.prot,
            note: String::new(),
        });
    }
    let anon_start = file.end.max(s.range.start);
    if anon_start < s.range.end {
        v.push(Piece {
            range: anon_start..s.range.end,
            offset: None,
            prot: s.prot,
            note: ".bss (zero pages)".to_string(),
        });
    }
    if let Some(bss) = &s.bss {
        // The .bss bytes that share the last file page: zeroed in place.
        let lo = bss.start;
        let hi = bss.end.min(file.end);
        if lo < hi {
            if let Some(p) = v
                .iter_mut()
                .rev()
                .find(|p| p.offset.is_some() && p.range.contains(&lo))
            {
                let text = format!(".bss {lo:#x}..{hi:#x} zeroed in the last file page");
                if p.note.is_empty() {
                    p.note = text;
                } else {
                    p.note = format!("{}; {text}", p.note);
                }
            }
        }
    }
    v
}

/// The segment table shown by `--segments`.
fn print_segments(out: &mut impl Write, lib: &Library) -> anyhow::Result<()> {
    let span = lib.span();
    writeln!(out, "library  {}", lib.path().display())?;
    writeln!(out, "soname   {}", lib.soname())?;
    writeln!(
        out,
        "base     {:#x}   span {:#x}..{:#x} ({})",
        lib.base(),
        span.start,
        span.end,
        size_string(span.len())
    )?;
    writeln!(
        out,
        "{:>3}  {:<14}  {:<14}  {:>8}  {:>8}  {:4}  {:<17}  notes",
        "seg", "start", "end", "size", "offset", "prot", "backing"
    )?;
    for s in lib.segments() {
        for p in pieces(s) {
            let (offset, backing) = match p.offset {
                Some(o) => (format!("{o:#x}"), "file MAP_PRIVATE"),
                None => ("-".to_string(), "anonymous"),
            };
            let row = format!(
                "{:>3}  {:<#14x}  {:<#14x}  {:>8}  {:>8}  {:4}  {:<17}  {}",
                s.index,
                p.range.start,
                p.range.end,
                size_string(p.range.len()),
                offset,
                prot_string(p.prot),
                backing,
                p.note
            );
            writeln!(out, "{}", row.trim_end())?;
        }
    }
    writeln!(out).context("writing to stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        assert_eq!(parse_arg("42"), Ok(Arg::Int(42)));
        assert_eq!(parse_arg("-1"), Ok(Arg::Int(-1)));
        assert_eq!(parse_arg("0x10"), Ok(Arg::Int(16)));
        assert_eq!(parse_arg("-0x10"), Ok(Arg::Int(-16)));
        assert_eq!(parse_arg("0xffffffffffffffff"), Ok(Arg::Int(-1)));
        assert_eq!(parse_arg("-9223372036854775808"), Ok(Arg::Int(i64::MIN)));
        assert!(parse_arg("-9223372036854775809").is_err());
        assert!(parse_arg("18446744073709551616").is_err());
        assert_eq!(parse_arg("1.5"), Ok(Arg::Float(1.5)));
        assert_eq!(parse_arg("-2.5e3"), Ok(Arg::Float(-2500.0)));
        assert_eq!(parse_arg("-2.5e-3"), Ok(Arg::Float(-0.0025)));
        assert_eq!(parse_arg(".5"), Ok(Arg::Float(0.5)));
        assert_eq!(parse_arg("f:2"), Ok(Arg::Float(2.0)));
        assert_eq!(parse_arg("f:-inf"), Ok(Arg::Float(f64::NEG_INFINITY)));
        assert_eq!(
            parse_arg("s:hello"),
            Ok(Arg::Str(CString::new("hello").unwrap()))
        );
        assert_eq!(parse_arg("s:"), Ok(Arg::Str(CString::new("").unwrap())));
        for bad in ["hello", "inf", "1.2.3", "0x", "--5", "f:x", "0xg"] {
            assert!(parse_arg(bad).is_err(), "{bad} should not parse");
        }
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn normalizes_negative_numbers() {
        assert_eq!(
            normalize_numbers(os(&[
                "soloader", "call", "l", "s", "-0x10", "-2.5e-3", "-1", "--ret", "i32", "-x"
            ])),
            os(&[
                "soloader",
                "call",
                "l",
                "s",
                "-16",
                "f:-2.5e-3",
                "-1",
                "--ret",
                "i32",
                "-x"
            ])
        );
        assert_eq!(
            normalize_numbers(os(&["soloader", "call", "l", "s", "--", "-0x10"])),
            os(&["soloader", "call", "l", "s", "--", "-0x10"])
        );
        assert_eq!(
            normalize_numbers(os(&["soloader", "other", "-0x10"])),
            os(&["soloader", "other", "-0x10"])
        );
    }
}
