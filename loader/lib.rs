//! soloader: a userspace dynamic loader for ELF shared libraries.

#![warn(missing_docs)]

mod arch;
mod elf;
pub mod error;
mod host;
mod init;
mod library;
mod map;
mod object;
mod registry;
mod reloc;
mod resolve;
#[path = "search_stub.rs"]
mod search;
pub mod trace;

pub use error::{Error, Result};
pub use library::{Library, Options, Segment, Symbol};
pub use map::Syscall;
pub use trace::{Event, Provider, TraceSink, VecSink};
