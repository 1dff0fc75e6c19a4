"""Evaluation: in-house classifier scores and Frechet distances."""

__all__: list[str] = []
