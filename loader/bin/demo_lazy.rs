//! `soloader demo lazy [--size MIB] [FILE]`: a large file mapped, then
//! read one byte at a time, with three counts before and after each read:
//!
//! - pages of the file in the page cache (`mincore`): readahead brings in
//!   more than the page asked for;
//! - pages mapped in this process (`/proc/self/pagemap` bit 63): the fault
//!   maps the page and its cached neighbours (fault-around);
//! - page faults (`getrusage`), major when the disk was read.
//!
//! The file (a temporary one unless FILE is given) is first dropped from
//! the page cache (`fdatasync` + `posix_fadvise(POSIX_FADV_DONTNEED)`), so
//! that the first read really goes to the disk.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};

use super::{duration, kib, mincore_count, page_size, smaps, Mapping, TempFile};
use crate::inspect::size;
use crate::pages::PageReader;
use crate::trace::faults;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the temporary file, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    size: u32,
    /// Use this file instead of a temporary one (only read).
    file: Option<PathBuf>,
}

/// Page indexes present in this process, as `a..b` runs.
fn present_runs(reader: &PageReader, m: &Mapping) -> (usize, String) {
    let page = page_size();
    let pages = reader.read(m.start() as u64, m.len.div_ceil(page));
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut n = 0;
    for (i, p) in pages.iter().enumerate() {
        if p.raw >> 63 & 1 == 1 {
            n += 1;
            match runs.last_mut() {
                Some(r) if r.1 == i => r.1 = i + 1,
                _ => runs.push((i, i + 1)),
            }
        }
    }
    let text = if runs.is_empty() {
        "none".to_string()
    } else {
        runs.iter()
            .map(|(a, b)| format!("{a}..{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    (n, text)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let page = page_size();
    let mut _tmp = None;
    let (path, file) = match &args.file {
        Some(p) => (
            p.clone(),
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        ),
        None => {
            let mut t = TempFile::new("lazy")?;
            let len = args.size as usize * (1 << 20);
            let mut chunk = vec![0u8; 1 << 20];
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = (i % 251) as u8 + 1;
            }
            for _ in 0..len >> 20 {
                t.file.write_all(&chunk).context("writing the file")?;
            }
            let f = t.file.try_clone().context("dup")?;
            let p = t.path.clone();
            _tmp = Some(t);
            (p, f)
        }
    };
    let len = file.metadata().context("fstat")?.len() as usize;
    if len < 4 * page {
        bail!("{}: too small for this experiment", path.display());
    }
    let pages = len / page;
    let fd = file.as_raw_fd();
    // SAFETY: plain system calls on our own descriptor.
    let evicted = unsafe {
        libc::fdatasync(fd);
        libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED)
    } == 0;
    let reader = PageReader::open()?;

    println!(
        "lazy loading: {} ({}, {pages} pages of {})",
        path.display(),
        size(len as u64),
        size(page as u64)
    );
    if !evicted {
        println!("(posix_fadvise(DONTNEED) failed: the file may still be in the page cache)");
    }
    let m = Mapping::new(len, libc::PROT_READ, libc::MAP_PRIVATE, fd).context("mmap")?;
    println!(
        "mmap(NULL, {len:#x}, PROT_READ, MAP_PRIVATE, fd, 0) = {:#x}: {} of address space",
        m.start(),
        size(len as u64)
    );
    println!();
    let heads = [
        "",
        "page cache",
        "mapped here",
        "faults",
        "pages mapped here",
    ];
    println!(
        "{:<34} {:>10} {:>12} {:>16}  {}",
        heads[0], heads[1], heads[2], heads[3], heads[4]
    );
    let report = |what: &str, minor: u64, major: u64, t: Option<std::time::Duration>| {
        let (mapped, runs) = present_runs(&reader, &m);
        let cached = mincore_count(m.start(), len);
        let rss = smaps(0, m.start(), len).rss;
        println!(
            "{what:<34} {cached:>10} {mapped:>12} {:>16}  {runs}",
            format!("{minor} minor/{major} major")
        );
        if let Some(t) = t {
            println!(
                "{:<34} took {}, Rss of the mapping {}",
                "",
                duration(t),
                kib(rss)
            );
        }
    };
    report("after mmap, nothing read", 0, 0, None);

    let touch = |what: String, off: usize| {
        let f0 = faults();
        let t0 = Instant::now();
        let b = m.read(off);
        let t = t0.elapsed();
        let f1 = faults();
        std::hint::black_box(b);
        report(&what, f1.0 - f0.0, f1.1 - f0.1, Some(t));
    };
    let mid = pages / 2 + 5;
    touch(format!("read 1 byte of page {mid}"), mid * page + 100);
    touch(format!("read 1 byte of page {}", mid + 1), (mid + 1) * page);
    // The first page past what is mapped now.
    let (_, _) = present_runs(&reader, &m);
    let next = {
        let pm = reader.read(m.start() as u64, pages);
        (mid..pages)
            .find(|&i| pm[i].raw >> 63 & 1 == 0)
            .unwrap_or(pages - 1)
    };
    touch(format!("read 1 byte of page {next}"), next * page);
    touch("read 1 byte of page 0".to_string(), 0);
    println!();
    println!("mmap itself reads nothing and maps nothing: the file is only address space.");
    println!("The first read of a page faults. The kernel reads it from the disk (a major");
    println!("fault) together with its neighbours (readahead: the page-cache column), and");
    println!("maps into this process not just that page but the cached pages around it");
    println!("(fault-around: the mapped column), so the next reads nearby fault no more.");
    println!("A loader relies on this: a library's pages cost memory and I/O only once used.");
    drop(m);
    Ok(())
}
