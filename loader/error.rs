//! The one error type of the library.
//!
//! Every error names the file it is about, and then the field, offset,
//! symbol or library at fault, so that its one-line `Display` is enough to
//! act on. Errors that come from the operating system keep the OS's own
//! words (`std::io::Error`) as their source.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong while finding, validating, mapping, linking, running or
/// unloading a library.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the file failed (`open`, `fstat`, `read` …).
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done, e.g. `"open"`.
        op: &'static str,
        /// The operating system's words.
        source: io::Error,
    },
    /// The file is not a well-formed ELF shared object for this host: a
    /// header, offset, size, index or table is out of range or inconsistent.
    Malformed {
        /// The file.
        path: PathBuf,
        /// The field or table at fault, and why.
        what: String,
        /// The file offset or virtual address at fault, when there is one.
        offset: Option<u64>,
    },
    /// The file is well-formed but asks for something soloader refuses or
    /// does not support (an executable stack, a `COPY` relocation, …).
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is refused, and why.
        what: String,
    },
    /// A library named by the caller or by `DT_NEEDED` was not found.
    NotFound {
        /// The name that was searched for.
        name: String,
        /// The library whose `DT_NEEDED` asked for it, if any.
        needed_by: Option<PathBuf>,
        /// Every path that was tried, in order.
        tried: Vec<PathBuf>,
    },
    /// A symbol that a relocation needs is defined nowhere in scope.
    UndefinedSymbol {
        /// The library whose relocation needs the symbol.
        path: PathBuf,
        /// The symbol's name.
        symbol: String,
        /// The version it needs, if any.
        version: Option<String>,
    },
    /// A version that a library needs (`DT_VERNEED`) is not defined by the
    /// dependency that should provide it.
    VersionNotFound {
        /// The library that needs the version.
        path: PathBuf,
        /// The version's name.
        version: String,
        /// The dependency (by its `DT_NEEDED` name) that lacks it.
        dependency: String,
    },
    /// `Library::get` found no symbol of that name (and version).
    SymbolNotFound {
        /// The library that was searched (with its dependencies).
        path: PathBuf,
        /// The symbol's name.
        symbol: String,
        /// The version asked for, if any.
        version: Option<String>,
    },
    /// A memory-management call (`mmap`, `mprotect`, `munmap`, `madvise`)
    /// failed while placing the library.
    Map {
        /// The library being placed.
        path: PathBuf,
        /// The call, e.g. `"mmap"`.
        op: &'static str,
        /// The address asked for (0 when the kernel chooses).
        addr: usize,
        /// The length.
        len: usize,
        /// The operating system's words.
        source: io::Error,
    },
    /// The system loader (`dlopen`) refused a library that soloader binds
    /// to the host's copy (the glibc family, `libgcc_s`, `libstdc++`).
    Host {
        /// The library.
        name: String,
        /// The library whose `DT_NEEDED` named it, if any.
        needed_by: Option<PathBuf>,
        /// `dlerror()`'s words.
        message: String,
    },
    /// The library's own code failed in a way the loader can see (an
    /// initialiser that unwound into the loader is not caught; this is for
    /// things like an IFUNC resolver that returned a null address).
    Runtime {
        /// The library.
        path: PathBuf,
        /// What happened.
        what: String,
    },
}

impl Error {
    /// The library file (or name) this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::Malformed { path, .. }
            | Error::Unsupported { path, .. }
            | Error::UndefinedSymbol { path, .. }
            | Error::VersionNotFound { path, .. }
            | Error::SymbolNotFound { path, .. }
            | Error::Map { path, .. }
            | Error::Runtime { path, .. } => path,
            Error::NotFound { name, .. } | Error::Host { name, .. } => Path::new(name),
        }
    }

    pub(crate) fn malformed(path: &Path, what: impl Into<String>, offset: Option<u64>) -> Error {
        Error::Malformed {
            path: path.to_path_buf(),
            what: what.into(),
            offset,
        }
    }

    pub(crate) fn unsupported(path: &Path, what: impl Into<String>) -> Error {
        Error::Unsupported {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}

fn version_suffix(version: &Option<String>) -> String {
    match version {
        Some(v) => format!(", version {v}"),
        None => String::new(),
    }
}

impl fmt::Display for Error {
    /// One line: names, paths and strings read from a file (a hostile one
    /// may hold a newline in a symbol name) have their control characters
    /// escaped, Rust-style (`\n`, `\u{1b}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        self.write_raw(&mut line)?;
        for c in line.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl Error {
    /// The message, before control characters are escaped.
    fn write_raw(&self, f: &mut String) -> fmt::Result {
        use fmt::Write as _;
        match self {
            Error::Io { path, op, source } => {
                write!(f, "{}: {op} failed: {source}", path.display())
            }
            Error::Malformed { path, what, offset } => {
                write!(f, "{}: malformed ELF: {what}", path.display())?;
                if let Some(off) = offset {
                    write!(f, " (at {off:#x})")?;
                }
                Ok(())
            }
            Error::Unsupported { path, what } => {
                write!(f, "{}: unsupported: {what}", path.display())
            }
            Error::NotFound {
                name,
                needed_by,
                tried,
            } => {
                write!(f, "{name}: cannot find shared library")?;
                if let Some(by) = needed_by {
                    write!(f, " (needed by {})", by.display())?;
                }
                if !tried.is_empty() {
                    write!(f, "; tried {} path(s)", tried.len())?;
                }
                Ok(())
            }
            Error::UndefinedSymbol {
                path,
                symbol,
                version,
            } => write!(
                f,
                "{}: undefined symbol: {symbol}{}",
                path.display(),
                version_suffix(version)
            ),
            Error::VersionNotFound {
                path,
                version,
                dependency,
            } => write!(
                f,
                "{}: version `{version}' not found in {dependency} (required by {})",
                path.display(),
                path.display()
            ),
            Error::SymbolNotFound {
                path,
                symbol,
                version,
            } => write!(
                f,
                "{}: symbol not found: {symbol}{}",
                path.display(),
                version_suffix(version)
            ),
            Error::Map {
                path,
                op,
                addr,
                len,
                source,
            } => write!(
                f,
                "{}: {op}({addr:#x}, {len:#x}) failed: {source}",
                path.display()
            ),
            Error::Host {
                name,
                needed_by,
                message,
            } => {
                write!(f, "{name}")?;
                if let Some(by) = needed_by {
                    write!(f, " (needed by {})", by.display())?;
                }
                write!(f, ": the system loader refused it: {message}")
            }
            Error::Runtime { path, what } => write!(f, "{}: {what}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Map { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;
