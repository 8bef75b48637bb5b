//! sr25519 identities with SS58 addresses, compatible with Bittensor hotkeys.
//!
//! Keys derive from a 32-byte "mini secret" seed with Ed25519-style expansion, exactly as
//! substrate does, so a Bittensor hotkey file's `secretSeed` gives the same public key and
//! address here as on chain. Signatures use the signing context `substrate`.

use blake2::{Blake2b512, Digest};
use schnorrkel::{signing_context, ExpansionMode, Keypair, MiniSecretKey, PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// SS58 network prefix 42: the generic substrate format Bittensor uses for hotkeys.
pub const SS58_PREFIX: u8 = 42;
const SIGNING_CONTEXT: &[u8] = b"substrate";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdentityError {
    #[error("invalid SS58 address {address:?}: {detail}")]
    BadAddress { address: String, detail: String },
    #[error("invalid key file field `{field}`: {detail}")]
    BadKeyFile { field: &'static str, detail: String },
    #[error("key file field `{field}` ({found}) does not match the secret seed (derived {derived}): the file is inconsistent")]
    Mismatch {
        field: &'static str,
        found: String,
        derived: String,
    },
    #[error("signature does not verify for {signer}")]
    BadSignature { signer: String },
}

/// A public identity: SS58 address plus the raw key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ss58Address {
    pub public: [u8; 32],
}

impl Ss58Address {
    pub fn parse(address: &str) -> Result<Self, IdentityError> {
        let bad = |detail: &str| IdentityError::BadAddress {
            address: address.chars().take(64).collect(),
            detail: detail.to_string(),
        };
        let raw = bs58::decode(address)
            .into_vec()
            .map_err(|e| bad(&e.to_string()))?;
        if raw.len() != 35 {
            return Err(bad("expected 35 bytes (prefix, 32-byte key, checksum)"));
        }
        if raw[0] != SS58_PREFIX {
            return Err(bad("network prefix is not 42"));
        }
        if ss58_checksum(&raw[..33]) != raw[33..35] {
            return Err(bad("checksum mismatch"));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&raw[1..33]);
        Ok(Self { public })
    }

    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(35);
        raw.push(SS58_PREFIX);
        raw.extend_from_slice(&self.public);
        let sum = ss58_checksum(&raw);
        raw.extend_from_slice(&sum);
        bs58::encode(raw).into_string()
    }

    /// Verify an sr25519 signature by this identity over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), IdentityError> {
        let fail = || IdentityError::BadSignature {
            signer: self.encode(),
        };
        let key = PublicKey::from_bytes(&self.public).map_err(|_| fail())?;
        let sig = Signature::from_bytes(signature).map_err(|_| fail())?;
        key.verify(signing_context(SIGNING_CONTEXT).bytes(message), &sig)
            .map_err(|_| fail())
    }
}

fn ss58_checksum(prefixed: &[u8]) -> [u8; 2] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(prefixed);
    let out = h.finalize();
    [out[0], out[1]]
}

/// A signing identity (hotkey).
#[derive(Clone)]
pub struct Identity {
    seed: [u8; 32],
    keypair: Keypair,
    address: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.address)
    }
}

impl Identity {
    pub fn generate() -> Self {
        Self::from_seed(MiniSecretKey::generate().to_bytes())
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mini =
            MiniSecretKey::from_bytes(&seed).expect("32-byte seed is always a valid mini secret");
        let keypair = mini.expand_to_keypair(ExpansionMode::Ed25519);
        let address = Ss58Address {
            public: keypair.public.to_bytes(),
        }
        .encode();
        Self {
            seed,
            keypair,
            address,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn public(&self) -> [u8; 32] {
        self.keypair.public.to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.keypair
            .sign(signing_context(SIGNING_CONTEXT).bytes(message))
            .to_bytes()
    }

    pub fn to_key_file(&self) -> KeyFile {
        let public = format!("0x{}", hex::encode(self.public()));
        KeyFile {
            secret_seed: format!("0x{}", hex::encode(self.seed)),
            public_key: Some(public.clone()),
            account_id: Some(public),
            ss58_address: Some(self.address.clone()),
            secret_phrase: None,
        }
    }

    /// Load from a key file, checking every public field it states against the seed.
    pub fn from_key_file(file: &KeyFile) -> Result<Self, IdentityError> {
        let raw = hex::decode(file.secret_seed.trim_start_matches("0x")).map_err(|e| {
            IdentityError::BadKeyFile {
                field: "secretSeed",
                detail: format!("not hex: {e}"),
            }
        })?;
        let seed: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| IdentityError::BadKeyFile {
                field: "secretSeed",
                detail: format!("expected 32 bytes, got {}", v.len()),
            })?;
        let id = Self::from_seed(seed);
        if let Some(addr) = &file.ss58_address {
            if addr != id.address() {
                return Err(IdentityError::Mismatch {
                    field: "ss58Address",
                    found: addr.clone(),
                    derived: id.address.clone(),
                });
            }
        }
        let derived_pub = format!("0x{}", hex::encode(id.public()));
        for (field, value) in [
            ("publicKey", &file.public_key),
            ("accountId", &file.account_id),
        ] {
            if let Some(v) = value {
                if !v.eq_ignore_ascii_case(&derived_pub) {
                    return Err(IdentityError::Mismatch {
                        field,
                        found: v.clone(),
                        derived: derived_pub.clone(),
                    });
                }
            }
        }
        Ok(id)
    }
}

/// The JSON key-file format of Bittensor (substrate `subkey` output), which we also write.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyFile {
    pub secret_seed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ss58_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_phrase: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substrate_alice_vector() {
        // `subkey inspect //Alice`: the well-known substrate development account.
        let seed = hex::decode("e5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a")
            .unwrap();
        let id = Identity::from_seed(seed.try_into().unwrap());
        assert_eq!(
            hex::encode(id.public()),
            "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
        );
        assert_eq!(
            id.address(),
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
        );
    }

    #[test]
    fn address_round_trip_and_checksum() {
        let id = Identity::generate();
        let parsed = Ss58Address::parse(id.address()).unwrap();
        assert_eq!(parsed.public, id.public());
        let mut chars: Vec<char> = id.address().chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let tampered: String = chars.into_iter().collect();
        assert!(Ss58Address::parse(&tampered).is_err());
    }

    #[test]
    fn sign_verify_and_forgery() {
        let a = Identity::generate();
        let b = Identity::generate();
        let sig = a.sign(b"hello");
        let pa = Ss58Address::parse(a.address()).unwrap();
        pa.verify(b"hello", &sig).unwrap();
        assert!(pa.verify(b"hellp", &sig).is_err());
        let pb = Ss58Address::parse(b.address()).unwrap();
        assert!(pb.verify(b"hello", &sig).is_err());
    }

    #[test]
    fn key_file_round_trip_and_inconsistency() {
        let id = Identity::generate();
        let file = id.to_key_file();
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.contains("secretSeed") && json.contains("ss58Address"));
        let back = Identity::from_key_file(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.address(), id.address());
        let mut bad = file.clone();
        bad.ss58_address = Some(Identity::generate().address().to_string());
        assert!(matches!(
            Identity::from_key_file(&bad),
            Err(IdentityError::Mismatch {
                field: "ss58Address",
                ..
            })
        ));
    }
}
