"""The paper's benchmark problems: data, network spec, loss and training configuration for each."""

from .spiral import SpiralConfig as SpiralConfig
from .spiral import spiral_data as spiral_data
from .spiral import spiral_field as spiral_field
from ._mnist_models import mnist_model as mnist_model
