//! What `send` and `listen` share: a device client from flags, falling back to the
//! environment variables every tether tool honours (TETHER_CONNECTION_STRING, TETHER_CA_FILE,
//! TETHER_PORT, TETHER_CERT_FILE, TETHER_KEY_FILE), and `-v` logging with timestamps.

use std::sync::Arc;
use std::time::Duration;

use tether::auth::connection_string::ConnectionString;
use tether::client::{self, Client, ClientOptions};
use tether::log::Level;
use tether::session::SessionConfig;
use tether::{Code, Error, Result};

use crate::args::{usage_error, Args};

/// Flags taking a value that every device command accepts.
pub const VALUED: &[&str] = &[
    "--connection-string",
    "--ca",
    "--port",
    "--cert",
    "--key",
    "--ttl",
    "--timeout",
];

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

/// A client for the device named by the flags or the environment.
pub fn client(args: &Args) -> Result<Client> {
    if args.has("-v") {
        enable_logging(Level::Debug);
    }
    let cs = match args.value("--connection-string") {
        Some(cs) => cs.to_owned(),
        None => std::env::var(client::env::CONNECTION_STRING).map_err(|_| {
            Error::new(
                Code::ConnectionStringInvalid,
                "no device: pass --connection-string or set TETHER_CONNECTION_STRING",
            )
        })?,
    };
    let cs = ConnectionString::parse(&cs)?;
    let mut policy = client::policy_from_env()?;
    if let Some(ca) = args.value("--ca") {
        policy.add_ca_file(ca)?;
    }
    match (args.value("--cert"), args.value("--key")) {
        (Some(cert), Some(key)) => {
            policy.set_client_cert_files(cert, key)?;
        }
        (None, None) => {}
        _ => return Err(usage_error("--cert and --key go together")),
    }
    let port = match args.value("--port") {
        Some(p) => p
            .parse()
            .map_err(|_| usage_error(format!("--port expects a number, not \"{p}\"")))?,
        None => client::port_from_env()?,
    };
    let mut config =
        SessionConfig::from_connection_string(&cs, policy.build()?, policy.has_client_cert())?;
    config.options.token_ttl_secs = args.number("--ttl", config.options.token_ttl_secs)?;
    config.options.client_cert_not_after = policy.client_cert_not_after();
    Client::new(
        config,
        ClientOptions {
            port,
            ..ClientOptions::default()
        },
    )
}

/// The `--timeout SECONDS` flag (default `default_secs`).
pub fn timeout(args: &Args, default_secs: u64) -> Result<Duration> {
    Ok(Duration::from_secs(args.number("--timeout", default_secs)?))
}
