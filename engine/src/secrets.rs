//! Secrets at rest: what a module returns as secret (a server's root
//! password) is stored encrypted with an AEAD (XChaCha20-Poly1305) under a
//! key from the configuration or from a key file created (mode 0600) on
//! first start.
//!
//! A stored secret reads `enc:v1:{key id}:{base64(nonce ‖ ciphertext)}`;
//! the key id (the first 8 hex digits of the key's SHA-256) names the key
//! it was sealed with, so keys can be rotated: put the old key in
//! `previous_keys`, the new one in `key` (or `key_file`), and run
//! `bursar secrets rotate` to seal everything again under the new key.
//! Values sealed before encryption existed (plain JSON) are read as they
//! are and sealed on the next start.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "enc:v1:";

/// A setting's value: plain text, or a secret read at start from an
/// environment variable or a file. Secrets are never logged or returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    Text(String),
    Env { env: String },
    File { file: PathBuf },
}

impl SettingValue {
    /// The value, read from the environment or a file when it is a secret
    /// kept there. The error says where it looked.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SettingValue::Text(t) => Ok(t.clone()),
            SettingValue::Env { env } => std::env::var(env)
                .map_err(|_| format!("reads the environment variable {env}, which is not set")),
            SettingValue::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("reads {}: {e}", file.display())),
        }
    }
}

/// `[secrets]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// The key as 64 hex digits, from the environment or a file
    /// (`{ env = "NAME" }`, `{ file = "PATH" }`). Without it, `key_file`.
    pub key: Option<SettingValue>,
    /// Where the key lives when `key` is not set: created with a fresh
    /// random key (mode 0600) on first start.
    pub key_file: PathBuf,
    /// Keys that sealed earlier values: still read, never used to seal.
    pub previous_keys: Vec<SettingValue>,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            key: None,
            key_file: PathBuf::from("data/secret.key"),
            previous_keys: vec![],
        }
    }
}

/// Why secrets cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets key: {0}")]
    Key(String),
    #[error(
        "a stored secret was sealed with key {0}, which is not configured (add it to `secrets.previous_keys`)"
    )]
    UnknownKey(String),
    #[error("a stored secret does not open with its key: it is damaged or the key is wrong")]
    Damaged,
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn from_hex(text: &str) -> Result<Key, SecretsError> {
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| SecretsError::Key("must be 64 hex digits (32 bytes)".into()))?;
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| SecretsError::Key("unusable key".into()))?;
        Ok(Key { id, cipher })
    }
}

/// The keys secrets are sealed and opened with.
pub struct Secrets {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets(key {})", self.current.id)
    }
}

impl Secrets {
    /// The keys the configuration names, creating the key file (0600, in a
    /// 0700 directory) when there is neither a key nor a file yet.
    pub fn load(config: &SecretsConfig) -> Result<Secrets, SecretsError> {
        let current = match &config.key {
            Some(value) => value.resolve().map_err(SecretsError::Key)?,
            None => read_or_create(&config.key_file)?,
        };
        let previous = config
            .previous_keys
            .iter()
            .map(|k| Key::from_hex(&k.resolve().map_err(SecretsError::Key)?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Secrets {
            current: Key::from_hex(&current)?,
            previous,
        })
    }

    /// Secrets under a fixed key (tests, throw-away demo databases).
    pub fn with_key(hex_key: &str) -> Result<Secrets, SecretsError> {
        Ok(Secrets {
            current: Key::from_hex(hex_key)?,
            previous: vec![],
        })
    }

    /// The id of the key new values are sealed with.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plain` under the current key.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend(sealed);
        format!("{PREFIX}{}:{}", self.current.id, B64.encode(blob))
    }

    /// Opens a stored value; a value stored before encryption is returned
    /// as it is.
    pub fn open(&self, stored: &str) -> Result<String, SecretsError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, blob) = rest.split_once(':').ok_or(SecretsError::Damaged)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SecretsError::UnknownKey(id.to_owned()))?;
        let blob = B64.decode(blob).map_err(|_| SecretsError::Damaged)?;
        if blob.len() < 24 {
            return Err(SecretsError::Damaged);
        }
        let (nonce, sealed) = blob.split_at(24);
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| SecretsError::Damaged)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Damaged)
    }

    /// Whether a stored value is sealed under the current key already.
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(id, _)| id == self.current.id)
    }
}

/// A fresh random key as 64 hex digits.
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    hex::encode(key)
}

fn read_or_create(path: &Path) -> Result<String, SecretsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_private(path)?;
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate_key();
            match crate::files::write_private(path, &key) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "created a new secrets key; back it up with the database");
                    Ok(key)
                }
                // Another process created it a moment ago: use that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_create(path),
                Err(e) => Err(SecretsError::Key(format!(
                    "cannot create {}: {e}",
                    path.display()
                ))),
            }
        }
        Err(e) => Err(SecretsError::Key(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Refuses a key file others can read.
fn check_private(path: &Path) -> Result<(), SecretsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| SecretsError::Key(format!("{}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretsError::Key(format!(
                "{} is readable by others (mode {:o}); `chmod 600` it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_never_show_the_plain_text() {
        let a = Secrets::with_key(&generate_key()).unwrap();
        let sealed = a.seal(r#"{"root_password":"hunter2"}"#);
        assert!(sealed.starts_with("enc:v1:"));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            a.seal(r#"{"root_password":"hunter2"}"#),
            "fresh nonce"
        );
        assert_eq!(a.open(&sealed).unwrap(), r#"{"root_password":"hunter2"}"#);
        let b = Secrets::with_key(&generate_key()).unwrap();
        assert!(matches!(b.open(&sealed), Err(SecretsError::UnknownKey(_))));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(a.open(&tampered).is_err());
        assert_eq!(
            a.open("{}").unwrap(),
            "{}",
            "plain legacy values read as they are"
        );
    }

    #[test]
    fn rotated_keys_still_open_old_values() {
        let old = generate_key();
        let sealed = Secrets::with_key(&old).unwrap().seal("x");
        let config = SecretsConfig {
            key: Some(SettingValue::Text(generate_key())),
            key_file: PathBuf::new(),
            previous_keys: vec![SettingValue::Text(old)],
        };
        let s = Secrets::load(&config).unwrap();
        assert!(!s.is_current(&sealed));
        assert_eq!(s.open(&sealed).unwrap(), "x");
        assert!(s.is_current(&s.seal("x")));
    }

    #[test]
    fn the_key_file_is_created_private_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        let config = SecretsConfig {
            key_file: path.clone(),
            ..SecretsConfig::default()
        };
        let first = Secrets::load(&config).unwrap();
        let again = Secrets::load(&config).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(Secrets::load(&config).is_err());
        }
    }
}
