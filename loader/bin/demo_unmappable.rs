//! `soloader demo unmappable`: `mmap(NULL, 4096, PROT_READ, MAP_PRIVATE,
//! fd, 0)` on descriptors that are not regular files, and the kernel's
//! answer. A file can be mapped when its driver can hand out its contents
//! page by page, at any offset: a regular file (the page cache) can, a
//! pipe or a socket — a stream, with no offsets and nothing kept once read
//! — cannot. The way to load code that arrives through a pipe is to copy
//! it into a file first: here a `memfd`, which then maps like any file.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::Context;

use super::{errno_text, page_size, Mapping, TempFile};

#[derive(clap::Args)]
pub struct Args {}

/// Tries the mapping and says what happened.
fn try_map(what: &str, fd: i32, note_ok: &str, note_err: &str) {
    let page = page_size();
    match Mapping::new(page, libc::PROT_READ, libc::MAP_PRIVATE, fd) {
        Ok(m) => println!(
            "  {what:<34} mmap = {:#x}  OK{}",
            m.start(),
            if note_ok.is_empty() {
                String::new()
            } else {
                format!(
                    "\n  {:<34} {}",
                    "",
                    note_ok.replace('\n', &format!("\n  {:<34} ", ""))
                )
            }
        ),
        Err(e) => println!(
            "  {what:<34} mmap = -1 {}{}",
            errno_text(&e),
            if note_err.is_empty() {
                String::new()
            } else {
                format!(
                    "\n  {:<34} {}",
                    "",
                    note_err.replace('\n', &format!("\n  {:<34} ", ""))
                )
            }
        ),
    }
}

fn owned(fd: i32) -> anyhow::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a descriptor just returned by the kernel, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    println!("What can be mapped: mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) on ...");
    println!();

    let mut tmp = TempFile::new("unmappable")?;
    tmp.file
        .write_all(&vec![b'x'; page_size()])
        .context("writing the file")?;
    try_map(
        "a regular file",
        tmp.file.as_raw_fd(),
        "the page cache holds its pages, at any offset: mappable",
        "",
    );

    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    let (pr, pw) = if rc == 0 {
        (owned(fds[0])?, owned(fds[1])?)
    } else {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    };
    let mut pipe_w = std::fs::File::from(pw);
    pipe_w
        .write_all(b"\x7fELF bytes arriving through a pipe")
        .context("writing to the pipe")?;
    try_map(
        "a pipe",
        pr.as_raw_fd(),
        "",
        "a stream: bytes are consumed by read(), there are no pages to map",
    );

    // SAFETY: plain socket creation.
    let unix = owned(unsafe {
        let mut sv = [0i32; 2];
        if libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        ) == 0
        {
            libc::close(sv[1]);
            sv[0]
        } else {
            -1
        }
    })
    .context("socketpair")?;
    try_map(
        "a UNIX stream socket",
        unix.as_raw_fd(),
        "",
        "sockets have no mmap (sock_no_mmap)",
    );

    // SAFETY: plain socket creation.
    let udp =
        owned(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
            .context("socket")?;
    try_map("a UDP socket", udp.as_raw_fd(), "", "");

    // SAFETY: plain socket creation.
    let tcp =
        owned(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })
            .context("socket")?;
    try_map(
        "a TCP socket",
        tcp.as_raw_fd(),
        "TCP's mmap exists only for zero-copy receive (TCP_ZEROCOPY_RECEIVE):\n\
         an empty window that getsockopt fills with received pages, not the stream",
        "",
    );

    let dir = std::fs::File::open("/").context("opening /")?;
    try_map("a directory (/)", dir.as_raw_fd(), "", "");

    let status = std::fs::File::open("/proc/self/status").context("opening /proc/self/status")?;
    try_map(
        "/proc/self/status",
        status.as_raw_fd(),
        "",
        "generated text, made on each read(): no pages behind it",
    );

    let zero = std::fs::File::open("/dev/zero").context("opening /dev/zero")?;
    try_map(
        "/dev/zero",
        zero.as_raw_fd(),
        "a device whose driver maps anonymous zero pages",
        "",
    );

    // The way around: copy the stream into a memory file, then map that.
    println!();
    println!("The way around, for code that arrives through a pipe: read() it into a file.");
    drop(pipe_w);
    let mut bytes = Vec::new();
    std::fs::File::from(pr)
        .read_to_end(&mut bytes)
        .context("reading the pipe")?;
    // SAFETY: the name is a NUL-terminated literal.
    let memfd = owned(unsafe { libc::memfd_create(c"soloader-demo".as_ptr(), libc::MFD_CLOEXEC) })
        .context("memfd_create")?;
    let mut mf = std::fs::File::from(memfd);
    mf.write_all(&bytes).context("writing the memfd")?;
    println!(
        "  read {} bytes from the pipe, wrote them to memfd_create(\"soloader-demo\")",
        bytes.len()
    );
    match Mapping::new(
        page_size(),
        libc::PROT_READ,
        libc::MAP_PRIVATE,
        mf.as_raw_fd(),
    ) {
        Ok(m) => {
            let head: Vec<u8> = (0..bytes.len().min(24)).map(|i| m.read(i)).collect();
            println!(
                "  {:<34} mmap = {:#x}  OK, and it reads \"{}\"",
                "the memfd",
                m.start(),
                head.escape_ascii()
            );
        }
        Err(e) => println!("  {:<34} mmap = -1 {}", "the memfd", errno_text(&e)),
    }
    println!();
    println!("A dynamic loader needs a file it can map: ld.so and soloader open a path and");
    println!("mmap it; a library received as a stream must become a file (a memfd) first,");
    println!("and then it is copied once, not shared with other processes.");
    Ok(())
}
