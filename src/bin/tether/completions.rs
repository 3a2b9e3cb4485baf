//! `tether completions SHELL`: a completion script for the shell, from the CLI definition.

use clap::CommandFactory;
use clap_complete::Shell;
use tether::Result;

/// Print a completion script for bash, zsh, fish, elvish or powershell
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether completions bash > /etc/bash_completion.d/tether
  tether completions zsh > \"${fpath[1]}/_tether\"
  tether completions fish > ~/.config/fish/completions/tether.fish"
))]
pub struct CompletionsArgs {
    /// The shell
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<()> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "tether", &mut std::io::stdout());
    Ok(())
}
