//! The network a torchvision-layout state dict was saved from, told by its keys and shapes
//! alone: for weights whose network nobody names (the paper's net A handed to a deeper net,
//! Section 3.1). torchvision numbers `features` by position (conv, [BatchNorm], ReLU, then a
//! max-pool or an LRN between blocks), so the gaps between the convolutions' indices say where
//! the pools are; the candidate is accepted only if its own keys and shapes are exactly the
//! ones given.

use super::{Layer, VggConfig};

impl VggConfig {
    /// The configuration whose torchvision keys and shapes are exactly `keys` (the head's too,
    /// when it has one; a trunk takes the paper's head), or `None` when no VGG has them.
    pub fn infer<'a>(keys: impl IntoIterator<Item = (&'a str, &'a [usize])>) -> Option<Self> {
        let keys: Vec<(&str, &[usize])> = keys.into_iter().collect();
        let index = |k: &str, suffix: &str| -> Option<usize> {
            k.strip_prefix("features.")?
                .strip_suffix(suffix)?
                .parse()
                .ok()
        };
        let mut convs: Vec<(usize, &[usize])> = keys
            .iter()
            .filter(|(_, s)| s.len() == 4)
            .filter_map(|(k, s)| Some((index(k, ".weight")?, *s)))
            .collect();
        convs.sort();
        let batch_norm = keys
            .iter()
            .any(|(k, _)| index(k, ".running_mean").is_some());
        let unit = if batch_norm { 3 } else { 2 };
        let mut layers = Vec::new();
        for (i, (at, shape)) in convs.iter().enumerate() {
            layers.push(match shape[2] {
                1 => Layer::Conv1(shape[0]),
                _ => Layer::Conv3(shape[0]),
            });
            // What sits between this block and the next conv (the last block ends in a pool).
            let gap = convs.get(i + 1).map_or(1, |(next, _)| next - at - unit);
            match gap {
                0 => {}
                1 => layers.push(Layer::Pool),
                2 => layers.extend([Layer::Lrn, Layer::Pool]),
                _ => return None,
            }
        }
        let (_, first) = convs.first()?;
        let mut config =
            VggConfig::from_layers("inferred", layers, batch_norm).with_in_channels(first[1]);
        let shape = |name: &str| keys.iter().find(|(k, _)| *k == name).map(|(_, s)| *s);
        if let (Some(fc1), Some(fc3)) = (shape("classifier.0.weight"), shape("classifier.6.weight"))
        {
            let pooled = fc1[1] / config.feature_channels().max(1);
            let side = (1..=pooled).find(|p| p * p >= pooled).unwrap_or(1);
            config = config
                .with_hidden(fc1[0])
                .with_pool_size(side)
                .with_num_classes(fc3[0]);
        }
        let mut want: Vec<(String, Vec<usize>)> = config.state_keys();
        let has_head = keys.iter().any(|(k, _)| k.starts_with("classifier."));
        if !has_head {
            want.retain(|(k, _)| k.starts_with("features."));
        }
        let mut given: Vec<(String, Vec<usize>)> = keys
            .iter()
            .map(|(k, s)| (k.to_string(), s.to_vec()))
            .collect();
        // torch saves `num_batches_tracked` as a scalar; some writers as `[1]`.
        for (k, s) in &mut given {
            if k.ends_with("num_batches_tracked") {
                s.clear();
            }
        }
        want.sort();
        given.sort();
        (want == given && config.validate().is_ok()).then_some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(config: &VggConfig, trunk: bool) -> Option<VggConfig> {
        let mut keys = config.state_keys();
        if trunk {
            keys.retain(|(k, _)| k.starts_with("features."));
        }
        VggConfig::infer(keys.iter().map(|(k, s)| (k.as_str(), s.as_slice())))
    }

    #[test]
    fn every_named_network_is_told_by_its_keys() {
        for name in crate::arch::known_names() {
            let config = VggConfig::named(&name).unwrap();
            let small = config
                .clone()
                .with_width(0.25)
                .with_pool_size(1)
                .with_hidden(512);
            for c in [config, small.with_num_classes(10).with_in_channels(1)] {
                let told = round_trip(&c, false).unwrap_or_else(|| panic!("{name}"));
                assert_eq!(
                    (&told.layers, told.batch_norm, told.in_channels),
                    (&c.layers, c.batch_norm, c.in_channels),
                    "{name}"
                );
                assert_eq!(
                    (told.hidden, told.pool_size, told.num_classes),
                    (c.hidden, c.pool_size, c.num_classes),
                    "{name}"
                );
                assert_eq!(
                    round_trip(&c, true).unwrap().layers,
                    c.layers,
                    "{name} trunk"
                );
            }
        }
    }

    #[test]
    fn keys_of_no_vgg_are_not_told() {
        let config = VggConfig::named("vgg11").unwrap();
        let mut keys = config.state_keys();
        keys.push(("features.99.weight".into(), vec![8, 512, 3, 3]));
        let none = VggConfig::infer(keys.iter().map(|(k, s)| (k.as_str(), s.as_slice())));
        assert!(none.is_none());
        let mut keys = config.state_keys();
        keys.retain(|(k, _)| k != "classifier.3.bias");
        let none = VggConfig::infer(keys.iter().map(|(k, s)| (k.as_str(), s.as_slice())));
        assert!(none.is_none());
        assert!(VggConfig::infer([]).is_none());
    }
}
