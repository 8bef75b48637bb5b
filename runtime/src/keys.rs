//! Hotkey files: JSON in Bittensor's format, written with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use messages::{Identity, KeyFile};

pub fn write_key(path: &Path, id: &Identity) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&id.to_key_file())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating key file {} (it must not exist yet)",
                path.display()
            )
        })?;
    f.write_all(json.as_bytes())?;
    Ok(())
}

pub fn read_key(path: &Path) -> anyhow::Result<Identity> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading key file {} (create one with `grail keys new --out {}`)",
            path.display(),
            path.display()
        )
    })?;
    let file: KeyFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a key file (expected JSON with secretSeed and ss58Address)",
            path.display()
        )
    })?;
    Identity::from_key_file(&file)
        .with_context(|| format!("{}: inconsistent key file", path.display()))
}

/// Load `path`, creating a fresh identity there first if it does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<Identity> {
    if !path.exists() {
        write_key(path, &Identity::generate())?;
    }
    read_key(path)
}

/// A 32-byte secret (e.g. the clock chain seed) stored as hex, 0600; created if missing.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    if !path.exists() {
        let seed = Identity::generate().to_key_file().secret_seed;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(seed.as_bytes())?;
    }
    let text = std::fs::read_to_string(path)?;
    let raw = hex::decode(text.trim().trim_start_matches("0x"))
        .with_context(|| format!("{}: not hex", path.display()))?;
    raw.try_into()
        .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes of hex", path.display()))
}

/// The owner address this process pins: `[network] owner`, else the owner key file's.
pub fn pinned_owner(cfg: &crate::config::ClusterConfig) -> anyhow::Result<String> {
    if !cfg.network.owner.is_empty() {
        return Ok(cfg.network.owner.clone());
    }
    let path = cfg.owner_key_path();
    let id = read_key(&path).with_context(|| {
        format!(
            "{}: [network] owner is empty, so the owner key {} must exist (start `grail up` once, or set [network] owner = \"<ss58>\")",
            cfg.source.display(),
            path.display()
        )
    })?;
    Ok(id.address().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_private_and_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/miner.json");
        let id = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key(&path).unwrap().address(), id.address());
        assert!(write_key(&path, &id).is_err(), "never overwrite a key");
    }

    #[test]
    fn bittensor_hotkey_file_imports() {
        // Bittensor writes these fields (plus secretPhrase) for a hotkey.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hotkey");
        std::fs::write(
            &path,
            r#"{"accountId":"0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d","publicKey":"0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d","secretPhrase":null,"secretSeed":"0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a","ss58Address":"5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"}"#,
        )
        .unwrap();
        let id = read_key(&path).unwrap();
        assert_eq!(
            id.address(),
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
        );
    }
}
