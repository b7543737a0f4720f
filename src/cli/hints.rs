//! The library's errors say what is wrong; here the tool adds which of its flags (or
//! environment variables) fixes it.

use vgg::VggError;

/// Whether the error is stdout closed by its reader.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The whole message: the error and its causes (one line unless the library lists several
/// items), then the hint for `command`'s flags.
pub fn message(err: &anyhow::Error, command: &str) -> String {
    let text = format!("{err:#}");
    let Some(hint) = err
        .chain()
        .find_map(|e| e.downcast_ref::<VggError>())
        .and_then(|e| hint(e, command))
    else {
        return text;
    };
    if text.contains('\n') {
        format!("{text}\n  ({hint})")
    } else {
        format!("{text} ({hint})")
    }
}

/// The flag of a library setting's name.
fn flag(setting: &str) -> Option<&'static str> {
    Some(match setting {
        "lr" => "--lr",
        "momentum" => "--momentum",
        "weight_decay" => "--weight-decay",
        "lr_factor" => "--lr-factor",
        "pca_std" => "--pca-std",
        "epochs" => "--epochs",
        "batch" => "--batch and --micro-batch",
        "patience" => "--patience",
        "val_fraction" => "--val-fraction",
        "in_channels" => "--in-channels",
        "num_classes" => "--num-classes",
        "hidden" => "--hidden",
        "pool_size" => "--pool-size",
        "dropout" => "--dropout",
        "layers" => "--layers",
        "width" => "--width",
        "crop" => "--crop",
        "scale" => "--scale",
        "device" => "--device",
        "precision" => "--precision",
        _ => return None,
    })
}

/// The environment variable of a [`vgg::limits::Limits`] field.
pub fn limit_variable(name: &str) -> String {
    format!("VGG_{}", name.to_ascii_uppercase())
}

fn hint(err: &VggError, command: &str) -> Option<String> {
    let trains = command == "train";
    Some(match err {
        VggError::UnknownArch { .. } => {
            "or give your own layer list with --layers (e.g. 64,M,128,M)".into()
        }
        VggError::ChannelMismatch { got, .. } if command == "summary" => {
            format!("build the network with --in-channels {got}")
        }
        VggError::BadImage { .. } if trains || command == "eval" => {
            "pass --skip-bad to skip and count such files".into()
        }
        VggError::LabelOutOfRange { .. } => "set --num-classes".into(),
        VggError::RunExists { path } => format!(
            "pass --force to replace it or --resume {} to continue it",
            path.display()
        ),
        VggError::NotARun { .. } => "choose another --out".into(),
        VggError::WeightMismatch { .. } => {
            "is this the right architecture? check --arch, --num-classes, --in-channels and --layers"
                .into()
        }
        VggError::BadConfig { what, .. } => format!("set with {}", flag(what)?),
        VggError::LimitExceeded { limit_name, .. } => format!(
            "raise the limit with the environment variable {}=N if this is intended",
            limit_variable(limit_name)
        ),
        VggError::NonFiniteLoss { .. } if trains => "--lr sets the learning rate".into(),
        _ => return None,
    })
}
