"""Small shared utilities (typed configs, atomic file writes). Torch-free where possible."""

__all__: list[str] = []
