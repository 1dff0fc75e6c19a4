"""Data: dataset entries and layouts, datasets, the incremental feature cache, bad-data checks, inspect.

The built-in corpus lives in ``sonodiff.data.corpus`` and is *not* imported here (import it directly).
"""

from sonodiff.data.cache import BadDataError, PrepareReport, feature_dir, prepare
from sonodiff.data.checks import REASONS, BadAudio, CheckConfig, read_checked
from sonodiff.data.datasets import CachedDataset, FolderDataset, crop_or_pad, find_feature_dirs, pad_collate
from sonodiff.data.inspect import format_inspection, inspect_dataset
from sonodiff.data.items import Item, Problem, Scan, hash_split, scan_folder
from sonodiff.data.layouts import LAYOUTS, scan

__all__ = [
    "LAYOUTS",
    "REASONS",
    "BadAudio",
    "BadDataError",
    "CachedDataset",
    "CheckConfig",
    "FolderDataset",
    "Item",
    "PrepareReport",
    "Problem",
    "Scan",
    "crop_or_pad",
    "feature_dir",
    "find_feature_dirs",
    "format_inspection",
    "hash_split",
    "inspect_dataset",
    "pad_collate",
    "prepare",
    "read_checked",
    "scan",
    "scan_folder",
]
