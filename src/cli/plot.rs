//! `curves.png`: training and validation loss and top-1 error per epoch.

use std::path::Path;

use plotters::prelude::*;
use vgg::train::EpochRecord;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans, embedded: the plot draws the same text on any machine.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws the curves to `path` (written atomically, as every file of a run).
pub fn write(history: &[EpochRecord], path: &Path) -> anyhow::Result<()> {
    register_font();
    const SIZE: (u32, u32) = (1000, 420);
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let epochs = history.len().max(2) as f64;
        type Pick = fn(&EpochRecord) -> (f64, f64);
        let panels: [(&DrawingArea<_, _>, &str, Pick); 2] = [
            (&left, "loss", |r| (r.train_loss, r.val_loss)),
            (&right, "top-1 error", |r| {
                (r.train_top1_err, r.val_top1_err)
            }),
        ];
        for (area, title, pick) in panels {
            let max = history
                .iter()
                .map(|r| pick(r).0.max(pick(r).1))
                .fold(0.0f64, f64::max)
                .max(1e-3)
                * 1.05;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(52)
                .build_cartesian_2d(1.0..epochs, 0.0..max)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .label_style(("sans-serif", 14))
                .draw()?;
            for (label, color, which) in [("train", BLUE, 0), ("validation", RED, 1)] {
                let points: Vec<(f64, f64)> = history
                    .iter()
                    .map(|r| {
                        (
                            r.epoch as f64,
                            if which == 0 { pick(r).0 } else { pick(r).1 },
                        )
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
    }
    let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, pixels).expect("a whole RGB buffer");
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png)?;
    vgg::fsio::write_atomic(path, png.get_ref())?;
    Ok(())
}
