"""Training tasks of the engine (:mod:`sonodiff.training.task`): ``TASKS`` maps a recipe's ``task`` to its class.

Importing this package imports the task classes (and through them torch and sonodiff's data modules); the
vocoder's networks and losses are imported when a vocoder run sets up.
"""

from sonodiff.training.tasks.autoencoder import AutoencoderTask
from sonodiff.training.tasks.contrastive import ContrastiveTask
from sonodiff.training.tasks.diffusion import DiffusionTask
from sonodiff.training.tasks.vocoder import VocoderTask

__all__ = ["TASKS", "AutoencoderTask", "ContrastiveTask", "DiffusionTask", "VocoderTask"]

TASKS = {"diffusion": DiffusionTask, "vocoder": VocoderTask, "contrastive": ContrastiveTask,
         "autoencoder": AutoencoderTask}
