//! `tether`: the command-line tool. Each subcommand lives in its own module.

use std::process::ExitCode;

mod args;
mod audit;
mod derive_key;
mod device;
mod hub;
mod hub_audit;
mod listen;
mod sas_token;
mod send;
mod thumbprint;
mod tls_check;

const USAGE: &str = "\
usage: tether <command> [options]

commands:
  tls-check HOST[:PORT] [--ca FILE] [--cert FILE --key FILE] [--tls13] [--timeout SECONDS]
      Connect with the IoT Hub TLS policy (TLS 1.2, strong ECDHE suites; default port 8883)
      and print the negotiated version and suite, then the server chain.
  sas-token --resource R --key K (--expiry UNIX | --ttl SECONDS) [--key-name N]
  sas-token --connection-string CS [--ttl SECONDS]
      Print a SAS token (R is the unencoded HOST/devices/ID[/modules/ID] or
      SCOPE/registrations/ID; default lifetime 3600 s).
  derive-key --group-key K --registration-id ID
      Print a device's key for a DPS symmetric-key group enrollment.
  thumbprint FILE
      Print the SHA1 and SHA256 thumbprints of a certificate (PEM or DER).
  send [--count N] [--qos 0|1] [--property K=V]... MESSAGE
      Send telemetry as the device; prints 'sent N acked M' and succeeds only when every
      QoS 1 message was acknowledged.
  listen [--status N] [--count N] [--timeout SECONDS]
      Print cloud-to-device messages and direct-method requests (answered with status N,
      default 200).
      send and listen take [--connection-string CS] [--ca FILE] [--port N]
      [--cert FILE --key FILE] [--ttl SECONDS] [-v], defaulting to TETHER_CONNECTION_STRING,
      TETHER_CA_FILE, TETHER_PORT, TETHER_CERT_FILE and TETHER_KEY_FILE.
  hub --registry FILE --port PORT [--x509-port PORT2] --dir DIR
      Run the local IoT Hub stand-in: mosquitto on 127.0.0.1 with TLS 1.2, the hub's suites
      and the tether-hub plugin checking SAS tokens and X.509 devices against the registry
      (SAS devices on PORT, X.509 devices on PORT2, default PORT+1). Makes a test PKI in DIR
      when absent (devices trust DIR/ca.pem). Prints `ready sas=PORT x509=PORT2`; stops on
      Ctrl-C or SIGTERM.
  audit (--listen [HOST:]PORT | --pcap FILE) [--json] [--cert FILE --key FILE] [--count N]
        [--timeout SECONDS]
      Will a device survive IoT Hub's TLS enforcement? Audit each device's ClientHello
      (devices pointed at the listener, or a tcpdump capture); see docs/audit.md.
  version
      Print the library version.
";

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let command = argv.next();
    let rest: Vec<String> = argv.collect();
    let result = match command.as_deref() {
        Some("audit") => return audit::main(&rest),
        Some("tls-check") => tls_check::run(&rest),
        Some("sas-token") => sas_token::run(&rest),
        Some("derive-key") => derive_key::run(&rest),
        Some("thumbprint") => thumbprint::run(&rest),
        Some("send") => send::run(&rest),
        Some("listen") => listen::run(&rest),
        Some("hub") => hub::run(&rest),
        Some("version" | "--version" | "-V") => {
            println!("tether {}", tether::VERSION);
            Ok(())
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(args::usage_error(format!("unknown command \"{other}\""))),
        None => Err(args::usage_error("no command given")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e} ({})", e.code().name());
            if e.code() == tether::Code::InvalidArgument {
                eprint!("{USAGE}");
            }
            ExitCode::from(exit_code(e.code()))
        }
    }
}

/// Exit status by area: 2 usage, 3 TLS, 4 identity, 5 MQTT, 6 network, 1 otherwise.
fn exit_code(code: tether::Code) -> u8 {
    match code as u32 {
        3 => 2,
        100..=199 => 3,
        200..=299 => 4,
        300..=399 => 5,
        400..=499 => 6,
        _ => 1,
    }
}
