//! MNIST-style data sets (MNIST, Fashion-MNIST): the four standard IDX files of a folder.

use std::path::{Path, PathBuf};

use crate::data::idx::{read_idx_images, read_idx_labels, ImageSet};
use crate::error::{Error, Result};

/// The class names of Fashion-MNIST, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The folder of the Fashion-MNIST slice shipped with adgraph (10,000 training
/// and 2,000 test images; see its `README.md`), for examples run without a
/// `--data` folder.
///
/// It is the crate's source folder at build time (`CARGO_MANIFEST_DIR`) joined
/// with `data/fashion-mnist`.
///
/// ```
/// assert!(adgraph::data::default_data_dir().ends_with("data/fashion-mnist"));
/// ```
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("fashion-mnist")
}

/// An MNIST-style data set: training and test images (`[n, 28, 28]` in `[0, 1]`
/// for MNIST) with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// The training images.
    pub train_images: ImageSet,
    /// One label per training image.
    pub train_labels: Vec<u8>,
    /// The test images.
    pub test_images: ImageSet,
    /// One label per test image.
    pub test_labels: Vec<u8>,
}

/// The standard file names, without `.gz`.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The file of `dir` with the standard name `stem`, with or without `.gz`;
/// also accepts the `train-images.idx3-ubyte` spelling some copies use.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let candidates = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Io {
            path: dir.join(stem).display().to_string(),
            message: format!(
                "not found (looked for {} in {})",
                candidates.join(", "),
                dir.display()
            ),
        })
}

/// Reads an image file and its label file, checking their counts agree.
fn load_pair(dir: &Path, images: &str, labels: &str) -> Result<(ImageSet, Vec<u8>)> {
    let images_path = find_file(dir, images)?;
    let labels_path = find_file(dir, labels)?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.len() != labels.len() {
        return Err(Error::Data {
            path: labels_path.display().to_string(),
            message: format!(
                "{} labels, but {} has {} images",
                labels.len(),
                images_path.display(),
                images.len()
            ),
        });
    }
    Ok((images, labels))
}

impl Mnist {
    /// Loads the four standard files from `dir`:
    /// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    /// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each with or
    /// without `.gz` (whether a file is gzipped is read from its content).
    /// Works for MNIST and Fashion-MNIST alike.
    ///
    /// ```
    /// let data = adgraph::data::Mnist::load(adgraph::data::default_data_dir()).unwrap();
    /// assert_eq!(data.train_images.len(), data.train_labels.len());
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` is not a folder, a file is missing or unreadable;
    /// [`Error::Data`] when a file is malformed (see
    /// [`read_idx`](crate::data::read_idx)), a label file's count differs from its
    /// image file's, or the test images' size differs from the training images'.
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Io {
                path: dir.display().to_string(),
                message: "not a folder (expected one holding the MNIST-style IDX files)".into(),
            });
        }
        let (train_images, train_labels) = load_pair(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
        let (test_images, test_labels) = load_pair(dir, TEST_IMAGES, TEST_LABELS)?;
        if (train_images.rows(), train_images.cols()) != (test_images.rows(), test_images.cols()) {
            return Err(Error::Data {
                path: dir.display().to_string(),
                message: format!(
                    "training images are {}x{} but test images are {}x{}",
                    train_images.rows(),
                    train_images.cols(),
                    test_images.rows(),
                    test_images.cols()
                ),
            });
        }
        Ok(Mnist {
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }

    /// Loads the Fashion-MNIST slice shipped with adgraph, from [`default_data_dir`].
    ///
    /// # Errors
    /// As [`Mnist::load`] (e.g. when the crate's source folder has moved since it was built).
    pub fn embedded() -> Result<Mnist> {
        Mnist::load(default_data_dir())
    }
}
