//! Secrets: the key that encrypts BMC passwords at rest, and API/agent tokens.
//!
//! The key is 32 random bytes in a file created with mode 0600 on first start.
//! Passwords are sealed with XChaCha20-Poly1305 (random 24-byte nonce) and stored
//! as `v1:<base64(nonce || ciphertext)>`. Tokens are random, shown once, and only
//! their SHA-256 is stored.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secrets key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("secrets key file {path} must hold exactly 32 bytes, it holds {len}")]
    BadKey { path: String, len: usize },
    #[error("stored secret cannot be decrypted (was the key file replaced?)")]
    Decrypt,
}

/// The key sealing secrets at rest.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// Fills a buffer from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source works");
    b
}

/// Creates `dir` (and its missing parents) readable only by its owner
/// (0700), and takes group and other access away from it when it exists with
/// them: it holds the database, the key and the admin token.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), mode = format!("{mode:o}"), "group and other access to the data directory taken away (now 700)");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// Makes the files that exist among `paths` readable only by their owner
/// (0600); the others are left to be created so (see [`write_private`]).
pub fn private_files(paths: &[std::path::PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `bytes` to a new file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl SecretBox {
    /// Loads the key from `path`, creating it (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, SecretError> {
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read(path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = random_bytes::<32>();
                match write_private(path, &k) {
                    Ok(()) => k.to_vec(),
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(path).map_err(io)?
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        if key.len() != 32 {
            return Err(SecretError::BadKey {
                path: path.display().to_string(),
                len: key.len(),
            });
        }
        Ok(SecretBox::from_key(&key))
    }

    /// A box from raw key bytes (32 of them).
    pub fn from_key(key: &[u8]) -> SecretBox {
        SecretBox {
            cipher: XChaCha20Poly1305::new_from_slice(key).expect("32-byte key"),
        }
    }

    /// Seals a secret for storage.
    pub fn seal(&self, plain: &str) -> String {
        let nonce = random_bytes::<24>();
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("v1:{}", STANDARD.encode(out))
    }

    /// Opens a sealed secret.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix("v1:")
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > 24)
            .ok_or(SecretError::Decrypt)?;
        let (nonce, ct) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

/// A new random token with a recognisable prefix (`rl_` for API, `rla_` for agents).
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/secret.key");
        let a = SecretBox::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = a.seal("hunter2");
        assert!(!sealed.contains("hunter2"));
        let b = SecretBox::load_or_create(&p).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), "hunter2");
        // Sealing twice gives different ciphertexts (random nonce).
        assert_ne!(a.seal("x"), a.seal("x"));
    }

    #[test]
    fn wrong_key_or_tampering_is_refused() {
        let a = SecretBox::from_key(&[1; 32]);
        let b = SecretBox::from_key(&[2; 32]);
        let sealed = a.seal("pw");
        assert!(b.open(&sealed).is_err());
        // Flip one bit of the ciphertext: authentication must fail.
        let mut raw = STANDARD
            .decode(sealed.strip_prefix("v1:").unwrap())
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(a.open(&format!("v1:{}", STANDARD.encode(raw))).is_err());
        assert!(a.open("plain").is_err());
    }

    #[test]
    fn bad_key_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"short").unwrap();
        let e = SecretBox::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("exactly 32 bytes"), "{e}");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let t = new_token("rl_");
        assert!(t.starts_with("rl_") && t.len() > 40);
        assert_ne!(t, new_token("rl_"));
        assert_eq!(hash_token(&t).len(), 64);
        assert_eq!(hash_token(&t), hash_token(&t));
    }
}
