//! `/proc/PID/smaps`, `/proc/PID/smaps_rollup` and `/proc/PID/maps`.
//!
//! The format is a header line per mapping (VMA),
//! `start-end perms offset major:minor inode [name]`, followed in `smaps`
//! by `Name: value` lines. The parser keys every field by its name and
//! keeps the ones it does not know (the field set grows with the kernel),
//! reads to the end, and never fails: a line it cannot place is counted in
//! [`Smaps::skipped`], not fatal.

use std::io;
use std::ops::Range;

/// One field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `N kB`: a size, in KiB as the kernel prints it.
    Kb(u64),
    /// A bare decimal number (`THPeligible: 1`, `ProtectionKey: 0`).
    Number(u64),
    /// Anything else, trimmed (`VmFlags: rd ex mr mw me`).
    Text(String),
}

impl Value {
    fn parse(s: &str) -> Value {
        let s = s.trim();
        if let Some(n) = s.strip_suffix("kB") {
            if let Ok(v) = n.trim_end().parse::<u64>() {
                return Value::Kb(v);
            }
        }
        match s.parse::<u64>() {
            Ok(v) => Value::Number(v),
            Err(_) => Value::Text(s.to_string()),
        }
    }
}

/// The `Name: value` lines of one record, in the kernel's order, keyed by
/// name. Unknown names are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, Value)>);

impl Fields {
    /// The value of field `name` (`"Rss"`, `"Pss_Dirty"`, `"VmFlags"` …).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A `kB` field in KiB.
    pub fn kb(&self, name: &str) -> Option<u64> {
        match self.get(name) {
            Some(Value::Kb(v)) => Some(*v),
            _ => None,
        }
    }

    /// A `kB` field in bytes; 0 when absent (older kernels lack some).
    pub fn bytes(&self, name: &str) -> u64 {
        self.kb(name).unwrap_or(0).saturating_mul(1024)
    }

    /// Every field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (a `maps` line).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, name: &str, value: Value) {
        // A repeated name (never seen in practice) keeps the first value.
        if self.get(name).is_none() {
            self.0.push((name.to_string(), value));
        }
    }
}

/// One mapping (VMA) of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// The address range.
    pub range: Range<usize>,
    /// The four permission letters, e.g. `"r-xp"`: read, write, execute,
    /// then `p` (`MAP_PRIVATE`) or `s` (`MAP_SHARED`).
    pub perms: String,
    /// File offset of `range.start` (0 for anonymous mappings).
    pub offset: u64,
    /// Device of the backing file: (major, minor).
    pub dev: (u32, u32),
    /// Inode of the backing file, 0 if anonymous.
    pub inode: u64,
    /// The path or pseudo-name (`[heap]`, `[stack]`), empty if none. A
    /// deleted file keeps the kernel's ` (deleted)` suffix.
    pub name: String,
    /// The `smaps` fields (empty when parsed from `maps`).
    pub fields: Fields,
}

impl Vma {
    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.range.end.saturating_sub(self.range.start)
    }

    /// Whether the range is empty (never for a real VMA).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn perm(&self, i: usize, c: u8) -> bool {
        self.perms.as_bytes().get(i) == Some(&c)
    }

    /// `r` permission.
    pub fn readable(&self) -> bool {
        self.perm(0, b'r')
    }

    /// `w` permission.
    pub fn writable(&self) -> bool {
        self.perm(1, b'w')
    }

    /// `x` permission.
    pub fn executable(&self) -> bool {
        self.perm(2, b'x')
    }

    /// A `MAP_SHARED` mapping (`s`); otherwise `MAP_PRIVATE`.
    pub fn map_shared(&self) -> bool {
        self.perm(3, b's')
    }

    /// Whether a file backs it (inode ≠ 0).
    pub fn file_backed(&self) -> bool {
        self.inode != 0
    }

    /// The `VmFlags` two-letter codes.
    pub fn vm_flags(&self) -> Vec<&str> {
        match self.fields.get("VmFlags") {
            Some(Value::Text(t)) => t.split_whitespace().collect(),
            _ => Vec::new(),
        }
    }
}

/// A parsed `/proc/PID/smaps` (or `maps`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smaps {
    /// The mappings, in address order as the kernel lists them.
    pub vmas: Vec<Vma>,
    /// Lines that were neither a header nor a field of a preceding header.
    pub skipped: usize,
}

impl Smaps {
    /// Parses the text of `smaps` or `maps`. Never fails.
    pub fn parse(text: &str) -> Smaps {
        let mut out = Smaps::default();
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(vma) = parse_header(line) {
                out.vmas.push(vma);
                continue;
            }
            match (parse_field(line), out.vmas.last_mut()) {
                (Some((name, value)), Some(vma)) => vma.fields.push(name, value),
                _ => out.skipped += 1,
            }
        }
        out
    }

    /// Reads and parses `/proc/PID/smaps`.
    pub fn read(pid: i32) -> io::Result<Smaps> {
        Ok(Smaps::parse(&read_proc(pid, "smaps")?))
    }

    /// Reads and parses `/proc/PID/maps` (headers only, much cheaper).
    pub fn read_maps(pid: i32) -> io::Result<Smaps> {
        Ok(Smaps::parse(&read_proc(pid, "maps")?))
    }

    /// The mappings that overlap `range`.
    pub fn overlapping(&self, range: Range<usize>) -> impl Iterator<Item = &Vma> {
        self.vmas
            .iter()
            .filter(move |v| v.range.start < range.end && range.start < v.range.end)
    }
}

/// A parsed `/proc/PID/smaps_rollup`: every VMA's fields summed, `Pss`
/// truncated once instead of once per VMA, plus `Pss_Anon`, `Pss_File`,
/// `Pss_Shmem` (Linux 5.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    /// The span the rollup covers (lowest VMA start to highest VMA end).
    pub range: Range<usize>,
    /// The summed fields.
    pub fields: Fields,
}

impl Rollup {
    /// Parses the text of `smaps_rollup`; `None` if there is no header.
    pub fn parse(text: &str) -> Option<Rollup> {
        let s = Smaps::parse(text);
        let v = s.vmas.into_iter().next()?;
        Some(Rollup {
            range: v.range,
            fields: v.fields,
        })
    }

    /// Reads and parses `/proc/PID/smaps_rollup`.
    pub fn read(pid: i32) -> io::Result<Rollup> {
        let text = read_proc(pid, "smaps_rollup")?;
        Rollup::parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/smaps_rollup: no header line"),
            )
        })
    }
}

fn read_proc(pid: i32, file: &str) -> io::Result<String> {
    let path = format!("/proc/{pid}/{file}");
    let bytes =
        std::fs::read(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Splits off the first whitespace-separated word; returns it and the rest
/// (leading whitespace removed).
fn word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], s[end..].trim_start()))
}

fn hex(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// `start-end perms offset major:minor inode [name]`.
fn parse_header(line: &str) -> Option<Vma> {
    let (range, rest) = word(line)?;
    let (start, end) = range.split_once('-')?;
    let start = usize::try_from(hex(start)?).ok()?;
    let end = usize::try_from(hex(end)?).ok()?;
    let (perms, rest) = word(rest)?;
    if perms.len() != 4 || !perms.is_ascii() {
        return None;
    }
    let (offset, rest) = word(rest)?;
    let offset = hex(offset)?;
    let (dev, rest) = word(rest)?;
    let (major, minor) = dev.split_once(':')?;
    let dev = (
        u32::try_from(hex(major)?).ok()?,
        u32::try_from(hex(minor)?).ok()?,
    );
    let (inode, rest) = word(rest)?;
    let inode = inode.parse::<u64>().ok()?;
    Some(Vma {
        range: start..end.max(start),
        perms: perms.to_string(),
        offset,
        dev,
        inode,
        name: rest.trim_end_matches('\n').to_string(),
        fields: Fields::default(),
    })
}

/// `Name: value`.
fn parse_field(line: &str) -> Option<(&str, Value)> {
    let (name, value) = line.split_once(':')?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name, Value::parse(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
7f1c2a000000-7f1c2a026000 r--p 00000000 fe:01 1048602                    /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6
Size:                152 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                 152 kB
Pss:                  19 kB
Pss_Dirty:             0 kB
Shared_Clean:        152 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:          152 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
NewFutureField:       12 kB
VmFlags: rd mr mw me sd
7ffd1000-7ffd3000 rw-p 00000000 00:00 0 
Rss:                   8 kB
7f00-7f10 r--p 00001000 08:11 42                         /tmp/with space (deleted)
garbage line without colon
";

    #[test]
    fn parses_every_field_and_keeps_unknown_ones() {
        let s = Smaps::parse(SAMPLE);
        assert_eq!(s.vmas.len(), 3);
        assert_eq!(s.skipped, 1);
        let v = &s.vmas[0];
        assert_eq!(v.range, 0x7f1c2a000000..0x7f1c2a026000);
        assert_eq!(v.perms, "r--p");
        assert_eq!(v.dev, (0xfe, 1));
        assert_eq!(v.inode, 1048602);
        assert_eq!(v.name, "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6");
        assert_eq!(v.fields.kb("Rss"), Some(152));
        assert_eq!(v.fields.bytes("Pss"), 19 * 1024);
        assert_eq!(v.fields.get("THPeligible"), Some(&Value::Number(0)));
        assert_eq!(v.fields.kb("NewFutureField"), Some(12));
        assert_eq!(v.vm_flags(), vec!["rd", "mr", "mw", "me", "sd"]);
        assert_eq!(v.fields.len(), 26);
        assert!(v.readable() && !v.writable() && !v.executable() && !v.map_shared());
        assert_eq!(s.vmas[1].name, "");
        assert!(!s.vmas[1].file_backed());
        assert_eq!(s.vmas[2].name, "/tmp/with space (deleted)");
        assert_eq!(s.vmas[2].offset, 0x1000);
    }

    #[test]
    fn bad_input_is_not_fatal() {
        for text in [
            "",
            "\n\n",
            "Rss: 4 kB\n",
            "zzzz-1000 r--p 0 0:0 0\n",
            "1000-2000 r--p 0 0:0\n",
            "1000-2000 r--p 0 0:0 x\n",
            "2000-1000 r--p 0 0:0 0\nRss: 18446744073709551615 kB\nPss: 99999999999999999999 kB\n",
            "\u{0}\u{1}:::\n",
        ] {
            let s = Smaps::parse(text);
            for v in &s.vmas {
                assert!(v.range.start <= v.range.end);
                let _ = v.fields.bytes("Rss");
                let _ = v.fields.bytes("Pss");
            }
        }
    }

    #[test]
    fn rollup() {
        let text = "\
55d0c0a00000-7ffd1b7fe000 ---p 00000000 00:00 0                          [rollup]
Rss:                1876 kB
Pss:                 342 kB
Pss_Anon:            120 kB
Pss_File:            222 kB
";
        let r = Rollup::parse(text).unwrap();
        assert_eq!(r.fields.kb("Pss_File"), Some(222));
        assert_eq!(r.range.start, 0x55d0c0a00000);
        assert!(Rollup::parse("Rss: 1 kB\n").is_none());
    }

    #[test]
    fn reads_own_smaps() {
        let s = Smaps::read(std::process::id() as i32).unwrap();
        assert!(!s.vmas.is_empty());
        assert_eq!(s.skipped, 0);
        assert!(s.vmas.iter().any(|v| v.fields.get("Rss").is_some()));
        let r = Rollup::read(std::process::id() as i32).unwrap();
        assert!(r.fields.kb("Rss").unwrap_or(0) > 0);
    }
}
