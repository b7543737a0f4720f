//! Which network output each class of a dataset is. A folder of images names its classes
//! (torchvision's `ImageFolder`: one folder a class, sorted), and so do most weights (a run
//! stores its classes; ImageNet weights have the 1000 WordNet ids and names): when both sides
//! name them, classes are matched by name, never by sorted position, and a name that the
//! weights lack is refused. Weights without names (a file of other than 1000 classes, whose
//! outputs are numbered) keep the position.

use crate::error::VggError;
use crate::preset::{Preset, imagenet_classes, imagenet_wnids};

/// Dataset label -> network output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassMap {
    /// `outputs[label]` is the output that scores the dataset's class `label`.
    pub outputs: Vec<usize>,
    /// Matched by name (else by position: the weights name no classes).
    pub by_name: bool,
}

/// Whether `classes` are names, not the numbers `0, 1, ...` that stand for none.
pub fn are_named(classes: &[String]) -> bool {
    !classes.iter().enumerate().all(|(i, c)| *c == i.to_string())
}

/// The output of every class of a dataset named `data` (for errors) whose classes, indexed by
/// label, are `data_classes`, in a network of `preset`'s classes. A dataset class matches an
/// output by its whole name, by its WordNet id (`n01440764`, ImageNet's folder names), or by
/// the first of an ImageNet name's synonyms (`tabby` for "tabby, tabby cat"), each where it
/// picks out one output. When some class matches none, positions are used if either side only
/// numbers its classes (a file of other than 1000 outputs, an IDX file's labels). A dataset
/// may hold fewer classes than the network.
///
/// `Err` naming the classes the weights lack (and a few of theirs), or two dataset classes that
/// name one output; by position, a dataset of more classes than outputs.
pub fn map_classes(
    data: &str,
    data_classes: &[String],
    preset: &Preset,
) -> Result<ClassMap, VggError> {
    let outputs = &preset.classes;
    let ids = (*outputs == imagenet_classes()).then(imagenet_wnids);
    let first = |name: &str| name.split(',').next().unwrap_or(name).trim().to_string();
    // The one output `matches` picks out, if exactly one.
    let unique = |matches: &dyn Fn(usize) -> bool| -> Option<usize> {
        let mut found = (0..outputs.len()).filter(|&j| matches(j));
        match (found.next(), found.next()) {
            (Some(j), None) => Some(j),
            _ => None,
        }
    };
    let find = |class: &str| -> Option<usize> {
        unique(&|j| outputs[j] == class)
            .or_else(|| unique(&|j| ids.as_ref().is_some_and(|ids| ids[j] == class)))
            .or_else(|| unique(&|j| first(&outputs[j]) == class))
    };
    let found: Vec<Option<usize>> = data_classes.iter().map(|c| find(c)).collect();
    let missing: Vec<&str> = data_classes
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(c, _)| c.as_str())
        .collect();
    if !missing.is_empty() {
        // Numbered outputs (a file that names no classes), or numbered data (an IDX file's
        // labels): positions are all there is.
        if !are_named(outputs) || !are_named(data_classes) {
            if data_classes.len() > outputs.len() {
                return Err(mismatch(
                    data,
                    format!(
                        "{} classes for a network of {} outputs",
                        data_classes.len(),
                        outputs.len()
                    ),
                ));
            }
            return Ok(ClassMap {
                outputs: (0..data_classes.len()).collect(),
                by_name: false,
            });
        }
        return Err(mismatch(
            data,
            format!(
                "the class(es) {} are not among the weights' {} classes ({}), or name more than one of them; name the folders as the weights name their classes (ImageNet's by WordNet id, e.g. n01440764), or give --labels",
                few(&missing),
                outputs.len(),
                few(&outputs.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        ));
    }
    let outputs: Vec<usize> = found.into_iter().flatten().collect();
    for (a, &j) in outputs.iter().enumerate() {
        if let Some(b) = outputs[..a].iter().position(|&k| k == j) {
            return Err(mismatch(
                data,
                format!(
                    "the classes `{}` and `{}` both name the output `{}`",
                    data_classes[b], data_classes[a], preset.classes[j]
                ),
            ));
        }
    }
    Ok(ClassMap {
        outputs,
        by_name: true,
    })
}

/// Members of an ensemble must score the same classes in the same order, else their
/// probabilities average unrelated outputs. `Err` naming the first member and output that
/// differ.
pub fn same_classes<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a Preset)>,
) -> Result<(), VggError> {
    let mut members = members.into_iter();
    let Some((first_name, first)) = members.next() else {
        return Ok(());
    };
    for (name, preset) in members {
        let (a, b) = (&first.classes, &preset.classes);
        let differ = a.len() != b.len() || a != b;
        if differ {
            let at = a.iter().zip(b).position(|(x, y)| x != y);
            let reason = match at {
                Some(i) => format!(
                    "output {i} is `{}` in {first_name} but `{}` in {name}",
                    a[i], b[i]
                ),
                None => format!("{first_name} has {} classes, {name} {}", a.len(), b.len()),
            };
            return Err(VggError::BadConfig {
                what: "ensemble".into(),
                reason: format!(
                    "its members score different classes ({reason}); an ensemble averages the same classes in the same order"
                ),
            });
        }
    }
    Ok(())
}

fn mismatch(data: &str, reason: String) -> VggError {
    VggError::Dataset {
        path: data.into(),
        reason,
    }
}

/// Up to five names, then how many more.
fn few(names: &[&str]) -> String {
    let shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
    match names.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::{Convention, Preset};

    fn preset(classes: &[&str]) -> Preset {
        let mut p = Preset::published(Convention::None, classes.len());
        p.classes = classes.iter().map(|c| c.to_string()).collect();
        p
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn named_classes_map_by_name_not_position() {
        let p = preset(&["cat", "dog", "fox"]);
        // A folder missing `cat`: sorted, `dog` is label 0, but it is output 1.
        let m = map_classes("d", &names(&["dog", "fox"]), &p).unwrap();
        assert_eq!(m.outputs, [1, 2]);
        assert!(m.by_name);
        let err = map_classes("d", &names(&["cat", "zebra"]), &p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`zebra`") && err.contains("`cat`, `dog`, `fox`"),
            "{err}"
        );
        assert!(!err.contains("`cat` are"), "{err}");
    }

    #[test]
    fn unnamed_weights_keep_positions_up_to_their_outputs() {
        let p = Preset::published(Convention::None, 3);
        let m = map_classes("d", &names(&["b", "a"]), &p).unwrap();
        assert_eq!((m.outputs, m.by_name), (vec![0, 1], false));
        assert!(map_classes("d", &names(&["a", "b", "c", "d"]), &p).is_err());
        // Numbered folders are matched by their numbers: `0` missing does not shift the rest.
        let m = map_classes("d", &names(&["1", "2"]), &p).unwrap();
        assert_eq!((m.outputs, m.by_name), (vec![1, 2], true));
        // An IDX file's numbered labels on named weights: positions.
        let named = preset(&["cat", "dog", "fox"]);
        let m = map_classes("d", &names(&["0", "1", "2"]), &named).unwrap();
        assert_eq!((m.outputs, m.by_name), (vec![0, 1, 2], false));
    }

    #[test]
    fn imagenet_by_wordnet_id_full_name_or_unique_first_synonym() {
        let p = Preset::published(Convention::Torchvision, 1000);
        let m = map_classes(
            "d",
            &names(&["n01440764", "tabby", "goldfish, Carassius auratus"]),
            &p,
        )
        .unwrap();
        assert_eq!(m.outputs, [0, 281, 1]);
        // "crane" is a bird (134) and a machine (517): ambiguous, refused.
        assert!(map_classes("d", &names(&["crane"]), &p).is_err());
        // Two folders for one output.
        assert!(map_classes("d", &names(&["n01440764", "tench"]), &p).is_err());
        // Two folders of a binary task on 1000-class weights: refused by name.
        assert!(map_classes("d", &names(&["bottom", "top"]), &p).is_err());
    }

    #[test]
    fn ensembles_need_one_class_list() {
        let (a, b) = (preset(&["cat", "dog"]), preset(&["dog", "cat"]));
        assert!(same_classes([("a", &a), ("a2", &a)]).is_ok());
        let err = same_classes([("a", &a), ("b", &b)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output 0 is `cat` in a but `dog` in b"),
            "{err}"
        );
        assert!(same_classes([("a", &a), ("c", &preset(&["cat", "dog", "fox"]))]).is_err());
    }
}
