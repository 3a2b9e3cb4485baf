//! `tether defaults`: the library's defaults, as every front end reads them.

use clap::Args;

use crate::opts::print_json;
use tether::Result;

/// Print tether's defaults (port, keep-alive, token lifetime, timeouts, back-off)
///
/// The values the library, the C API (`tether_defaults_get`), this tool and the Python and
/// C# bindings use when nothing else is configured, by their `struct tether_defaults` field
/// names; times end in their unit.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
"  tether defaults
  tether defaults --json"
))]
pub struct DefaultsArgs {
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: DefaultsArgs) -> Result<()> {
    let table = tether::defaults::TABLE;
    if args.json {
        let map = table
            .iter()
            .map(|(name, value)| (name.to_string(), serde_json::Value::from(*value)))
            .collect();
        print_json(&serde_json::Value::Object(map));
    } else {
        let width = table.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        for (name, value) in table {
            println!("{name:width$}  {value}");
        }
    }
    Ok(())
}
