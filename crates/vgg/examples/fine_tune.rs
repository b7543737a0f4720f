//! Fine-tune pretrained weights on a folder of images (one folder a class), with the library
//! alone: `cargo run --release -p vgg --example fine_tune -- WEIGHTS ARCH DATA OUT`, e.g.
//! `torchvision:vgg16 vgg16 flowers/ runs/flowers` (a weight file of any format, a run, a name).

use std::path::Path;

use burn::tensor::Device;
use vgg::data::source::{DataSpec, Source, Validation};
use vgg::train::recipe::FineTune;
use vgg::train::{Observer, Recipe, Single, Trainer};
use vgg::{VggConfig, Weights};

fn main() -> Result<(), vgg::VggError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, arch, data, out] = &args[..] else {
        panic!("usage: fine_tune WEIGHTS ARCH DATA OUT");
    };
    // The weights with the preprocessing they were trained with, nothing on a device yet.
    let weights = Weights::open(
        Path::new(weights),
        || VggConfig::named(arch),
        &Default::default(),
        &mut |_, _| {},
    )?;
    let spec = DataSpec {
        train: Source::path(Path::new(data)),
        validation: Validation::HeldOut { fraction: 0.1 },
    };
    let sets = spec.open(42)?;
    let mut recipe = Recipe::paper(weights.config.clone());
    recipe.fine_tune = Some(FineTune {
        source: weights.origin.given.clone(),
        no_top: weights.trunk,
        net: weights.config.clone(),
        normalize: weights.preset.normalize.clone(),
        freeze: Some("features".into()), // train the head only
        lr_scale: 1.0,
    });
    let config = recipe.config(spec, &sets.train, &sets.val, || {})?;
    let device = Device::flex().autodiff();
    let comm = std::rc::Rc::new(Single);
    let mut trainer = Trainer::fine_tune(
        config,
        &weights.dict,
        sets.train,
        sets.val,
        Path::new(out),
        false,
        &device,
        comm,
    )?;
    struct Print;
    impl Observer for Print {}
    trainer.run(&mut Print)?;
    println!(
        "best validation accuracy {:?}; the run is in {out}",
        trainer.state.best_val_accuracy
    );
    Ok(())
}
