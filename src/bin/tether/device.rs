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

/// A client for the device named by the options.
pub fn client(opts: &DeviceOpts) -> Result<Client> {
    if opts.verbose {
        enable_logging(Level::Debug);
    }
    let cs = connection_string(opts)?;
    let policy = opts.tls.policy()?;
    let mut config =
        SessionConfig::from_connection_string(&cs, policy.build()?, policy.has_client_cert())?;
    if let Some(ttl) = opts.ttl {
        config.options.token_ttl_secs = ttl;
    }
    config.options.client_cert_not_after = policy.client_cert_not_after();
    let options = opts.net.client_options(&opts.port, &config.server_name)?;
    Client::new(config, options)
}
