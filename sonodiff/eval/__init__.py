"""Evaluation: `sonodiff evaluate` (distribution, text-agreement, speech, pitch and paired metrics with calibration
rows), the in-house classifier, and CLAP models (in-house and transformers)."""

from sonodiff.eval.clap import ClapConfig, clap_score, clap_scorer, load_clap, retrieval_recall
from sonodiff.eval.evaluate import METRICS, Report, evaluate, load_set

__all__ = ["ClapConfig", "METRICS", "Report", "clap_score", "clap_scorer", "evaluate", "load_clap", "load_set",
           "retrieval_recall"]
