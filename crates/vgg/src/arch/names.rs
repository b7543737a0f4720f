//! Every name a point of the network goes by, derived once from the layer table: the authors'
//! Caffe names (`conv3_2`, `pool3`, `fc6`), torchvision's module paths (`features.12`,
//! `classifier.0`) and Keras' (`block3_conv2`, `block3_pool`, `fc1`, `predictions`). The summary,
//! the feature taps and the weight-file layouts all read them from here.

use super::{StageKind, VggConfig};

/// What is computed at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A convolution's output, before its BatchNorm and ReLU.
    Conv,
    BatchNorm,
    Relu,
    Lrn,
    Pool,
    /// The head's adaptive average pool.
    AvgPool,
    /// A fully connected layer's output (before its ReLU).
    Fc,
    /// Dropout after FC1 and FC2 (the identity in inference).
    Dropout,
}

/// Where a point sits in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Point {
    /// After entry `i` of torchvision's `features` Sequential.
    Features(usize),
    /// After the adaptive average pool (which has no module path in `features`/`classifier`).
    AvgPool,
    /// After entry `i` of torchvision's `classifier` Sequential.
    Classifier(usize),
}

/// One point of the network with all its names, in forward order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub point: Point,
    pub kind: Kind,
    /// The authors' Caffe name: `conv1_1`, `bn1_1`, `relu1_1`, `norm1`, `pool1`, `avgpool`,
    /// `fc6`, `relu6`, `drop6`, `fc7`, `relu7`, `drop7`, `fc8`.
    pub caffe: String,
    /// torchvision's module path (`features.0`, `classifier.6`); empty for the average pool.
    pub torchvision: String,
    /// Keras' layer name where Keras has the layer (`block1_conv1`, `block1_pool`, `fc1`,
    /// `fc2`, `predictions`).
    pub keras: Option<String>,
}

/// The names of every point of `config`'s network, in forward order.
pub fn names(config: &VggConfig) -> Vec<Named> {
    let mut out = Vec::new();
    let (mut block, mut conv) = (1, 0);
    for stage in config.plan() {
        let torchvision = format!("features.{}", stage.index);
        let (kind, caffe, keras) = match stage.kind {
            StageKind::Conv { .. } => {
                conv += 1;
                (
                    Kind::Conv,
                    format!("conv{block}_{conv}"),
                    Some(format!("block{block}_conv{conv}")),
                )
            }
            StageKind::BatchNorm { .. } => (Kind::BatchNorm, format!("bn{block}_{conv}"), None),
            StageKind::Relu => (Kind::Relu, format!("relu{block}_{conv}"), None),
            StageKind::Lrn => (Kind::Lrn, format!("norm{block}"), None),
            StageKind::Pool => {
                let names = (
                    Kind::Pool,
                    format!("pool{block}"),
                    Some(format!("block{block}_pool")),
                );
                (block, conv) = (block + 1, 0);
                names
            }
        };
        out.push(Named {
            point: Point::Features(stage.index),
            kind,
            caffe,
            torchvision,
            keras,
        });
    }
    out.push(Named {
        point: Point::AvgPool,
        kind: Kind::AvgPool,
        caffe: "avgpool".into(),
        torchvision: String::new(),
        keras: None,
    });
    for (i, kind, caffe, keras) in [
        (0, Kind::Fc, "fc6", Some("fc1")),
        (1, Kind::Relu, "relu6", None),
        (2, Kind::Dropout, "drop6", None),
        (3, Kind::Fc, "fc7", Some("fc2")),
        (4, Kind::Relu, "relu7", None),
        (5, Kind::Dropout, "drop7", None),
        (6, Kind::Fc, "fc8", Some("predictions")),
    ] {
        out.push(Named {
            point: Point::Classifier(i),
            kind,
            caffe: caffe.into(),
            torchvision: format!("classifier.{i}"),
            keras: keras.map(String::from),
        });
    }
    out
}

/// Whether a torchvision key is the head's (`classifier.N.*`): what a trunk lacks, and what
/// `--no-top` drops.
pub fn is_head(key: &str) -> bool {
    key.starts_with("classifier.")
}

/// Whether a torchvision key is the last layer's (`classifier.6.*`, fc8): the one whose width
/// is the number of classes, drawn fresh when fine-tuning on other classes.
pub fn is_last_layer(key: &str) -> bool {
    key.starts_with("classifier.6.")
}

/// The point a name (Caffe, torchvision or Keras) refers to in `config`'s network.
pub fn find(config: &VggConfig, name: &str) -> Option<Named> {
    names(config).into_iter().find(|n| {
        n.caffe == name
            || (!n.torchvision.is_empty() && n.torchvision == name)
            || n.keras.as_deref() == Some(name)
    })
}

/// The point whose output `name` means when it is read as an activation (`vgg features --at`).
/// As [`find`], except that a Keras name means what that layer outputs in Keras:
/// keras.applications builds `block3_conv3`, `fc1` and `fc2` with `activation="relu"`, so
/// their outputs are after the ReLU (after BatchNorm too, where the network has one); the
/// Caffe and torchvision names of the same layers mean the output before it. Keras'
/// `predictions` outputs the softmax, which no point of the network holds: `None`, as for an
/// unknown name.
pub fn tap(config: &VggConfig, name: &str) -> Option<Named> {
    let all = names(config);
    let i = all.iter().position(|n| {
        n.caffe == name
            || (!n.torchvision.is_empty() && n.torchvision == name)
            || n.keras.as_deref() == Some(name)
    })?;
    let named = &all[i];
    if named.keras.as_deref() != Some(name) || !matches!(named.kind, Kind::Conv | Kind::Fc) {
        return Some(named.clone());
    }
    if named.point == Point::Classifier(6) {
        return None;
    }
    all[i + 1..]
        .iter()
        .take_while(|n| matches!(n.kind, Kind::BatchNorm | Kind::Relu))
        .find(|n| n.kind == Kind::Relu)
        .or(Some(named))
        .cloned()
}

/// The layers a perceptual loss reads by default (Johnson et al.'s relu1_2, relu2_2, relu3_3,
/// relu4_3 and relu5_3 on VGG-16): in each block, the ReLU after its second or third
/// convolution, or its last where a block has fewer (VGG-11: relu1_1, relu2_1, relu3_2, ...).
pub fn default_taps(config: &VggConfig) -> Vec<String> {
    let relus: Vec<String> = names(config)
        .into_iter()
        .filter(|n| n.kind == Kind::Relu && n.caffe.starts_with("relu") && n.caffe.contains('_'))
        .map(|n| n.caffe)
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (b, want) in (1..).zip([2, 2, 3, 3, 3]) {
        let in_block: Vec<&String> = relus
            .iter()
            .filter(|r| r.strip_prefix(&format!("relu{b}_")).is_some())
            .collect();
        let pick = in_block
            .iter()
            .find(|r| r.ends_with(&format!("_{want}")))
            .or(in_block.last());
        if let Some(r) = pick {
            out.push((*r).clone());
        }
    }
    out
}

/// Where training starts when every layer before `name` is frozen (fine-tuning): a
/// convolution (`conv5_1`, `features.24`, `block5_conv1`), an FC layer (`fc6`, `classifier.0`,
/// `fc1`), or `features`: every convolution frozen, the head trains.
pub fn freeze_point(config: &VggConfig, name: &str) -> Result<Point, crate::error::VggError> {
    if name == "features" {
        return Ok(Point::Classifier(0));
    }
    match find(config, name) {
        Some(n) if matches!(n.kind, Kind::Conv | Kind::Fc) => Ok(n.point),
        _ => Err(crate::error::VggError::BadConfig {
            what: "freeze".into(),
            reason: format!(
                "`{name}` is not a convolution or an FC layer of this network (e.g. conv5_1, fc6, or features for every convolution)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_for_every_naming() {
        let d = VggConfig::named("vgg16_bn").unwrap();
        let n = names(&d);
        let conv32 = find(&d, "conv3_2").unwrap();
        assert_eq!(
            (conv32.torchvision.as_str(), conv32.keras.as_deref()),
            ("features.17", Some("block3_conv2"))
        );
        assert_eq!(find(&d, "block3_conv2"), Some(conv32.clone()));
        assert_eq!(find(&d, "features.17"), Some(conv32));
        assert_eq!(find(&d, "bn1_1").unwrap().point, Point::Features(1));
        assert_eq!(find(&d, "relu5_3").unwrap().point, Point::Features(42));
        assert_eq!(
            find(&d, "pool5").unwrap().keras.as_deref(),
            Some("block5_pool")
        );
        assert_eq!(find(&d, "predictions").unwrap().caffe, "fc8");
        assert_eq!(n.last().unwrap().point, Point::Classifier(6));
        // A-LRN: conv1_1, relu1_1, norm1, pool1, conv2_1 ...
        // As activations, Keras' names mean their layer's output in Keras: after the ReLU.
        assert_eq!(tap(&d, "block3_conv2").unwrap().caffe, "relu3_2");
        assert_eq!(tap(&d, "conv3_2").unwrap().caffe, "conv3_2");
        assert_eq!(tap(&d, "fc1").unwrap().caffe, "relu6");
        assert_eq!(tap(&d, "block5_pool").unwrap().caffe, "pool5");
        assert_eq!(tap(&d, "predictions"), None);
        assert_eq!(
            default_taps(&d),
            ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
        );
        assert_eq!(
            default_taps(&VggConfig::named("vgg11").unwrap()),
            ["relu1_1", "relu2_1", "relu3_2", "relu4_2", "relu5_2"]
        );
        assert_eq!(
            default_taps(&VggConfig::named("vgg19").unwrap()),
            ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
        );
        let lrn = VggConfig::named("A-LRN").unwrap();
        let caffe: Vec<String> = names(&lrn).into_iter().take(5).map(|n| n.caffe).collect();
        assert_eq!(caffe, ["conv1_1", "relu1_1", "norm1", "pool1", "conv2_1"]);
    }
}
