//! One source of defaults: the Rust API, a C program compiled against tether.h, the CLI, the
//! Python binding and the C# binding all report the values of `tether::defaults`, and the
//! header's documentation of them says the same.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{compile_c, lib_dir, require, root, run, target_command, temp_dir, tether_cli};
use tether::client::ClientOptions;
use tether::defaults as d;
use tether::session::SessionOptions;

type Values = BTreeMap<String, u64>;

/// The table every front end must reproduce, by C field name.
fn expected() -> Values {
    d::TABLE
        .iter()
        .map(|(name, value)| (name.to_string(), *value))
        .collect()
}

/// The C client options are the subset of the table with the same field names.
fn expected_client_options() -> Values {
    let table = expected();
    [
        "port",
        "keep_alive_secs",
        "token_ttl_secs",
        "max_inflight",
        "connect_timeout_ms",
        "retry_max_ms",
    ]
    .iter()
    .map(|name| (name.to_string(), table[*name]))
    .chain([
        // The transport fields: MQTT (TETHER_TRANSPORT_MQTT, 0) by default, and the port
        // WebSockets use.
        ("websocket_port".to_string(), u64::from(d::WEBSOCKET_PORT)),
        ("transport".to_string(), 0),
    ])
    .collect()
}

fn json_values(line: &str) -> Values {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    value
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {line}"))
        .iter()
        .map(|(k, v)| {
            let n = v
                .as_u64()
                .unwrap_or_else(|| panic!("{k} is not a number: {line}"));
            (k.clone(), n)
        })
        .collect()
}

#[test]
fn the_table_names_every_field_of_the_c_struct_in_order() {
    let header = std::fs::read_to_string(root().join("include/tether.h")).unwrap();
    let start = header
        .find("typedef struct tether_defaults {")
        .expect("tether.h declares struct tether_defaults");
    let body = &header[start..start + header[start..].find("} tether_defaults;").unwrap()];
    // Field lines are the ones ending in `;` outside comments: `  uint16_t port;`.
    let fields: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(';') && !l.starts_with('*') && l.contains(' '))
        .map(|l| l.trim_end_matches(';').rsplit(' ').next().unwrap())
        .collect();
    let names: Vec<&str> = d::TABLE.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        fields, names,
        "tether_defaults fields vs tether::defaults::TABLE"
    );
    // Each field's comment ends in its value ("...: 8883."), so C readers see the numbers.
    let mut comments = body.split("/*").skip(1);
    for (name, value) in d::TABLE {
        let comment = comments.next().unwrap();
        let text = comment.split("*/").next().unwrap();
        assert!(
            text.contains(&format!(": {value}")),
            "the header comment of tether_defaults.{name} does not say its value {value}: {text}"
        );
    }
}

#[test]
fn rust_defaults_come_from_the_table() {
    let s = SessionOptions::default();
    let c = ClientOptions::default();
    let rust: Values = [
        ("port", u64::from(c.port)),
        ("keep_alive_secs", u64::from(s.keep_alive_secs)),
        ("token_ttl_secs", s.token_ttl_secs),
        ("max_inflight", s.max_inflight as u64),
        ("max_unsent_bytes", s.max_unsent_bytes as u64),
        ("connect_timeout_ms", s.connect_timeout_ms),
        ("retry_min_ms", u64::from(c.retry_min_ms)),
        ("retry_max_ms", u64::from(c.retry_max_ms)),
        ("retry_jitter_ms", u64::from(c.retry_jitter_ms)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let table = expected();
    for (name, value) in &rust {
        assert_eq!(table[name], *value, "Rust default {name}");
    }
    // One connect timeout for both phases (TCP, then TLS + CONNACK), from C and Rust alike.
    assert_eq!(c.connect_timeout.as_millis() as u64, s.connect_timeout_ms);
    // The renewal rule reads the table: 15 % of an hour is above the 120 s floor.
    assert_eq!(
        tether::auth::sas::renewal_margin(d::TOKEN_TTL_SECS.into()),
        u64::from(d::TOKEN_TTL_SECS * d::RENEWAL_MARGIN_PERCENT / 100)
    );
    assert_eq!(
        tether::auth::sas::renewal_margin(600),
        u64::from(d::RENEWAL_MARGIN_MIN_SECS)
    );
}

#[test]
fn a_c_program_reads_the_same_defaults() {
    let program = compile_c("defaults", "tests/c/defaults.c", &[], &[]);
    let out = run(&mut target_command(&program));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        json_values(lines.next().unwrap()),
        expected(),
        "tether_defaults_get()"
    );
    assert_eq!(
        json_values(lines.next().unwrap()),
        expected_client_options(),
        "tether_client_options_default()"
    );
}

#[test]
fn the_cli_reports_the_same_defaults_and_its_help_shows_them() {
    let (code, out, err) = tether_cli(&["defaults", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_values(out.trim()),
        expected(),
        "tether defaults --json"
    );
    let (code, text, _) = tether_cli(&["defaults"]);
    assert_eq!(code, 0);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["port", "8883"])),
        "{text}"
    );
    // --help shows the library's values as clap defaults.
    let (_, send, _) = tether_cli(&["send", "--help"]);
    assert!(send.contains(&format!("[default: {}]", d::PORT)), "{send}");
    assert!(
        send.contains(&format!("[default: {}]", d::TOKEN_TTL_SECS)),
        "{send}"
    );
    let (_, check, _) = tether_cli(&["tls-check", "--help"]);
    assert!(
        check.contains(&format!("[default: {}]", d::TLS_CHECK_TIMEOUT_MS / 1000)),
        "{check}"
    );
    let (_, sas, _) = tether_cli(&["sas-token", "--help"]);
    assert!(
        sas.contains(&format!("[default: {}]", d::TOKEN_TTL_SECS)),
        "{sas}"
    );
}

#[test]
fn the_python_binding_reads_the_same_defaults_from_the_library() {
    require("python3", "python3");
    let lib = lib_dir().join("libtether.so");
    let script = "import json, tether\n\
                  from tether import _native as n\n\
                  print(json.dumps(tether.defaults()))\n\
                  o = tether.DeviceClient._options(None, None, None, None, None)\n\
                  print(json.dumps({k: getattr(o, k) for k, _ in n.ClientOptions._fields_}))\n";
    let out = run(Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", root().join("bindings/python"))
        .env("TETHER_LIBRARY", &lib));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        json_values(lines.next().unwrap()),
        expected(),
        "tether.defaults()"
    );
    assert_eq!(
        json_values(lines.next().unwrap()),
        expected_client_options(),
        "DeviceClient options with nothing given"
    );
}

/// CamelCase C# names and snake_case C names compared as the C# header test does:
/// lower case, without underscores.
fn squash(values: &Values) -> Values {
    values
        .iter()
        .map(|(k, v)| (k.replace('_', "").to_lowercase(), *v))
        .collect()
}

#[test]
fn the_csharp_binding_reads_the_same_defaults_from_the_library() {
    require("mcs", "mono-mcs");
    require("mono", "mono-runtime");
    let dir = temp_dir("defaults-csharp");
    let sources: Vec<_> = std::fs::read_dir(root().join("bindings/csharp/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cs"))
        .collect();
    run(Command::new("mcs")
        .args(["-langversion:7.2", "-target:library", "-nowarn:1591"])
        .arg(format!("-out:{}", dir.join("Tether.dll").display()))
        .args(&sources));
    std::fs::copy(lib_dir().join("libtether.so"), dir.join("libtether.so")).unwrap();
    let program = dir.join("Defaults.cs");
    std::fs::write(
        &program,
        r#"using System;
using System.Linq;
using System.Reflection;
static class P
{
    static string Json(object o)
    {
        return "{" + string.Join(",", o.GetType().GetFields(BindingFlags.Public | BindingFlags.Instance)
            .Select(f => "\"" + f.Name + "\":" + Convert.ToUInt64(f.GetValue(o) is UIntPtr ? (object)((UIntPtr)f.GetValue(o)).ToUInt64() : f.GetValue(o)))) + "}";
    }
    static void Main()
    {
        Console.WriteLine(Json(Tether.Library.Defaults));
        var dps = new Tether.DpsOptions();
        Console.WriteLine("{\"port\":" + dps.Port + ",\"dpstimeoutms\":" + dps.TimeoutMilliseconds + "}");
    }
}
"#,
    )
    .unwrap();
    run(Command::new("mcs")
        .args(["-langversion:7.2"])
        .arg(format!("-r:{}", dir.join("Tether.dll").display()))
        .arg(format!("-out:{}", dir.join("Defaults.exe").display()))
        .arg(&program));
    let out = run(Command::new("mono")
        .arg(dir.join("Defaults.exe"))
        .current_dir(&dir));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        squash(&json_values(lines.next().unwrap())),
        squash(&expected()),
        "Tether.Library.Defaults"
    );
    let dps = json_values(lines.next().unwrap());
    assert_eq!(dps["port"], u64::from(d::PORT), "DpsOptions.Port");
    assert_eq!(
        dps["dpstimeoutms"],
        u64::from(d::DPS_TIMEOUT_MS),
        "DpsOptions.TimeoutMilliseconds"
    );
}
