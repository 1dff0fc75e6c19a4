"""User-facing generation: pipelines over exported model directories."""

__all__: list[str] = []
