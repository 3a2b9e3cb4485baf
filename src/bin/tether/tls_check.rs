//! `tether tls-check [HOST[:PORT]]`: can this device reach that server under the IoT Hub
//! policy?

use std::time::Duration;

use tether::auth::connection_string::ConnectionString;
use tether::client;
use tether::handshake;
use tether::internal::format_utc;
use tether::transport::{unreachable, Transport};
use tether::Result;

use crate::opts::{print_json, usage_error, NetOpts, PortOpt, TlsOpts};

/// Splits `HOST[:PORT]` (IPv6 as `[::1]:PORT`); without a port, `default_port`.
fn host_port(target: &str, default_port: u16) -> Result<(String, u16)> {
    let bad_port = |p: &str| usage_error(format!("\"{p}\" is not a port number"));
    if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| usage_error(format!("\"{target}\": missing ']'")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port(p))?,
            None => default_port,
        };
        return Ok((host.to_owned(), port));
    }
    match target.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => {
            Ok((host.to_owned(), p.parse().map_err(|_| bad_port(p))?))
        }
        _ => Ok((target.to_owned(), default_port)),
    }
}

/// Check that a server meets the IoT Hub TLS policy (TLS 1.2, strong ECDHE suites)
///
/// Connects to HOST[:PORT], completes the handshake under the policy and prints the
/// negotiated version and suite, then the server's chain and the trust anchor. A refusal
/// names its cause (old TLS version, weak suite, expired or wrong-host certificate, clock).
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether tls-check myhub.azure-devices.net
  tether tls-check localhost:8883 --ca ca.pem --json
  TETHER_CONNECTION_STRING='HostName=myhub...' tether tls-check   # the device's hub
  tether tls-check localhost:8884 --ca ca.pem --cert dev.pem --key dev.key"
))]
pub struct TlsCheckArgs {
    /// Server to check, HOST[:PORT] ([::1]:PORT for IPv6); default: the host of
    /// TETHER_CONNECTION_STRING (its GatewayHostName, else HostName)
    #[arg(value_name = "HOST[:PORT]")]
    target: Option<String>,
    #[command(flatten)]
    port: PortOpt,
    #[command(flatten)]
    net: NetOpts,
    #[command(flatten)]
    tls: TlsOpts,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECONDS",
          default_value_t = (tether::defaults::TLS_CHECK_TIMEOUT_MS / 1000).into())]
    timeout: u64,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: TlsCheckArgs) -> Result<()> {
    let route = |host: &str| args.net.client_options(&args.port, host);
    let default_port = |host: &str| -> Result<u16> {
        let options = route(host)?;
        Ok(match args.net.transport() {
            Transport::WebSockets => options.websocket_port,
            _ => options.port,
        })
    };
    let (host, port) = match &args.target {
        Some(target) => {
            let host = host_port(target, 1)?.0;
            host_port(target, default_port(&host)?)?
        }
        None => {
            let cs = std::env::var(client::env::CONNECTION_STRING).map_err(|_| {
                usage_error(format!(
                    "give HOST[:PORT], or set {} to check the device's hub",
                    client::env::CONNECTION_STRING
                ))
            })?;
            let cs = ConnectionString::parse(&cs)?;
            let host = cs.connect_host().to_owned();
            let port = default_port(&host)?;
            (host, port)
        }
    };
    if port == 0 {
        return Err(usage_error("port must not be 0"));
    }
    let policy = args.tls.policy()?;
    let config = policy.build()?;
    let options = route(&host)?;
    let timeout = Duration::from_secs(args.timeout);
    let check = |port: u16| {
        handshake::check_via(
            &host,
            port,
            options.proxy.as_ref(),
            config.clone(),
            policy.has_client_cert(),
            timeout,
        )
    };
    let (port, negotiated) = match check(port) {
        // auto: the MQTT port cannot be reached; the WebSocket port is what a device uses.
        Err(e) if args.net.transport() == Transport::Auto && unreachable(&e) => {
            eprintln!(
                "{e}; port {port} cannot be reached: checking the WebSocket port {}",
                options.websocket_port
            );
            (options.websocket_port, check(options.websocket_port)?)
        }
        other => (port, other?),
    };
    if args.json {
        let chain: Vec<serde_json::Value> = negotiated
            .chain
            .iter()
            .map(|cert| {
                serde_json::json!({
                    "subject": cert.subject,
                    "issuer": cert.issuer,
                    "not_after": format_utc(cert.not_after),
                    "not_after_unix": cert.not_after,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "host": host,
            "port": port,
            "version": negotiated.version,
            "suite": negotiated.suite,
            "chain": chain,
            "trust_anchor": negotiated.anchor,
        }));
        return Ok(());
    }
    println!("{} {}", negotiated.version, negotiated.suite);
    for (depth, cert) in negotiated.chain.iter().enumerate() {
        println!("{depth} subject: {}", cert.subject);
        println!("  issuer: {}", cert.issuer);
        println!("  not after: {}", format_utc(cert.not_after));
    }
    match &negotiated.anchor {
        Some(anchor) => println!("trust anchor: {anchor}"),
        None => println!("trust anchor: (chain verified)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(
            host_port("hub.example", 8883).unwrap(),
            ("hub.example".into(), 8883)
        );
        assert_eq!(
            host_port("localhost:9000", 8883).unwrap(),
            ("localhost".into(), 9000)
        );
        assert_eq!(host_port("[::1]:9000", 8883).unwrap(), ("::1".into(), 9000));
        assert!(host_port("localhost:x", 8883).is_err());
        assert_eq!(host_port("h", 9).unwrap(), ("h".into(), 9));
    }
}
