//! The names of the files in a training run's folder, which training writes and evaluation
//! reads: the one place they are spelled.

/// The run's settings.
pub const CONFIG: &str = "config.json";
/// Where the run stands; written last after each epoch.
pub const STATE: &str = "state.json";
/// The network and preset of the run's weights ([`crate::preset::Card`]): what makes a run a
/// source of weights like any file.
pub const CARD: &str = "weights.json";
/// The best checkpoint (burn's record), which a run folder given as weights stands for.
pub const BEST: &str = "best.bpk";
/// The fixed names of a run's other files.
pub const FIXED: [&str; 8] = [
    CONFIG,
    STATE,
    CARD,
    BEST,
    "best.safetensors",
    "log.csv",
    "log.jsonl",
    "curves.png",
];

/// The checkpoint files of epoch `n`: weights, then optimiser state.
pub fn checkpoint_names(epoch: usize) -> (String, String) {
    (
        format!("epoch-{epoch}.bpk"),
        format!("epoch-{epoch}-optim.bpk"),
    )
}

/// Whether `name` is one of the files a run writes (or the temporary file of one).
pub fn is_run_file(name: &str) -> bool {
    let name = match name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) {
        Some((target, pid)) if pid.parse::<u32>().is_ok() => target,
        _ => name,
    };
    FIXED.contains(&name)
        || name
            .strip_prefix("epoch-")
            .and_then(|rest| {
                rest.strip_suffix("-optim.bpk")
                    .or(rest.strip_suffix(".bpk"))
            })
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_runs_own_names_are_run_files() {
        for ours in [
            "config.json",
            "epoch-12.bpk",
            "epoch-3-optim.bpk",
            ".best.bpk.tmp-42",
            ".epoch-1.bpk.tmp-7",
        ] {
            assert!(is_run_file(ours), "{ours}");
        }
        for theirs in [
            "notes.txt",
            "epoch-.bpk",
            "epoch-1.bpk.bak",
            "../x/epoch-1.bpk",
            "epoch-1/../../x.bpk",
            ".notes.txt.tmp-1",
            ".best.bpk.tmp-x",
            "config.json~",
        ] {
            assert!(!is_run_file(theirs), "{theirs}");
        }
        assert_eq!(
            checkpoint_names(4),
            ("epoch-4.bpk".to_string(), "epoch-4-optim.bpk".to_string())
        );
    }
}
