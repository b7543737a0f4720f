//! Batches built on worker threads while the network trains, in a fixed order: the epoch's
//! permutation and every sample's augmentation depend only on (seed, epoch, index), so a run is
//! the same whatever the threads do, and a resumed run sees the same data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use super::{Dataset, Image, Rng};
use crate::error::VggError;

/// One batch of network inputs, `[N, C, H, W]` flattened.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<usize>,
    /// Unreadable images left out of this batch (with `skip_bad`).
    pub skipped: Vec<String>,
}

/// Turns image `index` of the dataset into network input, or says why it cannot.
pub type Prepare = Arc<dyn Fn(&Image, usize) -> Result<Vec<f32>, String> + Send + Sync>;

/// The order of an epoch: a permutation seeded by (seed, epoch), or the identity.
pub fn epoch_order(len: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        Rng::new(seed ^ (epoch as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)).shuffle(&mut order);
    }
    order
}

/// Streams batches of `order` (in order), prepared by `workers` threads, a few batches ahead.
pub struct Loader {
    receiver: Receiver<(usize, Result<Batch, VggError>)>,
    pending: BTreeMap<usize, Result<Batch, VggError>>,
    next: usize,
    total: usize,
    _workers: Vec<JoinHandle<()>>,
}

impl Loader {
    pub fn new(
        data: Arc<Dataset>,
        order: Vec<usize>,
        batch: usize,
        shape: [usize; 3],
        prepare: Prepare,
        workers: usize,
        skip_bad: bool,
    ) -> Self {
        let chunks: Arc<Vec<Vec<usize>>> =
            Arc::new(order.chunks(batch).map(|c| c.to_vec()).collect());
        let total = chunks.len();
        let workers = workers.max(1);
        let (sender, receiver) = sync_channel(2 * workers);
        let handles = (0..workers)
            .map(|w| {
                let (data, chunks, prepare, sender) = (
                    data.clone(),
                    chunks.clone(),
                    prepare.clone(),
                    sender.clone(),
                );
                std::thread::spawn(move || {
                    for b in (w..chunks.len()).step_by(workers) {
                        let result = build(&data, &chunks[b], shape, &prepare, skip_bad);
                        if sender.send((b, result)).is_err() {
                            return; // the consumer is gone
                        }
                    }
                })
            })
            .collect();
        Self {
            receiver,
            pending: BTreeMap::new(),
            next: 0,
            total,
            _workers: handles,
        }
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

fn build(
    data: &Dataset,
    indices: &[usize],
    [c, h, w]: [usize; 3],
    prepare: &Prepare,
    skip_bad: bool,
) -> Result<Batch, VggError> {
    let mut images = Vec::with_capacity(indices.len() * c * h * w);
    let mut labels = Vec::with_capacity(indices.len());
    let mut skipped = Vec::new();
    for &i in indices {
        let input = data.image(i).and_then(|img| {
            prepare(&img, i).map_err(|reason| VggError::BadImage {
                path: data.item_path(i),
                reason,
            })
        });
        match input {
            Ok(values) => {
                images.extend(values);
                labels.push(data.labels[i]);
            }
            Err(e) if skip_bad => skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(Batch {
        shape: [labels.len(), c, h, w],
        images,
        labels,
        skipped,
    })
}

impl Iterator for Loader {
    type Item = Result<Batch, VggError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        while !self.pending.contains_key(&self.next) {
            let (b, result) = self.receiver.recv().ok()?;
            self.pending.insert(b, result);
        }
        let item = self.pending.remove(&self.next);
        self.next += 1;
        item
    }
}
