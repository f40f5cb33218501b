//! x86-64: relocation numbers (from the psABI, as named by goblin) and
//! calling conventions the loader needs.

use super::RelocKind;
use goblin::elf::reloc::*;

/// `e_machine` of objects this host can load.
pub(crate) const EM_HOST: u16 = goblin::elf::header::EM_X86_64;

/// `B + A`: the type the relocation loop's fast path handles inline.
pub(crate) const R_RELATIVE: u32 = R_X86_64_RELATIVE;

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

/// The thread pointer (`%fs:0` holds its own address on x86-64 glibc).
#[inline]
pub(crate) fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reading the TCB's self pointer at %fs:0 is how x86-64 glibc
    // defines the thread pointer; it is always mapped.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

// Entry points that loaded libraries call directly, in assembly because
// their callers do not follow the normal calling convention:
//
// * `soloader_tls_get_addr_entry`: bound to a module's `__tls_get_addr`.
//   GCC's general-dynamic sequence may call it with a misaligned stack, so
//   it realigns before calling the Rust implementation.
// * `soloader_tlsdesc_dynamic`: a TLS descriptor entry. The caller passes
//   the descriptor in %rax and expects every register but %rax (and the
//   flags) preserved, vector state included, and the variable's offset
//   from the thread pointer back in %rax. The slow path allocates (malloc,
//   memcpy may touch any vector register), so the whole extended state is
//   saved with XSAVE (or FXSAVE where the OS has not enabled XSAVE).
// * `soloader_tlsdesc_return`: a descriptor for static TLS (a host
//   library's variable): the argument is already the offset.
//
// They are `.hidden`: never exported, so the host is unaffected.
std::arch::global_asm!(
    ".text",
    ".globl soloader_tls_get_addr_entry",
    ".hidden soloader_tls_get_addr_entry",
    ".type soloader_tls_get_addr_entry,@function",
    "soloader_tls_get_addr_entry:",
    "    push %rbp",
    "    mov %rsp, %rbp",
    "    and $-16, %rsp",
    "    call {get_addr}",
    "    mov %rbp, %rsp",
    "    pop %rbp",
    "    ret",
    ".size soloader_tls_get_addr_entry, .-soloader_tls_get_addr_entry",
    "",
    ".globl soloader_tlsdesc_return",
    ".hidden soloader_tlsdesc_return",
    ".type soloader_tlsdesc_return,@function",
    "soloader_tlsdesc_return:",
    "    mov 8(%rax), %rax",
    "    ret",
    ".size soloader_tlsdesc_return, .-soloader_tlsdesc_return",
    "",
    ".globl soloader_tlsdesc_dynamic",
    ".hidden soloader_tlsdesc_dynamic",
    ".type soloader_tlsdesc_dynamic,@function",
    "soloader_tlsdesc_dynamic:",
    "    push %rbp",
    "    mov %rsp, %rbp",
    "    push %rcx",
    "    push %rdx",
    "    push %rsi",
    "    push %rdi",
    "    push %r8",
    "    push %r9",
    "    push %r10",
    "    push %r11",
    "    mov 8(%rax), %rdi",
    "    mov {xsave_size}(%rip), %rcx",
    "    test %rcx, %rcx",
    "    jz 2f",
    // XSAVE path: area of XSAVE_SIZE bytes, 64-aligned, header zeroed.
    "    sub %rcx, %rsp",
    "    and $-64, %rsp",
    "    xor %ecx, %ecx",
    "    mov %rcx, 512(%rsp)",
    "    mov %rcx, 520(%rsp)",
    "    mov %rcx, 528(%rsp)",
    "    mov %rcx, 536(%rsp)",
    "    mov %rcx, 544(%rsp)",
    "    mov %rcx, 552(%rsp)",
    "    mov %rcx, 560(%rsp)",
    "    mov %rcx, 568(%rsp)",
    "    mov $-1, %eax",
    "    mov $-1, %edx",
    "    xsave (%rsp)",
    "    call {get_addr}",
    "    mov %rax, %rsi",
    "    mov $-1, %eax",
    "    mov $-1, %edx",
    "    xrstor (%rsp)",
    "    jmp 3f",
    // FXSAVE path: 512 bytes, 16-aligned.
    "2:",
    "    sub $512, %rsp",
    "    and $-16, %rsp",
    "    fxsave (%rsp)",
    "    call {get_addr}",
    "    mov %rax, %rsi",
    "    fxrstor (%rsp)",
    "3:",
    "    mov %rsi, %rax",
    "    sub %fs:0, %rax",
    "    lea -64(%rbp), %rsp",
    "    pop %r11",
    "    pop %r10",
    "    pop %r9",
    "    pop %r8",
    "    pop %rdi",
    "    pop %rsi",
    "    pop %rdx",
    "    pop %rcx",
    "    pop %rbp",
    "    ret",
    ".size soloader_tlsdesc_dynamic, .-soloader_tlsdesc_dynamic",
    get_addr = sym crate::tls::tls_get_addr,
    xsave_size = sym XSAVE_SIZE,
    options(att_syntax)
);

extern "C" {
    fn soloader_tls_get_addr_entry();
    fn soloader_tlsdesc_return();
    fn soloader_tlsdesc_dynamic();
}

/// Bytes the XSAVE area needs for the state the OS enabled (plus
/// alignment slack), or 0 when XSAVE is not usable (use FXSAVE).
static XSAVE_SIZE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets up [`XSAVE_SIZE`] once, before any descriptor can be called.
pub(crate) fn init_tls_entries() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // cpuid is always available on x86-64.
        let leaf1 = std::arch::x86_64::__cpuid(1);
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        let size = if osxsave {
            // Leaf 0xD exists when XSAVE is supported; EBX is the size for
            // the features enabled in XCR0.
            let d = std::arch::x86_64::__cpuid_count(0xd, 0);
            u64::from(d.ebx) + 64
        } else {
            0
        };
        // Written once, before any entry that reads it can be reached
        // (relocations that install the entries call this first).
        XSAVE_SIZE.store(size, std::sync::atomic::Ordering::Release);
    });
}

/// Address of the `__tls_get_addr` that soloader's modules are bound to.
pub(crate) fn tls_get_addr_entry() -> usize {
    soloader_tls_get_addr_entry as *const () as usize
}

/// Address of the descriptor entry for dynamic (soloader-owned) TLS.
pub(crate) fn tlsdesc_dynamic_entry() -> usize {
    init_tls_entries();
    soloader_tlsdesc_dynamic as *const () as usize
}

/// Address of the descriptor entry for static TLS (host libraries).
pub(crate) fn tlsdesc_return_entry() -> usize {
    soloader_tlsdesc_return as *const () as usize
}

// `dlopen`, `dlsym` and `dlvsym` as soloader's libraries see them need to
// know who called them (for `RPATH`/`RUNPATH` and `RTLD_NEXT`): these
// entries pass their return address as one more argument and tail-jump
// to the implementation, which returns straight to the library.
std::arch::global_asm!(
    ".text",
    ".globl soloader_dlopen_entry",
    ".hidden soloader_dlopen_entry",
    ".type soloader_dlopen_entry,@function",
    "soloader_dlopen_entry:",
    "    mov (%rsp), %rdx",
    "    jmp {dlopen}",
    ".size soloader_dlopen_entry, .-soloader_dlopen_entry",
    ".globl soloader_dlsym_entry",
    ".hidden soloader_dlsym_entry",
    ".type soloader_dlsym_entry,@function",
    "soloader_dlsym_entry:",
    "    mov (%rsp), %rdx",
    "    jmp {dlsym}",
    ".size soloader_dlsym_entry, .-soloader_dlsym_entry",
    ".globl soloader_dlvsym_entry",
    ".hidden soloader_dlvsym_entry",
    ".type soloader_dlvsym_entry,@function",
    "soloader_dlvsym_entry:",
    "    mov (%rsp), %rcx",
    "    jmp {dlvsym}",
    ".size soloader_dlvsym_entry, .-soloader_dlvsym_entry",
    dlopen = sym crate::dl::dlopen_impl,
    dlsym = sym crate::dl::dlsym_impl,
    dlvsym = sym crate::dl::dlvsym_impl,
    options(att_syntax)
);

extern "C" {
    fn soloader_dlopen_entry();
    fn soloader_dlsym_entry();
    fn soloader_dlvsym_entry();
}

/// Entries for the loader functions that need their caller's address:
/// (`dlopen`, `dlsym`, `dlvsym`).
pub(crate) fn caller_entries() -> (usize, usize, usize) {
    (
        soloader_dlopen_entry as *const () as usize,
        soloader_dlsym_entry as *const () as usize,
        soloader_dlvsym_entry as *const () as usize,
    )
}
