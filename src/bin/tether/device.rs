//! What `send`, `listen` and `twin` share: a device client from [`DeviceOpts`] (flags, else
//! the `TETHER_*` environment), and `-v` logging with timestamps.

use std::sync::Arc;

use tether::auth::connection_string::ConnectionString;
use tether::client::{self, Client};
use tether::log::Level;
use tether::session::SessionConfig;
use tether::{Code, Error, Result};

use crate::opts::DeviceOpts;

/// Prints log lines up to `level` on standard error, with a UTC time of day.
pub fn enable_logging(level: Level) {
    tether::log::set_sink(
        level,
        Some(Arc::new(|level, message: &str| {
            let ms = client::system_now_ms();
            let day = ms % 86_400_000;
            eprintln!(
                "[{:02}:{:02}:{:02}.{:03}] {} {message}",
                day / 3_600_000,
                day / 60_000 % 60,
                day / 1000 % 60,
                day % 1000,
                level.name()
            );
        })),
    );
}

/// The device's connection string, parsed.
pub fn connection_string(opts: &DeviceOpts) -> Result<ConnectionString> {
    let cs = opts.connection_string.as_deref().ok_or_else(|| {
        Error::new(
            Code::ConnectionStringInvalid,
            format!(
                "no device: pass --connection-string or set {}",
                client::env::CONNECTION_STRING
            ),
        )
    })?;
    ConnectionString::parse(cs)
}

/// A certificate event as a line of text and as JSON (`{"event": "certificate", ...}`).
pub fn certificate_event(e: &tether::session::CertificateEvent) -> (String, serde_json::Value) {
    use tether::session::CertificateEvent as C;
    let utc = |t: &i64| tether::cert::format_utc(*t);
    match e {
        C::RenewalRequested { request_id } => (
            format!("renewal requested ({request_id})"),
            serde_json::json!({"event": "certificate", "kind": "renewal_requested",
                               "request_id": request_id}),
        ),
        C::Issued { not_after } => (
            format!("issued, valid until {}", utc(not_after)),
            serde_json::json!({"event": "certificate", "kind": "issued",
                               "not_after": utc(not_after)}),
        ),
        C::Swapped { not_after, .. } => (
            format!("renewed and in force, valid until {}", utc(not_after)),
            serde_json::json!({"event": "certificate", "kind": "swapped",
                               "not_after": utc(not_after)}),
        ),
        C::RolledBack { error } => (
            format!("refused by the hub, rolled back: {error}"),
            serde_json::json!({"event": "certificate", "kind": "rolled_back",
                               "reason": error.code().name(), "detail": error.to_string()}),
        ),
        C::RenewalFailed { error, will_retry } => (
            format!(
                "renewal failed ({}): {error}",
                if *will_retry {
                    "will retry"
                } else {
                    "not retried"
                }
            ),
            serde_json::json!({"event": "certificate", "kind": "renewal_failed",
                               "reason": error.code().name(), "detail": error.to_string(),
                               "will_retry": will_retry}),
        ),
    }
}

/// A client for the device whose issued certificate is stored in `dir`, renewing it.
fn credentials_client(opts: &DeviceOpts, dir: &str) -> Result<Client> {
    use tether::auth::csr::DeviceKey;
    use tether::auth::store::{CredentialStore, FolderStore};
    let mut store = FolderStore::open(dir)?;
    let stored = store.load()?.ok_or_else(|| {
        Error::new(
            Code::NotFound,
            format!("{dir} holds no certificate: run `tether provision --csr --out {dir}` first"),
        )
    })?;
    let key = DeviceKey::from_pkcs8(stored.key_pkcs8.as_ref().ok_or_else(|| {
        Error::new(
            Code::PrivateKeyMalformed,
            format!("{dir}: generation {} has no key.pem", stored.generation),
        )
    })?)?;
    let base = opts.tls.policy()?;
    let mut policy = base.clone();
    policy.set_client_key(key.certified_key(&stored.chain)?);
    let mut config = SessionConfig {
        hub_host: stored.hub.clone(),
        server_name: stored.hub.clone(),
        device_id: stored.device_id.clone(),
        module_id: None,
        credential: tether::auth::connection_string::Credential::X509,
        tls: policy.build()?,
        has_client_cert: true,
        options: Default::default(),
    };
    config.options.token_ttl_secs = opts.ttl;
    let options = opts.net.client_options(&opts.port, &config.server_name)?;
    let mut client = Client::new(config, options)?;
    let settings = tether::session::RenewalSettings {
        fraction: tether::session::DEFAULT_RENEW_FRACTION,
        roots: base.trust_anchors(),
        policy: base,
    };
    client.enable_certificate_renewal(settings, key, stored.chain, Some(Box::new(store)))?;
    Ok(client)
}

/// A client for the device named by the options.
pub fn client(opts: &DeviceOpts) -> Result<Client> {
    if opts.verbose {
        enable_logging(Level::Debug);
    }
    if let Some(dir) = &opts.credentials {
        return credentials_client(opts, dir);
    }
    let cs = connection_string(opts)?;
    let policy = opts.tls.policy()?;
    let mut config =
        SessionConfig::from_connection_string(&cs, policy.build()?, policy.has_client_cert())?;
    config.options.token_ttl_secs = opts.ttl;
    config.options.client_cert_not_after = policy.client_cert_not_after();
    let options = opts.net.client_options(&opts.port, &config.server_name)?;
    Client::new(config, options)
}
