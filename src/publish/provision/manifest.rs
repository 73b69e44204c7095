//! The manifest: which files in the folder pbxsync wrote, with the xxh3-128
//! hash and length of what it wrote, so a run compares instead of reading every
//! file. `.pbxsync-manifest.json` in the folder, written atomically (mode 0640).

use super::ProvisionError;
use super::write::{fsync_dir, write_new};
use std::collections::BTreeMap;
use std::path::Path;

pub const MANIFEST_NAME: &str = ".pbxsync-manifest.json";
const FORMAT: u32 = 1;

/// What pbxsync wrote under one name. `hash` is `None` while a file is being
/// created: the name is claimed before the file exists, so a run cut short
/// leaves no file that the next run would take for someone else's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub xxh3: Option<String>,
    pub len: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub pbxsync_provision_manifest: u32,
    pub files: BTreeMap<String, Entry>,
}

pub fn hash(content: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(content))
}

impl Manifest {
    /// The manifest in `dir`, empty when there is none. Names that pbxsync would
    /// never write (a path, a hidden file) are dropped, so an edited manifest
    /// cannot make it remove a file outside its own.
    pub fn load(dir: &Path) -> Result<Manifest, ProvisionError> {
        let path = dir.join(MANIFEST_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    pbxsync_provision_manifest: FORMAT,
                    files: BTreeMap::new(),
                });
            }
            Err(source) => {
                return Err(ProvisionError::Io {
                    path,
                    doing: "read",
                    source,
                });
            }
        };
        let mut manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ProvisionError::Manifest {
                path: path.clone(),
                why: e.to_string(),
            })?;
        if manifest.pbxsync_provision_manifest != FORMAT {
            return Err(ProvisionError::Manifest {
                path,
                why: format!(
                    "its format is {}, this pbxsync reads {FORMAT}",
                    manifest.pbxsync_provision_manifest
                ),
            });
        }
        manifest
            .files
            .retain(|name, _| super::render::is_plain_file_name(name));
        Ok(manifest)
    }

    /// Writes the manifest atomically and durably (the file, then the folder's
    /// entry for it).
    pub fn save(&self, dir: &Path, dir_handle: &std::fs::File) -> Result<(), ProvisionError> {
        let path = dir.join(MANIFEST_NAME);
        let mut bytes = serde_json::to_vec(self).map_err(|e| ProvisionError::Io {
            path: path.clone(),
            doing: "write",
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        let io = |source| ProvisionError::Io {
            path: path.clone(),
            doing: "write",
            source,
        };
        write_new(
            dir,
            MANIFEST_NAME,
            &bytes,
            &super::write::tmp_name(MANIFEST_NAME),
            true,
        )
        .map_err(io)?;
        fsync_dir(dir_handle).map_err(io)
    }
}
