//! `soloader demo EXPERIMENT`: the ideas behind loading a shared library
//! with `mmap`, each shown by a real experiment on this machine.
//!
//! - `mmap-vs-read`: the same file mapped (zero copies, pages shared with
//!   the page cache and with a second process) and read into the heap (a
//!   copy per process);
//! - `private-vs-shared`: two processes map one file, one `MAP_PRIVATE`,
//!   one `MAP_SHARED`, and write: who sees what, what reaches the disk;
//! - `lazy`: a large file mapped, one byte read: how many pages that
//!   brought into the page cache (readahead) and into the process (fault-
//!   around);
//! - `unmappable`: `mmap` on a pipe, sockets, a directory, a `/proc` file,
//!   and the kernel's answer.
//!
//! This file holds what the experiments share: a forked helper process
//! driven line by line, `smaps` totals for an address range (parsed by
//! `soloader::mem`), `mincore`, errno names. The measurements use
//! `getrusage`, `/proc/PID/smaps`, `/proc/self/pagemap` and `mincore`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, Context};

#[path = "demo_lazy.rs"]
mod lazy;
#[path = "demo_mmap.rs"]
mod mmap_vs_read;
#[path = "demo_shared.rs"]
mod private_vs_shared;
#[path = "demo_unmappable.rs"]
mod unmappable;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand)]
enum Which {
    /// The same file mapped with mmap and read() into the heap: bytes
    /// copied, page faults, time, and sharing with a second process.
    MmapVsRead(mmap_vs_read::Args),
    /// Two processes map one file, MAP_PRIVATE and MAP_SHARED, and write:
    /// who sees each write, and whether the file changes.
    PrivateVsShared(private_vs_shared::Args),
    /// A large file mapped, one byte read: resident pages before and
    /// after (readahead and fault-around).
    Lazy(lazy::Args),
    /// mmap on a pipe, sockets, a directory and a /proc file: the kernel
    /// refuses; read() into a memfd is the way around.
    Unmappable(unmappable::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        Which::MmapVsRead(a) => mmap_vs_read::run(a),
        Which::PrivateVsShared(a) => private_vs_shared::run(a),
        Which::Lazy(a) => lazy::run(a),
        Which::Unmappable(a) => unmappable::run(a),
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// `ENODEV (No such device)`.
pub(crate) fn errno_text(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::EPERM) => "EPERM",
        Some(libc::EBADF) => "EBADF",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::ESPIPE) => "ESPIPE",
        Some(libc::EISDIR) => "EISDIR",
        Some(libc::ENOTSUP) => "EOPNOTSUPP",
        Some(libc::ETXTBSY) => "ETXTBSY",
        Some(n) => return format!("errno {n} ({e})"),
        None => return e.to_string(),
    };
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{name} ({text})")
}

/// `1.25 ms`, `830 µs`.
pub(crate) fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// A `mmap` that unmaps itself.
pub(crate) struct Mapping {
    pub addr: *mut u8,
    pub len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, 0)`.
    pub(crate) fn new(len: usize, prot: i32, flags: i32, fd: i32) -> std::io::Result<Mapping> {
        // SAFETY: the kernel chooses the address (no MAP_FIXED); the
        // arguments are plain integers.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            addr: p.cast(),
            len,
        })
    }

    pub(crate) fn start(&self) -> usize {
        self.addr as usize
    }

    /// Reads the byte at `off` (volatile: the read really happens).
    pub(crate) fn read(&self, off: usize) -> u8 {
        assert!(off < self.len);
        // SAFETY: `off` is inside the mapping, which is readable.
        unsafe { std::ptr::read_volatile(self.addr.add(off)) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is this mapping's, nothing refers to it now.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// How many pages of `[addr, addr + len)` are in the page cache
/// (`mincore`).
pub(crate) fn mincore_count(addr: usize, len: usize) -> usize {
    let page = page_size();
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `vec` has one byte per page of the range, which is mapped.
    let rc = unsafe { libc::mincore(addr as *mut _, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    vec.iter().filter(|b| *b & 1 != 0).count()
}

/// Summed `smaps` fields (in KiB) of the mappings overlapping a range.
#[derive(Debug, Default, Clone)]
pub(crate) struct Smaps {
    pub rss: u64,
    pub pss: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
}

/// Reads `/proc/PID/smaps` (`pid` 0: self) for the mappings overlapping
/// `[addr, addr + len)`, with `soloader::mem`'s parser. An unreadable
/// `smaps` reads as all zeros.
pub(crate) fn smaps(pid: i32, addr: usize, len: usize) -> Smaps {
    let pid = if pid == 0 {
        std::process::id() as i32
    } else {
        pid
    };
    let mut s = Smaps::default();
    let Ok(all) = soloader::mem::Smaps::read(pid) else {
        return s;
    };
    for v in all.overlapping(addr..addr.saturating_add(len)) {
        let kb = |name: &str| v.fields.kb(name).unwrap_or(0);
        s.rss += kb("Rss");
        s.pss += kb("Pss");
        s.shared_clean += kb("Shared_Clean");
        s.shared_dirty += kb("Shared_Dirty");
        s.private_clean += kb("Private_Clean");
        s.private_dirty += kb("Private_Dirty");
    }
    s
}

/// `N KiB` from a KiB count.
pub(crate) fn kib(n: u64) -> String {
    crate::inspect::size(n * 1024)
}

/// A forked helper process that runs commands sent one line at a time and
/// answers each with one line.
pub(crate) struct Child {
    pub pid: i32,
    to: File,
    from: BufReader<File>,
}

fn pipe() -> anyhow::Result<(File, File)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors were just created and are owned by nobody
    // else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

impl Child {
    /// Forks; the child runs `serve` on each line it receives and replies
    /// with its result, until told `exit`. The child never returns.
    pub(crate) fn spawn(mut serve: impl FnMut(&str) -> String) -> anyhow::Result<Child> {
        let (down_r, down_w) = pipe()?;
        let (up_r, up_w) = pipe()?;
        std::io::stdout().flush().ok();
        // SAFETY: the CLI is single-threaded, so the child may go on
        // running Rust code (allocating included) after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if pid == 0 {
            drop(down_w);
            drop(up_r);
            let mut up = up_w;
            let mut lines = BufReader::new(down_r);
            let mut code = 0;
            loop {
                let mut line = String::new();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let cmd = line.trim_end();
                if cmd == "exit" {
                    break;
                }
                let reply =
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(cmd))) {
                        Ok(r) => r,
                        Err(_) => {
                            code = 1;
                            "error: the helper process panicked".to_string()
                        }
                    };
                let reply = reply.replace('\n', " ");
                if writeln!(up, "{reply}").is_err() {
                    break;
                }
            }
            // SAFETY: ends the child without running the parent's atexit
            // handlers or flushing its copied stdio buffers.
            unsafe { libc::_exit(code) };
        }
        drop(down_r);
        drop(up_w);
        Ok(Child {
            pid,
            to: down_w,
            from: BufReader::new(up_r),
        })
    }

    /// Sends `cmd` and returns the child's reply.
    pub(crate) fn ask(&mut self, cmd: &str) -> anyhow::Result<String> {
        writeln!(self.to, "{cmd}").context("writing to the helper process")?;
        let mut line = String::new();
        if self
            .from
            .read_line(&mut line)
            .context("reading from the helper process")?
            == 0
        {
            bail!("the helper process exited early");
        }
        let line = line.trim_end().to_string();
        if let Some(e) = line.strip_prefix("error: ") {
            bail!("helper process: {e}");
        }
        Ok(line)
    }

    /// Tells the child to exit and reaps it.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        let _ = writeln!(self.to, "exit");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.pid = 0;
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.pid > 0 {
            let _ = writeln!(self.to, "exit");
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}

/// A temporary file, removed when dropped.
pub(crate) struct TempFile {
    pub path: std::path::PathBuf,
    pub file: File,
}

impl TempFile {
    /// Creates `soloader-demo-<pid>-<tag>` in the temporary directory.
    pub(crate) fn new(tag: &str) -> anyhow::Result<TempFile> {
        let path = std::env::temp_dir().join(format!("soloader-demo-{}-{tag}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(TempFile { path, file })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
