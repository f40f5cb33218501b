//! Architecture-specific constants, behind one module.
//!
//! The relocation engine (`reloc.rs`) is written once against
//! [`RelocKind`]; each architecture only says which of its relocation
//! numbers means which kind, its `e_machine`, and how to call an IFUNC
//! resolver. Adding aarch64 means adding `aarch64.rs` with the same items.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use self::x86_64::*;

/// What a relocation does, independent of the architecture's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RelocKind {
    /// Nothing.
    None,
    /// `B + A`.
    Relative,
    /// `S + A`, a full-width data word.
    Absolute,
    /// `S` into a GOT slot.
    GlobDat,
    /// `S` into a PLT GOT slot (bound eagerly).
    JumpSlot,
    /// `resolver(B + A)()`, applied after every other relocation.
    IRelative,
    /// Copy the symbol's data: executables only; refused.
    Copy,
    /// TLS module id.
    DtpMod,
    /// Offset within the TLS block.
    DtpOff,
    /// Offset from the thread pointer (initial-exec).
    TpOff,
    /// TLS descriptor.
    TlsDesc,
    /// Anything else (text relocations, link-time-only types).
    Unsupported,
}
