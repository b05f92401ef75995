//! The `token-reward-annotate` command line: annotating is the default command (so
//! `token-reward-annotate --ref .. --dpo .. --data ..` and YAML configs work as for every
//! stage), `show FOLDER` a subcommand.

use super::{cli, AnnotateArgs};
use crate::inspect::ShowArgs;
use anyhow::Result;

/// The `token-reward-annotate` command line: annotate by default, or `show FOLDER`.
///
/// Written by hand: clap's derive can make a flattened struct optional only when it has no
/// flattened parts of its own (it keys presence on an arg group, and nested flattens leave
/// that group empty), and `AnnotateArgs` flattens the common flags and the settings.
#[derive(Debug)]
pub enum AnnotateCli {
    Annotate(Box<AnnotateArgs>),
    Show(ShowArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum AnnotateCommand {
    /// Show a table's tokens coloured by reward (terminal), as text, or as an HTML page.
    Show(ShowArgs),
}

const ABOUT: &str = "RTO token rewards for every response token, as Parquet; `show` displays them";
const LONG_ABOUT: &str = "RTO token rewards for every response token, as Parquet; `show` displays them

The token rewards of DESIGN.md §4 for every response of a dataset of (prompt, response) rows or \
preference pairs, written to the store as a token-reward table (tokens.parquet + samples.parquet). \
The reward flags are ppo-train's (--mode --beta1 --dpo-clip --kl-coef --beta3 --rm-clamp). \
`token-reward-annotate show FOLDER` displays a table.";

/// annotate's names from before the reward flags were shared with ppo-train, kept so old
/// commands and YAML configs still run: (arg id, old name). Only here, not on the shared
/// struct: in ppo-train a bare `--clip` would read as PPO's ratio clip.
const OLD_NAMES: [(&str, &str); 2] = [("dpo_clip", "clip"), ("kl_coef", "beta2")];

impl clap::CommandFactory for AnnotateCli {
    fn command() -> clap::Command {
        let cmd = clap::Command::new("token-reward-annotate")
            .version(env!("CARGO_PKG_VERSION"))
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true);
        let cmd = <AnnotateArgs as clap::Args>::augment_args(cmd);
        let cmd = OLD_NAMES.iter().fold(cmd, |cmd, &(id, old)| cmd.mut_arg(id, |arg| arg.alias(old)));
        // After the flattened structs: clap gives a command the doc comment of each flattened
        // struct as its about text, the last one winning, unless the command sets its own.
        let cmd = cmd.about(ABOUT).long_about(LONG_ABOUT);
        <AnnotateCommand as clap::Subcommand>::augment_subcommands(cmd)
    }

    fn command_for_update() -> clap::Command {
        Self::command()
    }
}

impl clap::FromArgMatches for AnnotateCli {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        if matches.subcommand_name().is_some() {
            let AnnotateCommand::Show(args) = <AnnotateCommand as clap::FromArgMatches>::from_arg_matches_mut(matches)?;
            return Ok(Self::Show(args));
        }
        Ok(Self::Annotate(Box::new(<AnnotateArgs as clap::FromArgMatches>::from_arg_matches_mut(matches)?)))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Parser for AnnotateCli {}

/// Entry point of the `token-reward-annotate` binary.
pub fn main_cli(parsed: AnnotateCli) -> Result<()> {
    match parsed {
        AnnotateCli::Show(args) => crate::inspect::show(&args),
        AnnotateCli::Annotate(args) => cli(*args),
    }
}
