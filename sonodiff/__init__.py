"""sonodiff: diffusion models for audio and other modalities.

`import sonodiff` is light: it pulls in torch and the diffusion core only. Heavy libraries
(transformers, librosa, matplotlib, tensorboard) are imported inside the functions that need them.
"""

from sonodiff import core
from sonodiff.core import Cond, Preconditioned, sample, SAMPLERS, SCHEDULES

__version__ = "0.1.0"

__all__ = ["core", "Cond", "Preconditioned", "sample", "SAMPLERS", "SCHEDULES", "__version__"]
