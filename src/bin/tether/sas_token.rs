//! `tether sas-token`: make a SAS token from a resource and key, or from a connection string.

use rustls::time_provider::TimeProvider;
use tether::auth::connection_string::ConnectionString;
use tether::auth::sas::{Expiry, Resource, SasKey, SasToken};
use tether::client::env;
use tether::Result;

use crate::opts::usage_error;

/// The OS clock, read once here (the library itself never reads the wall clock).
#[derive(Debug)]
struct SystemClock;

impl TimeProvider for SystemClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::now())
    }
}

/// Print a SAS token for a device, a module, a DPS registration or a hub policy
///
/// From a resource and a base64 key (--resource, --key), or from a device connection string
/// (--connection-string, else TETHER_CONNECTION_STRING). The token lives --ttl seconds (an
/// hour unless given) or until --expiry.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether sas-token --resource myhub.azure-devices.net/devices/dev1 --key \"$KEY\"
  tether sas-token --resource SCOPE/registrations/dev1 --key \"$KEY\" --key-name registration --ttl 600
  tether sas-token --connection-string 'HostName=...;DeviceId=dev1;SharedAccessKey=...'
  TETHER_CONNECTION_STRING='HostName=...' tether sas-token --ttl 86400"
))]
pub struct SasTokenArgs {
    /// Resource, unencoded: HOST/devices/ID[/modules/ID], HOST, or SCOPE/registrations/ID
    #[arg(
        long,
        value_name = "R",
        requires = "key",
        conflicts_with = "connection_string"
    )]
    resource: Option<String>,
    /// Base64 key that signs the token
    #[arg(long, value_name = "K", requires = "resource")]
    key: Option<String>,
    /// Policy or key name (skn), e.g. `registration` for a DPS group enrollment
    #[arg(long, value_name = "N", requires = "resource")]
    key_name: Option<String>,
    /// Expiry as Unix seconds (instead of --ttl)
    #[arg(
        long,
        value_name = "UNIX",
        conflicts_with = "ttl",
        requires = "resource"
    )]
    expiry: Option<u64>,
    /// Lifetime in seconds from now
    #[arg(long, value_name = "SECONDS",
          default_value_t = tether::defaults::TOKEN_TTL_SECS.into())]
    ttl: u64,
    /// Device connection string with SharedAccessKey [env: TETHER_CONNECTION_STRING, when
    /// --resource is absent]
    #[arg(long, value_name = "CS")]
    connection_string: Option<String>,
}

pub fn run(args: SasTokenArgs) -> Result<()> {
    let ttl_secs = args.ttl;
    let token = match (&args.resource, &args.key) {
        (Some(resource), Some(key)) => {
            let expiry = match args.expiry {
                Some(at) => Expiry::At(at),
                None => Expiry::In { ttl_secs },
            };
            let resource = Resource::parse(resource)?;
            let key = SasKey::from_base64(key)?;
            SasToken::generate(
                &resource,
                &key,
                args.key_name.as_deref(),
                expiry,
                &SystemClock,
            )?
        }
        _ => {
            let cs = match args.connection_string {
                Some(cs) => cs,
                None => std::env::var(env::CONNECTION_STRING)
                    .ok()
                    .filter(|cs| !cs.is_empty())
                    .ok_or_else(|| {
                        usage_error(format!(
                            "sas-token needs --resource R --key K, --connection-string CS or {}",
                            env::CONNECTION_STRING
                        ))
                    })?,
            };
            ConnectionString::parse(&cs)?.sas_token(Expiry::In { ttl_secs }, &SystemClock)?
        }
    };
    println!("{}", token.as_str());
    Ok(())
}
