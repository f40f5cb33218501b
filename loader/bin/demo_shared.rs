//! `soloader demo private-vs-shared`: two processes map the same
//! two-page temporary file, this one with `MAP_PRIVATE` (as a loader maps a
//! library), a forked one with `MAP_SHARED`; each writes, each reads.
//!
//! What it shows, step by step: a `MAP_PRIVATE` write goes to a private
//! copy of that one page (copy-on-write) — nobody else sees it and the file
//! does not change; a `MAP_SHARED` write goes to the page cache page itself
//! — every mapping of the file sees it, including the `MAP_PRIVATE` one on
//! pages it has not written yet, and it reaches the file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

use anyhow::Context;

use super::{kib, page_size, smaps, Child, Mapping, TempFile};
use crate::pages::PageReader;

#[derive(clap::Args)]
pub struct Args {}

const ORIGINAL: &[u8] = b"original";
const BY_PRIVATE: &[u8] = b"PRIVATE!";
const BY_SHARED: &[u8] = b"SHARED!!";

/// The 8 bytes at `off` of a mapping, as text.
fn peek(m: &Mapping, off: usize) -> String {
    let bytes: Vec<u8> = (0..8).map(|i| m.read(off + i)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn poke(m: &Mapping, off: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        assert!(off + i < m.len);
        // SAFETY: inside the mapping, which is writable.
        unsafe { std::ptr::write_volatile(m.addr.add(off + i), *b) };
    }
}

/// What pagemap says of each page of `m` in this process.
fn page_kinds(m: &Mapping) -> String {
    let Ok(r) = PageReader::open() else {
        return "pagemap unreadable".to_string();
    };
    let pages = r.read(m.start() as u64, m.len / page_size());
    pages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let present = p.raw >> 63 & 1 == 1;
            let file = p.raw >> 61 & 1 == 1;
            let kind = match (present, file) {
                (false, _) => "not resident",
                (true, true) => "the page cache's page",
                (true, false) => "a private anonymous copy",
            };
            format!("page {i}: {kind}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let page = page_size();
    let len = 2 * page;
    let mut tmp = TempFile::new("private-vs-shared")?;
    let mut content = vec![b'.'; len];
    for start in [0, 64, page] {
        content[start..start + ORIGINAL.len()].copy_from_slice(ORIGINAL);
    }
    tmp.file.write_all(&content).context("writing the file")?;
    tmp.file.sync_all().context("fsync")?;
    let fd = tmp.file.as_raw_fd();

    // The MAP_SHARED process.
    let mut shared: Option<Mapping> = None;
    let mut child = Child::spawn(move |cmd| {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            ["map"] => match Mapping::new(
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
            ) {
                Ok(m) => {
                    shared = Some(m);
                    "ok".to_string()
                }
                Err(e) => format!("error: mmap: {e}"),
            },
            ["read", off] => match (&shared, off.parse::<usize>()) {
                (Some(m), Ok(off)) => peek(m, off),
                _ => "error: bad read".to_string(),
            },
            ["write", off] => match (&shared, off.parse::<usize>()) {
                (Some(m), Ok(off)) => {
                    poke(m, off, BY_SHARED);
                    "ok".to_string()
                }
                _ => "error: bad write".to_string(),
            },
            ["msync"] => match &shared {
                // SAFETY: msync on our own mapping.
                Some(m) => match unsafe { libc::msync(m.addr.cast(), m.len, libc::MS_SYNC) } {
                    0 => "ok".to_string(),
                    _ => format!("error: msync: {}", std::io::Error::last_os_error()),
                },
                None => "error: not mapped".to_string(),
            },
            ["smaps"] => match &shared {
                Some(m) => {
                    let s = smaps(0, m.start(), m.len);
                    format!(
                        "Rss {}, Shared_Dirty {}, Private_Dirty {}",
                        kib(s.rss),
                        kib(s.shared_dirty),
                        kib(s.private_dirty)
                    )
                }
                None => "error: not mapped".to_string(),
            },
            ["pages"] => match &shared {
                Some(m) => page_kinds(m),
                None => "error: not mapped".to_string(),
            },
            _ => "error: unknown command".to_string(),
        }
    })?;
    let mine = Mapping::new(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE,
        fd,
    )
    .context("mmap MAP_PRIVATE")?;
    child.ask("map")?;
    let cpid = child.pid;
    let me = std::process::id();

    println!(
        "private vs shared: {} (2 pages of {} bytes), mapped PROT_READ|PROT_WRITE by",
        tmp.path.display(),
        page
    );
    println!("  PRIVATE = this process (pid {me}), MAP_PRIVATE, as a loader maps a library");
    println!("  SHARED  = a forked process (pid {cpid}), MAP_SHARED");
    println!("The file holds \"original\" at page 0 +0, page 0 +64 and page 1 +0.\n");

    let show = |who: &str, what: &str, got: &str, note: &str| {
        println!("  {who:<8} {what:<28} {:<12} {note}", format!("\"{got}\""));
    };
    println!("step 1: both read");
    show("PRIVATE", "reads page 0 +0", &peek(&mine, 0), "");
    show("SHARED", "reads page 0 +0", &child.ask("read 0")?, "");
    println!("         PRIVATE's pages: {}", page_kinds(&mine));

    println!("\nstep 2: PRIVATE writes \"PRIVATE!\" at page 0 +0");
    poke(&mine, 0, BY_PRIVATE);
    show(
        "PRIVATE",
        "reads page 0 +0",
        &peek(&mine, 0),
        "its own write",
    );
    show(
        "SHARED",
        "reads page 0 +0",
        &child.ask("read 0")?,
        "does not see it: the write went to PRIVATE's own copy",
    );
    println!("         PRIVATE's pages: {}", page_kinds(&mine));

    println!("\nstep 3: SHARED writes \"SHARED!!\" at page 0 +64 and at page 1 +0");
    child.ask("write 64")?;
    child.ask(&format!("write {page}"))?;
    show(
        "SHARED",
        "reads page 0 +64",
        &child.ask("read 64")?,
        "its own write",
    );
    show(
        "PRIVATE",
        "reads page 0 +64",
        &peek(&mine, 64),
        "not seen: PRIVATE's page 0 is a copy taken at step 2",
    );
    show(
        "PRIVATE",
        &format!("reads page 1 +0 ({page})"),
        &peek(&mine, page),
        "seen! page 1 is still the page cache's page",
    );
    println!("         PRIVATE's pages: {}", page_kinds(&mine));
    println!("         SHARED's pages:  {}", child.ask("pages")?);

    let s = smaps(0, mine.start(), len);
    println!("\nsmaps of the two mappings now:");
    println!(
        "  PRIVATE  Rss {}, Private_Dirty {} (its copy of page 0), Shared_Dirty {}",
        kib(s.rss),
        kib(s.private_dirty),
        kib(s.shared_dirty)
    );
    println!(
        "  SHARED   {} (dirty page-cache pages, not yet written back)",
        child.ask("smaps")?
    );

    println!("\nstep 4: SHARED calls msync(MS_SYNC); the file, read with read():");
    child.ask("msync")?;
    let mut disk = vec![0u8; len];
    let mut f = std::fs::File::open(&tmp.path).context("reopening the file")?;
    f.seek(SeekFrom::Start(0)).context("seek")?;
    f.read_exact(&mut disk).context("reading the file")?;
    let at = |off: usize| String::from_utf8_lossy(&disk[off..off + 8]).into_owned();
    show(
        "file",
        "page 0 +0",
        &at(0),
        "PRIVATE's write never reaches the file",
    );
    show(
        "file",
        "page 0 +64",
        &at(64),
        "SHARED's write is in the file",
    );
    show("file", &format!("page 1 +0 ({page})"), &at(page), "");
    println!(
        "  SHARED   smaps: {} (written back: clean again)",
        child.ask("smaps")?
    );
    println!();
    println!("MAP_PRIVATE is what makes a loaded library safe to share: its text and");
    println!("read-only data stay the page cache's pages, and the pages a relocation (or");
    println!("the program) writes become private copies, invisible to other processes and");
    println!("never written back to the library file.");
    child.finish()?;
    drop(mine);
    Ok(())
}
