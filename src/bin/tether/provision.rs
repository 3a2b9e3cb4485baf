//! `tether provision --id-scope S --registration-id R (--sas-key K | --cert F --key F) [--csr]
//! --out DIR`: register the device with DPS and write what it needs to connect into DIR.

use std::time::Duration;

use tether::auth::csr::{verify_issued, DeviceKey};
use tether::auth::sas::SasKey;
use tether::auth::store::{CredentialStore, FolderStore, StoredCredential};
use tether::mqtt::dps::GLOBAL_ENDPOINT;
use tether::policy::TlsPolicy;
use tether::provisioning::{provision, provision_with_csr, DpsCredential, DpsRequest};
use tether::{Code, Error, Result};

use crate::device::enable_logging;
use crate::opts::{print_json, usage_error, NetOpts, PortOpt};

/// Register the device with DPS (Device Provisioning Service)
///
/// Authenticates with the enrollment's symmetric key (--sas-key; for a group enrollment the
/// device key from `tether derive-key`) or an X.509 certificate (--cert/--key). With --csr,
/// DPS issues the device certificate from a CSR made here with a fresh P-256 key
/// (api-version 2025-07-01-preview); the chain is checked (it is for the new key, valid now,
/// and chains to a trusted root) and stored in DIR with the key (DIR/gen-N/chain.pem,
/// key.pem mode 0600, identity.json: written atomically), ready for `tether send
/// --credentials DIR`, which also renews it through the hub. Without --csr, DIR gets
/// `connection-string` for the assigned hub.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether provision --id-scope 0ne00000001 --registration-id sensor-7 --sas-key \"$KEY\" --csr --out creds/
  tether send --credentials creds/ '{\"t\":21}'
  tether provision --id-scope 0ne00000001 --registration-id sensor-7 --sas-key \"$KEY\" --csr --out creds/ \\
      --endpoint localhost --port 8884 --ca /tmp/hub/ca.pem      (the stand-in: tether hub --dps-port 8884)"
))]
pub struct ProvisionArgs {
    /// The DPS instance's ID scope (0ne...)
    #[arg(long, value_name = "S")]
    id_scope: String,
    /// The registration id (for X.509: the certificate's CN)
    #[arg(long, value_name = "R")]
    registration_id: String,
    /// The enrollment's symmetric key (base64)
    #[arg(
        long,
        value_name = "K",
        hide_env_values = true,
        required_unless_present = "cert",
        conflicts_with = "cert"
    )]
    sas_key: Option<String>,
    /// The device certificate chain (PEM or DER) for X.509 attestation
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<String>,
    /// The private key of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<String>,
    /// Have DPS issue the device certificate from a CSR (a fresh P-256 key made here)
    #[arg(long)]
    csr: bool,
    /// Folder for the credentials (made, mode 0700, when absent)
    #[arg(long, value_name = "DIR")]
    out: String,
    /// The DPS endpoint
    #[arg(long, value_name = "HOST", default_value = GLOBAL_ENDPOINT)]
    endpoint: String,
    #[command(flatten)]
    port: PortOpt,
    #[command(flatten)]
    net: NetOpts,
    /// Extra trusted CA certificate (PEM or DER); repeatable
    #[arg(long, value_name = "FILE")]
    ca: Vec<String>,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECONDS",
          default_value_t = u64::from(tether::defaults::DPS_TIMEOUT_MS / 1000))]
    timeout: u64,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// Diagnostics on standard error
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn now_unix() -> u64 {
    tether::client::system_now_ms() / 1000
}

pub fn run(args: ProvisionArgs) -> Result<()> {
    if args.verbose {
        enable_logging(tether::log::Level::Debug);
    }
    let mut policy = TlsPolicy::new();
    for ca in &args.ca {
        policy.add_ca_file(ca)?;
    }
    let roots = policy.trust_anchors();
    let (credential, has_cert) = match (&args.sas_key, &args.cert, &args.key) {
        (Some(k), _, _) => (
            DpsCredential::SymmetricKey {
                key: Box::new(SasKey::from_base64_named(k, "--sas-key")?),
                group: false,
            },
            false,
        ),
        (None, Some(cert), Some(key)) => {
            policy.set_client_cert_files(cert, key)?;
            (DpsCredential::X509, true)
        }
        _ => return Err(usage_error("pass --sas-key, or --cert and --key")),
    };
    // The ports, transport and proxy as for a device connection (--transport, --proxy).
    let route = args.net.client_options(&args.port, &args.endpoint)?;
    let request = DpsRequest {
        endpoint: args.endpoint.clone(),
        port: route.port,
        websocket_port: route.websocket_port,
        transport: route.transport,
        proxy: route.proxy,
        id_scope: args.id_scope.clone(),
        registration_id: args.registration_id.clone(),
        credential,
        tls: policy.build()?,
        has_client_cert: has_cert,
        timeout: Duration::from_secs(args.timeout),
    };
    let mut store = FolderStore::open(&args.out)?;
    if args.csr {
        let key = DeviceKey::generate()?;
        let csr = key.csr_base64(&args.registration_id)?;
        let (assignment, chain) = provision_with_csr(&request, &csr, now_unix())?;
        let issued = verify_issued(&chain, &key, &roots, now_unix() as i64)?;
        let generation = store.save(&StoredCredential {
            generation: 0,
            hub: assignment.assigned_hub.clone(),
            device_id: assignment.device_id.clone(),
            chain,
            key_pkcs8: key.pkcs8_der(),
        })?;
        let not_after = tether::cert::format_utc(issued.not_after);
        if args.json {
            print_json(&serde_json::json!({
                "assignedHub": assignment.assigned_hub,
                "deviceId": assignment.device_id,
                "generation": generation,
                "notAfter": not_after,
                "dir": store.generation_dir(generation),
            }));
        } else {
            println!(
                "assigned {} as {}; certificate issued (valid until {not_after}), stored as \
                 generation {generation} in {}",
                assignment.assigned_hub,
                assignment.device_id,
                store.generation_dir(generation).display()
            );
        }
        return Ok(());
    }
    let assignment = provision(&request, now_unix())?;
    let cs = match &args.sas_key {
        Some(k) => format!(
            "HostName={};DeviceId={};SharedAccessKey={k}",
            assignment.assigned_hub, assignment.device_id
        ),
        None => format!(
            "HostName={};DeviceId={};x509=true",
            assignment.assigned_hub, assignment.device_id
        ),
    };
    let path = store.dir().join("connection-string");
    write_private(&path, cs.as_bytes())?;
    if args.json {
        print_json(&serde_json::json!({
            "assignedHub": assignment.assigned_hub,
            "deviceId": assignment.device_id,
            "connectionString": path,
        }));
    } else {
        println!(
            "assigned {} as {}; connection string in {}",
            assignment.assigned_hub,
            assignment.device_id,
            path.display()
        );
    }
    Ok(())
}

/// Writes a file readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).map(|()| f))
        .map_err(|e| Error::new(Code::Io, format!("{}: {e}", path.display())))?;
    f.flush()
        .map_err(|e| Error::new(Code::Io, format!("{}: {e}", path.display())))
}
