//! `vgg`: the command-line tool. Thin: each subcommand parses its flags into library calls.

/// `eprintln!` that never panics: a message that cannot be shown (standard error closed or
/// full) is dropped, so such a stream never turns an answer or an error into a crash.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
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
            note!("error: {}", cli::hints::message(&err, command));
            ExitCode::from(2)
        }
    }
}

/// A training step allocates and frees tens of large buffers (each layer's activations and
/// gradients, im2col and Winograd matrices: megabytes to hundreds of megabytes). glibc maps
/// each buffer over 128 KiB fresh from the kernel and unmaps it when freed, so every step
/// zero-filled every page again on first touch (measured: 540,000 page faults and 17% of the
/// CPU time in the kernel for 6 steps of VGG-16-BN at batch 64 on 32x32 images). Here freed
/// memory stays in one heap shared by the threads and is reused: VGG-11 training at batch 16
/// on 224x224 images 1.4-1.6x faster, its peak RSS 3.12 GB instead of 2.56 GB (freed blocks
/// serve only requests that fit in them; it stays there over 15 steps). Free memory goes back
/// to the system only beyond 2 GiB at the heap's top, which suits a tool that runs one job.
/// `VGG_MALLOC_DEFAULTS=1` keeps glibc's settings, to compare.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    if std::env::var_os("VGG_MALLOC_DEFAULTS").is_some_and(|v| v != "0") {
        return; // glibc's own settings (GLIBC_TUNABLES applies), to compare
    }
    // SAFETY: mallopt only sets the allocator's parameters; called first thing in main.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // One heap for every thread: the rayon workers' own arenas held freed buffers the
        // others could not reuse (VGG-11's peak at 224x224: 3.58 GB with them, 3.12 without).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
