//! Key files shared by node and central: ed25519 seeds (the log-signing identity, the
//! token-signing key) and other secret files, kept outside the database with mode 0600 and
//! never logged; plus the OS random source.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use zeroize::Zeroizing;

use crate::log::NodeSecretKey;

/// Fills a buffer from the OS random source.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("os random source: {e}"))?;
    Ok(buf)
}

/// Writes a new file readable by its owner only (mode 0600 on unix), synced; fails if it exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Creates a new key file with a fresh random seed; fails if it exists.
pub fn create_key_file(path: &Path) -> anyhow::Result<NodeSecretKey> {
    let seed = Zeroizing::new(random_bytes::<32>()?);
    let text = Zeroizing::new(hex::encode(*seed));
    write_private_file(path, text.as_bytes())?;
    Ok(NodeSecretKey::from_bytes(&seed))
}

/// Reads a key file written by [`create_key_file`].
pub fn load_key_file(path: &Path) -> anyhow::Result<NodeSecretKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading key file {}", path.display()))?,
    );
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut())
        .with_context(|| format!("key file {} is not 32 hex-encoded bytes", path.display()))?;
    Ok(NodeSecretKey::from_bytes(&seed))
}
