"""Training: recipes (typed configs), the loop, EMA, checkpoints, logging, export.

``sonodiff.train(config, run_dir)`` is the entry point (see :func:`sonodiff.training.loop.train`).
"""

__all__ = ["train", "load_config", "export_run"]


def __getattr__(name):  # lazy: importing sonodiff.training must not pull in the data stack
    if name == "train":
        from sonodiff.training.loop import train

        return train
    if name == "load_config":
        from sonodiff.training.config import load_config

        return load_config
    if name == "export_run":
        from sonodiff.training.export import export_run

        return export_run
    raise AttributeError(name)
