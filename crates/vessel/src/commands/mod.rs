//! One function per command: call the engine or the image store, print the result.

mod images;
mod transfer;

use vessel_image::Store;

use crate::cli::{Cli, Command, ImageCommand};
use crate::{CmdResult, Failure};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    let root = cli.global.root;
    let store = || Store::open(&root).map_err(|e| Failure::new(crate::EXIT_ENGINE, e));
    match cli.command {
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::list(&store()?, &a),
        Command::Image(ImageCommand::Inspect { images: names }) => {
            images::inspect(&store()?, &names)
        }
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::remove(&store()?, &a),
        Command::Tag { source, target } => images::tag(&store()?, &source, &target),
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            images::import(&store()?, &a)
        }
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => transfer::pull(&store()?, &a),
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => transfer::push(&store()?, &a),
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => transfer::load(&store()?, &a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => transfer::save(&store()?, &a),
    }
}
