//! The X.509 listener's trust folder.
//!
//! mosquitto (OpenSSL) only completes a handshake with a client certificate that chains to
//! something it trusts, before the plugin sees the certificate. The X.509 listener therefore
//! uses an OpenSSL hashed folder (`capath`), which OpenSSL reads at each handshake, and the
//! plugin keeps it equal to: the registry's `certificateAuthorities` plus every certificate
//! in the `trusted` folder (`tether hub` puts its own CA there; self-signed device
//! certificates go there too). Trust at the TLS layer is only the door: who gets in is
//! decided by the registry (thumbprint, or registered CA and CN).

use std::path::Path;

use base64::Engine;

use crate::registry::Registry;

/// The certificates (DER) the X.509 listener must trust, with where each came from. Files in
/// `trusted` that are not certificates are skipped and reported in the second list.
pub fn certificates(registry: &Registry, trusted: Option<&Path>) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut out: Vec<Vec<u8>> = registry.authorities.iter().map(|a| a.der.clone()).collect();
    let mut skipped = Vec::new();
    if let Some(dir) = trusted {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|it| it.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for path in files {
            if !path.is_file() {
                continue;
            }
            let loaded = tether::internal::read_file(&path.to_string_lossy())
                .and_then(|b| tether::policy::load_certificates(&b));
            match loaded {
                Ok(certs) => out.extend(certs.into_iter().map(|c| c.as_ref().to_vec())),
                Err(e) => skipped.push(format!("{}: {e}", path.display())),
            }
        }
    }
    out.sort();
    out.dedup();
    (out, skipped)
}

/// A certificate as PEM text.
pub fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Replaces the contents of the hashed folder `dir` with `certs`, named `{hash:08x}.{n}` as
/// OpenSSL looks them up; `hash` gives each certificate's subject-name hash.
pub fn write_hashed(
    dir: &Path,
    certs: &[Vec<u8>],
    hash: impl Fn(&[u8]) -> Option<u32>,
) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(path)?;
        }
    }
    let mut written = 0;
    let mut used = std::collections::HashMap::<u32, u32>::new();
    for der in certs {
        let Some(h) = hash(der) else { continue };
        let n = used.entry(h).or_insert(0);
        std::fs::write(dir.join(format!("{h:08x}.{n}")), pem(der))?;
        *n += 1;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_folder_numbers_equal_hashes_and_replaces_old_files() {
        let dir = std::env::temp_dir().join(format!("tether-hub-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale.0"), "x").unwrap();
        let certs = vec![vec![1u8, 2, 3], vec![4u8; 100], vec![5u8]];
        let n = write_hashed(&dir, &certs, |d| (d[0] != 5).then_some(0xab)).unwrap();
        assert_eq!(n, 2);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["000000ab.0", "000000ab.1"]);
        let text = std::fs::read_to_string(dir.join("000000ab.1")).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\nBAQE"));
        assert!(text.lines().all(|l| l.len() <= 64));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
