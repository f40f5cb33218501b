//! x86-64: relocation numbers (from the psABI, as named by goblin) and
//! calling conventions the loader needs.

use super::RelocKind;
use goblin::elf::reloc::*;

/// `e_machine` of objects this host can load.
pub(crate) const EM_HOST: u16 = goblin::elf::header::EM_X86_64;

/// Classifies an x86-64 relocation type.
#[inline]
pub(crate) fn classify(r_type: u32) -> RelocKind {
    match r_type {
        R_X86_64_NONE => RelocKind::None,
        R_X86_64_RELATIVE => RelocKind::Relative,
        R_X86_64_64 => RelocKind::Absolute,
        R_X86_64_GLOB_DAT => RelocKind::GlobDat,
        R_X86_64_JUMP_SLOT => RelocKind::JumpSlot,
        R_X86_64_IRELATIVE => RelocKind::IRelative,
        R_X86_64_COPY => RelocKind::Copy,
        R_X86_64_DTPMOD64 => RelocKind::DtpMod,
        R_X86_64_DTPOFF64 => RelocKind::DtpOff,
        R_X86_64_TPOFF64 => RelocKind::TpOff,
        R_X86_64_TLSDESC => RelocKind::TlsDesc,
        _ => RelocKind::Unsupported,
    }
}

/// The psABI name of a relocation type, for traces and errors.
pub(crate) fn reloc_name(r_type: u32) -> &'static str {
    match r_type {
        R_X86_64_NONE => "R_X86_64_NONE",
        R_X86_64_64 => "R_X86_64_64",
        R_X86_64_PC32 => "R_X86_64_PC32",
        R_X86_64_COPY => "R_X86_64_COPY",
        R_X86_64_GLOB_DAT => "R_X86_64_GLOB_DAT",
        R_X86_64_JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        R_X86_64_RELATIVE => "R_X86_64_RELATIVE",
        R_X86_64_32 => "R_X86_64_32",
        R_X86_64_32S => "R_X86_64_32S",
        R_X86_64_DTPMOD64 => "R_X86_64_DTPMOD64",
        R_X86_64_DTPOFF64 => "R_X86_64_DTPOFF64",
        R_X86_64_TPOFF64 => "R_X86_64_TPOFF64",
        R_X86_64_PC64 => "R_X86_64_PC64",
        R_X86_64_SIZE64 => "R_X86_64_SIZE64",
        R_X86_64_TLSDESC => "R_X86_64_TLSDESC",
        R_X86_64_IRELATIVE => "R_X86_64_IRELATIVE",
        _ => "R_X86_64_<unknown>",
    }
}

/// The name the trace gives packed `DT_RELR` relatives.
pub(crate) const RELR_NAME: &str = "R_X86_64_RELATIVE (RELR)";

/// Calls an IFUNC resolver. On x86-64 resolvers take no arguments.
///
/// # Safety
/// `resolver` must be the address of a relocated IFUNC resolver.
#[inline]
pub(crate) unsafe fn call_ifunc_resolver(resolver: usize) -> usize {
    // SAFETY: the caller guarantees `resolver` is a resolver function of a
    // relocated object; x86-64 resolvers take no arguments.
    let f: extern "C" fn() -> usize = unsafe { std::mem::transmute(resolver) };
    f()
}
