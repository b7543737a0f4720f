//! ONNX models (`.onnx`, a `ModelProto` protobuf). Reading takes a VGG's weights from the graph's
//! initializers in the order its `Conv`, `BatchNormalization` and `Gemm`/`MatMul` nodes use them,
//! whatever the exporter named them (torch.onnx, the ONNX model zoo, Keras exports whose
//! channels-last flatten before FC1 shows as a `Transpose` to NHWC), and numbers them as
//! torchvision's `features.N` / `classifier.N`. Writing makes a VGG an ONNX model (opset 13)
//! that onnxruntime runs.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use super::protobuf::{Message, Wire, WireError, Writer};
use super::state_dict::{StateDict, StateTensor, Values};
use super::{corrupt, read_bounded_size};
use crate::arch::{Layer, StageKind, VggConfig};
use crate::error::VggError;

/// One node of the graph: its operator, inputs, and the attributes that matter here.
#[derive(Debug, Default, Clone)]
struct Node {
    /// The node's own name (for errors; may be empty).
    name: String,
    op: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Float attributes (`epsilon`).
    floats: HashMap<String, f32>,
    ints: HashMap<String, Vec<i64>>,
    /// String attributes (`auto_pad`).
    strings: HashMap<String, String>,
}

/// Reads the weights of the VGG an ONNX model holds, in torchvision's layout.
pub fn read(path: &Path) -> Result<StateDict, VggError> {
    Ok(read_with_layout(path)?.0)
}

/// [`read`], and whether the graph moves between NCHW and NHWC (an NHWC input, a channels-last
/// flatten before FC1): a Keras export, whose weights expect Keras' preprocessing.
pub fn read_with_layout(path: &Path) -> Result<(StateDict, bool), VggError> {
    let (dict, keras, _) = read_all(path)?;
    Ok((dict, keras))
}

/// The model's `metadata_props` (key -> value): where our exports carry their preset.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// [`read_with_layout`] and the model's `metadata_props`.
pub fn read_all(path: &Path) -> Result<(StateDict, bool, Metadata), VggError> {
    let size = read_bounded_size(path, None)?;
    let file = std::fs::File::open(path).map_err(|e| VggError::io(path, e))?;
    let limit = crate::limits::get().max_params.saturating_mul(2) as usize;
    let bad = |e: WireError| corrupt(path, "ONNX", e);
    let mut model = Message::sized(BufReader::with_capacity(1 << 20, file), size);
    let (mut nodes, mut weights) = (Vec::new(), HashMap::new());
    let mut graphs = 0;
    let mut metadata = Metadata::new();
    while let Some((field, wire)) = model.field().map_err(bad)? {
        match (field, wire) {
            (7, Wire::Len(n)) => {
                graphs += 1;
                let g = model.sub(n).map_err(bad)?;
                graph(g, &mut nodes, &mut weights, limit).map_err(bad)?
            }
            // metadata_props: StringStringEntryProto { key = 1, value = 2 }
            (14, Wire::Len(n)) => {
                if metadata.len() >= 1024 {
                    return Err(bad(WireError("more than 1024 metadata entries".into())));
                }
                let mut entry = model.sub(n).map_err(bad)?;
                let (mut key, mut value) = (String::new(), String::new());
                while let Some((f, w)) = entry.field().map_err(bad)? {
                    match (f, w) {
                        (1, Wire::Len(n)) => key = entry.string(n).map_err(bad)?,
                        (2, Wire::Len(n)) => value = entry.string(n).map_err(bad)?,
                        (_, Wire::Len(n)) => entry.skip(n).map_err(bad)?,
                        _ => {}
                    }
                }
                metadata.insert(key, value);
            }
            (_, Wire::Len(n)) => model.skip(n).map_err(bad)?,
            _ => {}
        }
    }
    if graphs == 0 {
        return Err(corrupt(path, "ONNX", "no graph (is this an ONNX model?)"));
    }
    let (dict, channels_last) =
        number(&nodes, &mut weights).map_err(|reason| corrupt(path, "ONNX", reason))?;
    if dict.is_empty() {
        return Err(corrupt(
            path,
            "ONNX",
            "no Conv, BatchNormalization or Gemm/MatMul with weights",
        ));
    }
    Ok((dict, channels_last, metadata))
}

fn graph<R: std::io::Read>(
    mut g: Message<R>,
    nodes: &mut Vec<Node>,
    weights: &mut HashMap<String, StateTensor>,
    limit: usize,
) -> Result<(), WireError> {
    let mut used = weights
        .values()
        .map(|t| t.shape.iter().product::<usize>())
        .sum::<usize>();
    while let Some((field, wire)) = g.field()? {
        if nodes.len() + weights.len() > MAX_ENTRIES {
            return Err(WireError(format!(
                "more than {MAX_ENTRIES} nodes and initializers; a VGG has a few dozen"
            )));
        }
        match (field, wire) {
            (1, Wire::Len(n)) => nodes.push(node(g.sub(n)?)?),
            (5, Wire::Len(n)) => {
                let (name, t) = tensor(g.sub(n)?, limit.saturating_sub(used))?;
                // Shape constants (int64) and the like are not weights; they are left out.
                if let Some(t) = t {
                    used += t.shape.iter().product::<usize>();
                    if weights.contains_key(&name) {
                        return Err(WireError(format!(
                            "two initializers are named `{name}`; keep one"
                        )));
                    }
                    weights.insert(name, t);
                }
            }
            (_, Wire::Len(n)) => g.skip(n)?,
            _ => {}
        }
    }
    Ok(())
}

/// Nodes and initializers a graph may hold, and names and attributes a node may have: far
/// beyond any VGG export, so that memory stays in proportion to the file.
const MAX_ENTRIES: usize = 100_000;
const MAX_NODE_FIELDS: usize = 256;

fn node<R: std::io::Read>(mut m: Message<R>) -> Result<Node, WireError> {
    let mut node = Node::default();
    while let Some((field, wire)) = m.field()? {
        if node.inputs.len() + node.outputs.len() + node.ints.len() > MAX_NODE_FIELDS {
            return Err(WireError(format!(
                "a node with more than {MAX_NODE_FIELDS} inputs, outputs and attributes"
            )));
        }
        match (field, wire) {
            (1, Wire::Len(n)) => node.inputs.push(m.string(n)?),
            (2, Wire::Len(n)) => node.outputs.push(m.string(n)?),
            (3, Wire::Len(n)) => node.name = m.string(n)?,
            (4, Wire::Len(n)) => node.op = m.string(n)?,
            (5, Wire::Len(n)) => {
                let (name, ints, float, string) = attribute(m.sub(n)?)?;
                if let Some(f) = float {
                    node.floats.insert(name.clone(), f);
                }
                if let Some(s) = string {
                    node.strings.insert(name.clone(), s);
                }
                node.ints.insert(name, ints);
            }
            (_, Wire::Len(n)) => m.skip(n)?,
            _ => {}
        }
    }
    Ok(node)
}

/// An attribute's name, integer value(s) (`i`, `ints`), float (`f`) and string (`s`); other
/// kinds read as empty.
type Attribute = (String, Vec<i64>, Option<f32>, Option<String>);

fn attribute<R: std::io::Read>(mut m: Message<R>) -> Result<Attribute, WireError> {
    let (mut name, mut ints, mut float, mut string) = (String::new(), Vec::new(), None, None);
    while let Some((field, wire)) = m.field()? {
        match (field, wire) {
            (1, Wire::Len(n)) => name = m.string(n)?,
            (2, Wire::Fixed32(bits)) => float = Some(f32::from_bits(bits)),
            (4, Wire::Len(n)) => string = Some(m.string(n)?),
            (3, Wire::Varint(v)) | (8, Wire::Varint(v)) => ints.push(v as i64),
            (8, Wire::Len(n)) => {
                ints.extend(m.packed_varints(n, 16)?.into_iter().map(|v| v as i64))
            }
            (_, Wire::Len(n)) => m.skip(n)?,
            _ => {}
        }
    }
    Ok((name, ints, float, string))
}

/// A `TensorProto`: its name and, for floating-point types (float32; float16, bfloat16 and
/// float64, widened to float32 as every other format's are), its values (`float_data`,
/// `int32_data` for 16-bit types, `double_data`, or `raw_data`). Other types (shape constants)
/// read as `None`.
fn tensor<R: std::io::Read>(
    mut m: Message<R>,
    limit: usize,
) -> Result<(String, Option<StateTensor>), WireError> {
    use safetensors::Dtype;
    let (mut name, mut dims, mut data, mut kind) = (String::new(), Vec::new(), Vec::new(), 1u64);
    let mut external = false;
    // ONNX's TensorProto.DataType codes of the floating-point types read here.
    let dtype = |kind: u64| match kind {
        1 => Some(Dtype::F32),
        10 => Some(Dtype::F16),
        11 => Some(Dtype::F64),
        16 => Some(Dtype::BF16),
        _ => None,
    };
    let full = |data: &Vec<f32>| {
        if data.len() >= limit {
            Err(WireError(format!("more than {limit} floats")))
        } else {
            Ok(())
        }
    };
    while let Some((field, wire)) = m.field()? {
        match (field, wire) {
            (1, Wire::Varint(v)) => dims.push(v as usize),
            (1, Wire::Len(n)) => {
                dims.extend(m.packed_varints(n, 8)?.into_iter().map(|v| v as usize))
            }
            (2, Wire::Varint(v)) => kind = v,
            // `data_type` comes first (field order); other types' bytes are not floats.
            (9, Wire::Len(n)) if dtype(kind).is_none() => m.skip(n)?,
            (4, Wire::Len(n)) | (9, Wire::Len(n)) if kind == 1 => {
                m.packed_f32(n, &mut data, limit)?
            }
            (9, Wire::Len(n)) => {
                let width = if kind == 11 { 8 } else { 2 };
                let bytes = m.bytes(n, (limit as u64).saturating_mul(width))?;
                if bytes.len() % width as usize != 0 {
                    return Err(WireError(format!(
                        "`{name}`: raw data of {} bytes",
                        bytes.len()
                    )));
                }
                let dt = dtype(kind).unwrap_or(Dtype::F32);
                match super::state_dict::decode(dt, &bytes) {
                    Ok(super::state_dict::Values::F32(v)) => data.extend(v),
                    _ => return Err(WireError(format!("`{name}`: unreadable raw data"))),
                }
            }
            (4, Wire::Fixed32(bits)) if kind == 1 => {
                full(&data)?;
                data.push(f32::from_bits(bits))
            }
            // int32_data: float16 and bfloat16 as their 16 bits.
            (5, Wire::Len(n)) if kind == 10 || kind == 16 => {
                for bits in m.packed_varints(n, limit.saturating_sub(data.len()))? {
                    data.push(half16(kind, bits as u16));
                }
            }
            (5, Wire::Varint(bits)) if kind == 10 || kind == 16 => {
                full(&data)?;
                data.push(half16(kind, bits as u16))
            }
            // double_data
            (10, Wire::Len(n)) if kind == 11 => {
                let bytes = m.bytes(n, (limit as u64).saturating_mul(8))?;
                data.extend(
                    bytes
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
                );
            }
            (10, Wire::Fixed64(bits)) if kind == 11 => {
                full(&data)?;
                data.push(f64::from_bits(bits) as f32)
            }
            (8, Wire::Len(n)) => name = m.string(n)?,
            (14, Wire::Varint(1)) => external = true,
            (_, Wire::Len(n)) => m.skip(n)?,
            _ => {}
        }
        if dims.len() > 8 {
            return Err(WireError("a tensor of more than 8 dimensions".into()));
        }
    }
    if external {
        return Err(WireError(format!(
            "`{name}` is stored outside the model (external data); export it with every weight inside"
        )));
    }
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if dtype(kind).is_none() {
        return Ok((name, None));
    }
    if count != Some(data.len()) {
        return Err(WireError(format!(
            "`{name}` of shape {dims:?} holds {} values (truncated?)",
            data.len()
        )));
    }
    Ok((name, Some(StateTensor::f32(dims, data))))
}

/// A float16 (ONNX type 10) or bfloat16 (16) value from its bits.
fn half16(kind: u64, bits: u16) -> f32 {
    if kind == 10 {
        half::f16::from_bits(bits).to_f32()
    } else {
        half::bf16::from_bits(bits).to_f32()
    }
}

/// The weights in graph order, numbered as torchvision's VGG numbers its modules. A bias may
/// be its node's input or the `Add` that follows (NHWC exports: `[1, 1, 1, C]`); an initializer
/// several nodes share (exporters merge equal constants) is copied for each.
fn number(
    nodes: &[Node],
    weights: &mut HashMap<String, StateTensor>,
) -> Result<(StateDict, bool), String> {
    // Exporters pass a shared initializer on through `Identity` nodes (Keras' does): inputs name
    // the initializer itself here.
    let mut alias: HashMap<&str, &str> = HashMap::new();
    for n in nodes.iter().filter(|n| n.op == "Identity") {
        if let (Some(i), Some(o)) = (n.inputs.first(), n.outputs.first()) {
            let source = alias.get(i.as_str()).copied().unwrap_or(i.as_str());
            if weights.contains_key(source) {
                alias.insert(o.as_str(), source);
            }
        }
    }
    let canon = |name: &str| -> String { alias.get(name).copied().unwrap_or(name).to_string() };
    let nodes: Vec<Node> = nodes
        .iter()
        .filter(|n| n.op != "Identity")
        .map(|n| Node {
            inputs: n.inputs.iter().map(|i| canon(i)).collect(),
            ..n.clone()
        })
        .collect();
    let nodes = &nodes[..];
    check_graph(nodes, weights)?;
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        for i in &n.inputs {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    // The bias of node `i`: an initializer input of the first `Add` after it, before the next
    // node that computes (a convolution, a product, an activation, a pool).
    let following_bias = |i: usize, weights: &HashMap<String, StateTensor>| -> Option<String> {
        nodes[i + 1..]
            .iter()
            .take_while(|n| {
                !matches!(
                    n.op.as_str(),
                    "Conv" | "Gemm" | "MatMul" | "Relu" | "MaxPool"
                )
            })
            .find(|n| n.op == "Add")
            .and_then(|a| {
                a.inputs
                    .iter()
                    .find(|x| weights.contains_key(x.as_str()))
                    .cloned()
            })
    };
    let mut dict = StateDict::new();
    let (mut index, mut fc, mut in_head, mut channels_last) = (0usize, 0usize, false, false);
    let mut last_channels = 0usize;
    // Any change between NCHW and NHWC: a channels-last (Keras) export.
    let mut keras = false;
    for (i, n) in nodes.iter().enumerate() {
        let input = |k: usize| n.inputs.get(k).map(String::as_str).unwrap_or("");
        match n.op.as_str() {
            "Conv" if !in_head => {
                let w = take(weights, &mut uses, input(1))?;
                last_channels = w.shape[0];
                dict.insert(format!("features.{index}.weight"), w);
                let bias = match input(2) {
                    "" => following_bias(i, weights),
                    b => Some(b.to_string()),
                };
                if let Some(b) = bias {
                    let t = take(weights, &mut uses, &b)?;
                    let n = t.shape.iter().product::<usize>();
                    dict.insert(
                        format!("features.{index}.bias"),
                        StateTensor::f32(vec![n], t.to_f32()),
                    );
                }
                index += 1;
            }
            "BatchNormalization" if !in_head => {
                for (k, key) in [
                    (1, "weight"),
                    (2, "bias"),
                    (3, "running_mean"),
                    (4, "running_var"),
                ] {
                    dict.insert(
                        format!("features.{index}.{key}"),
                        take(weights, &mut uses, input(k))?,
                    );
                }
                // The network divides by sqrt(var + 1e-5) (PyTorch's eps); another eps
                // (Keras' and TensorFlow's 1e-3) is folded into the variance, exactly.
                let eps = n.floats.get("epsilon").copied().unwrap_or(1e-5);
                if eps != 1e-5 {
                    let key = format!("features.{index}.running_var");
                    let var = &dict[&key];
                    let shifted = var.to_f32().iter().map(|v| v + (eps - 1e-5)).collect();
                    dict.insert(key.clone(), StateTensor::f32(var.shape.clone(), shifted));
                }
                index += 1;
            }
            "Relu" | "MaxPool" | "LRN" if !in_head => index += 1,
            // The last transpose before the head says how the map is flattened: to NHWC, as
            // Keras does, or back to NCHW.
            "Transpose" if !in_head => {
                let perm = n.ints.get("perm");
                channels_last = perm.is_some_and(|p| p == &[0, 2, 3, 1]);
                keras |= channels_last || perm.is_some_and(|p| p == &[0, 3, 1, 2]);
            }
            "Gemm" | "MatMul" => {
                in_head = true;
                let key = format!("classifier.{}", 3 * fc);
                let mut w = take(weights, &mut uses, input(1))?;
                if w.shape.len() != 2 {
                    return Err(format!(
                        "the weight `{}` of {} has shape {:?}; a fully connected layer's is 2-D",
                        input(1),
                        n.op,
                        w.shape
                    ));
                }
                let transposed = n.op == "Gemm" && n.ints.get("transB").is_some_and(|t| t == &[1]);
                if !transposed {
                    w = transpose(&w);
                }
                if fc == 0 && channels_last && last_channels > 0 {
                    w = channels_first(&w, last_channels);
                }
                dict.insert(format!("{key}.weight"), w);
                let bias = if n.op == "Gemm" && !input(2).is_empty() {
                    Some(input(2).to_string())
                } else {
                    following_bias(i, weights)
                };
                if let Some(b) = bias {
                    // `[N]`, or `[1, N]` as some exporters broadcast it.
                    let t = take(weights, &mut uses, &b)?;
                    let n = t.shape.iter().product::<usize>();
                    dict.insert(format!("{key}.bias"), StateTensor::f32(vec![n], t.to_f32()));
                }
                fc += 1;
            }
            _ => {}
        }
    }
    // More than three fully connected layers (a head of one's own) number on as
    // `classifier.9`, ...: the strict check reports them, `--no-top` drops them.
    Ok((dict, keras))
}

/// Refuses a graph that computes anything but a VGG: every node must be one of a VGG's
/// operations (or of the shape bookkeeping and layout changes exporters add) with the
/// attributes a VGG's has: 3x3 convolutions of stride 1 padded by 1 (1x1 unpadded), 2x2 max
/// pools of stride 2, products with alpha and beta 1, LRN as the paper's, biases added to a
/// convolution or product, a softmax only at the very end. Reading the weights alone would
/// load a Conv of stride 2 or an extra Sigmoid as a plain VGG, which onnxruntime does not
/// compute. The error names the node.
fn check_graph(nodes: &[Node], weights: &HashMap<String, StateTensor>) -> Result<(), String> {
    let name = |i: usize, n: &Node| {
        if n.name.is_empty() {
            format!("node {i} ({})", n.op)
        } else {
            format!("node {i} ({} `{}`)", n.op, n.name)
        }
    };
    let ints = |n: &Node, key: &str| n.ints.get(key).filter(|v| !v.is_empty()).cloned();
    let all = |v: &Option<Vec<i64>>, x: i64| v.as_ref().is_none_or(|v| v.iter().all(|&k| k == x));
    let float = |n: &Node, key: &str, default: f32| n.floats.get(key).copied().unwrap_or(default);
    let computes = |op: &str| {
        matches!(
            op,
            "Conv"
                | "Gemm"
                | "MatMul"
                | "Relu"
                | "MaxPool"
                | "LRN"
                | "BatchNormalization"
                | "AveragePool"
                | "GlobalAveragePool"
                | "Add"
                | "Softmax"
        )
    };
    for (i, n) in nodes.iter().enumerate() {
        let not_vgg = |what: &str| Err(format!("{} {what}: not part of a VGG", name(i, n)));
        // Automatic padding: SAME (either way) is a stride-1 convolution's own padding, VALID
        // none; where these differ from what a VGG pads, the checks below refuse them.
        let auto = n
            .strings
            .get("auto_pad")
            .map(String::as_str)
            .unwrap_or("NOTSET");
        match n.op.as_str() {
            "Conv" => {
                let kernel = ints(n, "kernel_shape").or_else(|| {
                    let w = weights.get(n.inputs.get(1)?)?;
                    (w.shape.len() == 4).then(|| vec![w.shape[2] as i64, w.shape[3] as i64])
                });
                let want_pad = match kernel.as_deref() {
                    Some([3, 3]) => 1,
                    Some([1, 1]) => 0,
                    other => return not_vgg(&format!("has a kernel of {other:?}")),
                };
                if !all(&ints(n, "strides"), 1) || !all(&ints(n, "dilations"), 1) {
                    return not_vgg("has a stride or dilation other than 1");
                }
                if !all(&ints(n, "group"), 1) {
                    return not_vgg("is a grouped convolution");
                }
                let pads = match auto {
                    "SAME_UPPER" | "SAME_LOWER" => vec![want_pad; 4],
                    "VALID" => vec![0; 4],
                    "NOTSET" => ints(n, "pads").unwrap_or_else(|| vec![0; 4]),
                    other => return not_vgg(&format!("pads automatically ({other})")),
                };
                if pads.iter().any(|&p| p != want_pad) {
                    return not_vgg(&format!(
                        "pads by {pads:?} (a VGG's {}x{} convolutions pad by {want_pad})",
                        2 * want_pad + 1,
                        2 * want_pad + 1
                    ));
                }
            }
            "MaxPool" => {
                if !matches!(auto, "NOTSET" | "VALID")
                    || ints(n, "kernel_shape").as_deref() != Some(&[2, 2])
                    || ints(n, "strides").as_deref() != Some(&[2, 2])
                    || !all(&ints(n, "pads"), 0)
                    || !all(&ints(n, "dilations"), 1)
                    || !all(&ints(n, "ceil_mode"), 0)
                {
                    return not_vgg("is not a 2x2 max pool of stride 2 without padding");
                }
            }
            "AveragePool" => {
                // The adaptive pool before FC1, exported at one input size: kernel = stride.
                let (k, st) = (ints(n, "kernel_shape"), ints(n, "strides"));
                if k.is_none() || k != st || !all(&ints(n, "pads"), 0) {
                    return not_vgg("is not an average pool whose kernel is its stride");
                }
            }
            "GlobalAveragePool" | "Relu" | "MatMul" | "Flatten" | "Reshape" | "Shape"
            | "Gather" | "Unsqueeze" | "Squeeze" | "Concat" | "Constant" | "Dropout" => {}
            "BatchNormalization" => {
                if !all(&ints(n, "training_mode"), 0) {
                    return not_vgg("computes in training mode");
                }
                let eps = float(n, "epsilon", 1e-5);
                if !(eps.is_finite() && eps >= 0.0) {
                    return not_vgg(&format!("has epsilon {eps}"));
                }
            }
            "LRN" => {
                let (a, b, k) = (
                    float(n, "alpha", 1e-4),
                    float(n, "beta", 0.75),
                    float(n, "bias", 1.0),
                );
                if ints(n, "size").as_deref() != Some(&[5])
                    || (a - 5e-4).abs() > 1e-9
                    || (b - 0.75).abs() > 1e-9
                    || (k - 2.0).abs() > 1e-9
                {
                    return not_vgg(&format!(
                        "is LRN(size {:?}, alpha {a}, beta {b}, bias {k}), not the paper's (5, 5e-4, 0.75, 2)",
                        ints(n, "size")
                    ));
                }
            }
            "Gemm" => {
                if float(n, "alpha", 1.0) != 1.0
                    || float(n, "beta", 1.0) != 1.0
                    || !all(&ints(n, "transA"), 0)
                {
                    return not_vgg(
                        "scales its product or transposes its input (alpha, beta, transA)",
                    );
                }
            }
            "Transpose" => {
                let perm = ints(n, "perm");
                if !matches!(perm.as_deref(), Some([0, 3, 1, 2] | [0, 2, 3, 1])) {
                    return not_vgg(&format!("permutes the axes as {perm:?}"));
                }
            }
            // To float32, or (on the shape computations of a Reshape) to int32/int64.
            "Cast" => {
                if !matches!(ints(n, "to").as_deref(), Some(&[1] | &[6] | &[7])) {
                    return not_vgg("casts to a type other than float32");
                }
            }
            "Add" => {
                let constants = n.inputs.iter().filter(|x| weights.contains_key(x.as_str()));
                let previous = nodes[..i].iter().rev().find(|m| computes(&m.op));
                let adds_bias = constants.count() == 1
                    && n.inputs.len() == 2
                    && previous.is_some_and(|m| {
                        matches!(m.op.as_str(), "Conv" | "Gemm" | "MatMul")
                            && m.inputs.get(2).is_none_or(|b| b.is_empty())
                    });
                if !adds_bias {
                    return not_vgg("adds something other than a bias to a convolution or product");
                }
            }
            "Softmax" if i + 1 == nodes.len() => {}
            _ => return not_vgg("computes an operation a VGG has not"),
        }
    }
    Ok(())
}

/// Takes an initializer for one use: the last use moves it out, earlier ones copy it.
fn take(
    weights: &mut HashMap<String, StateTensor>,
    uses: &mut HashMap<&str, usize>,
    name: &str,
) -> Result<StateTensor, String> {
    let left = uses.get_mut(name).map(|u| {
        *u = u.saturating_sub(1);
        *u
    });
    let t = match left {
        Some(0) | None => weights.remove(name),
        Some(_) => weights.get(name).cloned(),
    };
    t.filter(|t| !t.shape.is_empty() && t.shape != [0])
        .ok_or_else(|| format!("the weight `{name}` is not an initializer of the graph"))
}

/// A 2-D tensor transposed.
fn transpose(t: &StateTensor) -> StateTensor {
    let [r, c] = [t.shape[0], t.shape[1]];
    let v = t.to_f32();
    let mut out = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    StateTensor::f32(vec![c, r], out)
}

/// FC1 of a channels-last export reads the map flattened as `[h, w, c]`; torchvision's as
/// `[c, h, w]`: the columns are reordered.
fn channels_first(w: &StateTensor, c: usize) -> StateTensor {
    let (out, inputs) = (w.shape[0], w.shape[1]);
    if inputs % c != 0 {
        return w.clone();
    }
    let hw = inputs / c;
    let v = w.to_f32();
    let mut cols = vec![0f32; v.len()];
    for o in 0..out {
        for ch in 0..c {
            for p in 0..hw {
                cols[o * inputs + ch * hw + p] = v[o * inputs + p * c + ch];
            }
        }
    }
    StateTensor::f32(vec![out, inputs], cols)
}

/// A VGG as an ONNX model (opset 13): input `input` `[N, C, S, S]` (N free, S = pool x 2^pools,
/// 224 for torchvision's head; any size with the compact head of pool 1), output `logits`
/// `[N, classes]`; the weights are initializers named by torchvision's keys.
pub fn write(config: &VggConfig, dict: &StateDict) -> Vec<u8> {
    write_with_metadata(config, dict, &Metadata::new())
}

/// [`write`] with `metadata_props` (the preset, [`crate::preset::Preset::to_onnx_metadata`]).
pub fn write_with_metadata(config: &VggConfig, dict: &StateDict, metadata: &Metadata) -> Vec<u8> {
    let mut g = Writer::default();
    g.string(2, &config.name);
    let mut nodes: Vec<Writer> = Vec::new();
    let mut x = "input".to_string();
    let mut stages = config.plan().into_iter();
    let mut op = |op: &str, inputs: &[&str], output: &str, attrs: &[Writer]| {
        let mut n = Writer::default();
        for i in inputs {
            n.string(1, i);
        }
        n.string(2, output).string(3, output).string(4, op);
        for a in attrs {
            n.message(5, a);
        }
        nodes.push(n);
    };
    let ints = |name: &str, v: &[i64]| {
        let mut a = Writer::default();
        a.string(1, name).packed_ints(8, v).uint(20, 7); // INTS
        a
    };
    let int = |name: &str, v: i64| {
        let mut a = Writer::default();
        a.string(1, name).int(3, v).uint(20, 2); // INT
        a
    };
    let float = |name: &str, v: f32| {
        let mut a = Writer::default();
        a.string(1, name).float(2, v).uint(20, 1); // FLOAT
        a
    };
    for layer in &config.layers {
        let steps = match layer {
            Layer::Conv3(_) | Layer::Conv1(_) => 2 + config.batch_norm as usize,
            Layer::Lrn | Layer::Pool => 1,
        };
        for _ in 0..steps {
            let stage = stages.next().expect("a stage per step");
            let name = format!("features.{}", stage.index);
            let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
            match stage.kind {
                StageKind::Conv { kernel, .. } => {
                    let p = (kernel / 2) as i64;
                    op(
                        "Conv",
                        &[&x, &w, &b],
                        &name,
                        &[
                            ints("kernel_shape", &[kernel as i64; 2]),
                            ints("pads", &[p; 4]),
                            ints("strides", &[1, 1]),
                        ],
                    );
                }
                StageKind::BatchNorm { .. } => {
                    let (m, v) = (
                        format!("{name}.running_mean"),
                        format!("{name}.running_var"),
                    );
                    op(
                        "BatchNormalization",
                        &[&x, &w, &b, &m, &v],
                        &name,
                        &[float("epsilon", 1e-5)],
                    );
                }
                StageKind::Relu => op("Relu", &[&x], &name, &[]),
                StageKind::Lrn => op(
                    "LRN",
                    &[&x],
                    &name,
                    &[
                        int("size", 5),
                        float("alpha", 5e-4),
                        float("beta", 0.75),
                        float("bias", 2.0),
                    ],
                ),
                StageKind::Pool => op(
                    "MaxPool",
                    &[&x],
                    &name,
                    &[ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
                ),
            }
            x = name;
        }
    }
    if config.pool_size == 1 {
        op("GlobalAveragePool", &[&x], "avgpool", &[]);
        x = "avgpool".into();
    }
    op("Flatten", &[&x], "flatten", &[int("axis", 1)]);
    x = "flatten".into();
    for (i, _, _) in config.fc_layers() {
        let name = format!("classifier.{i}");
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        let out = if i == 6 {
            "logits".to_string()
        } else {
            name.clone()
        };
        op("Gemm", &[&x, &w, &b], &out, &[int("transB", 1)]);
        x = out;
        if i != 6 {
            let relu = format!("classifier.{}", i + 1);
            op("Relu", &[&x], &relu, &[]);
            x = relu;
        }
    }
    for n in &nodes {
        g.message(1, n);
    }
    for (key, t) in dict {
        let Values::F32(v) = &t.values else {
            continue; // num_batches_tracked is not part of the computation
        };
        let mut init = Writer::default();
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        let raw: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        init.packed_ints(1, &dims)
            .uint(2, 1)
            .string(8, key)
            .bytes(9, &raw);
        g.message(5, &init);
    }
    let side = (config.pool_size << config.num_pools()) as i64;
    // A free dimension is named (dim_param): one name is one size to ONNX, so batch, height
    // and width each get their own.
    let value_info = |name: &str, dims: &[Result<i64, &str>]| {
        let mut shape = Writer::default();
        for d in dims {
            let mut dim = Writer::default();
            match d {
                Ok(v) => dim.int(1, *v),
                Err(free) => dim.string(2, free),
            };
            shape.message(1, &dim);
        }
        let mut tensor = Writer::default();
        tensor.uint(1, 1).message(2, &shape);
        let mut ty = Writer::default();
        ty.message(1, &tensor);
        let mut vi = Writer::default();
        vi.string(1, name).message(2, &ty);
        vi
    };
    let c = config.in_channels as i64;
    let (height, width) = if config.pool_size == 1 {
        (Err("height"), Err("width"))
    } else {
        (Ok(side), Ok(side))
    };
    g.message(
        11,
        &value_info("input", &[Err("batch"), Ok(c), height, width]),
    );
    g.message(
        12,
        &value_info("logits", &[Err("batch"), Ok(config.num_classes as i64)]),
    );
    let mut opset = Writer::default();
    opset.string(1, "").int(2, 13);
    let mut m = Writer::default();
    m.int(1, 7)
        .string(2, "vgg")
        .message(7, &g)
        .message(8, &opset);
    for (key, value) in metadata {
        let mut entry = Writer::default();
        entry.string(1, key).string(2, value);
        m.message(14, &entry);
    }
    m.buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            op: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            ..Node::default()
        }
    }

    fn weights(list: &[(&str, Vec<usize>)]) -> HashMap<String, StateTensor> {
        list.iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<usize>();
                let values = (0..n).map(|i| i as f32).collect();
                (name.to_string(), StateTensor::f32(shape.clone(), values))
            })
            .collect()
    }

    /// Keras' and TensorFlow's BatchNorm eps (1e-3) is folded into the variance, a `[1, N]`
    /// Gemm bias is flattened, and a weight passed on through `Identity` is the weight.
    #[test]
    fn eps_folded_bias_flattened_identity_followed() {
        let mut bn = node("BatchNormalization", &["x", "g", "b", "m", "v"], &["y"]);
        bn.floats.insert("epsilon".into(), 1e-3);
        let mut gemm = node("Gemm", &["f", "w_alias", "c"], &["z"]);
        gemm.ints.insert("transB".into(), vec![1]);
        let mut conv = node("Conv", &["input", "k"], &["x"]);
        conv.ints.insert("pads".into(), vec![1; 4]);
        let nodes = [conv, bn, node("Identity", &["w"], &["w_alias"]), gemm];
        let mut w = weights(&[
            ("k", vec![2, 1, 3, 3]),
            ("g", vec![2]),
            ("b", vec![2]),
            ("m", vec![2]),
            ("v", vec![2]),
            ("w", vec![3, 2]),
            ("c", vec![1, 3]),
        ]);
        let (dict, _) = number(&nodes, &mut w).unwrap();
        let var = dict["features.1.running_var"].to_f32();
        assert!((var[0] - (0.0 + 1e-3 - 1e-5)).abs() < 1e-9, "{var:?}");
        assert!((var[1] - (1.0 + 1e-3 - 1e-5)).abs() < 1e-7, "{var:?}");
        assert_eq!(dict["classifier.0.weight"].shape, [3, 2]);
        assert_eq!(dict["classifier.0.bias"].shape, [3]);
    }

    /// Every operation and attribute that a VGG does not compute is refused, naming the node:
    /// the weights alone would load as a plain VGG and compute something else.
    #[test]
    fn graphs_that_are_not_a_vgg_are_refused() {
        let w = weights(&[("k", vec![2, 1, 3, 3]), ("w", vec![3, 2]), ("c", vec![3])]);
        let conv = |pads: &[i64], strides: &[i64]| {
            let mut n = node("Conv", &["input", "k"], &["x"]);
            n.ints.insert("pads".into(), pads.to_vec());
            n.ints.insert("strides".into(), strides.to_vec());
            n.name = "conv1".into();
            n
        };
        let pool = |k: i64| {
            let mut n = node("MaxPool", &["x"], &["p"]);
            n.ints.insert("kernel_shape".into(), vec![k, k]);
            n.ints.insert("strides".into(), vec![2, 2]);
            n
        };
        let mut gemm2 = node("Gemm", &["p", "w", "c"], &["z"]);
        gemm2.floats.insert("alpha".into(), 2.0);
        let good = [
            conv(&[1; 4], &[1, 1]),
            node("Relu", &["x"], &["r"]),
            pool(2),
        ];
        assert_eq!(check_graph(&good, &w), Ok(()));
        // tf2onnx's SAME on a 3x3 convolution of stride 1 is its padding of 1.
        let mut same = conv(&[], &[1, 1]);
        same.ints.remove("pads");
        same.strings.insert("auto_pad".into(), "SAME_UPPER".into());
        assert_eq!(check_graph(&[same], &w), Ok(()));
        for (nodes, needle) in [
            (vec![conv(&[1; 4], &[2, 2])], "stride"),
            (vec![conv(&[0; 4], &[1, 1])], "pads by [0, 0, 0, 0]"),
            (
                {
                    let mut valid = conv(&[1; 4], &[1, 1]);
                    valid.strings.insert("auto_pad".into(), "VALID".into());
                    vec![valid]
                },
                "pads by [0, 0, 0, 0]",
            ),
            (vec![conv(&[1; 4], &[1, 1]), pool(3)], "2x2 max pool"),
            (
                vec![conv(&[1; 4], &[1, 1]), node("Sigmoid", &["x"], &["s"])],
                "Sigmoid",
            ),
            (vec![conv(&[1; 4], &[1, 1]), gemm2], "alpha"),
            (
                vec![
                    conv(&[1; 4], &[1, 1]),
                    node("Relu", &["x"], &["r"]),
                    node("Add", &["r", "c"], &["a"]),
                ],
                "adds something other than a bias",
            ),
            (
                vec![node("Softmax", &["input"], &["s"]), conv(&[1; 4], &[1, 1])],
                "node 0 (Softmax)",
            ),
            (
                {
                    // A negative epsilon makes every variance below it a NaN.
                    let mut bn = node("BatchNormalization", &["x", "g", "b", "m", "v"], &["y"]);
                    bn.floats.insert("epsilon".into(), -1.0);
                    vec![conv(&[1; 4], &[1, 1]), bn]
                },
                "epsilon -1",
            ),
        ] {
            let err = check_graph(&nodes, &w).unwrap_err();
            assert!(
                err.contains(needle) && err.contains("not part of a VGG"),
                "{err}"
            );
        }
        assert!(
            check_graph(&[conv(&[1; 4], &[2, 2])], &w)
                .unwrap_err()
                .contains("`conv1`")
        );
    }

    /// A free dimension is named: batch, height and width apart (one name would declare them
    /// equal), and the fixed ones are numbers.
    #[test]
    fn free_dimensions_have_their_own_names() {
        let named =
            |bytes: &[u8], name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
        let compact = VggConfig::named("vgg11").unwrap().with_pool_size(1);
        let dict = crate::nn::Vgg::new(
            &compact,
            crate::nn::InitScheme::Kaiming,
            &burn::tensor::Device::flex(),
        )
        .unwrap()
        .state_dict();
        let bytes = write(&compact, &dict);
        for name in ["batch", "height", "width"] {
            assert!(named(&bytes, name), "{name}");
        }
    }

    /// A product whose weight is not 2-D is an error, not a reshaped guess.
    #[test]
    fn a_fully_connected_weight_must_be_2d() {
        let nodes = [node("MatMul", &["f", "w"], &["z"])];
        let mut w = weights(&[("w", vec![4, 3, 2])]);
        let err = number(&nodes, &mut w).unwrap_err();
        assert!(err.contains("[4, 3, 2]") && err.contains("2-D"), "{err}");
    }
}
