//! `tether send [--count N] [--qos 0|1] [--property k=v]... MESSAGE`: send telemetry and
//! report how much of it the hub acknowledged.

use std::time::{Duration, Instant};

use tether::mqtt::properties::PropertyBag;
use tether::session::Event;
use tether::{Code, Error, Result};

use crate::args::{usage_error, Args};
use crate::device;

pub fn run(argv: &[String]) -> Result<()> {
    let mut valued = device::VALUED.to_vec();
    valued.extend(["--count", "--qos", "--property"]);
    let args = Args::parse(argv, &valued, &["-v"])?;
    let [message] = args.positionals.as_slice() else {
        return Err(usage_error("send takes one MESSAGE"));
    };
    let count: u64 = args.number("--count", 1)?;
    let qos: u8 = args.number("--qos", 1)?;
    let mut bag = PropertyBag::new();
    for property in args.values("--property") {
        let (key, value) = match property.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (property, None),
        };
        bag.try_append(key, value)?;
    }
    let timeout = device::timeout(&args, 30)?;
    let mut client = device::client(&args)?;
    client.connect(timeout)?;
    let deadline = Instant::now() + timeout;
    let mut sent = 0u64;
    let mut acked = 0u64;
    while sent < count || (qos == 1 && acked < sent) {
        if Instant::now() >= deadline {
            break;
        }
        if sent < count {
            match client.send_telemetry(message.as_bytes(), &bag, qos) {
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
    println!("sent {sent} acked {acked}");
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
