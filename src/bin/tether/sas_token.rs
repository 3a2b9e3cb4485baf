//! `tether sas-token`: make a SAS token from a resource and key, or from a connection string.

use rustls::time_provider::TimeProvider;
use tether::auth::connection_string::ConnectionString;
use tether::auth::sas::{Expiry, Resource, SasKey, SasToken, DEFAULT_TTL_SECS};
use tether::Result;

use crate::args::{usage_error, Args};

/// The OS clock, read once here (the library itself never reads the wall clock).
#[derive(Debug)]
struct SystemClock;

impl TimeProvider for SystemClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::now())
    }
}

pub fn run(argv: &[String]) -> Result<()> {
    let args = Args::parse(
        argv,
        &[
            "--resource",
            "--key",
            "--key-name",
            "--expiry",
            "--ttl",
            "--connection-string",
        ],
        &[],
    )?;
    if !args.positionals.is_empty() {
        return Err(usage_error("sas-token takes no positional arguments"));
    }
    let ttl = args
        .value("--ttl")
        .map(|_| args.number("--ttl", 0u64))
        .transpose()?;
    let token = if let Some(cs) = args.value("--connection-string") {
        for flag in ["--resource", "--key", "--key-name", "--expiry"] {
            if args.value(flag).is_some() {
                return Err(usage_error(format!(
                    "{flag} cannot be combined with --connection-string"
                )));
            }
        }
        let cs = ConnectionString::parse(cs)?;
        let ttl_secs = ttl.unwrap_or(DEFAULT_TTL_SECS);
        cs.sas_token(Expiry::In { ttl_secs }, &SystemClock)?
    } else {
        let resource = args.value("--resource").ok_or_else(|| {
            usage_error("sas-token needs --resource R --key K, or --connection-string CS")
        })?;
        let key = args
            .value("--key")
            .ok_or_else(|| usage_error("sas-token needs --key K"))?;
        let expiry = match (args.value("--expiry"), ttl) {
            (Some(_), None) => Expiry::At(args.number("--expiry", 0u64)?),
            (None, Some(ttl_secs)) => Expiry::In { ttl_secs },
            (Some(_), Some(_)) => return Err(usage_error("give --expiry or --ttl, not both")),
            (None, None) => {
                return Err(usage_error(
                    "sas-token needs --expiry UNIX or --ttl SECONDS",
                ))
            }
        };
        let resource = Resource::parse(resource)?;
        let key = SasKey::from_base64(key)?;
        SasToken::generate(
            &resource,
            &key,
            args.value("--key-name"),
            expiry,
            &SystemClock,
        )?
    };
    println!("{}", token.as_str());
    Ok(())
}
