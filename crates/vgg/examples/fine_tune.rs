//! Fine-tune pretrained weights on a folder of images (one folder a class), with the library
//! alone: `cargo run --release -p vgg --example fine_tune -- WEIGHTS ARCH DATA OUT`, e.g.
//! `torchvision:vgg16 vgg16 flowers/ runs/flowers` (a weight file of any format, a run, a name).

use std::path::Path;
use std::rc::Rc;

use burn::tensor::Device;
use vgg::data::source::{DataSpec, Source, Validation};
use vgg::train::{Observer, Recipe, RunSpec, Single, Start, Trainer};
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
    // Train the head only; the run keeps the weights' network and preprocessing.
    let start = Start::FineTune {
        weights,
        freeze: Some("features".into()),
        lr_scale: 1.0,
    };
    let recipe = Recipe::paper(VggConfig::named(arch)?);
    let config = recipe.config(spec, &sets.train, &sets.val, &start, || {})?;
    let run = RunSpec {
        config,
        start,
        train: sets.train,
        val: sets.val,
        out: out.into(),
        force: false,
    };
    let device = Device::flex().autodiff();
    let mut trainer = Trainer::start(run, &device, Rc::new(Single))?;
    struct Print;
    impl Observer for Print {}
    trainer.run(&mut Print)?;
    println!(
        "best validation accuracy {:?}; the run is in {out}",
        trainer.state.best_val_accuracy
    );
    Ok(())
}
