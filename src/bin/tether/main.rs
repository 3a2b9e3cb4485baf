//! `tether`: the command-line tool. One module per subcommand, each with its own
//! `#[derive(clap::Args)]` struct and a `run`; [`Command`] has one variant per module.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tether::{Code, Result};

/// The exit statuses, listed in every help text.
macro_rules! exit_codes {
    () => {
        "Exit status: 0 success, 1 other failure, 2 usage error, 3 TLS or certificate,\n\
         4 identity (key, token, certificate, refused credentials), 5 MQTT, 6 network."
    };
}

/// A subcommand's help footer: its examples, then the exit statuses.
macro_rules! after_help {
    ($examples:literal) => {
        concat!("Examples:\n", $examples, "\n\n", exit_codes!())
    };
}

mod audit;
mod completions;
mod defaults;
mod derive_key;
mod device;
mod hub;
mod hub_audit;
mod listen;
mod opts;
mod provision;
mod sas_token;
mod send;
mod thumbprint;
mod tls_check;
mod twin;

/// Connect devices to Azure IoT Hub under its TLS policy: check servers, make tokens and
/// keys, send and receive as a device, run a local IoT Hub stand-in.
#[derive(Parser, Debug)]
#[command(
    name = "tether",
    version = tether::VERSION,
    arg_required_else_help = true,
    after_help = concat!(
        "Every command that connects reads the same environment when its flag is absent:\n\
         TETHER_CONNECTION_STRING, TETHER_CA_FILE, TETHER_PORT, TETHER_CERT_FILE, TETHER_KEY_FILE,\n\
         TETHER_PKCS11_MODULE, TETHER_PKCS11_URI, TETHER_PKCS11_PIN.\n\
         `tether help COMMAND` or `tether COMMAND --help` shows a command's options and examples.\n\n",
        exit_codes!()
    )
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    TlsCheck(tls_check::TlsCheckArgs),
    SasToken(sas_token::SasTokenArgs),
    DeriveKey(derive_key::DeriveKeyArgs),
    Thumbprint(thumbprint::ThumbprintArgs),
    Send(send::SendArgs),
    Listen(listen::ListenArgs),
    Twin(twin::TwinArgs),
    Hub(hub::HubArgs),
    Provision(provision::ProvisionArgs),
    Audit(audit::AuditArgs),
    Completions(completions::CompletionsArgs),
    Defaults(defaults::DefaultsArgs),
    /// Print the library version
    #[command(after_help = exit_codes!())]
    Version,
}

impl Command {
    fn run(self) -> Result<()> {
        match self {
            Command::TlsCheck(args) => tls_check::run(args),
            Command::SasToken(args) => sas_token::run(args),
            Command::DeriveKey(args) => derive_key::run(args),
            Command::Thumbprint(args) => thumbprint::run(args),
            Command::Send(args) => send::run(args),
            Command::Listen(args) => listen::run(args),
            Command::Twin(args) => twin::run(args),
            Command::Hub(args) => hub::run(args),
            Command::Provision(args) => provision::run(args),
            Command::Audit(_) => unreachable!("main runs audit itself"),
            Command::Completions(args) => completions::run(args),
            Command::Defaults(args) => defaults::run(args),
            Command::Version => {
                println!("tether {}", tether::VERSION);
                Ok(())
            }
        }
    }
}

fn main() -> ExitCode {
    // As in the library (`tether::client::env`), an empty TETHER_* variable is unset.
    for name in tether::client::env::ALL {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e, &argv),
    };
    // `audit` reports a verdict per device: its exit status is the fleet's, not an error.
    if let Command::Audit(args) = cli.command {
        return ExitCode::from(u8::try_from(audit::run(args)).unwrap_or(1));
    }
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.code();
            if code == Code::InvalidArgument {
                usage_line(&e.to_string(), &argv);
            } else {
                eprintln!("tether: {e} ({})", code.name());
            }
            ExitCode::from(exit_code(code))
        }
    }
}

/// Help and version go to standard output with status 0; anything else clap refuses is a
/// usage error in one line.
fn clap_error(e: clap::Error, argv: &[OsString]) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        // `tether` alone: the overview, on standard error, as a usage error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            usage_line(&format!("{}{}", clap_cause(&e), env_source(&e, argv)), argv);
            ExitCode::from(2)
        }
    }
}

/// Prints `tether: CAUSE (TETHER_RESULT_INVALID_ARGUMENT); try 'tether CMD --help'`.
fn usage_line(cause: &str, argv: &[OsString]) {
    eprintln!(
        "tether: {cause} ({}); try '{} --help'",
        Code::InvalidArgument.name(),
        command_path(argv)
    );
}

/// The cause of a clap error (and its tips) on one line, without the usage it appends.
fn clap_cause(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cause = String::new();
    for paragraph in text.split("\n\n") {
        let paragraph = paragraph.trim();
        if let Some(rest) = paragraph.strip_prefix("error: ") {
            cause = squash(rest);
        } else if let Some(tip) = paragraph.strip_prefix("tip: ") {
            cause = format!("{cause} ({})", squash(tip));
        }
    }
    if cause.is_empty() {
        squash(&text)
    } else {
        cause
    }
}

/// ` (from TETHER_X)` when the value clap refused came from the environment, not a flag.
fn env_source(e: &clap::Error, argv: &[OsString]) -> String {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return String::new();
    };
    let cmd = subcommand(argv);
    for a in cmd.get_arguments() {
        let (Some(long), Some(env)) = (a.get_long(), a.get_env()) else {
            continue;
        };
        let flag = format!("--{long}");
        let given = argv.iter().any(|v| {
            v.to_str()
                .is_some_and(|v| v == flag || v.starts_with(&format!("{flag}=")))
        });
        if arg.starts_with(&format!("{flag} ")) && !given {
            return format!(" (from {})", env.to_string_lossy());
        }
    }
    String::new()
}

/// The deepest subcommand named on the command line (its bin name is `tether twin get`).
fn subcommand(argv: &[OsString]) -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    for arg in argv.iter().skip(1).filter_map(|a| a.to_str()) {
        if arg.starts_with('-') {
            continue;
        }
        let Some(sub) = cmd.find_subcommand(arg).cloned() else {
            break;
        };
        cmd = sub;
    }
    cmd
}

/// `tether` followed by the subcommands named on the command line, e.g. `tether twin get`.
fn command_path(argv: &[OsString]) -> String {
    let cmd = subcommand(argv);
    cmd.get_bin_name().unwrap_or("tether").to_owned()
}

/// Exit status by area: 2 usage, 3 TLS, 4 identity, 5 MQTT, 6 network, 1 otherwise.
fn exit_code(code: Code) -> u8 {
    match code as u32 {
        3 => 2,
        100..=199 => 3,
        200..=299 => 4,
        300..=399 => 5,
        400..=499 => 6,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
