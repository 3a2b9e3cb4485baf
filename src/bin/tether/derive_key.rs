//! `tether derive-key`: a device's key for a DPS symmetric-key group enrollment.

use tether::auth::dps::derive_device_key;
use tether::auth::sas::SasKey;
use tether::Result;

/// Print a device's key for a DPS symmetric-key group enrollment
///
/// The key is HMAC-SHA256 of the registration id under the group key: derive it on the
/// production line and store only it on the device, never the group key.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether derive-key --group-key \"$GROUP_KEY\" --registration-id sn-007"
))]
pub struct DeriveKeyArgs {
    /// The enrollment group's key (base64)
    #[arg(long, value_name = "K")]
    group_key: String,
    /// The device's registration id
    #[arg(long, value_name = "ID")]
    registration_id: String,
}

pub fn run(args: DeriveKeyArgs) -> Result<()> {
    let group = SasKey::from_base64_named(&args.group_key, "group key")?;
    let key = derive_device_key(&group, &args.registration_id)?;
    println!("{}", key.to_base64().as_str());
    Ok(())
}
