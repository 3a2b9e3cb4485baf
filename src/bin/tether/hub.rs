//! `tether hub --registry FILE --port PORT [--x509-port PORT2] --dir DIR`: the local IoT Hub
//! stand-in. Makes a test PKI in DIR when absent, writes a mosquitto configuration (TLS 1.2
//! only, the hub's four ECDHE suites, the `tether-hub` auth plugin), runs mosquitto on
//! 127.0.0.1 in the foreground and stops it on SIGINT/SIGTERM.
//!
//! Each device's ClientHello is audited on the way in (a log line per device with the
//! verdict IoT Hub's enforced TLS policy would give; see `hub_audit.rs`).
//!
//! SAS devices connect on PORT; X.509 devices on PORT2 (mosquitto only asks for a client
//! certificate on a listener that requires one). The plugin (`libtether_hub.so`) is found, in
//! this order, at `$TETHER_HUB_PLUGIN`, beside the `tether` binary (cargo's target folder),
//! at `../lib/tether/` from the binary (an install prefix), then in `/usr/local/lib/tether/`
//! and `/usr/lib/tether/`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tether::{Code, Error, Result};

use crate::hub_audit;
use crate::opts::usage_error;

mod registry;
mod rest;
mod service;
mod web;
mod ws;

/// The plugin's file name (the `tether-hub` crate's cdylib).
const PLUGIN_FILE: &str = "libtether_hub.so";

/// The suites IoT Hub accepts, in OpenSSL's names.
const HUB_CIPHERS: &str = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
                           ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn io(e: std::io::Error, what: impl std::fmt::Display) -> Error {
    Error::new(Code::Io, format!("{what}: {e}"))
}

/// Looks for an executable on PATH, then in the sbin folders (Debian puts mosquitto in
/// /usr/sbin, which is not on every user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require_program(name: &str, package: &str) -> Result<PathBuf> {
    find_program(name).ok_or_else(|| {
        Error::new(
            Code::NotFound,
            format!("{name} is not installed: install it with `apt-get install -y {package}`"),
        )
    })
}

/// Where the plugin may be, in the order searched.
fn plugin_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join(PLUGIN_FILE));
            out.push(dir.join("../lib/tether").join(PLUGIN_FILE));
        }
    }
    out.push(Path::new("/usr/local/lib/tether").join(PLUGIN_FILE));
    out.push(Path::new("/usr/lib/tether").join(PLUGIN_FILE));
    out
}

fn find_plugin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TETHER_HUB_PLUGIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::new(
                Code::NotFound,
                format!("TETHER_HUB_PLUGIN is {}, which does not exist", p.display()),
            ))
        };
    }
    let candidates = plugin_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Error::new(
                Code::NotFound,
                format!(
                "the hub plugin {PLUGIN_FILE} (package tether-hub) was not found in {}: build it \
                 with `cargo build -p tether-hub` (same profile as this tether binary), or set \
                 TETHER_HUB_PLUGIN to its path",
                looked.join(", ")
            ),
            )
        })
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| io(e, "cannot run openssl"))?;
    if !out.status.success() {
        return Err(Error::new(
            Code::Io,
            format!(
                "openssl {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// The server certificate's extensions: `localhost`, `127.0.0.1` and `host_name`.
fn server_ext(host_name: Option<&str>) -> String {
    let extra = host_name.map(|h| format!(",DNS:{h}")).unwrap_or_default();
    format!(
        "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1{extra}\n"
    )
}

/// Makes `DIR/ca.pem` (+ `ca.key`, to issue device certificates) and a server certificate
/// for `localhost`, `127.0.0.1` and `host_name`, unless they exist (the server certificate
/// is made again when the names change); puts the CA in `DIR/trusted/`.
fn ensure_pki(dir: &Path, host_name: Option<&str>) -> Result<()> {
    let trusted = dir.join("trusted");
    std::fs::create_dir_all(&trusted).map_err(|e| io(e, trusted.display()))?;
    let have = |f: &str| dir.join(f).is_file();
    let ext = server_ext(host_name);
    let same_names = std::fs::read_to_string(dir.join("server.ext")).is_ok_and(|e| e == ext);
    if have("ca.pem") && have("server.pem") && have("server.key") && same_names {
        return Ok(());
    }
    require_program("openssl", "openssl")?;
    if !(have("ca.pem") && have("ca.key")) {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=tether hub stand-in CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
    }
    std::fs::write(dir.join("server.ext"), ext).map_err(|e| io(e, "server.ext"))?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "825",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    )?;
    std::fs::copy(dir.join("ca.pem"), trusted.join("ca.pem"))
        .map_err(|e| io(e, "trusted/ca.pem"))?;
    Ok(())
}

/// Makes the issuing CA of `--dps-port` (`DIR/issuing.pem` + `issuing.key`: P-384, signed
/// by `DIR/ca.pem`, as IoT Hub's certificate management signs with P-384) unless it exists,
/// and puts it in `DIR/trusted/` so the X.509 listener accepts the chains it issues.
fn ensure_issuer(dir: &Path) -> Result<()> {
    let have = |f: &str| dir.join(f).is_file();
    if !(have("issuing.pem") && have("issuing.key")) {
        require_program("openssl", "openssl")?;
        std::fs::write(
            dir.join("issuing.ext"),
            "basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
             subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
",
        )
        .map_err(|e| io(e, "issuing.ext"))?;
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-nodes",
                "-keyout",
                "issuing.key",
                "-out",
                "issuing.csr",
                "-subj",
                "/CN=tether hub stand-in issuing CA",
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "issuing.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-sha384",
                "-out",
                "issuing.pem",
                "-extfile",
                "issuing.ext",
            ],
        )?;
    }
    std::fs::copy(dir.join("issuing.pem"), dir.join("trusted/issuing.pem"))
        .map_err(|e| io(e, "trusted/issuing.pem"))?;
    Ok(())
}

/// The DPS listener and the issuing CA's plugin options (`--dps-port`).
fn dps_config(dir: &Path, dps_port: u16, validity_s: u64) -> String {
    let d = dir.display();
    format!(
        "\n# DPS (tether hub --dps-port): registrations, certificates issued from CSRs.\n\
         plugin_opt_issuer_cert {d}/issuing.pem\n\
         plugin_opt_issuer_key {d}/issuing.key\n\
         plugin_opt_issued_validity {validity_s}\n\
         listener {dps_port} 127.0.0.1\n\
         certfile {d}/server.pem\nkeyfile {d}/server.key\ntls_version tlsv1.2\nciphers {HUB_CIPHERS}\n\
         max_qos 1\n"
    )
}

/// The mosquitto configuration of the stand-in.
fn config(
    dir: &Path,
    plugin: &Path,
    registry: &Path,
    (port, x509_port): (u16, u16),
    ws_backend: Option<u16>,
) -> String {
    let d = dir.display();
    let tls = format!(
        "certfile {d}/server.pem\nkeyfile {d}/server.key\ntls_version tlsv1.2\nciphers {HUB_CIPHERS}\n\
         # IoT Hub: QoS 2 publishes close the connection, QoS 2 subscriptions are granted 1.\n\
         max_qos 1\n"
    );
    format!(
        "# Written by `tether hub`: the local IoT Hub stand-in.\n\
         # Run as the invoking user (mosquitto would switch to user `mosquitto` when root).\n\
         user root\n\
         # false: plugin settings apply to every listener, and the plugin receives TICK events.\n\
         per_listener_settings false\n\
         persistence false\n\
         allow_anonymous false\n\
         log_dest stderr\n\
         log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
         plugin {plugin}\n\
         plugin_opt_registry {registry}\n\
         plugin_opt_trust_dir {d}/x509-trust\n\
         plugin_opt_trusted {d}/trusted\n\
         plugin_opt_dir {d}\n\
         \n\
         # SAS devices\n\
         listener {port} 127.0.0.1\n{tls}\n\
         # X.509 devices: OpenSSL checks the chain against x509-trust (kept by the plugin), the\n\
         # plugin checks the identity.\n\
         listener {x509_port} 127.0.0.1\n{tls}\
         capath {d}/x509-trust\n\
         require_certificate true\n\
         use_identity_as_username false\n{ws}",
        plugin = plugin.display(),
        registry = registry.display(),
        ws = ws_backend
            .map(|p| {
                format!(
                    "\n# SAS devices over WebSockets: `tether hub` terminates TLS and WebSockets in\n\
                     # front of this loopback listener.\nlistener {p} 127.0.0.1\nmax_qos 1\n"
                )
            })
            .unwrap_or_default(),
    )
}

/// OpenSSL configuration capping the protocol at TLS 1.2 (`tls_version` is only a minimum).
const OPENSSL_TLS12: &str = "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n\
    [ssl_sect]\nsystem_default = system_default_sect\n\
    [system_default_sect]\nMinProtocol = TLSv1.2\nMaxProtocol = TLSv1.2\n";

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn stop(child: &mut Child) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Run the local IoT Hub stand-in: mosquitto under IoT Hub's rules
///
/// mosquitto with IoT Hub's TLS policy and the tether-hub plugin, which checks every device
/// against the registry file (SAS tokens, X.509 thumbprints or CAs, status, topics). Listens on 127.0.0.1: SAS devices on --port, X.509 devices on --x509-port. Makes a test
/// PKI in DIR when absent (devices trust DIR/ca.pem). With --dps-port, also DPS (certificates
/// issued from CSRs by DIR/issuing.pem, renewed through the hub). Prints `ready sas=PORT x509=PORT2 service=PORT3` when
/// both ports accept; stops on Ctrl-C or SIGTERM. Needs mosquitto, openssl and the plugin
/// (libtether_hub.so: `cargo build --workspace`).
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether hub --registry hub/example-registry.json --port 8883 --dir /tmp/hub
  tether hub --registry registry.json --port 9000 --x509-port 9443 --dir hub-pki
  tether hub --registry registry.json --port 8883 --host-name myhub.azure-devices.net --dir /tmp/hub
  tether hub invoke --dir /tmp/hub sensor-1 reboot      (and c2d, twin, watch: the service side)"
),
    args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct HubArgs {
    /// Act as the service side of a running stand-in (c2d, invoke, twin, watch)
    #[command(subcommand)]
    service: Option<service::ServiceCommand>,
    /// The identity registry (JSON, IoT Hub's device identity shape); re-read when it changes
    #[arg(long, value_name = "FILE", required = true)]
    registry: Option<String>,
    /// Port for SAS devices
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), required = true)]
    port: Option<u16>,
    /// Port for X.509 devices [default: PORT + 1]
    #[arg(long, value_name = "PORT2", value_parser = clap::value_parser!(u16).range(1..))]
    x509_port: Option<u16>,
    /// Folder for the PKI, the broker configuration and the trusted certificates
    #[arg(long, value_name = "DIR", required = true)]
    dir: Option<String>,
    /// Port of the service REST API (HTTPS) [default: any free port, printed as service=PORT]
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    service_port: u16,
    /// A host name for the server certificate besides localhost and 127.0.0.1 (e.g.
    /// myhub.azure-devices.net, reached through GatewayHostName or a hosts entry)
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// Serve MQTT over WebSockets (TLS, `/$iothub/websocket`, subprotocol mqtt; SAS
    /// devices) on PORT, like IoT Hub's port 443; the ready line adds `ws=PORT`
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    ws_port: Option<u16>,
    /// Serve the web view on [HOST:]PORT (HOST: 127.0.0.1 unless given); the ready line
    /// adds `web=URL`, a login URL holding the session token (also in DIR/web-token)
    #[arg(long, value_name = "[HOST:]PORT")]
    web: Option<String>,
    /// Serve DPS on PORT (the registry's `dps` section holds the enrollments), issuing device
    /// certificates from CSRs with DIR/issuing.pem; the hub then renews them through
    /// $iothub/credentials. The ready line adds `dps=PORT`
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    dps_port: Option<u16>,
    /// Lifetime of the certificates the stand-in issues, in seconds (short ones make renewal
    /// testable)
    #[arg(long, value_name = "SECONDS", default_value_t = 30 * 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    issued_validity: u64,
}

pub fn run(args: HubArgs) -> Result<()> {
    if let Some(cmd) = args.service {
        return service::run(cmd);
    }
    let (registry, port, dir) = (
        args.registry.as_deref().unwrap_or_default(),
        args.port.unwrap_or_default(),
        args.dir.as_deref().unwrap_or_default(),
    );
    let x509_port = match args.x509_port {
        Some(p) => p,
        None => port
            .checked_add(1)
            .ok_or_else(|| usage_error("--port 65535 leaves no room for the X.509 port"))?,
    };
    if x509_port == port {
        return Err(usage_error("--x509-port must be another port than --port"));
    }

    let registry = std::fs::canonicalize(registry)
        .map_err(|e| Error::new(Code::FileNotReadable, format!("registry {registry}: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| io(e, dir))?;
    service::check_socket_path(&dir)?;
    let mosquitto = require_program("mosquitto", "mosquitto")?;
    let plugin = find_plugin()?;
    if let Some(h) = &args.host_name {
        tether::internal::check_host(h)
            .map_err(|e| usage_error(format!("--host-name: {}", e.message())))?;
    }
    ensure_pki(&dir, args.host_name.as_deref())?;
    if args.dps_port.is_some() {
        ensure_issuer(&dir)?;
    }
    std::fs::create_dir_all(dir.join("x509-trust")).map_err(|e| io(e, "x509-trust"))?;
    let conf = dir.join("mosquitto.conf");
    // mosquitto listens on internal ports; the audit relays own the public ones.
    let (inner, inner_x509) = (hub_audit::internal_port()?, hub_audit::internal_port()?);
    hub_audit::start(port, inner)?;
    hub_audit::start(x509_port, inner_x509)?;
    let (port, x509_port, public) = (inner, inner_x509, (port, x509_port));
    let ws_backend = match args.ws_port {
        Some(ws_port) => {
            let backend = hub_audit::internal_port()?;
            ws::start(rest::tls_config(&dir)?, ws_port, backend)?;
            Some(backend)
        }
        None => None,
    };
    let mut text = config(&dir, &plugin, &registry, (port, x509_port), ws_backend);
    if let Some(dps) = args.dps_port {
        text.push_str(&dps_config(&dir, dps, args.issued_validity));
    }
    std::fs::write(&conf, text).map_err(|e| io(e, conf.display()))?;
    let openssl_conf = dir.join("openssl-tls12.cnf");
    std::fs::write(&openssl_conf, OPENSSL_TLS12).map_err(|e| io(e, openssl_conf.display()))?;

    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut child = Command::new(&mosquitto)
        .arg("-c")
        .arg(&conf)
        .env("OPENSSL_CONF", &openssl_conf)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io(e, format!("cannot start {}", mosquitto.display())))?;
    // mosquitto's log passes through; its line naming each client's port ties the client to
    // the audit relay's verdict for that connection (the web view's devices list).
    if let Some(log) = child.stderr.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            let (mut log, mut raw) = (std::io::BufReader::new(log), Vec::new());
            while log.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches('\n');
                if let Some((id, port)) = hub_audit::client_connected(line) {
                    hub_audit::note_client(id, port);
                }
                eprintln!("{line}");
                raw.clear();
            }
        });
    }

    let exited = |child: &mut Child| -> Option<Error> {
        match child.try_wait() {
            Ok(Some(status)) => Some(Error::new(
                Code::Io,
                format!("mosquitto exited ({status}); its log above says why"),
            )),
            _ => None,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(e) = exited(&mut child) {
            return Err(e);
        }
        if STOP.load(Ordering::SeqCst) {
            stop(&mut child);
            return Ok(());
        }
        if accepts(port)
            && accepts(x509_port)
            && args.dps_port.map_or(true, accepts)
            && ws_backend.map_or(true, accepts)
        {
            break;
        }
        if Instant::now() >= deadline {
            stop(&mut child);
            return Err(Error::new(
                Code::Timeout,
                format!("mosquitto did not accept on ports {port} and {x509_port} within 15 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let service_port = match rest::start(&dir, &registry, args.service_port) {
        Ok(p) => p,
        Err(e) => {
            stop(&mut child);
            return Err(e);
        }
    };
    let web = match args
        .web
        .as_deref()
        .map(web::parse_addr)
        .transpose()
        .and_then(|addr| addr.map(|a| web::start(&dir, &registry, a)).transpose())
    {
        Ok(url) => url
            .map(|u| format!(" web={}", u.as_str()))
            .unwrap_or_default(),
        Err(e) => {
            stop(&mut child);
            return Err(e);
        }
    };
    let dps = args
        .dps_port
        .map(|p| format!(" dps={p}"))
        .unwrap_or_default();
    println!(
        "ready sas={} x509={} service={service_port}{web}{dps}{}",
        public.0,
        public.1,
        args.ws_port.map(|p| format!(" ws={p}")).unwrap_or_default()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        if let Some(e) = exited(&mut child) {
            return Err(e);
        }
        if STOP.load(Ordering::SeqCst) {
            stop(&mut child);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_both_listeners_tls12_and_the_plugin() {
        let c = config(
            Path::new("/d"),
            Path::new("/p/libtether_hub.so"),
            Path::new("/r.json"),
            (8883, 8884),
            None,
        );
        assert!(c.contains("per_listener_settings false\n"));
        assert!(c.contains("plugin /p/libtether_hub.so\nplugin_opt_registry /r.json\n"));
        assert!(c.contains("listener 8883 127.0.0.1\n"));
        assert!(c.contains("listener 8884 127.0.0.1\n"));
        assert_eq!(c.matches("tls_version tlsv1.2\n").count(), 2);
        assert_eq!(c.matches(HUB_CIPHERS).count(), 2);
        assert!(c.contains("require_certificate true\nuse_identity_as_username false\n"));
        assert!(!c.contains("WebSockets"));
        // --ws-port: a third, plain loopback listener behind the WebSocket front.
        let c = config(
            Path::new("/d"),
            Path::new("/p"),
            Path::new("/r"),
            (1, 2),
            Some(9),
        );
        assert!(c.ends_with("listener 9 127.0.0.1\nmax_qos 1\n"), "{c}");
        assert_eq!(c.matches("tls_version tlsv1.2\n").count(), 2);
    }
}
