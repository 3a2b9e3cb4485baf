//! `tether thumbprint FILE`: the SHA-1 and SHA-256 thumbprints of a certificate, as the IoT
//! Hub portal and CLI show them.

use tether::auth::x509::DeviceCertificate;
use tether::Result;

use crate::args::{usage_error, Args};

pub fn run(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv, &[], &[])?;
    let [file] = args.positionals.as_slice() else {
        return Err(usage_error(
            "thumbprint takes one certificate FILE (PEM or DER)",
        ));
    };
    let prints = DeviceCertificate::from_file(file)?.thumbprints();
    println!("SHA1 {}", prints.sha1);
    println!("SHA256 {}", prints.sha256);
    Ok(())
}
