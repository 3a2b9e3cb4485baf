//! `tether tls-check HOST[:PORT]`: can this device reach that server under the IoT Hub policy?

use std::time::Duration;

use tether::cert::format_utc;
use tether::handshake;
use tether::policy::TlsPolicy;
use tether::Result;

use crate::args::{usage_error, Args};

/// Splits `HOST[:PORT]` (IPv6 as `[::1]:PORT`); the default port is IoT Hub's MQTT port.
fn host_port(target: &str) -> Result<(String, u16)> {
    let bad_port = |p: &str| usage_error(format!("\"{p}\" is not a port number"));
    if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| usage_error(format!("\"{target}\": missing ']'")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port(p))?,
            None => 8883,
        };
        return Ok((host.to_owned(), port));
    }
    match target.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => {
            Ok((host.to_owned(), p.parse().map_err(|_| bad_port(p))?))
        }
        _ => Ok((target.to_owned(), 8883)),
    }
}

pub fn run(argv: &[String]) -> Result<()> {
    let args = Args::parse(
        argv,
        &["--ca", "--cert", "--key", "--timeout"],
        &["--tls13"],
    )?;
    let [target] = args.positionals.as_slice() else {
        return Err(usage_error("tls-check takes one HOST[:PORT]"));
    };
    let (host, port) = host_port(target)?;
    if port == 0 {
        return Err(usage_error("port must not be 0"));
    }
    let mut policy = TlsPolicy::new();
    policy.enable_tls13(args.has("--tls13"));
    for ca in args.values("--ca") {
        policy.add_ca_file(ca)?;
    }
    match (args.value("--cert"), args.value("--key")) {
        (Some(cert), Some(key)) => {
            policy.set_client_cert_files(cert, key)?;
        }
        (None, None) => {}
        _ => return Err(usage_error("--cert and --key go together")),
    }
    let timeout = Duration::from_secs(args.number("--timeout", 10u64)?);
    let config = policy.build()?;
    let negotiated = handshake::check(&host, port, config, policy.has_client_cert(), timeout)?;
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
            host_port("hub.example").unwrap(),
            ("hub.example".into(), 8883)
        );
        assert_eq!(
            host_port("localhost:9000").unwrap(),
            ("localhost".into(), 9000)
        );
        assert_eq!(host_port("[::1]:9000").unwrap(), ("::1".into(), 9000));
        assert!(host_port("localhost:x").is_err());
    }
}
