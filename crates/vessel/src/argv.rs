//! Docker's rule for `run`, `create` and `exec`: everything after the image (or the
//! instance) belongs to the command, even when it looks like one of vessel's flags
//! (`vessel run --entrypoint curl IMAGE -v URL`, `vessel run IMAGE --help`). clap would
//! take a known flag there as vessel's, so a `--` is put after that positional before
//! parsing: found with clap's own description of the flags, never a second grammar.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// The subcommands whose first positional ends vessel's flags.
const COMMAND_AFTER: [&str; 3] = ["run", "create", "exec"];

/// vessel's command line, built (global options propagated to the subcommands): what
/// [`protect_command`] reads and what then parses.
pub fn command() -> clap::Command {
    let mut root = Cli::command();
    root.build();
    root
}

/// `args` (with `argv[0]`) with `--` inserted after the image of `run`/`create` or the
/// instance of `exec` when anything follows it; unchanged otherwise, or when a token is
/// not understood (clap then reports it). `root` comes from [`command`].
pub fn protect_command(root: &clap::Command, args: Vec<OsString>) -> Vec<OsString> {
    match first_positional(root, &args, 1) {
        Some(i) => {
            let Some(sub) = args[i].to_str().and_then(|n| root.find_subcommand(n)) else {
                return args;
            };
            if !COMMAND_AFTER.contains(&sub.get_name()) {
                return args;
            }
            match first_positional(sub, &args, i + 1) {
                Some(p) if p + 1 < args.len() => {
                    let mut out = args;
                    out.insert(p + 1, OsString::from("--"));
                    out
                }
                _ => args,
            }
        }
        None => args,
    }
}

/// The index of the first token from `start` that is not one of `cmd`'s options (or an
/// option's value); `None` at `--`, at an unknown option, or if there is none.
fn first_positional(cmd: &clap::Command, args: &[OsString], start: usize) -> Option<usize> {
    let mut i = start;
    while i < args.len() {
        let t = args[i].as_encoded_bytes();
        if t == b"--" {
            return None;
        }
        if t.len() < 2 || t[0] != b'-' {
            return Some(i);
        }
        i += if t[1] == b'-' {
            long_option(cmd, &t[2..])?
        } else {
            short_options(cmd, &t[1..])?
        };
    }
    None
}

/// How many tokens `--NAME[=VALUE]` takes.
fn long_option(cmd: &clap::Command, name: &[u8]) -> Option<usize> {
    if name.contains(&b'=') {
        return Some(1);
    }
    let name = std::str::from_utf8(name).ok()?;
    let arg = cmd.get_arguments().find(|a| {
        a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|al| al.contains(&name))
    })?;
    Some(if needs_value(arg) { 2 } else { 1 })
}

/// How many tokens a cluster of short options (`-it`, `-eK=V`, `-p 80:80`) takes.
fn short_options(cmd: &clap::Command, chars: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(chars).ok()?;
    for (n, c) in s.char_indices() {
        let arg = cmd.get_arguments().find(|a| a.get_short() == Some(c))?;
        if needs_value(arg) {
            // The value is the rest of this token, or the next one.
            return Some(if n + c.len_utf8() < s.len() { 1 } else { 2 });
        }
    }
    Some(1)
}

fn needs_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values() && arg.get_num_args().is_none_or(|n| n.min_values() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        let mut v = vec![OsString::from("vessel")];
        v.extend(args.iter().map(OsString::from));
        protect_command(&command(), v)
            .into_iter()
            .skip(1)
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn flags_after_the_image_belong_to_the_command() {
        assert_eq!(
            run(&["run", "--rm", "-it", "--name", "x", "-e", "A=1", "img", "-e", "y"]),
            ["run", "--rm", "-it", "--name", "x", "-e", "A=1", "img", "--", "-e", "y"]
        );
        assert_eq!(
            run(&["--root", "/r", "create", "-p8080:80", "img", "--help"]),
            ["--root", "/r", "create", "-p8080:80", "img", "--", "--help"]
        );
        assert_eq!(
            run(&["exec", "-it", "-u", "0", "c1", "sh", "-c", "x"]),
            ["exec", "-it", "-u", "0", "c1", "--", "sh", "-c", "x"]
        );
        assert_eq!(
            run(&["run", "img", "--", "x"]),
            ["run", "img", "--", "--", "x"]
        );
    }

    #[test]
    fn other_commands_and_bare_images_are_left_alone() {
        for args in [
            &["run", "img"][..],
            &["run", "--help"],
            &["ps", "-a"],
            &["logs", "-f", "c1"],
            &["run", "--no-such-flag", "img", "x"],
        ] {
            assert_eq!(run(args), args);
        }
    }
}
