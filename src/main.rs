//! `vgg`: the command-line tool. Thin: each subcommand parses its flags into library calls.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // burn puts what has no device of its own (an optimizer's state read back on --resume) on
    // its default device, which a GPU build makes the GPU; flex, unless the user says otherwise.
    // Such state moves to the parameters' device at the first step.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: first thing in main, before any thread starts.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
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
