//! Run manifests: what produced an output folder, so every number can be traced to
//! its seed, inputs, parameters and program version.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::atomic;
use crate::error::{Error, Result};

/// Written as `manifest.json` beside every output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub tool: String,
    pub version: String,
    /// The commit the binary was built from, when it was built inside a git checkout.
    pub git_commit: Option<String>,
    /// The subcommand (or experiment) that wrote the folder.
    pub command: String,
    /// The seed every random draw derives from, when the run draws anything.
    pub seed: Option<u64>,
    /// Every parameter of the run, as the program saw it after defaults were applied.
    pub parameters: serde_json::Value,
    /// Files read, with content hashes.
    pub inputs: Vec<InputRecord>,
    /// Files written, relative to the output folder.
    pub outputs: Vec<String>,
}

/// One input file and its SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputRecord {
    /// What the file is to the run ("model", "data", "mask", ...).
    pub role: String,
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    /// A manifest for `command` with its full parameter set.
    pub fn new(command: &str, seed: Option<u64>, parameters: &impl Serialize) -> Result<Self> {
        let parameters = serde_json::to_value(parameters)
            .map_err(|e| Error::Numerical(format!("cannot record parameters: {e}")))?;
        let commit = env!("MASKSCAPE_GIT_COMMIT");
        Ok(Manifest {
            tool: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: (!commit.is_empty()).then(|| commit.to_string()),
            command: command.to_string(),
            seed,
            parameters,
            inputs: Vec::new(),
            outputs: Vec::new(),
        })
    }

    /// Records an input file with its hash.
    pub fn add_input(&mut self, role: &str, path: &Path) -> Result<()> {
        let (sha256, bytes) = sha256_file(path)?;
        self.inputs.push(InputRecord {
            role: role.to_string(),
            path: path.display().to_string(),
            sha256,
            bytes,
        });
        Ok(())
    }

    /// Records output files by their names relative to the output folder.
    pub fn add_outputs<P: AsRef<Path>>(&mut self, paths: impl IntoIterator<Item = P>) {
        for path in paths {
            let path = path.as_ref();
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            self.outputs.push(name);
        }
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        atomic::write_json(&dir.join("manifest.json"), self)
    }
}

/// The SHA-256 (hex) and size of the file at `path`, read in chunks.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// The SHA-256 (hex) of `bytes`.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn hashes_match_known_values() -> TestResult {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x");
        std::fs::write(&path, b"abc")?;
        assert_eq!(sha256_file(&path)?, (sha256_bytes(b"abc"), 3));
        Ok(())
    }
}
