//! The command line's arguments: every command and its options, as clap
//! parses them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Store organisations' files in S3 or a database, placed by a sandboxed
/// WebAssembly policy. Configured by environment (see the README).
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a `wasi:cli` command component (a plugin) with Coffer's
    /// `wasi:blobstore` wired in, acting for ORG; for trying plugins out.
    /// The plugin gets its arguments, standard output and error, and no
    /// files, network or environment. Exits 1 if the plugin fails.
    RunPlugin {
        /// The component (`.wasm`).
        component: PathBuf,
        #[arg(long)]
        org: String,
        /// Arguments passed to the plugin.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Store a file (`-` for standard input); prints its record as JSON.
    Put {
        #[arg(long)]
        org: String,
        file: PathBuf,
        /// MIME type to record (default application/octet-stream).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Write a stored file's bytes to standard output or a file.
    Get {
        #[arg(long)]
        org: String,
        sha256: String,
        /// Write here instead of standard output: a regular file
        /// atomically (it appears only once the bytes are verified); a
        /// device or FIFO is written through, never replaced; a symbolic
        /// link is refused (never followed); `-` is standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a stored file's record as JSON.
    Stat {
        #[arg(long)]
        org: String,
        sha256: String,
    },
    /// List an organisation's files, one JSON object per line.
    Ls {
        #[arg(long)]
        org: String,
    },
    /// Print a direct download link (S3 only): presigned and expiring, saved
    /// as a file unless --inline; or plain with --public for a bucket made
    /// public.
    Link {
        #[arg(long)]
        org: String,
        sha256: String,
        /// Seconds the link stays valid (1 to 604800).
        #[arg(long, default_value_t = 3600)]
        expires: u64,
        /// File name the browser saves the download as.
        #[arg(long)]
        filename: Option<String>,
        /// Let the browser show the file instead of saving it
        /// (Content-Disposition: inline); only for content safe to display.
        #[arg(long)]
        inline: bool,
        /// The plain URL, for a bucket the operator made public.
        #[arg(long, conflicts_with_all = ["expires", "filename", "inline"])]
        public: bool,
    },
    /// Delete an organisation's file (where policy allows).
    Rm {
        #[arg(long)]
        org: String,
        sha256: String,
    },
    /// Serve the HTTP API (see the README and /openapi.json) until SIGTERM
    /// or SIGINT; requests in flight then finish.
    #[cfg(feature = "server")]
    Serve {
        /// HOST:PORT (default: COFFER_LISTEN, the config file, or 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Bearer tokens for `coffer serve`.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the bucket the configuration gives an organisation, or why it
    /// cannot have one. Contacts no backend.
    BucketName {
        #[arg(long)]
        org: String,
    },
    /// Reclaim what crashes and failures left behind: abandoned
    /// reservations, unfinished deletions, incomplete uploads, and bytes no
    /// record refers to. Prints a JSON summary.
    Gc {
        /// Reclaim only what is older than this (`24h`, `30m`, `90s`, `2d`;
        /// `0s` for everything). Keep it longer than your longest upload.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        older_than: Duration,
        /// Count what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move objects to where the current configuration and policy put new
    /// ones (database → S3, S3 → database, between bucket layouts), and
    /// parked objects to S3: copied, verified at the destination, the
    /// record switched, the old bytes deleted. Resumable; prints a JSON
    /// summary.
    Migrate {
        #[command(flatten)]
        args: MigrateArgs,
        /// Only objects parked in the database while S3 was unavailable.
        #[arg(long)]
        parked: bool,
    },
    /// Move objects parked in the database while S3 was unavailable to S3
    /// (`coffer migrate --parked`).
    Drain {
        #[command(flatten)]
        args: MigrateArgs,
    },
    /// Check every record against its bytes: present where the catalog
    /// says (and, with --deep, hashed again). Problems are printed as JSON
    /// lines, then a JSON summary; exit 5 if any object is missing or
    /// corrupt, 6 if some could not be checked.
    Verify {
        /// Only this organisation's records (without it, bytes no record
        /// refers to are listed too).
        #[arg(long)]
        org: Option<String>,
        /// Read and hash every object instead of trusting the digest the
        /// store reports.
        #[arg(long)]
        deep: bool,
        /// Objects checked at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
    /// Adopt an existing store: a Request Tracker bucket in place, or an
    /// OpenKAT Bytes store (S3 or files) or any directory copied in, with a
    /// mapping file of old ids to digests. Nothing in the source is
    /// changed. Prints a JSON summary.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Work with policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// Options shared by `migrate` and `drain`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Only this organisation's objects.
    #[arg(long)]
    pub(crate) org: Option<String>,
    /// Count what would be moved; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Objects moved at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) jobs: u16,
    /// Move at most this many objects in this run.
    #[arg(long)]
    pub(crate) limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A Request Tracker external-storage bucket (keys are SHA-256 digests),
    /// adopted in place for one organisation: nothing is copied, and
    /// Coffer never deletes bytes there.
    Rt {
        /// The bucket RT writes to (on the configured S3 endpoint).
        #[arg(long)]
        bucket: String,
        /// Only keys under this prefix (the digest follows it).
        #[arg(long, default_value = "")]
        prefix: String,
        /// The organisation the objects become records of.
        #[arg(long)]
        org: String,
        /// Read and hash every object, even when the server reports a
        /// SHA-256 checksum (objects without one are always read).
        #[arg(long)]
        deep: bool,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
    /// An OpenKAT Bytes S3 store, copied into Coffer's layout: a bucket per
    /// organisation (--bucket-prefix and --org for each), or one bucket
    /// with ORG/RAW-ID keys (--bucket).
    OpenkatS3 {
        #[arg(long, conflicts_with = "bucket_prefix", required_unless_present = "bucket_prefix")]
        bucket: Option<String>,
        #[arg(long)]
        bucket_prefix: Option<String>,
        /// Organisations to import (required with --bucket-prefix; with
        /// --bucket, all found when none is given). Repeat it.
        #[arg(long)]
        org: Vec<String>,
        /// The mapping file: one JSON line {org, raw_id, sha256, size} per
        /// object; appended to, and read to skip what a run did before.
        #[arg(long)]
        mapping: PathBuf,
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
    /// A directory copied into Coffer's layout: OpenKAT's file layout
    /// (ORG/ID[:3]/ID), or, with --org, every file below it.
    Dir {
        path: PathBuf,
        /// Import every file (recursively) for this organisation; the raw
        /// id is the path relative to the directory.
        #[arg(long)]
        org: Option<String>,
        /// The mapping file, as for openkat-s3.
        #[arg(long)]
        mapping: PathBuf,
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
}

/// Parse `90`, `90s`, `30m`, `24h` or `2d`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h or 2d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.map(Duration::from_secs).ok_or_else(|| format!("{s:?} is not a duration like 90s, 30m, 24h or 2d"))
}

#[cfg(feature = "server")]
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random token: prints the token once (give it to the
    /// client) and the `[[server.tokens]]` entry, with only its SHA-256,
    /// for the configuration file.
    New {
        #[arg(long)]
        org: String,
        /// A name for logs and metrics.
        #[arg(long)]
        name: String,
        /// Comma-separated: read, write, delete, link.
        #[arg(long, default_value = "read,write,delete,link", value_delimiter = ',')]
        scopes: Vec<crate::config::Scope>,
    },
    /// The SHA-256 to configure for a token read from standard input.
    Hash,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a component against the contract, print what it exports, and
    /// run it through a self-test on a scratch database.
    Check { file: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "h", "1w", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
