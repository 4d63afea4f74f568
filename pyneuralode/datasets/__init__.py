"""Data sets of the paper's experiments, numpy only: MNIST (from the package index), 2-D toy densities, the
augmented-ODE toy problems and the latent-ODE spirals."""

from ._anode import anode_a1 as anode_a1
from ._anode import anode_a2 as anode_a2
from ._augment import random_crop as random_crop
from ._spirals import latent_spirals as latent_spirals
from ._spirals import subsample as subsample
from ._batching import batches as batches
from ._batching import check_images_labels as check_images_labels
from ._mnist import MNIST_SHA256 as MNIST_SHA256
from ._mnist import MNIST_SPLIT_SIZES as MNIST_SPLIT_SIZES
from ._mnist import MNIST_SPLITS as MNIST_SPLITS
from ._mnist import MNIST_WHEEL as MNIST_WHEEL
from ._mnist import MNISTSplit as MNISTSplit
from ._mnist import clear_memory_cache as clear_memory_cache
from ._mnist import default_cache_dir as default_cache_dir
from ._mnist import fetch_mnist as fetch_mnist
from ._mnist import mnist as mnist
from ._toy2d import TOY_2D_NAMES as TOY_2D_NAMES
from ._toy2d import toy_2d as toy_2d
