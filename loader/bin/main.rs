//! `soloader`: the command-line face of the loader.
//!
//! Each subcommand lives in its own file, exposing an `Args` struct (clap
//! derive) and a `run(Args) -> anyhow::Result<()>`. Adding one is one `mod`
//! line, one [`Command`] variant and one arm in [`Command::run`].
//!
//! Exit status: 0 on success; 1 when the work itself fails (the library
//! cannot be loaded, the symbol is missing, …), reported as one line
//! `soloader: <error>` on stderr; 2 for usage errors, whether clap finds
//! them (unknown flag, missing argument) or a subcommand does after
//! parsing (see [`Usage`]).

mod call;
mod check;
mod demo;
mod inspect;
mod pages;
mod rss;
mod trace;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

/// A userspace ELF dynamic loader: what ld.so does inside dlopen, done in
/// the open.
#[derive(Parser)]
#[command(name = "soloader", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a library with soloader and call one of its functions.
    Call(call::Args),
    /// What loading a library will do, read from the file alone: segments,
    /// dynamic entries, relocations and the pages they will write.
    Inspect(inspect::Args),
    /// Would a library load? Parse, validate, map and relocate it and its
    /// dependencies without running any of their code, then unmap.
    Check(check::Args),
    /// Every step of a real load, in order, explained (like LD_DEBUG):
    /// the search, each mmap/mprotect, relocations, bindings, faults.
    Trace(trace::Args),
    /// Page by page, which pages of each segment are resident, shared or
    /// private copies: after mapping, after relocation, after a call.
    Pages(pages::Args),
    /// Experiments on mmap: mmap-vs-read, private-vs-shared, lazy,
    /// unmappable.
    Demo(demo::Args),
    /// Measure how much of a library is physically shared between N
    /// processes, per segment, with soloader, dlopen or a plain read.
    Rss(rss::Args),
    /// Internal: one worker process of `soloader rss`.
    #[command(name = "rss-worker", hide = true)]
    RssWorker(rss::WorkerArgs),
}

impl Command {
    /// The subcommand's name as typed, for usage messages.
    fn name(&self) -> &'static str {
        match self {
            Command::Call(_) => "call",
            Command::Inspect(_) => "inspect",
            Command::Check(_) => "check",
            Command::Trace(_) => "trace",
            Command::Pages(_) => "pages",
            Command::Demo(_) => "demo",
            Command::Rss(_) => "rss",
            Command::RssWorker(_) => "rss-worker",
        }
    }

    fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Call(args) => call::run(args),
            Command::Inspect(args) => inspect::run(args),
            Command::Check(args) => check::run(args),
            Command::Trace(args) => trace::run(args),
            Command::Pages(args) => pages::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Rss(args) => rss::run(args),
            Command::RssWorker(args) => rss::worker(args),
        }
    }
}

/// A usage error a subcommand found after clap's parse (too many arguments,
/// an argument of the wrong kind). Reported the way clap reports its own
/// errors, with the subcommand's usage, and exits with status 2.
#[derive(Debug)]
pub struct Usage {
    /// What is wrong, one sentence.
    pub message: String,
}

impl Usage {
    /// A usage error carrying `message`, ready for `?`.
    pub fn err(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Usage {
            message: message.into(),
        })
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Usage {}

/// The error and its causes on one line, each cause added only if the text
/// so far does not already say it (the library's errors include their
/// `io::Error` in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = call::normalize_numbers(std::env::args_os().collect());
    let cli = Cli::parse_from(argv);
    let name = cli.command.name();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Usage>() {
            Some(usage) => {
                let mut cmd = Cli::command();
                cmd.build();
                let err = match cmd.find_subcommand_mut(name) {
                    Some(sub) => sub.error(ErrorKind::InvalidValue, &usage.message),
                    None => cmd.error(ErrorKind::InvalidValue, &usage.message),
                };
                // Prints the message with the usage and exits with 2.
                err.exit()
            }
            None => {
                eprintln!("soloader: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
    }
}
