//! `tether listen`: print what the hub sends the device (cloud-to-device messages, method
//! calls, desired-property patches, twin responses), answering each method call.

use std::time::{Duration, Instant};

use tether::session::{Event, Property, Subscription};
use tether::Result;

use crate::device;
use crate::opts::{json_payload, payload, print_json, DeviceOpts};

/// Print cloud-to-device messages, method calls, desired-property patches and twin responses
///
/// Subscribes as the device and prints one line per event until --count events or
/// --timeout. Each direct-method call is answered with --status and --response.
/// Text lines: `c2d [K=V ...] BODY`, `method NAME BODY`, `desired VERSION PATCH`,
/// `twin STATUS DOCUMENT`; with --json, one object per line with an "event" member
/// (listening, c2d, method, desired, twin, subscription_refused).
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether listen
  tether listen --status 404 --response '{\"error\":\"no such method\"}'
  tether listen --response @answer.json --count 1 --timeout 60
  tether listen --get-twin --json | jq .event"
))]
pub struct ListenArgs {
    /// Status that answers every direct-method call
    #[arg(long, value_name = "N", default_value_t = 200)]
    status: u16,
    /// Body that answers every direct-method call: JSON text, @FILE, or - for standard input
    #[arg(long, value_name = "PAYLOAD", default_value = "{}")]
    response: String,
    /// Stop after this many events (c2d, method, desired, twin)
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Ask for the whole twin once connected and print the answer
    #[arg(long)]
    get_twin: bool,
    /// Print one JSON object per line instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceOpts,
}

fn properties_text(properties: &[Property]) -> String {
    let props: Vec<String> = properties
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    props.join(" ")
}

fn properties_json(properties: &[Property]) -> serde_json::Value {
    properties
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub fn run(args: ListenArgs) -> Result<()> {
    let response = payload(&args.response)?;
    let count = args.count.unwrap_or(u64::MAX);
    // Forever unless --timeout says otherwise (in seconds; kept far from overflow).
    let timeout = args.device.timeout_or(u64::MAX / 4_000);
    let mut client = device::client(&args.device)?;
    for sub in [Subscription::C2d, Subscription::Methods, Subscription::Twin] {
        client.subscribe(sub)?;
    }
    client.connect(Duration::from_secs(30).min(timeout))?;
    if args.get_twin {
        client.twin_get()?;
    }
    if args.json {
        print_json(&serde_json::json!({"event": "listening"}));
    } else {
        println!("listening");
    }
    let deadline = Instant::now() + timeout;
    let mut seen = 0u64;
    while seen < count && Instant::now() < deadline {
        let (text, json) = match client.poll(Duration::from_millis(500))? {
            Some(Event::C2d {
                properties,
                payload,
            }) => (
                format!(
                    "c2d [{}] {}",
                    properties_text(&properties),
                    String::from_utf8_lossy(&payload)
                ),
                serde_json::json!({
                    "event": "c2d",
                    "properties": properties_json(&properties),
                    "payload": json_payload(&payload),
                }),
            ),
            Some(Event::MethodRequest {
                name,
                request_id,
                payload,
            }) => {
                client.respond_method(&request_id, args.status, &response)?;
                (
                    format!("method {name} {}", String::from_utf8_lossy(&payload)),
                    serde_json::json!({
                        "event": "method",
                        "name": name,
                        "request_id": request_id,
                        "payload": json_payload(&payload),
                        "status": args.status,
                    }),
                )
            }
            Some(Event::DesiredPatch { version, payload }) => (
                format!("desired {version} {}", String::from_utf8_lossy(&payload)),
                serde_json::json!({
                    "event": "desired",
                    "version": version,
                    "payload": json_payload(&payload),
                }),
            ),
            Some(Event::TwinResponse {
                request_id,
                status,
                version,
                payload,
            }) => (
                format!("twin {status} {}", String::from_utf8_lossy(&payload)),
                serde_json::json!({
                    "event": "twin",
                    "request_id": request_id,
                    "status": status,
                    "version": version,
                    "payload": json_payload(&payload),
                }),
            ),
            Some(Event::Undecodable {
                topic,
                payload,
                reason,
            }) => (
                format!(
                    "undecodable {topic} ({}) {}",
                    reason.code().name(),
                    String::from_utf8_lossy(&payload)
                ),
                serde_json::json!({
                    "event": "undecodable",
                    "topic": topic,
                    "reason": reason.code().name(),
                    "detail": reason.to_string(),
                    "payload": json_payload(&payload),
                }),
            ),
            Some(Event::Certificate(e)) => {
                // Progress of the certificate renewal (--credentials): not a message.
                let (text, json) = crate::device::certificate_event(&e);
                if args.json {
                    print_json(&json);
                } else {
                    eprintln!("tether: certificate {text}");
                }
                continue;
            }
            Some(Event::SubscriptionRefused { filter }) => {
                if args.json {
                    print_json(&serde_json::json!({
                        "event": "subscription_refused",
                        "filter": filter,
                    }));
                } else {
                    eprintln!("tether: the hub refused the subscription {filter}");
                }
                continue;
            }
            _ => continue,
        };
        if args.json {
            print_json(&json);
        } else {
            println!("{text}");
        }
        seen += 1;
    }
    client.disconnect();
    Ok(())
}
