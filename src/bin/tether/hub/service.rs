//! `tether hub c2d|invoke|twin|watch --dir DIR ...`: the service side of a running stand-in,
//! through its control socket (`DIR/control.sock`, served by the plugin inside mosquitto).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{json, Value};
use tether::{Code, Error, Result};

use crate::opts::{payload, print_json, usage_error};

/// The control socket's file name (the plugin's `control::SOCKET_FILE`).
pub const SOCKET_FILE: &str = "control.sock";

/// Act as the hub's service side on a running `tether hub`
#[derive(clap::Subcommand, Debug)]
pub enum ServiceCommand {
    /// Queue a cloud-to-device message for a device (at most 50 pending; delivered when it
    /// subscribes to devices/{id}/messages/devicebound/#)
    #[command(after_help = after_help!(
"  tether hub c2d --dir /tmp/hub sensor-1 'reboot at 3'
  tether hub c2d --dir /tmp/hub sensor-1 --property kind=command --ttl 60 @cmd.json"
    ))]
    C2d {
        #[command(flatten)]
        dir: DirOpt,
        /// The device (IoT Hub sends no cloud-to-device messages to modules)
        device: String,
        /// A message property K=V; repeatable
        #[arg(long, value_name = "K=V")]
        property: Vec<String>,
        /// Time to live in seconds (IoT Hub: default 3600, at most 172800)
        #[arg(long, value_name = "S", default_value_t = 3600)]
        ttl: u64,
        /// The message: text, @FILE or - (standard input)
        message: String,
    },
    /// Invoke a direct method and print the device's status and payload (404 when the
    /// device is not connected or not subscribed to methods, 504 when it does not answer)
    #[command(after_help = after_help!(
"  tether hub invoke --dir /tmp/hub sensor-1 reboot --payload '{\"delay\":5}' --timeout 10"
    ))]
    Invoke {
        #[command(flatten)]
        dir: DirOpt,
        /// The device (or device/module)
        device: String,
        /// The method name
        method: String,
        /// The request payload (JSON; text that is not JSON is sent as a JSON string)
        #[arg(long, value_name = "JSON", default_value = "null")]
        payload: String,
        /// Seconds to wait for the device's answer (IoT Hub: 5 to 300)
        #[arg(long, value_name = "S", default_value_t = 30)]
        timeout: u64,
        /// Print `{"status","payload"}` as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a device's twin; with --desired, patch its desired properties (the device gets
    /// the patch with its $version)
    #[command(after_help = after_help!(
"  tether hub twin --dir /tmp/hub sensor-1
  tether hub twin --dir /tmp/hub sensor-1 --desired '{\"rate\":5}'"
    ))]
    Twin {
        #[command(flatten)]
        dir: DirOpt,
        /// The device (or device/module)
        device: String,
        /// A desired-properties patch (JSON object; null removes a property)
        #[arg(long, value_name = "JSON")]
        desired: Option<String>,
    },
    /// Print each device-to-cloud message with its properties, one line each, until Ctrl-C
    #[command(after_help = after_help!(
"  tether hub watch --dir /tmp/hub
  tether hub watch --dir /tmp/hub sensor-1 --json"
    ))]
    Watch {
        #[command(flatten)]
        dir: DirOpt,
        /// Only this device's messages (or device/module)
        device: Option<String>,
        /// One JSON object per line: {"device","properties","payload"}
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct DirOpt {
    /// The running stand-in's folder (its --dir)
    #[arg(long, value_name = "DIR")]
    dir: String,
}

/// The control socket's path must fit a Unix socket address (107 bytes on Linux).
pub fn check_socket_path(dir: &Path) -> Result<()> {
    let path = dir.join(SOCKET_FILE);
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(usage_error(format!(
            "--dir {} is too long for the control socket {SOCKET_FILE} ({len} bytes; Unix \
             sockets allow 107): use a shorter folder",
            dir.display()
        )));
    }
    Ok(())
}

/// Connects to the stand-in in `dir` and sends one request line.
pub(super) fn connect(dir: &Path, request: &Value) -> Result<BufReader<UnixStream>> {
    let path = dir.join(SOCKET_FILE);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        Error::new(
            Code::NotFound,
            format!(
                "no running stand-in in {} ({}: {e}): start `tether hub --dir {}` first",
                dir.display(),
                path.display(),
                dir.display()
            ),
        )
    })?;
    writeln!(stream, "{request}")
        .map_err(|e| Error::new(Code::Io, format!("control socket: {e}")))?;
    Ok(BufReader::new(stream))
}

pub(super) fn read_answer(reader: &mut BufReader<UnixStream>) -> Result<Value> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| Error::new(Code::Io, format!("control socket: {e}")))?;
    serde_json::from_str(&line).map_err(|_| {
        Error::new(
            Code::Io,
            "the stand-in closed the control socket without answering",
        )
    })
}

/// Sends one request to the stand-in in `dir` and returns its answer (`{"status", ...}`).
pub fn call(dir: &Path, request: &Value) -> Result<Value> {
    read_answer(&mut connect(dir, request)?)
}

/// An answer whose status is not 2xx, as an error naming the status and the hub's message.
fn check(answer: &Value) -> Result<()> {
    let status = answer["status"].as_u64().unwrap_or(500);
    if (200..300).contains(&status) {
        return Ok(());
    }
    let code = match status {
        404 => Code::NotFound,
        504 => Code::Timeout,
        401 | 403 => Code::NotAuthorized,
        400 => Code::InvalidArgument,
        _ => Code::Io,
    };
    // A usage error would print the help hint; these are the hub's answers.
    let code = if code == Code::InvalidArgument {
        Code::Io
    } else {
        code
    };
    Err(Error::new(
        code,
        format!(
            "{status}: {}",
            answer["message"]
                .as_str()
                .unwrap_or("refused by the stand-in")
        ),
    ))
}

fn json_arg(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| usage_error(format!("{what} is not JSON: {e}")))
}

pub fn run(cmd: ServiceCommand) -> Result<()> {
    match cmd {
        ServiceCommand::C2d {
            dir,
            device,
            property,
            ttl,
            message,
        } => {
            let mut properties = serde_json::Map::new();
            for p in &property {
                let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
                if k.is_empty() {
                    return Err(usage_error(format!("--property {p}: the name is empty")));
                }
                properties.insert(k.to_owned(), json!(v));
            }
            let body = payload(&message)?;
            let body = String::from_utf8(body)
                .map_err(|_| usage_error("the message must be UTF-8 text"))?;
            let answer = call(
                Path::new(&dir.dir),
                &json!({"op": "c2d", "device": device, "properties": properties,
                        "payload": body, "ttl": ttl}),
            )?;
            check(&answer)?;
            println!(
                "queued {} for {device} ({} pending)",
                answer["messageId"].as_str().unwrap_or("?"),
                answer["pending"]
            );
            Ok(())
        }
        ServiceCommand::Invoke {
            dir,
            device,
            method,
            payload,
            timeout,
            json,
        } => {
            let request = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
            let answer = call(
                Path::new(&dir.dir),
                &json!({"op": "invoke", "device": device, "method": method,
                        "payload": request, "timeout": timeout}),
            )?;
            // A device's own answer (any status) has a payload; the hub's 404/504 have none.
            if answer.get("payload").is_none() {
                check(&answer)?;
            }
            if json {
                print_json(&json!({"status": answer["status"], "payload": answer["payload"]}));
            } else {
                println!("status {}", answer["status"]);
                println!("{}", answer["payload"]);
            }
            Ok(())
        }
        ServiceCommand::Twin {
            dir,
            device,
            desired,
        } => {
            let mut request = json!({"op": "twin", "device": device});
            if let Some(d) = desired {
                let patch = json_arg(&d, "--desired")?;
                if !patch.is_object() {
                    return Err(usage_error("--desired must be a JSON object"));
                }
                request["desired"] = patch;
            }
            let answer = call(Path::new(&dir.dir), &request)?;
            check(&answer)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&answer["twin"]).unwrap_or_default()
            );
            Ok(())
        }
        ServiceCommand::Watch { dir, device, json } => {
            let mut request = json!({"op": "watch"});
            if let Some(d) = &device {
                request["device"] = json!(d);
            }
            let mut reader = connect(Path::new(&dir.dir), &request)?;
            check(&read_answer(&mut reader)?)?;
            let mut out = std::io::stdout();
            loop {
                let message = read_answer(&mut reader)?;
                if json {
                    print_json(&message);
                } else {
                    let props: Vec<String> = message["properties"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                .collect()
                        })
                        .unwrap_or_default();
                    let payload = match &message["payload"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let device = message["device"].as_str().unwrap_or("?");
                    if props.is_empty() {
                        println!("{device} {payload}");
                    } else {
                        println!("{device} {payload} {}", props.join(" "));
                    }
                }
                let _ = out.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_socket_path_must_fit_a_unix_address() {
        check_socket_path(Path::new("/tmp/hub")).unwrap();
        let long = format!("/tmp/{}", "x".repeat(100));
        let e = check_socket_path(Path::new(&long)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("107"), "{e:?}");
    }
}
