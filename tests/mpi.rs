//! Data-parallel training on MPI (feature `mpi`): `mpirun -np 2 vgg train` against one
//! process, and a rank that dies. Needs Open MPI's `mpirun` (Debian: openmpi-bin).
#![cfg(feature = "mpi")]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{stderr, tiny_folder, tmp, vgg};
use vgg::StateDict;

/// `mpirun` on loopback as CI runs it (as root, more ranks than cores allowed).
fn mpirun(np: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args(["-np", &np.to_string()])
    .arg(env!("CARGO_BIN_EXE_vgg"))
    .env("OMPI_MCA_btl", "self,tcp,vader")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    cmd
}

/// A small BN network with dropout 0.5 (its masks drawn per micro-batch, whoever computes it):
/// 3 micro-batches of 8 per batch of 24, so the two ranks take 2 and 1 of each batch, and the
/// epoch ends on a partial micro-batch and batch.
fn train_args(data: &Path, out: &Path, epochs: usize) -> Vec<String> {
    let args = [
        "train",
        "--arch",
        "vgg11_bn",
        "--width",
        "0.0625",
        "--hidden",
        "16",
        "--dropout",
        "0.5",
        "--batch",
        "24",
        "--micro-batch",
        "8",
        "--quiet",
        "--workers",
        "1",
        "--threads",
        "1",
        "--patience",
        "1000",
    ];
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend(["--epochs".into(), epochs.to_string()]);
    v.extend(["--data".into(), data.display().to_string()]);
    v.extend(["--out".into(), out.display().to_string()]);
    v
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .expect("start the command (is mpirun installed?)")
}

/// The last checkpoint of a run, as a state dict.
fn last_weights(dir: &Path) -> StateDict {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let arch: vgg::VggConfig = serde_json::from_value(config["model"].clone()).unwrap();
    let file = dir.join(state["model_file"].as_str().unwrap());
    let device = burn::tensor::Device::flex();
    vgg::checkpoint::burnpack::load(&arch, &file, &device)
        .unwrap()
        .state_dict()
}

fn train_losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// The largest `|x - y| / (1 + |x|)` over two checkpoints of the same keys, and its key.
fn largest_difference(a: &StateDict, b: &StateDict) -> (f32, String) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = (0f32, String::new());
    for (key, ta) in a {
        let (va, vb) = (ta.to_f32(), b[key].to_f32());
        for (x, y) in va.iter().zip(&vb) {
            let err = (x - y).abs() / (1.0 + x.abs());
            if err > worst.0 {
                worst = (err, key.clone());
            }
        }
    }
    worst
}

/// Section 3.3: the batch split over workers, the gradients averaged, "the result equals
/// one-worker training". Weights and BatchNorm running statistics after 2 epochs (10 SGD steps)
/// agree to float rounding; one process on two threads, whose micro-batches run side by side on
/// the two (`train::lanes`), trains the bits of one thread (our kernels sum in an order fixed by
/// the problem, not the threads).
#[test]
fn two_ranks_train_the_same_weights_as_one_process() {
    let data = tiny_folder("mpi-data", 30, false);
    let (one, two, lanes) = (tmp("mpi-one"), tmp("mpi-two"), tmp("mpi-lanes"));
    for d in [&one, &two, &lanes] {
        let _ = std::fs::remove_dir_all(d);
    }
    let single = vgg(&train_args(&data, &one, 2)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(single.status.success(), "{}", stderr(&single));
    let mut args = train_args(&data, &lanes, 2);
    let threads = args.iter().position(|a| a == "--threads").unwrap();
    args[threads + 1] = "2".into();
    let side_by_side = vgg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(side_by_side.status.success(), "{}", stderr(&side_by_side));
    let (a, c) = (last_weights(&one), last_weights(&lanes));
    let (worst, key) = largest_difference(&a, &c);
    assert_eq!(worst, 0.0, "one thread and two lanes differ in {key}");
    let pair = run(mpirun(2).args(train_args(&data, &two, 2)));
    assert!(pair.status.success(), "{}", stderr(&pair));
    assert!(
        stderr(&pair).contains("data-parallel on 2 MPI ranks"),
        "{}",
        stderr(&pair)
    );

    let b = last_weights(&two);
    let (worst, key) = largest_difference(&a, &b);
    eprintln!("one process against two ranks: largest relative difference {worst:e} ({key})");
    assert!(worst < 1e-4, "largest difference {worst} in {key}");
    let (la, lb) = (train_losses(&one), train_losses(&two));
    assert_eq!(la.len(), 2);
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-4, "train loss {la:?} vs {lb:?}");
    }
    let log = std::fs::read_to_string(two.join("log.csv")).unwrap();
    assert!(
        log.lines().nth(1).unwrap().contains(",2,"),
        "ranks column: {log}"
    );
}

/// The process of `rank` among those started with the environment variable `tag`.
fn rank_pid(tag: &str, rank: usize) -> Option<u32> {
    let wanted = [
        format!("VGG_TEST_TAG={tag}"),
        format!("OMPI_COMM_WORLD_RANK={rank}"),
    ];
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(entry.path().join("environ")).ok()?;
            let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
            wanted
                .iter()
                .all(|w| vars.contains(&w.as_bytes()))
                .then_some(pid)
        })
}

fn epochs_done(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["epoch"].as_u64())
        .unwrap_or(0)
}

/// Killing rank 1 mid-run ends the whole job (no rank left waiting), with Open MPI naming the
/// rank; `--resume`, here with one process, continues from the last checkpoint to the end.
#[test]
fn a_dead_rank_ends_the_job_and_resume_continues() {
    let data = tiny_folder("mpi-data-kill", 30, false);
    let out = tmp("mpi-kill");
    let _ = std::fs::remove_dir_all(&out);
    let tag = format!("{}-kill", std::process::id());
    let mut job = mpirun(2)
        .args(train_args(&data, &out, 40))
        .env("VGG_TEST_TAG", &tag)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");
    let start = Instant::now();
    while epochs_done(&out) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint written"
        );
        assert!(job.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rank_pid(&tag, 1).expect("rank 1 is running");
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let ended = job.wait_with_output().unwrap();
    assert!(!ended.status.success());
    let text = stderr(&ended);
    assert!(
        text.contains("rank 1") || text.contains("rank: 1"),
        "{text}"
    );
    let done = epochs_done(&out);
    assert!((1..40).contains(&done), "{done} epochs before the kill");

    let resumed = vgg(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--quiet",
        "--threads",
        "1",
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains(&format!("epoch {:>3} ", done + 1)),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(epochs_done(&out), 40);
    let rows = std::fs::read_to_string(out.join("log.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, 1 + 40);
}

/// An error on one rank (here rank 0's "run folder exists") ends every rank at once instead
/// of leaving the others waiting in a collective, and names the rank.
#[test]
fn an_error_on_one_rank_ends_every_rank() {
    let data = tiny_folder("mpi-data-exists", 6, false);
    let out = tmp("mpi-exists");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let ended = run(mpirun(2).args(train_args(&data, &out, 1)));
    assert!(!ended.status.success());
    let text = stderr(&ended);
    assert!(
        text.contains("error (rank 0 of 2)") && text.contains("--force"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
}
