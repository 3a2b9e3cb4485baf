//! `tether listen [--status N] [--count N] [--timeout SECONDS]`: print cloud-to-device
//! messages and direct-method requests, answering each method with a status.

use std::time::{Duration, Instant};

use tether::session::{Event, Subscription};
use tether::Result;

use crate::args::Args;
use crate::device;

pub fn run(argv: &[String]) -> Result<()> {
    let mut valued = device::VALUED.to_vec();
    valued.extend(["--status", "--count"]);
    let args = Args::parse(argv, &valued, &["-v"])?;
    let status: u16 = args.number("--status", 200)?;
    let count: u64 = args.number("--count", u64::MAX)?;
    let timeout = device::timeout(&args, u64::MAX / 4_000)?;
    let mut client = device::client(&args)?;
    client.subscribe(Subscription::C2d)?;
    client.subscribe(Subscription::Methods)?;
    client.connect(Duration::from_secs(30).min(timeout))?;
    println!("listening");
    let deadline = Instant::now() + timeout;
    let mut seen = 0u64;
    while seen < count && Instant::now() < deadline {
        match client.poll(Duration::from_millis(500))? {
            Some(Event::C2d {
                properties,
                payload,
            }) => {
                let props: Vec<String> = properties
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    })
                    .collect();
                println!(
                    "c2d [{}] {}",
                    props.join(" "),
                    String::from_utf8_lossy(&payload)
                );
                seen += 1;
            }
            Some(Event::MethodRequest {
                name,
                request_id,
                payload,
            }) => {
                println!("method {name} {}", String::from_utf8_lossy(&payload));
                client.respond_method(&request_id, status, b"{}")?;
                seen += 1;
            }
            Some(Event::Undecodable {
                topic,
                payload,
                reason,
            }) => {
                println!(
                    "undecodable {topic} ({}) {}",
                    reason.code().name(),
                    String::from_utf8_lossy(&payload)
                );
                seen += 1;
            }
            _ => {}
        }
    }
    client.disconnect();
    Ok(())
}
