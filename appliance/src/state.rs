//! Files the node keeps in its state directory: keys (0600) and its
//! registration.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use causeway_wire::{NodeId, PrivateKey};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The node key control accepted last.
const NODE_KEY: &str = "node.key";
/// A node key created for a rotation control has not confirmed yet.
const PENDING_NODE_KEY: &str = "pending-node.key";

/// The node's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// What control told us when we registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Our node id.
    pub node_id: NodeId,
    /// Our tailnet addresses.
    pub addresses: Vec<IpNet>,
}

impl StateDir {
    /// Opens (creating with 0700) the directory.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(root)
            .with_context(|| format!("creating state directory {}", root.display()))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting state directory {}", root.display()))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the status socket.
    pub fn status_socket(&self) -> PathBuf {
        self.root.join("appliance.sock")
    }

    /// Path of the command socket (`appliance set`).
    pub fn command_socket(&self) -> PathBuf {
        command_socket(&self.root)
    }

    /// The machine key, created on first use.
    pub fn machine_key(&self) -> anyhow::Result<PrivateKey> {
        self.key("machine.key")
    }

    /// The current node key (created on first use) and the pending one a
    /// rotation created, if control has not confirmed it yet.
    pub fn node_keys(&self) -> anyhow::Result<(PrivateKey, Option<PrivateKey>)> {
        let current = self.key(NODE_KEY)?;
        let path = self.root.join(PENDING_NODE_KEY);
        let pending = match fs::read_to_string(&path) {
            Ok(text) => Some(
                PrivateKey::from_base64(&text)
                    .with_context(|| format!("reading key file {}", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading key file {}", path.display()));
            }
        };
        Ok((current, pending))
    }

    /// Stores `key` as the pending node key of a rotation; the current key
    /// stays until control confirms the new one.
    pub fn save_pending_node_key(&self, key: &PrivateKey) -> anyhow::Result<()> {
        write_secret(
            &self.root.join(PENDING_NODE_KEY),
            key.to_base64().as_bytes(),
        )
    }

    /// Makes `key` the current node key and removes the pending one, in
    /// that order: a crash between the two leaves them equal, which the
    /// next start recognises.
    pub fn commit_node_key(&self, key: &PrivateKey) -> anyhow::Result<()> {
        write_secret(&self.root.join(NODE_KEY), key.to_base64().as_bytes())?;
        let pending = self.root.join(PENDING_NODE_KEY);
        match fs::remove_file(&pending) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", pending.display())),
        }
    }

    /// Our registration, if we have one.
    pub fn registration(&self) -> anyhow::Result<Option<Registration>> {
        let path = self.root.join("registration.json");
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Saves our registration.
    pub fn save_registration(&self, registration: &Registration) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(registration).context("serialising registration")?;
        write_secret(&self.root.join("registration.json"), &json)
    }

    fn key(&self, name: &str) -> anyhow::Result<PrivateKey> {
        let path = self.root.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => PrivateKey::from_base64(&text)
                .with_context(|| format!("reading key file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = PrivateKey::from_random_bytes(rand::random());
                write_secret(&path, key.to_base64().as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
        }
    }
}

/// Writes a file readable only by its owner, atomically (temp + rename).
fn write_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// The command socket of the daemon whose state directory is `root`.
pub fn command_socket(root: &Path) -> PathBuf {
    root.join("command.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_with_owner_only_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("opens");
        let first = state.machine_key().expect("created").public_key();
        let again = state.machine_key().expect("read back").public_key();
        assert_eq!(first, again);
        let mode = fs::metadata(dir.path().join("machine.key"))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_pending_node_key_becomes_current_only_when_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("opens");
        let (old, pending) = state.node_keys().expect("created");
        assert!(pending.is_none());

        let new = PrivateKey::from_random_bytes([9; 32]);
        state.save_pending_node_key(&new).expect("saved");
        let (current, pending) = state.node_keys().expect("read");
        assert_eq!(current.public_key(), old.public_key());
        assert_eq!(pending.map(|k| k.public_key()), Some(new.public_key()));
        let mode = fs::metadata(dir.path().join(PENDING_NODE_KEY))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        state.commit_node_key(&new).expect("committed");
        let (current, pending) = state.node_keys().expect("read");
        assert_eq!(current.public_key(), new.public_key());
        assert!(pending.is_none());
        // Committing again (a restart after a crash mid-commit) is harmless.
        state.commit_node_key(&new).expect("committed again");
        assert_eq!(
            state.node_keys().expect("read").0.public_key(),
            new.public_key()
        );
    }
}
