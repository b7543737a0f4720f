//! Crash consistency: `vgg train` killed with SIGKILL at random moments, many times over, leaves
//! only files that load, and resuming after every kill ends in the very run that was never
//! interrupted (the same weights, bit for bit, and the same log).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use support::{TINY, tiny_folder, tmp};

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vgg"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn fresh_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "train", "--data", data, "--out", out, "--epochs", "24", "--force",
    ];
    args.extend(TINY);
    args
}

/// Every file the run left loads: the state names files that exist with the hashes it records,
/// and every checkpoint reads into the run's network.
fn check_consistent(run: &Path) {
    let Ok(config) = vgg::train::RunFolder::open(run).and_then(|f| f.config()) else {
        // Killed before config.json was complete: only temporary files (and the folder's
        // lock file, taken first) may be there.
        for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name.contains(".tmp-") || name == ".lock",
                "{name} without a config.json"
            );
        }
        return;
    };
    let device = burn::tensor::Device::flex();
    for e in std::fs::read_dir(run).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".bpk") && !name.ends_with("-optim.bpk") && !name.starts_with('.')
            || name == "best.safetensors"
        {
            vgg::Vgg::load(&config.model, &e.path(), &device)
                .unwrap_or_else(|err| panic!("{name} does not load: {err}"));
        }
    }
    if run.join("state.json").exists() {
        let state = vgg::train::RunFolder::open(run)
            .and_then(|f| f.state())
            .unwrap();
        for (file, hash) in [
            (&state.model_file, &state.model_sha256),
            (&state.optim_file, &state.optim_sha256),
        ] {
            let path = run.join(file.as_ref().unwrap());
            assert_eq!(
                &vgg::fsio::sha256_file(&path).unwrap(),
                hash.as_ref().unwrap(),
                "{}",
                path.display()
            );
        }
    }
}

/// The numbers of a run's log, without its timings.
fn history(run: &Path) -> Vec<String> {
    vgg::train::RunFolder::open(run)
        .and_then(|f| f.state())
        .unwrap()
        .history
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {} {}",
                r.epoch,
                r.lr,
                r.train_loss,
                r.train_top1_err,
                r.val_loss,
                r.val_top1_err,
                r.skipped
            )
        })
        .collect()
}

#[test]
fn killed_at_random_moments_the_run_loads_and_resumes_to_the_same_result() {
    let data = tiny_folder("crash-data", 16, false);
    let data = data.to_str().unwrap();
    let reference = tmp("crash-reference");
    let _ = std::fs::remove_dir_all(&reference);
    let start = Instant::now();
    let out = command(&fresh_args(data, reference.to_str().unwrap()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = start.elapsed();

    let run = tmp("crash-run");
    let _ = std::fs::remove_dir_all(&run);
    let run_s = run.to_str().unwrap();
    // Pseudo-random moments within a window that starts at 5% of a whole run and widens by half
    // after each attempt that got no further (a kill during startup), so that attempts die in
    // startup, in epochs and in checkpoint writes, and yet the run moves on.
    let epoch_of = || {
        vgg::train::RunFolder::open(&run)
            .and_then(|f| f.state())
            .map_or(0, |s| s.epoch)
    };
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let (mut kills, mut finished, mut window) = (0, false, 0.05);
    for _ in 0..80 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = whole.mul_f64((seed % 1000) as f64 / 1000.0 * window);
        let before = epoch_of();
        let args: Vec<&str> = if run.join("state.json").exists() {
            vec!["train", "--resume", run_s, "--quiet"]
        } else {
            fresh_args(data, run_s)
        };
        let mut child = command(&args).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("panicked"), "{text}");
        check_consistent(&run);
        if out.status.success() {
            finished = true;
            break;
        }
        window = if epoch_of() > before {
            0.05
        } else {
            window * 1.5
        };
    }
    if !finished {
        let args: Vec<&str> = if run.join("state.json").exists() {
            vec!["train", "--resume", run_s, "--quiet"]
        } else {
            fresh_args(data, run_s)
        };
        let out = command(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("{kills} kills, the run resumed after each");
    assert!(kills >= 10, "only {kills} kills");
    check_consistent(&run);
    assert_eq!(history(&run), history(&reference));
    assert_eq!(
        std::fs::read(run.join("best.safetensors")).unwrap(),
        std::fs::read(reference.join("best.safetensors")).unwrap(),
        "after {kills} kills the best weights differ from the uninterrupted run's"
    );
}
