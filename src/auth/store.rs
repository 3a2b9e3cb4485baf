//! The credential store: where an issued certificate chain, its key and the hub it is for
//! are kept between runs, and never half-written.
//!
//! [`FolderStore`] keeps each generation in its own folder `DIR/gen-{N}/` (`chain.pem` leaf
//! first, `key.pem` PKCS#8 with mode 0600, `identity.json` with the hub and device id).
//! A save writes the files into `DIR/.gen-{N}.tmp/`, fsyncs each file and the folder,
//! renames the folder to `gen-{N}` and fsyncs `DIR`: a crash or power cut at any point
//! leaves either the new generation complete or no trace of it but a `.tmp` folder that the
//! next save removes. The newest `gen-{N}` is the credential in force; the one before it is
//! kept so that a refused certificate can be rolled back ([`CredentialStore::discard`]).
//!
//! Firmware with its own flash implements [`CredentialStore`] itself (the C API takes load
//! and save callbacks).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Code, Error, Result};

/// One stored credential.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The generation counter: 1 for the first credential, one more for each renewal.
    pub generation: u64,
    /// The IoT Hub host name the credential is for.
    pub hub: String,
    /// The device id.
    pub device_id: String,
    /// The certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key (PKCS#8 DER), or `None` when a signer or token holds it.
    pub key_pkcs8: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("generation", &self.generation)
            .field("hub", &self.hub)
            .field("device_id", &self.device_id)
            .field("chain_len", &self.chain.len())
            .field("has_key", &self.key_pkcs8.is_some())
            .finish()
    }
}

impl StoredCredential {
    /// The credential as one text (what load/save callbacks exchange): header lines
    /// `generation: N`, `hub: HOST`, `device: ID`, then the chain as PEM certificates (leaf
    /// first) and the key as a PEM `PRIVATE KEY`. Wiped when dropped (it holds the key).
    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(format!(
            "generation: {}\nhub: {}\ndevice: {}\n",
            self.generation, self.hub, self.device_id
        ));
        for c in &self.chain {
            out.push_str(&pem("CERTIFICATE", c));
        }
        if let Some(key) = &self.key_pkcs8 {
            out.push_str(&Zeroizing::new(pem("PRIVATE KEY", key)));
        }
        out
    }

    /// Reads what [`StoredCredential::to_pem`] wrote.
    pub fn from_pem(text: &[u8]) -> Result<StoredCredential> {
        let bad =
            |why: &str| Error::new(Code::InvalidArgument, format!("stored credential: {why}"));
        let s = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
        let header = |name: &str| {
            s.lines()
                .take_while(|l| !l.starts_with("-----"))
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let generation = header("generation:")
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| bad("no generation line"))?;
        let hub = header("hub:").ok_or_else(|| bad("no hub line"))?;
        let device_id = header("device:").ok_or_else(|| bad("no device line"))?;
        let chain = crate::policy::load_certificates(text)?
            .into_iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        let key_pkcs8 = if s.contains("-----BEGIN PRIVATE KEY-----") {
            match crate::policy::load_private_key(text)? {
                rustls::pki_types::PrivateKeyDer::Pkcs8(k) => {
                    Some(Zeroizing::new(k.secret_pkcs8_der().to_vec()))
                }
                _ => return Err(bad("the key is not PKCS#8")),
            }
        } else {
            None
        };
        Ok(StoredCredential {
            generation,
            hub,
            device_id,
            chain,
            key_pkcs8,
        })
    }
}

/// Where credentials live.
pub trait CredentialStore: Send {
    /// The credential in force, if any.
    fn load(&mut self) -> Result<Option<StoredCredential>>;
    /// Stores `credential` as the next generation (its `generation` is set by the store
    /// and returned). After a crash, [`CredentialStore::load`] returns either this
    /// credential whole or the one before it.
    fn save(&mut self, credential: &StoredCredential) -> Result<u64>;
    /// Drops generation `generation` (a certificate the hub refused), so that the one
    /// before it is in force again.
    fn discard(&mut self, generation: u64) -> Result<()>;
}

/// A folder of generations. See the module documentation.
#[derive(Clone, Debug)]
pub struct FolderStore {
    dir: PathBuf,
}

fn io(e: std::io::Error, what: impl std::fmt::Display) -> Error {
    Error::new(Code::Io, format!("credential store: {what}: {e}"))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `bytes` to a new file `path` (mode `mode`) and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path).map_err(|e| io(e, path.display()))?;
    f.write_all(bytes).map_err(|e| io(e, path.display()))?;
    f.sync_all().map_err(|e| io(e, path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(e, dir.display()))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl FolderStore {
    /// A store in `dir` (made, mode 0700, when absent).
    pub fn open(dir: impl Into<PathBuf>) -> Result<FolderStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io(e, dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        }
        Ok(FolderStore { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete generations, oldest first.
    pub fn generations(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io(e, self.dir.display()))? {
            let entry = entry.map_err(|e| io(e, self.dir.display()))?;
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("gen-"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The folder of generation `n` (`gen-{n}`): `chain.pem`, `key.pem`, `identity.json`.
    pub fn generation_dir(&self, n: u64) -> PathBuf {
        self.dir.join(format!("gen-{n}"))
    }

    fn read_generation(&self, n: u64) -> Result<StoredCredential> {
        let dir = self.generation_dir(n);
        let identity = fs::read(dir.join("identity.json"))
            .map_err(|e| io(e, dir.join("identity.json").display()))?;
        let v: serde_json::Value = serde_json::from_slice(&identity).map_err(|_| {
            Error::new(
                Code::InvalidArgument,
                format!("credential store: {} is not JSON", dir.display()),
            )
        })?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let chain_pem =
            fs::read(dir.join("chain.pem")).map_err(|e| io(e, dir.join("chain.pem").display()))?;
        let chain = crate::policy::load_certificates(&chain_pem)?
            .into_iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        let key_path = dir.join("key.pem");
        let key_pkcs8 = if key_path.exists() {
            let pem = Zeroizing::new(fs::read(&key_path).map_err(|e| io(e, key_path.display()))?);
            match crate::policy::load_private_key(&pem)? {
                rustls::pki_types::PrivateKeyDer::Pkcs8(k) => {
                    Some(Zeroizing::new(k.secret_pkcs8_der().to_vec()))
                }
                _ => {
                    return Err(Error::new(
                        Code::PrivateKeyMalformed,
                        format!("credential store: {} is not PKCS#8", key_path.display()),
                    ))
                }
            }
        } else {
            None
        };
        Ok(StoredCredential {
            generation: n,
            hub: field("assignedHub"),
            device_id: field("deviceId"),
            chain,
            key_pkcs8,
        })
    }
}

impl CredentialStore for FolderStore {
    fn load(&mut self) -> Result<Option<StoredCredential>> {
        match self.generations()?.last() {
            Some(&n) => self.read_generation(n).map(Some),
            None => Ok(None),
        }
    }

    fn save(&mut self, credential: &StoredCredential) -> Result<u64> {
        if credential.chain.is_empty() {
            return Err(Error::new(
                Code::InvalidArgument,
                "credential store: the chain is empty",
            ));
        }
        let generations = self.generations()?;
        let n = generations.last().copied().unwrap_or(0) + 1;
        let tmp = self.dir.join(format!(".gen-{n}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io(e, tmp.display()))?;
        }
        fs::create_dir(&tmp).map_err(|e| io(e, tmp.display()))?;
        let chain: String = credential
            .chain
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect();
        write_synced(&tmp.join("chain.pem"), chain.as_bytes(), 0o644)?;
        if let Some(key) = &credential.key_pkcs8 {
            let text = Zeroizing::new(pem("PRIVATE KEY", key));
            write_synced(&tmp.join("key.pem"), text.as_bytes(), 0o600)?;
        }
        let identity = serde_json::json!({
            "generation": n,
            "assignedHub": credential.hub,
            "deviceId": credential.device_id,
        });
        write_synced(
            &tmp.join("identity.json"),
            identity.to_string().as_bytes(),
            0o644,
        )?;
        sync_dir(&tmp)?;
        let dest = self.generation_dir(n);
        fs::rename(&tmp, &dest).map_err(|e| io(e, dest.display()))?;
        sync_dir(&self.dir)?;
        // Keep the previous generation for a rollback; older ones go.
        for old in generations.iter().rev().skip(1) {
            let _ = fs::remove_dir_all(self.generation_dir(*old));
        }
        crate::log!(
            crate::log::Level::Info,
            "credential generation {n} stored in {}",
            dest.display()
        );
        Ok(n)
    }

    fn discard(&mut self, generation: u64) -> Result<()> {
        let dir = self.generation_dir(generation);
        // Renamed first (atomic), then removed: a crash leaves no half-deleted generation.
        let gone = self.dir.join(format!(".gen-{generation}.discarded"));
        let _ = fs::remove_dir_all(&gone);
        fs::rename(&dir, &gone).map_err(|e| io(e, dir.display()))?;
        sync_dir(&self.dir)?;
        let _ = fs::remove_dir_all(&gone);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(tag: u8) -> StoredCredential {
        let key = crate::auth::csr::DeviceKey::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![format!("d{tag}")]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(u64::from(tag)));
        let cert = params.self_signed(&key).unwrap();
        StoredCredential {
            generation: 0,
            hub: "hub.example".into(),
            device_id: format!("d{tag}"),
            chain: vec![cert.der().to_vec()],
            key_pkcs8: key.pkcs8_der(),
        }
    }

    #[test]
    fn generations_count_up_keep_one_back_and_roll_back() {
        let dir = std::env::temp_dir().join(format!("tether-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut store = FolderStore::open(&dir).unwrap();
        assert!(store.load().unwrap().is_none());
        // A leftover temporary folder from a crash is ignored and replaced.
        fs::create_dir_all(dir.join(".gen-1.tmp")).unwrap();
        fs::write(dir.join(".gen-1.tmp/chain.pem"), b"half").unwrap();
        assert_eq!(store.save(&credential(1)).unwrap(), 1);
        assert_eq!(store.save(&credential(2)).unwrap(), 2);
        assert_eq!(store.save(&credential(3)).unwrap(), 3);
        assert_eq!(store.generations().unwrap(), vec![2, 3]);
        let now = store.load().unwrap().unwrap();
        assert_eq!((now.generation, now.device_id.as_str()), (3, "d3"));
        assert_eq!(now.chain.len(), 1);
        let key = crate::auth::csr::DeviceKey::from_pkcs8(now.key_pkcs8.as_ref().unwrap()).unwrap();
        key.certified_key(&now.chain).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.generation_dir(3).join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = StoredCredential::from_pem(now.to_pem().as_bytes()).unwrap();
        assert_eq!(again, now);
        store.discard(3).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!((back.generation, back.device_id.as_str()), (2, "d2"));
        let _ = fs::remove_dir_all(&dir);
    }
}
