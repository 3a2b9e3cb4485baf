//! `tether thumbprint FILE`: the SHA-1 and SHA-256 thumbprints of a certificate, as the IoT
//! Hub portal and CLI show them.

use tether::auth::x509::DeviceCertificate;
use tether::Result;

use crate::opts::print_json;

/// Print the SHA-1 and SHA-256 thumbprints of a certificate (PEM or DER)
///
/// Uppercase hex, as the IoT Hub portal and the Azure CLI show them: register a self-signed
/// device with either.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether thumbprint device.pem
  tether thumbprint device.der --json"
))]
pub struct ThumbprintArgs {
    /// The certificate file (PEM or DER)
    file: String,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: ThumbprintArgs) -> Result<()> {
    let prints = DeviceCertificate::from_file(&args.file)?.thumbprints();
    if args.json {
        print_json(&serde_json::json!({
            "file": args.file,
            "sha1": prints.sha1,
            "sha256": prints.sha256,
        }));
    } else {
        println!("SHA1 {}", prints.sha1);
        println!("SHA256 {}", prints.sha256);
    }
    Ok(())
}
