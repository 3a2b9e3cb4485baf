//! `tether send [OPTIONS] PAYLOAD`: send telemetry as the device and report how much of it
//! the hub acknowledged.

use std::time::{Duration, Instant};

use tether::mqtt::properties::PropertyBag;
use tether::session::Event;
use tether::{Code, Error, Result};

use crate::device;
use crate::opts::{payload, print_json, DeviceOpts};

/// Send telemetry as the device
///
/// Prints `sent N acked M` and succeeds only when every QoS 1 message was acknowledged
/// within --timeout (default 30 s, connection included).
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  export TETHER_CONNECTION_STRING='HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=...'
  tether send '{\"t\":21}'
  tether send --count 10 --property '$.ct=application/json' --property '$.ce=utf-8' @reading.json
  sensor-read | tether send -            # the payload from standard input
  tether send --json --qos 0 hello       # {\"sent\":1,\"acked\":0,...}"
))]
pub struct SendArgs {
    /// The message body: text, @FILE for a file's contents, or - for standard input
    #[arg(value_name = "PAYLOAD")]
    payload: String,
    /// How many times to send it
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: u64,
    /// MQTT QoS: 1 waits for the hub's acknowledgement, 0 does not
    #[arg(long, value_name = "0|1", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// A message property K=V (system properties like $.ct, $.ce, $.mid too); repeatable;
    /// a bare K is a property without a value
    #[arg(long, value_name = "K=V")]
    property: Vec<String>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceOpts,
}

pub fn run(args: SendArgs) -> Result<()> {
    let body = payload(&args.payload)?;
    let mut bag = PropertyBag::new();
    for property in &args.property {
        let (key, value) = match property.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (property.as_str(), None),
        };
        bag.try_append(key, value)?;
    }
    let (count, qos) = (args.count, args.qos);
    let timeout = args.device.timeout_or(30);
    let mut client = device::client(&args.device)?;
    client.connect(timeout)?;
    let deadline = Instant::now() + timeout;
    // The first event after connect() is the connection itself (TLS version and suite).
    let tls = match client.poll(Duration::ZERO)? {
        Some(Event::Connected {
            tls_version,
            cipher_suite,
            ..
        }) => Some((tls_version, cipher_suite)),
        _ => None,
    };
    let mut sent = 0u64;
    let mut acked = 0u64;
    while sent < count || (qos == 1 && acked < sent) {
        if Instant::now() >= deadline {
            break;
        }
        if sent < count {
            match client.send_telemetry(&body, &bag, qos) {
                Ok(_) => {
                    sent += 1;
                    continue;
                }
                Err(e) if e.code() == Code::QueueFull => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(Event::TelemetryAcked { .. }) = client.poll(Duration::from_millis(100))? {
            acked += 1;
        }
    }
    client.disconnect();
    if args.json {
        let (version, suite) = tls.unzip();
        print_json(&serde_json::json!({
            "sent": sent,
            "acked": acked,
            "qos": qos,
            "bytes": body.len(),
            "tls_version": version,
            "cipher_suite": suite,
        }));
    } else {
        println!("sent {sent} acked {acked}");
    }
    if qos == 1 && acked < count {
        return Err(Error::new(
            Code::Timeout,
            format!(
                "{} of {count} messages were not acknowledged in time",
                count - acked
            ),
        ));
    }
    Ok(())
}
