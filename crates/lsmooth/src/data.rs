//! Datasets for `lsmooth train`: MNIST-format directories (IDX files, plain or gzipped, read by
//! [`crate::io::idx`]), the embedded MNIST subset and UCI digits, seeded splits and label noise.

use std::path::{Path, PathBuf};

pub use crate::io::idx::{parse_idx, read_idx, Idx, IdxError};
use crate::io::show_path;

use label_smoothing::rng::SplitMix64;

static MNIST_IMAGES: &[u8] = include_bytes!("../data/mnist10k-images-idx3-ubyte.gz");
static MNIST_LABELS: &[u8] = include_bytes!("../data/mnist10k-labels-idx1-ubyte.gz");
static DIGITS_IMAGES: &[u8] = include_bytes!("../data/digits-images-idx3-ubyte.gz");
static DIGITS_LABELS: &[u8] = include_bytes!("../data/digits-labels-idx1-ubyte.gz");

/// A data file that cannot be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An IDX file cannot be read or is malformed.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// The content is not what the dataset needs.
    #[error("{}: at byte {offset}: {message}", show_path(path))]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset (in the decompressed stream for `.gz` files) where the problem is.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A directory without the expected files, or files that disagree with each other.
    #[error("{}: {message}", show_path(path))]
    Dataset {
        /// The directory or file.
        path: PathBuf,
        /// What is missing or inconsistent.
        message: String,
    },
}

fn format_error(path: &Path, offset: u64, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        offset,
        message: message.into(),
    }
}

/// Images with their labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// `[n, rows * cols]` pixels scaled to `[0, 1]`.
    pub images: Vec<f32>,
    /// `[n]` class labels.
    pub labels: Vec<u32>,
}

impl Split {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn select(&self, indices: &[usize], pixels: usize) -> Split {
        let mut images = Vec::with_capacity(indices.len() * pixels);
        for &i in indices {
            images.extend_from_slice(&self.images[i * pixels..(i + 1) * pixels]);
        }
        Split {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// A dataset split three ways.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// A name for reports (`mnist-embedded`, `digits`, or the directory).
    pub name: String,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// The number of classes (labels are `0..classes`).
    pub classes: usize,
    /// Training examples (labels possibly noisy, see [`Dataset::add_label_noise`]).
    pub train: Split,
    /// Held out for temperature scaling.
    pub validation: Split,
    /// Held out for the reported metrics.
    pub test: Split,
}

/// Which data to train on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The embedded 10,000 MNIST digits: train 7,000 / validation 1,000 / test 2,000.
    EmbeddedMnist,
    /// The embedded 1,797 UCI 8x8 digits: 70% / 10% / 20%.
    Digits,
    /// A directory of MNIST-format files (MNIST, Fashion-MNIST): `train-*` split 90% / 10% into train and
    /// validation, `t10k-*` is the test set.
    Dir(PathBuf),
}

fn images_and_labels(
    images_path: &Path,
    images: Idx,
    labels_path: &Path,
    labels: Idx,
) -> Result<(usize, usize, Split), DataError> {
    let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(DataError::Dataset {
            path: labels_path.to_path_buf(),
            message: format!(
                "{} labels for the {n} images of {}",
                labels.dims[0],
                images_path.display()
            ),
        });
    }
    if let Some((i, &y)) = labels.data.iter().enumerate().find(|&(_, &y)| y > 9) {
        // Labels start after the 8-byte header.
        return Err(format_error(
            labels_path,
            8 + i as u64,
            format!("label {y} of image {i} is not a class 0..9"),
        ));
    }
    let max = images.data.iter().copied().max().unwrap_or(0).max(1) as f32;
    Ok((
        rows,
        cols,
        Split {
            images: images.data.iter().map(|&p| p as f32 / max).collect(),
            labels: labels.data.iter().map(|&y| y as u32).collect(),
        },
    ))
}

/// Splits `all` with a seeded shuffle into train / validation / test of the given sizes.
fn split3(all: &Split, pixels: usize, sizes: [usize; 3], seed: u64) -> [Split; 3] {
    let mut order: Vec<usize> = (0..all.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let (a, rest) = order.split_at(sizes[0]);
    let (b, c) = rest.split_at(sizes[1]);
    [
        all.select(a, pixels),
        all.select(b, pixels),
        all.select(&c[..sizes[2]], pixels),
    ]
}

/// The seed of the data split: fixed, so every run (whatever its training seed) sees the same split.
const SPLIT_SEED: u64 = 0x0d15_ea5e;

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::Dataset {
        path: dir.to_path_buf(),
        message: format!("no {stem} or {stem}.gz here (expected the MNIST file layout)"),
    })
}

/// The images and labels `(img, lab)` (file stems, plain or gzipped) in `dir` for `split`: at least `min`
/// images of at least 1x1 pixels.
fn load_split(
    dir: &Path,
    (img, lab): (&str, &str),
    split: &str,
    min: usize,
) -> Result<(usize, usize, Split), DataError> {
    let (ip, lp) = (find(dir, img)?, find(dir, lab)?);
    let (rows, cols, s) = images_and_labels(&ip, read_idx(&ip, 3)?, &lp, read_idx(&lp, 1)?)?;
    if s.len() < min || rows * cols == 0 {
        return Err(DataError::Dataset {
            path: ip,
            message: format!(
                "{} images of {rows}x{cols} pixels for the {split}; at least {min} of at least 1x1 needed",
                s.len()
            ),
        });
    }
    Ok((rows, cols, s))
}

impl Dataset {
    /// Loads and splits a dataset. The split is fixed (it does not depend on the training seed).
    pub fn load(source: &Source) -> Result<Dataset, DataError> {
        match source {
            Source::EmbeddedMnist => Self::embedded(
                "mnist-embedded",
                ("mnist10k-images-idx3-ubyte.gz", MNIST_IMAGES),
                ("mnist10k-labels-idx1-ubyte.gz", MNIST_LABELS),
            ),
            Source::Digits => Self::embedded(
                "digits",
                ("digits-images-idx3-ubyte.gz", DIGITS_IMAGES),
                ("digits-labels-idx1-ubyte.gz", DIGITS_LABELS),
            ),
            Source::Dir(dir) => Self::from_dir(dir),
        }
    }

    /// A data set of the ten digit classes from its splits.
    fn of_digits(name: String, (rows, cols): (usize, usize), [train, validation, test]: [Split; 3]) -> Dataset {
        Dataset {
            name,
            rows,
            cols,
            classes: 10,
            train,
            validation,
            test,
        }
    }

    /// An embedded data set from its (file name, bytes) of images and labels, split 70/10/20 (7000, 1000 and
    /// 2000 of MNIST's 10000).
    fn embedded(name: &str, (ip, img): (&str, &[u8]), (lp, lab): (&str, &[u8])) -> Result<Dataset, DataError> {
        let (ip, lp) = (Path::new(ip), Path::new(lp));
        let (rows, cols, all) = images_and_labels(ip, parse_idx(ip, img, 3)?, lp, parse_idx(lp, lab, 1)?)?;
        let n = all.len();
        let sizes = if n == 10_000 {
            [7_000, 1_000, 2_000]
        } else {
            let train = n * 7 / 10;
            let val = n / 10;
            [train, val, n - train - val]
        };
        let [train, validation, test] = split3(&all, rows * cols, sizes, SPLIT_SEED);
        Ok(Dataset::of_digits(name.into(), (rows, cols), [train, validation, test]))
    }

    /// A data set in MNIST's file layout in `dir`: training and validation come from the training files (a
    /// tenth held out), the test split from the t10k files. Each split must be usable before anything trains.
    fn from_dir(dir: &Path) -> Result<Dataset, DataError> {
        if !dir.is_dir() {
            return Err(DataError::Dataset {
                path: dir.to_path_buf(),
                message: "not a directory".into(),
            });
        }
        let (rows, cols, train_all) = load_split(
            dir,
            ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            "training and validation splits (a tenth is held out for validation)",
            10,
        )?;
        let (trows, tcols, test) = load_split(
            dir,
            ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
            "test split",
            1,
        )?;
        if (rows, cols) != (trows, tcols) {
            return Err(DataError::Dataset {
                path: dir.to_path_buf(),
                message: format!("training images are {rows}x{cols}, test images {trows}x{tcols}"),
            });
        }
        let n = train_all.len();
        let val = n / 10;
        let [train, validation, _] = split3(&train_all, rows * cols, [n - val, val, 0], SPLIT_SEED);
        Ok(Dataset::of_digits(
            dir.display().to_string(),
            (rows, cols),
            [train, validation, test],
        ))
    }

    /// Keeps the first `n` training examples (the split is already shuffled), `n` at most the training size.
    pub fn truncate_train(&mut self, n: usize) {
        let pixels = self.rows * self.cols;
        let n = n.min(self.train.len());
        self.train.labels.truncate(n);
        self.train.images.truncate(n * pixels);
    }

    /// Flips a seeded fraction `p` of the training labels, each to a different class drawn uniformly; returns
    /// how many were flipped (`round(p * n)`).
    pub fn add_label_noise(&mut self, p: f64, seed: u64) -> usize {
        let n = self.train.len();
        let flips = ((p * n as f64).round() as usize).min(n);
        let mut rng = SplitMix64::new(seed ^ 0x6e6f_6973_6521);
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let k = self.classes as u64;
        for &i in &order[..flips] {
            let y = self.train.labels[i] as u64;
            let other = (y + 1 + rng.below(k - 1)) % k;
            self.train.labels[i] = other as u32;
        }
        flips
    }
}
