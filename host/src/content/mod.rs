//! Content going in and coming out:
//! - `digest.rs`: the SHA-256 [`Digest`] that names it;
//! - `input.rs`: [`Content`], hashed natively before the policy sees it
//!   (spooled to a temporary file when the input cannot be read twice);
//! - `parts.rs`: the digests of its parts, for multipart uploads, recorded
//!   in the same pass;
//! - `stream.rs`: [`verify_stream`], which checks bytes coming back against
//!   their digest, [`exact_len`] for ranges, and [`range`]s cut from a
//!   stream;
//! - `spool.rs`: [`Spool`], where input that cannot be read twice is
//!   spooled, and the host-wide budget of bytes spooled at once;
//! - `output.rs`: [`write_to_path`], where a read's bytes go on disk
//!   (regular files atomically, devices and FIFOs written through).

mod digest;
mod input;
mod output;
mod parts;
mod spool;
mod stream;

pub use self::digest::{Digest, Sha256};
pub use self::input::{Content, DEFAULT_CONTENT_TYPE, MAX_PEEK, normalize_content_type};
pub use self::output::write_to_path;
pub use self::parts::{PART_SIZE, PARTS_ABOVE, PartDigest};
pub use self::spool::Spool;
pub use self::stream::{ByteStream, CHUNK, exact_len, range, verify_stream};
