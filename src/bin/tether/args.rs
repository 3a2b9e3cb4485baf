//! A small argument reader shared by the subcommands: `--flag VALUE`, `--switch`, positionals.

use tether::{Code, Error, Result};

/// An invalid-argument error for the command line.
pub fn usage_error(message: impl Into<String>) -> Error {
    Error::new(Code::InvalidArgument, message)
}

/// Parsed arguments of one subcommand.
#[derive(Debug, Default)]
pub struct Args {
    pub positionals: Vec<String>,
    pairs: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Args {
    /// Parses `argv`; `valued` lists the flags that take a value, `switches` those that don't.
    pub fn parse(argv: &[String], valued: &[&str], switches: &[&str]) -> Result<Args> {
        let mut args = Args::default();
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            if valued.contains(&arg.as_str()) {
                let value = it
                    .next()
                    .ok_or_else(|| usage_error(format!("{arg} needs a value")))?;
                args.pairs.push((arg.clone(), value.clone()));
            } else if switches.contains(&arg.as_str()) {
                args.switches.push(arg.clone());
            } else if arg.starts_with("--") {
                return Err(usage_error(format!("unknown option {arg}")));
            } else {
                args.positionals.push(arg.clone());
            }
        }
        Ok(args)
    }

    /// The last value given for `flag`.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `flag`, in order.
    pub fn values(&self, flag: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `switch` was given.
    pub fn has(&self, switch: &str) -> bool {
        self.switches.iter().any(|s| s == switch)
    }

    /// A numeric value of `flag`, or `default`.
    pub fn number<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T> {
        match self.value(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| usage_error(format!("{flag} expects a number, not \"{v}\""))),
        }
    }
}
