//! `appliance control init`: the state directory, control's Noise key, the
//! admin token and the tailnet row. Idempotent.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use causeway_tailnet::TailnetInfo;
use causeway_tailnet::addresses::ula_from_random;
use causeway_wire::{PrivateKey, PublicKey};

use crate::server::unix_now;
use crate::store::Store;

/// Control's Noise private key (base64, 0600).
pub(crate) const KEY_FILE: &str = "control.key";
/// Control's public key (base64), for nodes to pin.
pub(crate) const PUBLIC_KEY_FILE: &str = "control.pub";
/// The admin API bearer token (0600).
pub(crate) const TOKEN_FILE: &str = "admin.token";
/// Shortest admin token accepted: 32 characters (128 bits as hex; `init`
/// writes 64). An empty or short token would let anyone who can reach the
/// admin listener guess it.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;
/// Name of a new tailnet (first label of its MagicDNS domain).
const DEFAULT_TAILNET_NAME: &str = "tailnet";

/// What [`init`] found or created.
#[derive(Clone, Debug)]
pub struct InitOutput {
    /// Control's public key, for nodes to pin.
    pub public_key: PublicKey,
    /// Where the admin token is.
    pub admin_token_file: PathBuf,
    /// Whether this run created the tailnet (false: it existed already).
    pub created: bool,
}

/// Creates the state directory (0700), control's key (0600), the admin
/// token (0600) and the tailnet with a random ULA /48 in the database.
/// Running it again changes nothing and returns the same key.
pub fn init(state_dir: &Path) -> anyhow::Result<InitOutput> {
    match DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
    {
        Ok(()) => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("creating state directory {}", state_dir.display()));
        }
    }
    let key_path = state_dir.join(KEY_FILE);
    let key = match fs::read_to_string(&key_path) {
        Ok(text) => PrivateKey::from_base64(&text)
            .with_context(|| format!("reading control key {}", key_path.display()))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let key = PrivateKey::from_random_bytes(rand::random());
            write_secret(&key_path, &format!("{}\n", key.to_base64()))?;
            key
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading control key {}", key_path.display()));
        }
    };
    let public_key = key.public_key();
    let token_path = state_dir.join(TOKEN_FILE);
    if !token_path.exists() {
        write_secret(
            &token_path,
            &format!("{}\n", hex::encode(rand::random::<[u8; 32]>())),
        )?;
    }
    let pub_path = state_dir.join(PUBLIC_KEY_FILE);
    let pub_text = format!("{public_key}\n");
    if fs::read_to_string(&pub_path).ok().as_deref() != Some(pub_text.as_str()) {
        fs::write(&pub_path, &pub_text)
            .with_context(|| format!("writing {}", pub_path.display()))?;
    }
    let store = Store::open(state_dir)?;
    let created = match store.tailnet()? {
        Some((_, stored_key, _)) => {
            if stored_key != public_key {
                anyhow::bail!(
                    "{} does not match the control key recorded in the database; restore the original key file",
                    key_path.display()
                );
            }
            false
        }
        None => {
            let info = TailnetInfo::new(DEFAULT_TAILNET_NAME, ula_from_random(rand::random()));
            store.create_tailnet(&info, &public_key, unix_now())?;
            tracing::info!(ula = %info.ula, domain = %info.domain, "created tailnet");
            true
        }
    };
    Ok(InitOutput {
        public_key,
        admin_token_file: token_path,
        created,
    })
}

/// Reads control's private key from the state directory.
pub(crate) fn read_control_key(state_dir: &Path) -> anyhow::Result<PrivateKey> {
    let path = state_dir.join(KEY_FILE);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading control key {}", path.display()))?;
    PrivateKey::from_base64(&text)
        .with_context(|| format!("parsing control key {}", path.display()))
}

/// Reads the admin token from the state directory.
pub(crate) fn read_admin_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join(TOKEN_FILE);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading admin token {}", path.display()))?;
    let token = text.trim();
    let length = token.chars().count();
    if length < MIN_ADMIN_TOKEN_CHARS {
        anyhow::bail!(
            "admin token {} has {length} characters: expected at least {MIN_ADMIN_TOKEN_CHARS} (delete it and run `appliance control init` to write a new one)",
            path.display()
        );
    }
    Ok(token.to_owned())
}

fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_is_idempotent_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let first = init(&state).expect("first init");
        assert!(first.created);
        let token = fs::read_to_string(state.join(TOKEN_FILE)).expect("token");
        let second = init(&state).expect("second init");
        assert!(!second.created);
        assert_eq!(first.public_key, second.public_key);
        assert_eq!(
            fs::read_to_string(state.join(TOKEN_FILE)).expect("token"),
            token
        );
        let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&state.join(TOKEN_FILE)), 0o600);
        assert_eq!(read_admin_token(&state).expect("token"), token.trim());
        assert_eq!(
            fs::read_to_string(state.join(PUBLIC_KEY_FILE))
                .expect("pub")
                .trim(),
            first.public_key.to_string()
        );
    }

    #[test]
    fn an_empty_or_short_admin_token_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        init(&state).expect("init");
        for (contents, length) in [("", 0), ("\n", 0), ("secret\n", 6), (&"a".repeat(31), 31)] {
            fs::write(state.join(TOKEN_FILE), contents).expect("write");
            let error = format!("{:#}", read_admin_token(&state).expect_err(contents));
            assert!(
                error.contains(&format!("has {length} characters: expected at least 32")),
                "{error}"
            );
        }
        fs::write(state.join(TOKEN_FILE), "a".repeat(32)).expect("write");
        assert_eq!(
            read_admin_token(&state).expect("long enough"),
            "a".repeat(32)
        );
    }
}
