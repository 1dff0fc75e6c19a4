"""User-facing generation: pipelines over exported model directories."""

from sonodiff.pipelines.pipeline import Generation, Pipeline

__all__ = ["Pipeline", "Generation"]
