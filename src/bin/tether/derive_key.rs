//! `tether derive-key`: a device's key for a DPS symmetric-key group enrollment.

use tether::auth::dps::derive_device_key;
use tether::auth::sas::SasKey;
use tether::Result;

use crate::args::{usage_error, Args};

pub fn run(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv, &["--group-key", "--registration-id"], &[])?;
    if !args.positionals.is_empty() {
        return Err(usage_error("derive-key takes no positional arguments"));
    }
    let group = args
        .value("--group-key")
        .ok_or_else(|| usage_error("derive-key needs --group-key K"))?;
    let id = args
        .value("--registration-id")
        .ok_or_else(|| usage_error("derive-key needs --registration-id ID"))?;
    let key = derive_device_key(&SasKey::from_base64_named(group, "group key")?, id)?;
    println!("{}", key.to_base64().as_str());
    Ok(())
}
