//! Trains a small MLP on 10,000 MNIST digits with burn (default backend, autodiff) and this crate's loss.
//!
//! ```bash
//! cargo run --release -p label-smoothing-burn --example train_mnist            # eps 0.1, spread others, 3 epochs
//! cargo run --release -p label-smoothing-burn --example train_mnist -- 0.0 5   # no smoothing, 5 epochs
//! ```
//! The data: the 10,000 real MNIST digits that `lsmooth` embeds (`crates/lsmooth/data/` in the repository, see
//! its README), the first 8,000 for training and the last 2,000 for testing. They are read at run time, from
//! that folder or from `--data DIR` (this crate's package does not ship them).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor};
use label_smoothing_burn::LabelSmoothingCrossEntropyConfig;
use std::io::Read;

/// Where the data sits in the repository, next to this crate.
const REPOSITORY_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lsmooth/data");

/// Reads one of the gzipped IDX files from `dir`, with the file named in the error.
fn read_data(dir: &str, name: &str) -> Result<Vec<u8>, String> {
    let path = std::path::Path::new(dir).join(name);
    std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (the example reads lsmooth's MNIST files; give their folder with --data DIR)",
            path.display()
        )
    })
}

/// Decompresses and parses an IDX file: returns its dimensions and bytes.
fn idx(gz: &[u8], magic: u32) -> Result<(Vec<usize>, Vec<u8>), String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .map_err(|e| format!("gzip: {e}"))?;
    if raw.len() < 4 || u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) != magic {
        return Err(format!("bad IDX magic, expected {magic:#010x}"));
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if raw.len() < header {
        return Err("file ends inside the IDX header".into());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let len: usize = dims.iter().product();
    if raw.len() != header + len {
        return Err(format!("expected {} data bytes, found {}", len, raw.len() - header));
    }
    Ok((dims, raw[header..].to_vec()))
}

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(784, 128).init(device),
            out: LinearConfig::new(128, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(relu(self.hidden.forward(x)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `[EPS [EPOCHS]] [--composed] [--data DIR]`: `--composed` trains through the composition of burn operations
    // instead of the fused kernel, for comparing the two.
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let composed = args.iter().any(|a| a == "--composed");
    args.retain(|a| a != "--composed");
    let mut data = REPOSITORY_DATA.to_string();
    if let Some(at) = args.iter().position(|a| a == "--data") {
        data = args.get(at + 1).ok_or("--data needs a folder")?.clone();
        args.drain(at..at + 2);
    }
    let eps: f32 = args.first().map_or(Ok(0.1), |s| s.parse())?;
    let epochs: usize = args.get(1).map_or(Ok(3), |s| s.parse())?;

    let (idims, pixels) = idx(&read_data(&data, "mnist10k-images-idx3-ubyte.gz")?, 0x0803)?;
    let (ldims, labels) = idx(&read_data(&data, "mnist10k-labels-idx1-ubyte.gz")?, 0x0801)?;
    let n = idims[0];
    assert_eq!(ldims[0], n, "as many labels as images");
    let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let y: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let (n_train, d) = (8000, 784);

    let device = Device::default().autodiff();
    device.seed(0);
    let mut model = Mlp::new(&device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = LabelSmoothingCrossEntropyConfig::new()
        .with_smoothing(eps)
        .init(10, &device)?;
    println!(
        "MLP 784-128-10, Adam 1e-3, batch 128, label smoothing eps {eps} (spread others), {epochs} epochs, {}",
        if composed {
            "composed of burn operations"
        } else {
            "fused kernel"
        }
    );

    let mut order: Vec<usize> = (0..n_train).collect();
    let mut seed = 0x5eedu64;
    for epoch in 1..=epochs {
        // Fisher-Yates with a fixed-seed LCG: the same order for the same seed.
        for i in (1..order.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let mut total = 0.0;
        let mut batches = 0;
        for batch in order.chunks(128) {
            let bx: Vec<f32> = batch
                .iter()
                .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
                .collect();
            let by: Vec<i64> = batch.iter().map(|&i| y[i]).collect();
            let logits = model.forward(Tensor::<1>::from_floats(bx.as_slice(), &device).reshape([batch.len(), d]));
            let labels = Tensor::<1, Int>::from_ints(by.as_slice(), &device);
            let loss = if composed {
                loss_fn.forward_composed(logits, labels)?
            } else {
                loss_fn.forward(logits, labels)?
            };
            total += loss.clone().into_scalar::<f32>();
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        let test_x = Tensor::<1>::from_floats(&x[n_train * d..n * d], &device).reshape([n - n_train, d]);
        let pred: Vec<i64> = model.forward(test_x).argmax(1).to_data().iter::<i64>().collect();
        let correct = pred.iter().zip(&y[n_train..]).filter(|(p, t)| p == t).count();
        println!(
            "epoch {epoch}: train loss {:.4}, test accuracy {:.2}%",
            total / batches as f32,
            100.0 * correct as f64 / (n - n_train) as f64
        );
    }
    Ok(())
}
