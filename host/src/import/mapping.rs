//! The mapping file: one JSON line `{org, raw_id, sha256, size}` per
//! object copied, read again to skip what earlier runs did.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::content::Digest;
use crate::error::{Error, Result};

/// One line of the mapping file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingLine {
    pub org: String,
    pub raw_id: String,
    pub sha256: String,
    pub size: u64,
}

/// The mapping file: what earlier runs recorded, and the lines this run
/// appends (each written whole, with `O_APPEND`, once its object is
/// stored).
pub(super) struct Mapping {
    pub(super) done: HashMap<(String, String), Digest>,
    file: Option<Mutex<std::fs::File>>,
}

impl Mapping {
    pub(super) fn open(path: Option<&Path>) -> Result<Mapping> {
        let Some(path) = path else { return Ok(Mapping { done: HashMap::new(), file: None }) };
        let mut done = HashMap::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
                    let line = line.map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    // A line cut short by a crash is the last one; it is
                    // simply done again.
                    let Ok(m) = serde_json::from_str::<MappingLine>(&line) else {
                        tracing::warn!(file = %path.display(), line = n + 1, "skipping a mapping line that does not parse");
                        continue;
                    };
                    if let Ok(d) = m.sha256.parse() {
                        done.insert((m.org, m.raw_id), d);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        if created {
            // The new file's name survives a power loss too.
            let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if let Ok(d) = std::fs::File::open(folder) {
                let _ = d.sync_all();
            }
        }
        // A line a crash cut short must not run into the next one.
        let mut file = file;
        if file.metadata().map(|m| m.len() > 0).unwrap_or(false) && !ends_with_newline(path) {
            file.write_all(b"\n").map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(Mapping { done, file: Some(Mutex::new(file)) })
    }

    pub(super) fn append(&self, line: &MappingLine) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let mut text = serde_json::to_string(line).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
        text.push('\n');
        // One write per line (O_APPEND); synced once at the end. A line a
        // crash loses is done again by the next run (its put de-duplicates).
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(text.as_bytes()).map_err(|e| Error::io("writing the mapping file", e))
    }

    pub(super) fn sync(&self) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        file.lock().unwrap_or_else(|e| e.into_inner()).sync_all().map_err(|e| Error::io("syncing the mapping file", e))
    }
}

fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return true };
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] == b'\n'
}
