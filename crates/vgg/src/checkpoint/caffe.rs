//! The authors' Caffe release: `.caffemodel` files, a `NetParameter` protobuf (caffe.proto), in
//! the 2014 V1 form the authors published (`layers`, field 2: `V1LayerParameter`) or the current
//! one (`layer`, field 100: `LayerParameter`); each blob with its legacy `num`, `channels`,
//! `height`, `width` or a `shape`, its floats packed or not. Read as a stream: a 528 MB model is
//! never held twice. Blob `i` of layer `conv1_1` becomes `conv1_1.i` (Caffe's layout, renamed to
//! torchvision's by [`super::layouts`]).

use std::io::{BufReader, Read};
use std::path::Path;

use super::protobuf::{Message, Wire, WireError};
use super::state_dict::{StateDict, StateTensor};
use super::{corrupt, read_bounded_size};
use crate::error::VggError;

/// Reads the layers with weights of a `.caffemodel`.
pub fn read(path: &Path) -> Result<StateDict, VggError> {
    let size = read_bounded_size(path, None)?;
    let file = std::fs::File::open(path).map_err(|e| VggError::io(path, e))?;
    let limit = crate::limits::get().max_params.saturating_mul(2) as usize;
    let bad = |e: WireError| corrupt(path, "Caffe", e);
    let mut net = Message::sized(BufReader::with_capacity(1 << 20, file), size);
    let mut dict = StateDict::new();
    let mut floats = 0usize;
    while let Some((field, wire)) = net.field().map_err(bad)? {
        match (field, wire) {
            // V1LayerParameter (the authors' 2014 files), LayerParameter (today's).
            (2 | 100, Wire::Len(n)) => {
                let layer_message = net.sub(n).map_err(bad)?;
                let (name, blobs) =
                    layer(layer_message, field == 2, limit.saturating_sub(floats)).map_err(bad)?;
                for (i, blob) in blobs.into_iter().enumerate() {
                    floats += blob.shape.iter().product::<usize>();
                    if dict.insert(format!("{name}.{i}"), blob).is_some() {
                        return Err(corrupt(
                            path,
                            "Caffe",
                            format!("the layer `{name}` has weights twice; keep one"),
                        ));
                    }
                }
            }
            (_, Wire::Len(n)) => net.skip(n).map_err(bad)?,
            _ => {}
        }
    }
    if dict.is_empty() {
        return Err(corrupt(
            path,
            "Caffe",
            "no layer with weights (is this a .caffemodel?)",
        ));
    }
    Ok(dict)
}

/// A layer's name and blobs.
fn layer<R: Read>(
    mut m: Message<R>,
    v1: bool,
    limit: usize,
) -> Result<(String, Vec<StateTensor>), WireError> {
    let (name_field, blobs_field) = if v1 { (4, 6) } else { (1, 7) };
    let (mut name, mut blobs) = (String::new(), Vec::new());
    let mut left = limit;
    while let Some((field, wire)) = m.field()? {
        match (field, wire) {
            (f, Wire::Len(n)) if f == name_field => name = m.string(n)?,
            (f, Wire::Len(n)) if f == blobs_field => {
                let blob = blob(m.sub(n)?, left)?;
                left = left.saturating_sub(blob.shape.iter().product::<usize>());
                blobs.push(blob);
            }
            (_, Wire::Len(n)) => m.skip(n)?,
            _ => {}
        }
    }
    if name.is_empty() && !blobs.is_empty() {
        return Err(WireError("a layer with weights but no name".into()));
    }
    Ok((name, blobs))
}

/// A `BlobProto`: its data and its shape (`shape`, or the legacy 4-D dims with the leading 1s
/// of FC weights `[1, 1, out, in]` and biases `[1, 1, 1, out]` dropped).
fn blob<R: Read>(mut m: Message<R>, limit: usize) -> Result<StateTensor, WireError> {
    let mut legacy = [0u64; 4];
    let mut shape: Option<Vec<u64>> = None;
    let mut data = Vec::new();
    while let Some((field, wire)) = m.field()? {
        match (field, wire) {
            (1..=4, Wire::Varint(v)) => legacy[field as usize - 1] = v,
            (5, Wire::Len(n)) => m.packed_f32(n, &mut data, limit)?,
            (5, Wire::Fixed32(bits)) => {
                if data.len() >= limit {
                    return Err(WireError(format!("more than {limit} floats")));
                }
                data.push(f32::from_bits(bits));
            }
            (7, Wire::Len(n)) => shape = Some(blob_shape(m.sub(n)?)?),
            (8, Wire::Len(_)) => {
                return Err(WireError(
                    "double-precision blobs are not supported; save the model with float blobs"
                        .into(),
                ));
            }
            (_, Wire::Len(n)) => m.skip(n)?,
            _ => {}
        }
    }
    let dims: Vec<usize> = match shape {
        Some(dims) => dims.into_iter().map(|d| d as usize).collect(),
        None => match legacy {
            [1, 1, 1, w] => vec![w as usize],
            [1, 1, h, w] => vec![h as usize, w as usize],
            l => l.iter().map(|&d| d as usize).collect(),
        },
    };
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| WireError(format!("a blob of shape {dims:?} is too large")))?;
    if count != data.len() {
        return Err(WireError(format!(
            "a blob of shape {dims:?} holds {} values, not {count} (truncated?)",
            data.len()
        )));
    }
    Ok(StateTensor::f32(dims, data))
}

/// A `BlobShape`: its `dim`s, packed or not.
fn blob_shape<R: Read>(mut m: Message<R>) -> Result<Vec<u64>, WireError> {
    let mut dims = Vec::new();
    while let Some((field, wire)) = m.field()? {
        match (field, wire) {
            (1, Wire::Len(n)) => dims.extend(m.packed_varints(n, 8)?),
            (1, Wire::Varint(v)) => dims.push(v),
            (_, Wire::Len(n)) => m.skip(n)?,
            _ => {}
        }
        if dims.len() > 8 {
            return Err(WireError("a blob shape of more than 8 dimensions".into()));
        }
    }
    Ok(dims)
}
