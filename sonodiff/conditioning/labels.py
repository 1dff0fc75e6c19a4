"""Class labels: an embedding table with a learned null class.

``tokenize(labels)`` takes a list of ints (``0 .. num_classes - 1``), strings (from the fixed ``labels`` list of
the config) or ``None`` (no label: the *null class*, index ``num_classes``, whose row of the table is learned
like the others) and gives ``{"labels": [B] int64}``. ``forward`` gives ``Cond(pooled [B, dim])``: the class
embedding of Dhariwal & Nichol ("Diffusion Models Beat GANs", 2021) and of classifier-free guidance
(Ho & Salimans 2022), added to the noise embedding by the network.

The null class is an input ("this example has no label"); classifier-free dropout (``drop=True``) instead marks
rows ``Cond.null`` so the *network's* learned null embedding is used, as for every other conditioner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sonodiff.conditioning.base import Conditioner, ConditionerConfig
from sonodiff.core.cond import Cond

__all__ = ["ClassLabelConditioner", "ClassLabelConfig", "LabelTokenizer"]


@dataclass(frozen=True)
class ClassLabelConfig(ConditionerConfig):
    """``num_classes`` real classes (the table has ``num_classes + 1`` rows: the last is the null class);
    ``labels``: optional names, ``labels[i]`` is class ``i``; ``dim``: embedding width."""

    type = "class_label"
    num_classes: int = 10
    labels: tuple[str, ...] | None = None
    dim: int = 256
    trainable: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got num_classes={self.num_classes}, dim={self.dim}")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))  # lists from JSON/TOML -> immutable
            if not all(isinstance(x, str) for x in self.labels):
                raise ValueError(f"labels must be strings, got {list(self.labels)!r}")
            if len(self.labels) != self.num_classes:
                raise ValueError(f"labels has {len(self.labels)} names but num_classes={self.num_classes}")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels must be distinct, got {list(self.labels)}")


class LabelTokenizer:
    """Picklable ``list[int | str | None] -> {"labels": [B] int64}`` (``None`` -> the null class)."""

    def __init__(self, num_classes: int, labels: tuple[str, ...] | None) -> None:
        self.num_classes = num_classes
        self.labels = labels
        self.index = {name: i for i, name in enumerate(labels)} if labels is not None else None

    def one(self, x) -> int:
        if x is None:
            return self.num_classes
        if isinstance(x, str):
            if self.index is None:
                raise ValueError(f"got the string label {x!r} but this conditioner has no label list; pass ints "
                                 f"in [0, {self.num_classes - 1}] or set labels=[...] in the config")
            if x not in self.index:
                raise ValueError(f"unknown label {x!r}; valid labels: {list(self.labels)} (or None for no label)")
            return self.index[x]
        if isinstance(x, bool) or not isinstance(x, (int, torch.Tensor)) or (isinstance(x, Tensor) and x.numel() != 1):
            raise ValueError(f"a class label must be an int, a str or None, got {x!r} ({type(x).__name__})")
        i = int(x)
        if not 0 <= i < self.num_classes:
            raise ValueError(f"class index {i} out of range: valid indices are 0..{self.num_classes - 1} "
                             "(or None for no label)")
        return i

    def __call__(self, inputs: Sequence) -> dict[str, Tensor]:
        if isinstance(inputs, (str, int)) or len(inputs) == 0:
            raise ValueError(f"tokenize a non-empty list of labels, got {inputs!r}")
        return {"labels": torch.tensor([self.one(x) for x in inputs], dtype=torch.long)}


class ClassLabelConditioner(Conditioner):
    """``{"labels": [B] int64}`` -> ``Cond(pooled [B, dim])``."""

    name = "class_label"
    config_cls = ClassLabelConfig

    def __init__(self, config: ClassLabelConfig) -> None:
        super().__init__(config)
        self.table = nn.Embedding(config.num_classes + 1, config.dim)
        self._apply_freezing()

    @property
    def pooled_dim(self) -> int:
        return self.config.dim

    @property
    def null_index(self) -> int:
        return self.config.num_classes

    def get_tokenizer(self) -> LabelTokenizer:
        return LabelTokenizer(self.config.num_classes, self.config.labels)

    def encode(self, batch: Mapping[str, Tensor]) -> Cond:
        labels = batch["labels"].to(self.device)
        if labels.ndim != 1 or labels.dtype != torch.long:
            raise ValueError(f"labels must be a [B] int64 tensor, got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.null_index):
            raise ValueError(f"labels must lie in 0..{self.null_index} (the last is the null class), "
                             f"got {labels.tolist()}")
        return Cond(pooled=self.table(labels))
