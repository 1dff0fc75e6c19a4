"""sonodiff: diffusion models for audio and other modalities.

`import sonodiff` is light: it pulls in torch and the diffusion core only. Heavy libraries
(transformers, librosa, matplotlib, tensorboard) are imported inside the functions that need them.
"""

from sonodiff import core
from sonodiff.core import SAMPLERS, SCHEDULES, Cond, Preconditioned, sample

__version__ = "0.1.0"

__all__ = ["core", "Cond", "Preconditioned", "sample", "SAMPLERS", "SCHEDULES", "train", "load_config", "__version__"]


def train(config, run_dir, **kwargs):
    """Train (or resume) a model: ``sonodiff.train(sonodiff.load_config("recipes/tiny_debug.toml"), "runs/x")``.

    See :func:`sonodiff.training.loop.train`.
    """
    from sonodiff.training.loop import train as _train

    return _train(config, run_dir, **kwargs)


def load_config(source, overrides=()):
    """A training :class:`~sonodiff.training.config.Config` from a TOML recipe path or dict, with overrides."""
    from sonodiff.training.config import load_config as _load

    return _load(source, overrides)
