//! `tether twin get|patch`: the device side of the device twin.

use std::time::Instant;

use clap::Subcommand;
use tether::session::Event;
use tether::{Code, Error, Result};

use crate::device;
use crate::opts::{json_payload, payload, print_json, DeviceOpts};

/// Read the device twin, or patch its reported properties, as the device
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether twin get
  tether twin patch '{\"firmware\":\"1.2.3\"}'
  tether twin patch @reported.json --json"
))]
pub struct TwinArgs {
    #[command(subcommand)]
    action: TwinAction,
}

#[derive(Subcommand, Debug)]
enum TwinAction {
    Get(TwinGetArgs),
    Patch(TwinPatchArgs),
}

/// Print the device twin (its desired and reported properties) as JSON
///
/// Fails (exit 1) when the hub answers with a status other than 200.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether twin get
  tether twin get | jq .desired"
))]
pub struct TwinGetArgs {
    #[command(flatten)]
    device: DeviceOpts,
}

/// Patch the twin's reported properties; prints the hub's status and the new version
///
/// Prints `status 204 version N`. Fails (exit 1) when the hub answers with another status.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether twin patch '{\"firmware\":\"1.2.3\"}'
  tether twin patch @reported.json
  echo '{\"battery\":87}' | tether twin patch - --json   # {\"status\":204,\"version\":5}"
))]
pub struct TwinPatchArgs {
    /// The patch (JSON): text, @FILE for a file's contents, or - for standard input
    #[arg(value_name = "PAYLOAD")]
    patch: String,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceOpts,
}

/// The hub's answer to a twin request: status, version and body.
struct Answer {
    status: u16,
    version: Option<u64>,
    payload: Vec<u8>,
}

/// Connects, sends one twin request made by `request` and waits for its answer.
fn exchange(
    opts: &DeviceOpts,
    request: impl FnOnce(&mut tether::client::Client) -> Result<String>,
    expected: u16,
) -> Result<Answer> {
    let timeout = opts.timeout_or(30);
    let deadline = Instant::now() + timeout;
    let mut client = device::client(opts)?;
    client.connect(timeout)?;
    let rid = request(&mut client)?;
    let answer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            client.disconnect();
            return Err(Error::new(
                Code::Timeout,
                format!("the hub did not answer the twin request within {timeout:?}"),
            ));
        }
        if let Some(Event::TwinResponse {
            request_id,
            status,
            version,
            payload,
        }) = client.poll(left)?
        {
            if request_id == rid {
                break Answer {
                    status,
                    version,
                    payload,
                };
            }
        }
    };
    client.disconnect();
    if answer.status != expected {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "the hub answered the twin request with status {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.payload)
            ),
        ));
    }
    Ok(answer)
}

pub fn run(args: TwinArgs) -> Result<()> {
    match args.action {
        TwinAction::Get(get) => {
            let answer = exchange(&get.device, |c| c.twin_get(), 200)?;
            println!("{}", String::from_utf8_lossy(&answer.payload));
        }
        TwinAction::Patch(patch) => {
            let body = payload(&patch.patch)?;
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                return Err(Error::new(
                    Code::InvalidArgument,
                    format!("the patch is not JSON: {e}"),
                ));
            }
            let answer = exchange(&patch.device, |c| c.twin_patch_reported(&body), 204)?;
            if patch.json {
                print_json(&serde_json::json!({
                    "status": answer.status,
                    "version": answer.version,
                    "payload": (!answer.payload.is_empty()).then(|| json_payload(&answer.payload)),
                }));
            } else {
                match answer.version {
                    Some(v) => println!("status {} version {v}", answer.status),
                    None => println!("status {}", answer.status),
                }
            }
        }
    }
    Ok(())
}
