//! `vgg`: the command-line tool. Thin: each subcommand parses its flags into library calls.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (args, matches) = cli::parse();
    let command = args.command.name();
    match cli::run(args, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`vgg predict ... | head -1`) is not an error.
        Err(err) if cli::hints::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // One message, its causes on the same line, the flag that fixes it; no backtrace:
            // these are the user's errors.
            eprintln!("error: {}", cli::hints::message(&err, command));
            ExitCode::from(2)
        }
    }
}
