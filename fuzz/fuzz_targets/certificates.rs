//! Certificates and keys from arbitrary bytes: the DER facts reader (run on server
//! certificates before verification), PEM/DER certificate and private key loading, device
//! certificates and their key check, thumbprints. Never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::auth::x509::{self, DeviceCertificate};
use tether::cert::CertFacts;
use tether::policy;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a variant so one corpus reaches every loader.
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(facts) = CertFacts::from_der(input) {
                let _ = facts.host_names();
                let _ = facts.is_self_issued();
                let _ = format!("{facts:?}");
            }
        }
        1 => {
            let _ = policy::load_certificates(input);
            let mut p = policy::TlsPolicy::new();
            let _ = p.add_ca(input);
        }
        2 => {
            let _ = policy::load_private_key(input);
        }
        _ => {
            let _ = x509::thumbprints(input);
            if let Ok(cert) = DeviceCertificate::from_bytes(input) {
                let _ = cert.common_name();
                let _ = cert.check_identity("d", None);
                let _ = cert.check_validity(1_800_000_000);
                let _ = cert.expires_within(i64::MAX, u32::MAX);
                let _ = cert.expires_within(i64::MIN, 30);
                let _ = cert.key_kind();
                let _ = cert.with_private_key(input);
            }
        }
    }
    // Whatever the first byte, the facts reader sees the whole input too.
    let _ = CertFacts::from_der(data);
});
