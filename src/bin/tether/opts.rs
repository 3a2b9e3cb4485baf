//! What the subcommands share: the device-connection options and the `TETHER_*` environment
//! they fall back to (one place, names from `tether::client::env`), payloads from an
//! argument, a file or standard input, and JSON output.

use std::io::Read;
use std::time::Duration;

use clap::Args;
use tether::client::{env, ClientOptions};
use tether::policy::TlsPolicy;
use tether::transport::proxy::Proxy;
use tether::transport::Transport;
use tether::{Code, Error, Result};

/// An invalid-argument error for the command line (exit status 2).
pub fn usage_error(message: impl Into<String>) -> Error {
    Error::new(Code::InvalidArgument, message)
}

/// TLS options of every command that makes a connection.
#[derive(Args, Debug, Clone)]
pub struct TlsOpts {
    /// Extra trusted CA certificate (PEM or DER), e.g. a local hub's test CA; repeatable
    #[arg(long = "ca", value_name = "FILE", env = env::CA_FILE)]
    pub ca: Vec<String>,
    /// Client certificate chain (PEM or DER) for X.509 authentication or mutual TLS
    #[arg(long, value_name = "FILE", env = env::CERT_FILE, requires = "key")]
    pub cert: Option<String>,
    /// Private key of --cert (PEM or DER; PKCS#8, SEC1 or PKCS#1)
    #[arg(long, value_name = "FILE", env = env::KEY_FILE, requires = "cert")]
    pub key: Option<String>,
    /// PKCS#11 module of the token holding the device key (HSM, TPM via tpm2-pkcs11,
    /// SoftHSM)
    #[arg(long, value_name = "FILE", env = env::PKCS11_MODULE, requires = "pkcs11_uri")]
    pub pkcs11_module: Option<String>,
    /// RFC 7512 URI of the key on the token (pkcs11:token=...;object=...); the certificate
    /// is read from the token; the key never leaves it
    #[arg(long, value_name = "URI", env = env::PKCS11_URI, conflicts_with_all = ["cert", "key"])]
    pub pkcs11_uri: Option<String>,
    /// The token's user PIN (prefer the environment variable: a command line is visible to
    /// other users)
    #[arg(long, value_name = "PIN", env = env::PKCS11_PIN, hide_env_values = true,
          requires = "pkcs11_uri")]
    pub pkcs11_pin: Option<String>,
    /// Allow TLS 1.3 as well as TLS 1.2 (IoT Hub's policy is TLS 1.2)
    #[arg(long)]
    pub tls13: bool,
}

impl TlsOpts {
    /// The IoT Hub TLS policy with these options applied.
    pub fn policy(&self) -> Result<TlsPolicy> {
        let mut policy = TlsPolicy::new();
        policy.enable_tls13(self.tls13);
        for ca in &self.ca {
            policy.add_ca_file(ca)?;
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            policy.set_client_cert_files(cert, key)?;
        }
        if let Some(uri) = &self.pkcs11_uri {
            self.set_pkcs11(&mut policy, uri)?;
        }
        Ok(policy)
    }

    #[cfg(all(feature = "pkcs11", target_os = "linux"))]
    fn set_pkcs11(&self, policy: &mut TlsPolicy, uri: &str) -> Result<()> {
        use tether::auth::pkcs11::Pin;
        let pin = match &self.pkcs11_pin {
            Some(pin) => Pin::value(pin),
            None => Pin::None,
        };
        policy.set_client_pkcs11(self.pkcs11_module.as_deref(), uri, pin)?;
        Ok(())
    }

    #[cfg(not(all(feature = "pkcs11", target_os = "linux")))]
    fn set_pkcs11(&self, _: &mut TlsPolicy, _: &str) -> Result<()> {
        Err(tether::error::pkcs11_unavailable())
    }
}

/// `--port`'s help: the defaults of both transports, from the library's one source.
fn port_help() -> &'static str {
    static HELP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HELP.get_or_init(|| {
        format!(
            "TCP port [default: {}] ({} with --transport websockets)",
            tether::defaults::PORT,
            tether::defaults::WEBSOCKET_PORT
        )
    })
}

/// The port: `--port`, else `TETHER_PORT`, else IoT Hub's MQTT port.
#[derive(Args, Debug, Clone)]
pub struct PortOpt {
    #[arg(long, value_name = "N", env = env::PORT, help = port_help(),
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
}

/// How a connection reaches the hub: the transport and an HTTP proxy.
#[derive(Args, Debug, Clone)]
pub struct NetOpts {
    /// mqtt (port 8883), websockets (MQTT over WebSockets, port 443), or auto (8883,
    /// falling back to WebSockets on 443 when 8883 cannot be reached) [default: mqtt]
    #[arg(long, value_name = "mqtt|websockets|auto", env = env::TRANSPORT,
          value_parser = parse_transport)]
    pub transport: Option<Transport>,
    /// HTTP proxy tunnelled through with CONNECT: http://[user:password@]host[:port]
    /// [default: TETHER_PROXY, else HTTPS_PROXY / https_proxy unless NO_PROXY lists the
    /// host]. Prefer the environment for credentials: a command line is visible to others
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// The WebSocket port `--transport auto` falls back to [default: 443]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub ws_port: Option<u16>,
}

fn parse_transport(text: &str) -> Result<Transport> {
    Transport::parse(text)
}

impl NetOpts {
    /// The transport (default mqtt).
    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or_default()
    }

    /// `--proxy`, else the environment's proxy for `host`.
    pub fn proxy(&self, host: &str) -> Result<Option<Proxy>> {
        match &self.proxy {
            Some(url) => Proxy::parse(url)
                .map(Some)
                .map_err(|e| usage_error(format!("--proxy: {}", e.message()))),
            None => Proxy::from_env(host),
        }
    }

    /// Client options for a connection to `host` with `--port` (the chosen transport's port).
    pub fn client_options(&self, port: &PortOpt, host: &str) -> Result<ClientOptions> {
        Ok(ClientOptions::route(
            self.transport(),
            port.port,
            self.ws_port,
            self.proxy(host)?,
        ))
    }
}

/// Options of the commands that connect as a device (send, listen, twin).
#[derive(Args, Debug, Clone)]
pub struct DeviceOpts {
    /// Device connection string (HostName=...;DeviceId=...;SharedAccessKey=... or x509=true)
    #[arg(long, value_name = "CS", env = env::CONNECTION_STRING, hide_env_values = true)]
    pub connection_string: Option<String>,
    #[command(flatten)]
    pub port: PortOpt,
    #[command(flatten)]
    pub net: NetOpts,
    #[command(flatten)]
    pub tls: TlsOpts,
    /// Lifetime of the SAS tokens made from the key, in seconds
    #[arg(long, value_name = "SECONDS",
          default_value_t = tether::defaults::TOKEN_TTL_SECS.into())]
    pub ttl: u64,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Timestamped diagnostics on standard error (TCP, TLS version and suite, retries)
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Connect with the certificate `tether provision --csr --out DIR` stored in DIR (hub,
    /// device id, chain and key; the connection string is not used), and renew it through
    /// the hub at 80 % of its validity, storing each renewed one in DIR
    #[arg(long, value_name = "DIR")]
    pub credentials: Option<String>,
}

impl DeviceOpts {
    /// `--timeout`, or `default_secs`.
    pub fn timeout_or(&self, default_secs: u64) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(default_secs))
    }
}

/// Reads a payload given as text, `@FILE` (the file's bytes) or `-` (standard input).
pub fn payload(spec: &str) -> Result<Vec<u8>> {
    if spec == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| {
            Error::new(
                Code::Io,
                format!("cannot read the payload from standard input: {e}"),
            )
        })?;
        Ok(buf)
    } else if let Some(file) = spec.strip_prefix('@') {
        std::fs::read(file)
            .map_err(|e| Error::new(Code::FileNotReadable, format!("payload file {file}: {e}")))
    } else {
        Ok(spec.as_bytes().to_vec())
    }
}

/// A received payload for JSON output: the parsed document when it is JSON, else the text.
pub fn json_payload(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Prints one JSON document on one line.
pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}
