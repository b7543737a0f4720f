//! Top-k hits, honestly: a class tied with the true one ranks above it (a network that scores
//! every class the same gets every image wrong, not right), and NaN or infinite scores are an
//! error, never a hit.

use crate::error::VggError;

/// The true class's rank among `scores` (0 = top-1), counting every other class that scores at
/// least as high; `None` when a score is NaN or infinite.
pub fn rank(scores: &[f32], label: usize) -> Option<usize> {
    if scores.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let target = scores[label];
    Some(
        scores
            .iter()
            .enumerate()
            .filter(|&(j, &v)| j != label && v >= target)
            .count(),
    )
}

/// Top-1 and top-5 hits of a batch of scores `[n, k]` (row-major) against `labels`; `Err` on
/// the first row with a non-finite score, naming `what` was scored.
pub fn topk_hits(scores: &[f32], labels: &[usize], what: &str) -> Result<(usize, usize), VggError> {
    let n = labels.len();
    if n == 0 {
        return Ok((0, 0));
    }
    let k = scores.len() / n;
    let (mut top1, mut top5) = (0, 0);
    for (i, &label) in labels.iter().enumerate() {
        let row = &scores[i * k..(i + 1) * k];
        let r = rank(row, label).ok_or_else(|| VggError::NonFiniteOutput {
            what: format!("{what}, image {i} of a batch of {n}"),
        })?;
        top1 += (r == 0) as usize;
        top5 += (r < 5) as usize;
    }
    Ok((top1, top5))
}

/// The `k` highest scores, best first (ties by class index); `None` on a non-finite score.
pub fn top_k(scores: &[f32], k: usize) -> Option<Vec<(usize, f32)>> {
    if scores.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    Some(idx.into_iter().take(k).map(|i| (i, scores[i])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_rank_pessimistically() {
        // All-zero weights give equal scores: no hit at all.
        assert_eq!(rank(&[0.0; 10], 3), Some(9));
        assert_eq!(topk_hits(&[0.0; 20], &[1, 7], "x").unwrap(), (0, 0));
        // A tie with one other class: not top-1, still top-5.
        assert_eq!(rank(&[0.5, 0.5, 0.1], 1), Some(1));
        assert_eq!(rank(&[0.1, 0.5, 0.05, 0.3, 0.05], 1), Some(0));
        assert_eq!(rank(&[0.1, 0.5, 0.05, 0.3, 0.05], 3), Some(1));
    }

    #[test]
    fn non_finite_scores_are_errors() {
        assert_eq!(rank(&[f32::NAN, 1.0], 1), None);
        assert_eq!(rank(&[f32::INFINITY, 1.0], 0), None);
        assert!(matches!(
            topk_hits(&[0.0, f32::NAN], &[0], "validation"),
            Err(VggError::NonFiniteOutput { .. })
        ));
        assert_eq!(top_k(&[1.0, f32::NAN], 1), None);
        assert_eq!(top_k(&[0.1, 0.5, 0.3], 2), Some(vec![(1, 0.5), (2, 0.3)]));
    }
}
