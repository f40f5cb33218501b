//! `soloader demo mmap-vs-read [FILE]`: the same file brought into memory
//! twice, by `mmap` (what a loader does) and by `read()` into the heap.
//!
//! Both read every page once. The mapping copies nothing: its page table
//! entries point at the page cache's own pages. `read()` copies the whole
//! file from the page cache into fresh anonymous heap pages. Then a second
//! process (forked before anything was mapped, so it inherits nothing)
//! does the same, and `smaps` shows the difference: the mapped pages are
//! shared (each process is charged half in `Pss`), the read copies are not.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::{duration, kib, mincore_count, page_size, smaps, Child, Mapping};
use crate::inspect::size;
use crate::trace::faults;

#[derive(clap::Args)]
pub struct Args {
    /// The file (default: libsqlite3.so.0, found as a load would, else
    /// this program).
    file: Option<PathBuf>,
}

fn default_file() -> anyhow::Result<PathBuf> {
    if let Ok(p) = soloader::find_library("libsqlite3.so.0", &soloader::Options::new()) {
        return Ok(p);
    }
    std::env::current_exe().context("finding this program")
}

/// What one side measured.
struct Side {
    minor: u64,
    major: u64,
    time: std::time::Duration,
    copied: usize,
    sum: u64,
}

/// Maps the file and reads one byte per page.
fn by_mmap(file: &std::fs::File, len: usize) -> anyhow::Result<(Mapping, Side)> {
    let page = page_size();
    let f0 = faults();
    let t0 = Instant::now();
    let m =
        Mapping::new(len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd()).context("mmap")?;
    let mut sum = 0u64;
    for off in (0..len).step_by(page) {
        sum += u64::from(m.read(off));
    }
    let time = t0.elapsed();
    let f1 = faults();
    Ok((
        m,
        Side {
            minor: f1.0 - f0.0,
            major: f1.1 - f0.1,
            time,
            copied: 0,
            sum,
        },
    ))
}

/// Fresh anonymous memory for `read()` to copy into, as `malloc` would
/// hand out for a large buffer, with a `PROT_NONE` page on each side so
/// that it stays its own mapping in `smaps` (the kernel merges adjacent
/// anonymous mappings with equal protections).
struct Buffer {
    map: Mapping,
    len: usize,
}

impl Buffer {
    fn new(len: usize) -> anyhow::Result<Buffer> {
        let page = page_size();
        let inner = len.div_ceil(page) * page;
        let map = Mapping::new(
            inner + 2 * page,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )
        .context("mmap")?;
        // SAFETY: the middle of our own fresh mapping.
        let rc = unsafe {
            libc::mprotect(
                map.addr.add(page).cast(),
                inner,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("mprotect");
        }
        Ok(Buffer { map, len })
    }

    fn start(&self) -> usize {
        self.map.start() + page_size()
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes from `start` are inside the read-write middle
        // of the mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.start() as *mut u8, self.len) }
    }
}

/// Reads the whole file into fresh anonymous memory and reads one byte per
/// page of it.
fn by_read(path: &std::path::Path, len: usize) -> anyhow::Result<(Buffer, Side)> {
    let page = page_size();
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Buffer::new(len)?;
    let f0 = faults();
    let t0 = Instant::now();
    f.read_exact(buf.bytes()).context("read")?;
    let bytes = buf.bytes();
    let mut sum = 0u64;
    for off in (0..bytes.len()).step_by(page) {
        // SAFETY: `off` is inside the buffer.
        sum += u64::from(unsafe { std::ptr::read_volatile(bytes.as_ptr().add(off)) });
    }
    let time = t0.elapsed();
    let f1 = faults();
    Ok((
        buf,
        Side {
            minor: f1.0 - f0.0,
            major: f1.1 - f0.1,
            time,
            copied: len,
            sum,
        },
    ))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = match args.file {
        Some(p) => p,
        None => default_file()?,
    };
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().context("fstat")?.len() as usize;
    if len == 0 {
        anyhow::bail!("{}: empty file: nothing to map", path.display());
    }
    let page = page_size();
    let pages = len.div_ceil(page);

    // Warm the page cache so that neither side waits for the disk, and
    // count what was cached before.
    let cached_before = {
        let m = Mapping::new(len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd())
            .context("mmap")?;
        mincore_count(m.start(), len)
    };
    let mut warm = Vec::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut warm))
        .context("warming the page cache")?;
    drop(warm);

    // The second process, forked now: it shares nothing of what follows.
    let child_path = path.clone();
    // What the child mapped and read stays alive until it exits.
    let mut held: Vec<(Mapping, Buffer)> = Vec::new();
    let mut child = Child::spawn(move |cmd| match cmd {
        "work" => {
            let r = std::fs::File::open(&child_path)
                .map_err(anyhow::Error::from)
                .and_then(|f| {
                    let (m, _) = by_mmap(&f, len)?;
                    let (b, _) = by_read(&child_path, len)?;
                    Ok((m, b))
                });
            match r {
                Ok(x) => {
                    let reply = format!("{:#x} {:#x}", x.0.start(), x.1.start());
                    held.push(x);
                    reply
                }
                Err(e) => format!("error: {e:#}"),
            }
        }
        _ => "error: unknown command".to_string(),
    })?;

    let (map, ms) = by_mmap(&file, len)?;
    let (buf, rs) = by_read(&path, len)?;
    let me_map = smaps(0, map.start(), len);
    let me_buf = smaps(0, buf.start(), len);

    println!(
        "mmap vs read(): {} ({}, {} pages of {})",
        path.display(),
        size(len as u64),
        pages,
        size(page as u64)
    );
    println!(
        "page cache before: {cached_before} of {pages} pages cached (mincore); the file was then read once,"
    );
    println!("so that neither side below waits for the disk.");
    println!();
    println!("Each side brings the whole file into this process and reads one byte per page.");
    println!();
    println!(
        "                                 {:>22}   {:>22}",
        "mmap(MAP_PRIVATE)", "read() into memory"
    );
    println!(
        "  bytes copied                   {:>22}   {:>22}",
        size(ms.copied as u64),
        size(rs.copied as u64)
    );
    println!(
        "  page faults (minor/major)      {:>22}   {:>22}",
        format!("{}/{}", ms.minor, ms.major),
        format!("{}/{}", rs.minor, rs.major)
    );
    println!(
        "  time                           {:>22}   {:>22}",
        duration(ms.time),
        duration(rs.time)
    );
    println!(
        "  resident in this process (Rss) {:>22}   {:>22}",
        kib(me_map.rss),
        kib(me_buf.rss)
    );
    println!(
        "    shared with the page cache   {:>22}   {:>22}",
        kib(me_map.shared_clean + me_map.private_clean),
        kib(me_buf.shared_clean + me_buf.private_clean)
    );
    println!(
        "    private, dirty (a copy)      {:>22}   {:>22}",
        kib(me_map.private_dirty + me_map.shared_dirty),
        kib(me_buf.private_dirty + me_buf.shared_dirty)
    );
    println!(
        "  checksum of the bytes read     {:>22}   {:>22}",
        ms.sum, rs.sum
    );
    println!();
    println!(
        "mmap: {} faults for {pages} pages: each fault maps a whole block of neighbouring",
        ms.minor + ms.major
    );
    println!("page-cache pages at once (fault-around); no byte is copied. read(): the kernel");
    println!(
        "copies {} from the page cache into new anonymous pages, faulting each one in.",
        size(rs.copied as u64)
    );

    // Now the second process does the same, and both stay alive.
    let reply = child.ask("work")?;
    let mut words = reply.split_whitespace();
    let parse = |w: Option<&str>| {
        w.and_then(|s| usize::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0)
    };
    let (c_map, c_buf) = (parse(words.next()), parse(words.next()));
    let me_map = smaps(0, map.start(), len);
    let me_buf = smaps(0, buf.start(), len);
    let ch_map = smaps(child.pid, c_map, len);
    let ch_buf = smaps(child.pid, c_buf, len);
    println!();
    println!(
        "A second process (pid {}) now does the same. /proc/PID/smaps of both:",
        child.pid
    );
    println!(
        "                                 {:>22}   {:>22}",
        "mmap'ed file", "read() copy"
    );
    for (who, m, b) in [
        ("this process", &me_map, &me_buf),
        ("second process", &ch_map, &ch_buf),
    ] {
        println!(
            "  {who:<15} Rss            {:>22}   {:>22}",
            kib(m.rss),
            kib(b.rss)
        );
        println!(
            "  {who:<15} Pss            {:>22}   {:>22}",
            kib(m.pss),
            kib(b.pss)
        );
        println!(
            "  {who:<15} Shared_Clean   {:>22}   {:>22}",
            kib(m.shared_clean),
            kib(b.shared_clean)
        );
        println!(
            "  {who:<15} Private_Dirty  {:>22}   {:>22}",
            kib(m.private_dirty),
            kib(b.private_dirty)
        );
    }
    let file_kib = me_map.rss;
    println!();
    println!(
        "Physical memory for the file in both processes: mmap {} (the page cache's pages,",
        kib(file_kib)
    );
    println!(
        "mapped twice: Pss charges each process half); read() {} (the page cache's pages",
        kib(file_kib + me_buf.rss + ch_buf.rss)
    );
    println!("plus one private copy per process). That is why loaders map libraries instead of");
    println!(
        "reading them: text and read-only data cost memory once, however many processes use them."
    );
    child.finish()?;
    drop(map);
    drop(buf);
    Ok(())
}
