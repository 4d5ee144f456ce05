//! The `coffer` command: parse the arguments, run the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    coffer::cli::run(coffer::cli::Cli::parse())
}
