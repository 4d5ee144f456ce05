//! The `coffer` command line. The binary only parses and calls [`run`].
//!
//! - `args.rs`: every command and its options ([`Cli`]);
//! - `run.rs`: the runtime, signals, logging, exit codes;
//! - `commands.rs`: what each command does with the library;
//! - `progress.rs`: the progress bar of long work.
//!
//! Output is for scripts: JSON objects on stdout (one per line for `ls`),
//! raw bytes for `get`; errors are one line on stderr, and the exit code
//! says which kind of failure it was ([`exit_code`]).

mod args;
mod commands;
mod progress;
mod run;

#[cfg(feature = "server")]
pub use self::args::TokenCommand;
pub use self::args::{Cli, Command, ImportCommand, MigrateArgs, PolicyCommand, parse_duration};
pub use self::run::{exit_code, run};
