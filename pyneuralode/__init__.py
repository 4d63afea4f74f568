"""pyneuralode: define a neural ODE once, run it on JAX/Diffrax, PyTorch/torchdiffeq or Julia/SciML, and see
that the backends agree. Importing this package imports numpy only; backends load on first use."""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._adjoints import AbstractAdjoint as AbstractAdjoint
from ._adjoints import BacksolveAdjoint as BacksolveAdjoint
from ._adjoints import CheckpointAdjoint as CheckpointAdjoint
from ._adjoints import DirectAdjoint as DirectAdjoint
from ._adjoints import GaussAdjoint as GaussAdjoint
from ._adjoints import InterpolatingAdjoint as InterpolatingAdjoint
from ._adjoints import QuadratureAdjoint as QuadratureAdjoint
from ._compare import Comparison as Comparison
from ._compare import compare as compare
from ._cnf import CNF as CNF
from ._concat_squash import ConcatSquash as ConcatSquash
from ._concat_squash import ConcatSquashMLP as ConcatSquashMLP
from ._control import StepControl as StepControl
from ._dynamics import Dynamics as Dynamics
from ._dynamics import dynamics as dynamics
from ._errors import BackendUnavailable as BackendUnavailable
from ._errors import DataError as DataError
from ._errors import MaxStepsError as MaxStepsError
from ._errors import NonFiniteError as NonFiniteError
from ._errors import NotSupportedError as NotSupportedError
from ._errors import PyNeuralODEError as PyNeuralODEError
from ._errors import RunDirectoryError as RunDirectoryError
from ._errors import SolveError as SolveError
from ._errors import SpecError as SpecError
from ._flow_results import Density as Density
from ._flow_results import FlowValueAndGrad as FlowValueAndGrad
from ._flow_trainer import FlowStepInfo as FlowStepInfo
from ._flow_trainer import FlowTrainer as FlowTrainer
from ._layers import ACTIVATIONS as ACTIVATIONS
from ._layers import AbstractLayer as AbstractLayer
from ._layers import Activation as Activation
from ._layers import Linear as Linear
from ._layers import MLP as MLP
from ._layers import Sequential as Sequential
from ._conv_layers import ConcatConv2d as ConcatConv2d
from ._conv_layers import Conv2d as Conv2d
from ._conv_layers import Flatten as Flatten
from ._conv_layers import GlobalAvgPool2d as GlobalAvgPool2d
from ._conv_layers import GroupNorm as GroupNorm
from ._conv_layers import ReLU as ReLU
from ._augment import Augment as Augment
from ._blocks import ODEBlock as ODEBlock
from ._blocks import Residual as Residual
from ._classify import CrossEntropy as CrossEntropy
from ._network import Network as Network
from ._network import NetworkValueAndGrad as NetworkValueAndGrad
from ._losses import L1 as L1
from ._losses import MSE as MSE
from ._losses import AbstractLoss as AbstractLoss
from ._model import ODEModel as ODEModel
from ._nll import NLL as NLL
from ._optim import SGD as SGD
from ._optim import AbstractOptimizer as AbstractOptimizer
from ._optim import Adam as Adam
from ._optim import RMSprop as RMSprop
from ._params import init_params as init_params
from ._params import num_params as num_params
from ._params import param_layout as param_layout
from ._params import unflatten as unflatten
from ._ensemble import EnsembleSolution as EnsembleSolution
from ._solution import Solution as Solution
from ._solution import Stats as Stats
from ._solution import ValueAndGrad as ValueAndGrad
from ._solvers import FBDF as FBDF
from ._solvers import QNDF as QNDF
from ._solvers import RK4 as RK4
from ._solvers import AbstractSolver as AbstractSolver
from ._solvers import Bosh3 as Bosh3
from ._solvers import Dopri5 as Dopri5
from ._solvers import Dopri8 as Dopri8
from ._solvers import Euler as Euler
from ._solvers import Heun as Heun
from ._solvers import ImplicitEuler as ImplicitEuler
from ._solvers import KenCarp3 as KenCarp3
from ._solvers import KenCarp4 as KenCarp4
from ._solvers import KenCarp5 as KenCarp5
from ._solvers import Kvaerno3 as Kvaerno3
from ._solvers import Kvaerno4 as Kvaerno4
from ._solvers import Kvaerno5 as Kvaerno5
from ._solvers import Midpoint as Midpoint
from ._solvers import Rodas5P as Rodas5P
from ._solvers import Tsit5 as Tsit5
from ._solvers import Vern7 as Vern7
from .backends import backend_info as backend_info
from .train import Trainer as Trainer
from . import datasets as datasets
from . import problems as problems

try:
    __version__ = _version("pyneuralode")
except _PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
