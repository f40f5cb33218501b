//! Map: place a validated object in memory, the second stage.
//!
//! 1. Reserve the whole span `[min p_vaddr, max p_vaddr + p_memsz)` with
//!    one anonymous `PROT_NONE` mapping, aligned to the largest `p_align`
//!    (over-reserve, then trim). Gaps between segments simply stay
//!    `PROT_NONE`.
//! 2. Map each `PT_LOAD` from the file with `MAP_PRIVATE | MAP_FIXED` and
//!    its own protections: text and read-only data stay file-backed pages,
//!    shared with every other process that maps the file.
//! 3. `.bss`: zero the tail of the last file page (a copy-on-write fault:
//!    the one page that must become private), and map anonymous zero pages
//!    for the rest.
//!
//! Every call goes through [`Sys`], which traces it and can be told to fail
//! (the failure-atomicity tests use that). A failure unmaps the whole span.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::elf::{page_down, page_size, page_up, LoadPlan};
use crate::error::{Error, Result};
use crate::library::Segment;
use crate::trace::{Event, Tracer};

/// Which memory call a test wants to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `mmap`.
    Mmap,
    /// `mprotect`.
    Mprotect,
}

/// A test hook: make the `nth` call (0-based, counted per load) of `call`
/// fail with `ENOMEM`, as if the kernel had refused it.
#[derive(Debug, Clone)]
pub(crate) struct FailPoint {
    pub call: Syscall,
    pub nth: usize,
    pub seen: Arc<AtomicUsize>,
}

/// The loader's memory-management calls, traced.
pub(crate) struct Sys<'a> {
    pub path: &'a Path,
    pub tracer: &'a Tracer,
    pub fail: Option<&'a FailPoint>,
    /// Relocation cache (opt-in, `relcache`): the checked cache directory
    /// of this load, if any. `None` keeps every step as without it.
    pub relcache: Option<&'a crate::relcache::Dir>,
}

impl Sys<'_> {
    fn injected(&self, call: Syscall) -> bool {
        match self.fail {
            Some(f) if f.call == call => f.seen.fetch_add(1, Ordering::Relaxed) == f.nth,
            _ => false,
        }
    }

    /// `mmap`, returning the address.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mmap(
        &self,
        addr: usize,
        len: usize,
        prot: i32,
        flags: i32,
        fd: RawFd,
        offset: u64,
        purpose: impl FnOnce() -> String,
    ) -> Result<usize> {
        let fail = |source| Error::Map {
            path: self.path.to_path_buf(),
            op: "mmap",
            addr,
            len,
            source,
        };
        if self.injected(Syscall::Mmap) {
            return Err(fail(io::Error::from_raw_os_error(libc::ENOMEM)));
        }
        // SAFETY: mapping over `addr` with MAP_FIXED is only done inside a
        // span this loader reserved itself and owns; otherwise the kernel
        // chooses the address. Arguments are plain integers.
        let p = unsafe { libc::mmap(addr as *mut _, len, prot, flags, fd, offset as libc::off_t) };
        if p == libc::MAP_FAILED {
            return Err(fail(io::Error::last_os_error()));
        }
        let got = p as usize;
        self.tracer.emit(|| Event::Mmap {
            addr: got,
            len,
            prot,
            flags,
            offset,
            purpose: purpose(),
        });
        Ok(got)
    }

    /// `mprotect`.
    pub(crate) fn mprotect(
        &self,
        addr: usize,
        len: usize,
        prot: i32,
        purpose: impl FnOnce() -> String,
    ) -> Result<()> {
        let fail = |source| Error::Map {
            path: self.path.to_path_buf(),
            op: "mprotect",
            addr,
            len,
            source,
        };
        if self.injected(Syscall::Mprotect) {
            return Err(fail(io::Error::from_raw_os_error(libc::ENOMEM)));
        }
        // SAFETY: `addr..addr+len` lies inside a span this loader mapped.
        if unsafe { libc::mprotect(addr as *mut _, len, prot) } != 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        self.tracer.emit(|| Event::Mprotect {
            addr,
            len,
            prot,
            purpose: purpose(),
        });
        Ok(())
    }

    /// `munmap`; failures are reported in the trace only (nothing useful
    /// can be done about them).
    pub(crate) fn munmap(&self, addr: usize, len: usize, purpose: &str) {
        if len == 0 {
            return;
        }
        // SAFETY: the range was mapped by this loader and nothing refers to
        // it any more.
        let rc = unsafe { libc::munmap(addr as *mut _, len) };
        if rc == 0 {
            self.tracer.emit(|| Event::Munmap {
                addr,
                len,
                purpose: purpose.to_string(),
            });
        }
    }
}

/// Where an object landed.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// Load bias: runtime address = `base + p_vaddr`.
    pub base: usize,
    /// The reserved span.
    pub start: usize,
    /// Its length.
    pub len: usize,
    /// Each `PT_LOAD`, as mapped.
    pub segments: Vec<Segment>,
}

/// Maps every segment of `plan` from `fd`. On error nothing stays mapped.
///
/// `fixed`: the start of a span already reserved (`PROT_NONE`, at least
/// the span long, aligned to `p_align`) by the relocation cache's
/// deterministic placement (`relcache::place`); `None` reserves it here
/// wherever the kernel chooses, as always.
pub(crate) fn map_object(
    sys: &Sys,
    fd: RawFd,
    plan: &LoadPlan,
    fixed: Option<usize>,
) -> Result<Mapping> {
    let span = (plan.max_vaddr - plan.min_vaddr) as usize;
    let start = match fixed {
        Some(start) => start,
        None => reserve(sys, plan, span)?,
    };
    let base = start.wrapping_sub(plan.min_vaddr as usize);
    let mut segments = Vec::with_capacity(plan.loads.len());
    for l in &plan.loads {
        match map_segment(sys, fd, base, l) {
            Ok(s) => segments.push(s),
            Err(e) => {
                sys.munmap(start, span, "undo failed load");
                return Err(e);
            }
        }
    }
    sys.tracer.emit(|| Event::Mapped {
        path: sys.path.to_path_buf(),
        base,
        size: span,
    });
    Ok(Mapping {
        base,
        start,
        len: span,
        segments,
    })
}

/// Reserves the span with one anonymous `PROT_NONE` mapping aligned to
/// the largest `p_align` (over-reserve, then trim); returns its start.
fn reserve(sys: &Sys, plan: &LoadPlan, span: usize) -> Result<usize> {
    let page = page_size();
    let align = plan.align as usize;
    let slack = align.saturating_sub(page);
    let reserve = span
        .checked_add(slack)
        .ok_or_else(|| Error::malformed(sys.path, "address span overflows", None))?;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let raw = sys.mmap(0, reserve, libc::PROT_NONE, flags, -1, 0, || {
        "reserve span".into()
    })?;
    let start = (raw + align - 1) & !(align - 1);
    if start > raw {
        sys.munmap(raw, start - raw, "trim reservation to p_align");
    }
    if raw + reserve > start + span {
        sys.munmap(
            start + span,
            raw + reserve - (start + span),
            "trim reservation to p_align",
        );
    }
    Ok(start)
}

fn map_segment(sys: &Sys, fd: RawFd, base: usize, l: &crate::elf::LoadSegment) -> Result<Segment> {
    let prot = l.prot();
    let map_start = base + page_down(l.vaddr) as usize;
    let data_end = base + (l.vaddr + l.filesz) as usize;
    let file_end = base + page_up(l.vaddr + l.filesz) as usize;
    let mem_end = base + (l.vaddr + l.memsz) as usize;
    let seg_end = base + page_up(l.vaddr + l.memsz) as usize;
    let file_offset = page_down(l.offset);
    if l.filesz > 0 {
        sys.mmap(
            map_start,
            file_end - map_start,
            prot,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            fd,
            file_offset,
            || format!("PT_LOAD[{}] from file", l.index),
        )?;
    }
    let mut bss = None;
    if l.memsz > l.filesz {
        bss = Some(data_end..mem_end);
        let anon_start = if l.filesz > 0 { file_end } else { map_start };
        // The tail of the last file page holds whatever follows the
        // segment in the file: zero it (this write makes that one page a
        // private copy).
        if l.filesz > 0 && data_end < file_end {
            let zero_end = file_end.min(mem_end);
            let page = file_end - page_size();
            if prot & libc::PROT_WRITE == 0 {
                sys.mprotect(page, page_size(), prot | libc::PROT_WRITE, || {
                    "bss tail: make writable".into()
                })?;
            }
            // SAFETY: [data_end, zero_end) lies in the last file page of this
            // segment, just mapped writable, private to this process.
            unsafe { std::ptr::write_bytes(data_end as *mut u8, 0, zero_end - data_end) };
            sys.tracer.emit(|| Event::BssZero {
                addr: data_end,
                len: zero_end - data_end,
            });
            if prot & libc::PROT_WRITE == 0 {
                sys.mprotect(page, page_size(), prot, || {
                    "bss tail: restore protection".into()
                })?;
            }
        }
        if seg_end > anon_start {
            sys.mmap(
                anon_start,
                seg_end - anon_start,
                prot,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS,
                -1,
                0,
                || format!("PT_LOAD[{}] bss (anonymous zero pages)", l.index),
            )?;
        }
    }
    let file_range = if l.filesz > 0 {
        map_start..file_end
    } else {
        map_start..map_start
    };
    Ok(Segment {
        index: l.index,
        range: map_start..seg_end,
        file_range,
        file_offset,
        prot,
        relro: None,
        bss,
    })
}
