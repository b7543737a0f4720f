//! Median wall time of one forward pass: `cargo run --release -p vgg --example forward_time --
//! vgg16 1 [WEIGHTS]` (random weights, or a weight file: PyTorch's layout loads as views).

use std::time::Instant;

use burn::tensor::{Device, Tensor};
use vgg::{InitScheme, Vgg, VggConfig};

fn main() -> Result<(), vgg::VggError> {
    let args: Vec<String> = std::env::args().collect();
    let arch = args.get(1).map(String::as_str).unwrap_or("vgg16");
    let batch: usize = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(1);
    let device = Device::flex();
    let config = VggConfig::named(arch)?;
    let model = match args.get(3) {
        Some(path) => Vgg::load(&config, std::path::Path::new(path), &device)?,
        None => Vgg::new(&config, InitScheme::Kaiming, &device)?,
    };
    let x = Tensor::<4>::random(
        [batch, 3, 224, 224],
        burn::tensor::Distribution::Default,
        &device,
    );
    let mut times = Vec::new();
    for i in 0..7 {
        let start = Instant::now();
        let y = model.forward(x.clone());
        let _ = y.into_data();
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{arch} batch {batch} at 224x224: median {:.1} ms per forward, {:.2} images/s",
        median * 1e3,
        batch as f64 / median
    );
    Ok(())
}
