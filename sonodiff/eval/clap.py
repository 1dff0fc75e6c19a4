"""Contrastive text-audio models (CLAP): the in-house one trained here, and real CLAP from a local directory.

Both give the same interface (:class:`ClapLike`): ``embed_text(texts) -> [N, D]`` and ``embed_audio(audio,
sample_rate) -> [N, D]``, L2-normalised, so that a cosine is a dot product. They serve as the CLAP-score metric
(:func:`clap_score`), retrieval (:func:`retrieval_recall`), re-ranking and conditioning.

The in-house CLAP (:class:`ClapNet`, trained by ``task = "contrastive"``, Elizalde et al. 2023 / Wu et al. 2023
in miniature):

- audio tower: a small CNN on natural-log mels (the recipe's codec settings), normalised by training-split
  statistics kept as buffers, pooled over frequency (mean) and time (mean + max), projected to ``embed_dim``;
  fully convolutional, so it embeds clips of any length (training uses random crops);
- text tower: the bundled all-MiniLM-L6-v2 sentence encoder, frozen (mean-pooled, L2-normalised 384-d vectors,
  computed once per distinct caption), followed by a trained two-layer projection;
- symmetric InfoNCE with a learned temperature (``logit_scale`` = log(1 / T), clamped at ``log(max_logit_scale)``).
  Captions repeat in a templated corpus, so the targets of a row are spread over every example in the batch with
  the same caption instead of treating those as negatives.

A CLAP model directory (``sonodiff export`` of a contrastive run)::

    CLAP_DIR/
        config.json        {"format": "sonodiff-model", "kind": "clap", "clap": {ClapConfig fields},
                            "text_encoder": {"type": "sentence", "path": null}, "source": {...}}
        model.safetensors  the EMA weights of ClapNet
        MODEL_CARD.md

:func:`load_clap` takes such a directory, a shipped name (``sonodiff/models/<name>``), or a transformers
``ClapModel`` directory (``save_pretrained`` of model and processor).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from sonodiff.conditioning.inhouse_clap import ClapConfig, ClapNet, load_clap_net

__all__ = ["ClapConfig", "ClapNet", "InHouseClap", "TransformersClap", "load_clap", "save_clap_dir", "clap_score",
           "retrieval_recall", "contrastive_loss", "zero_shot_accuracy", "clap_scorer", "clap_feature_score",
           "clip_score", "clip_image_scorer",
           "check_codec_matches"]

FORMAT, FORMAT_VERSION = "sonodiff-model", 1  # CLAP model directories (save_clap_dir)


def contrastive_loss(audio_emb: Tensor, text_emb: Tensor, caption_ids: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE per example ``[B]`` and in-batch audio-to-text top-1 hits ``[B]``.

    Examples with equal ``caption_ids`` are positives of each other (targets spread evenly over them)."""
    logits = scale * audio_emb @ text_emb.t()  # [B(audio), B(text)]
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    a2t = -(target * logits.log_softmax(dim=1)).sum(dim=1)
    t2a = -(target * logits.t().log_softmax(dim=1)).sum(dim=1)
    hits = same.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]
    return 0.5 * (a2t + t2a), hits


# --- inference wrappers -------------------------------------------------------------------------------------

class ClapLike(Protocol):
    """What every CLAP gives: L2-normalised ``embed_text`` and ``embed_audio`` in one space."""

    sample_rate: int
    name: str

    def embed_text(self, texts: Sequence[str]) -> Tensor: ...

    def embed_audio(self, audio, sample_rate: int) -> Tensor: ...


def _audio_list(audio, sample_rate: int, target_rate: int) -> list[Tensor]:
    """A batch ``[B, T]`` / ``[B, 1, T]`` tensor or a list of 1-D arrays -> mono float32 tensors at ``target_rate``."""
    import torchaudio

    if isinstance(audio, (Tensor, np.ndarray)):
        a = torch.as_tensor(audio)
        if a.dim() == 3:
            if a.shape[1] != 1:
                raise ValueError(f"audio batch of shape {tuple(a.shape)}: expected mono [B, T] or [B, 1, T]")
            a = a[:, 0]
        if a.dim() == 1:
            a = a[None]
        if a.dim() != 2:
            raise ValueError(f"audio of shape {tuple(a.shape)}: expected [B, T], [B, 1, T] or a list of 1-D clips")
        clips = list(a)
    else:
        clips = [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in audio]
        for i, c in enumerate(clips):
            if c.dim() != 1:
                raise ValueError(f"audio clip {i} has shape {tuple(c.shape)}: expected a 1-D mono clip")
    out = []
    for c in clips:
        c = c.float()
        if sample_rate != target_rate:
            c = torchaudio.functional.resample(c, sample_rate, target_rate)
        out.append(c)
    return out


class InHouseClap:
    """A trained :class:`ClapNet` with its frozen sentence encoder, for inference (CPU by default)."""

    def __init__(self, net: ClapNet, text_encoder=None, name: str = "in-house CLAP", device="cpu") -> None:
        from sonodiff.conditioning.text import SentenceConfig, SentenceEncoder

        self.net = net.eval().to(device)
        self.device = torch.device(device)
        self.encoder = text_encoder if text_encoder is not None else SentenceEncoder(SentenceConfig(normalize=True))
        self.sample_rate = net.config.sample_rate
        self.name = name
        self._text_cache: dict[str, Tensor] = {}

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> Tensor:
        """The frozen sentence encoder's vectors ``[N, 384]`` (cached per distinct text)."""
        texts = [str(t) for t in texts]
        todo = sorted({t for t in texts if t not in self._text_cache})
        for i in range(0, len(todo), 64):
            chunk = todo[i:i + 64]
            cond = self.encoder.encode(self.encoder.get_tokenizer()(chunk))
            for t, v in zip(chunk, cond.pooled.float()):
                self._text_cache[t] = v
        if not texts:
            return torch.zeros(0, self.net.config.text_dim)
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of texts, not one string")
        return self.net.embed_text_features(self.text_features(texts).to(self.device)).cpu()

    @torch.no_grad()
    def embed_audio(self, audio, sample_rate: int, batch_size: int = 32) -> Tensor:
        """Each clip is embedded whole and alone: clips are batched only with clips of the same length (no padding),
        so a clip's embedding does not depend on the others or on ``batch_size``."""
        clips = _audio_list(audio, sample_rate, self.sample_rate)
        n_fft = self.net.config.n_fft
        clips = [c if len(c) > n_fft else nn.functional.pad(c, (0, n_fft + 1 - len(c))) for c in clips]
        out = torch.zeros(len(clips), self.net.config.embed_dim)
        by_len: dict[int, list[int]] = {}
        for i, c in enumerate(clips):
            by_len.setdefault(len(c), []).append(i)
        for idx in by_len.values():
            for j in range(0, len(idx), batch_size):
                part = idx[j:j + batch_size]
                a = torch.stack([clips[i] for i in part]).to(self.device)
                out[part] = self.net.embed_mel(self.net.log_mel(a)).cpu()
        return out


    @property
    def modality(self) -> str:
        """"audio" (a CLAP) or "image" (the in-house CLIP: :meth:`embed_images`)."""
        return self.net.config.modality

    @torch.no_grad()
    def embed_images(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """uint8 images ``[N, C, H, W]`` -> L2-normalised embeddings ``[N, D]`` (an image CLIP only)."""
        if self.modality != "image":
            raise ValueError(f"{self.name} is a text-audio CLAP: it embeds audio (embed_audio), not images")
        out = [self.net.embed_pixels(images[i:i + batch_size].to(self.device)).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.net.config.embed_dim)


def clip_score(clip: InHouseClap, images: Tensor, captions: Sequence[str]) -> Tensor:
    """CLIP score ``[N]``: the cosine of each image's and its caption's embeddings in an image CLIP (Hessel et al.
    2021 use ``100 * max(cos, 0)`` with OpenAI CLIP; here the raw cosine in the in-house space, comparable only
    with itself)."""
    if len(images) != len(captions):
        raise ValueError(f"clip_score needs one caption per image, got {len(captions)} for {len(images)}")
    return (clip.embed_images(images) * clip.embed_text(list(captions))).sum(-1)


def clip_image_scorer(clip: InHouseClap):
    """A :meth:`sonodiff.pipelines.Pipeline.best_of` scorer for image models: the CLIP score of each candidate."""

    def score(images: Tensor, sample_rate, prompts: list) -> Tensor:
        return clip_score(clip, images, [str(p) for p in prompts])

    return score


class TransformersClap:
    """transformers ``ClapModel`` with its tokenizer and ``ClapFeatureExtractor`` from a local ``save_pretrained``
    directory (model, tokenizer and feature extractor saved into one folder, as ``ClapProcessor`` does)."""

    def __init__(self, path: str | Path, device="cpu") -> None:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        from sonodiff.conditioning.text import check_local_dir, load_pretrained

        path = check_local_dir(path, "CLAP model directory")
        self.model = load_pretrained(ClapModel, path, "CLAP model").eval().to(device)
        self.tokenizer = load_pretrained(AutoTokenizer, path, "CLAP tokenizer")
        self.feature_extractor = load_pretrained(ClapFeatureExtractor, path, "CLAP feature extractor")
        self.device = torch.device(device)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.name = f"CLAP ({path.name})"

    @staticmethod
    def _tensor(out) -> Tensor:
        # transformers 5 returns a model output for get_*_features; 4.x returned the tensor
        return out if isinstance(out, Tensor) else out.pooler_output

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of texts, not one string")
        enc = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        f = self._tensor(self.model.get_text_features(**{k: v.to(self.device) for k, v in enc.items()}))
        return nn.functional.normalize(f.float(), dim=-1).cpu()

    @torch.no_grad()
    def embed_audio(self, audio, sample_rate: int, batch_size: int = 16) -> Tensor:
        clips = _audio_list(audio, sample_rate, self.sample_rate)
        out = []
        for i in range(0, len(clips), batch_size):
            feats = self.feature_extractor([c.numpy() for c in clips[i:i + batch_size]],
                                                     sampling_rate=self.sample_rate, return_tensors="pt")
            f = self._tensor(self.model.get_audio_features(**{k: v.to(self.device) for k, v in feats.items()}))
            out.append(nn.functional.normalize(f.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.config.projection_dim)


# --- model directories --------------------------------------------------------------------------------------

def save_clap_dir(out: str | Path, *, config: ClapConfig, state: dict, source: dict, card: str | None = None) -> Path:
    """Write an in-house CLAP model directory (atomic files)."""
    from sonodiff import __version__
    from sonodiff.models.model_dir import weights_hash
    from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in state.items() if k != "fb"}
    atomic_save_tensors(out / "model.safetensors", state)
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "sonodiff_version": __version__, "kind": "clap",
            "clap": config.to_dict(), "text_encoder": {"type": "sentence", "path": None},
            "weights_sha256_16": weights_hash(out / "model.safetensors"), "source": source}
    atomic_write_json(out / "config.json", body, indent=1)
    if card is None and config.modality == "image":
        card = (f"# {source.get('name', 'clip')}\n\nIn-house contrastive text-image model (CLIP; sonodiff "
                f"`task = \"contrastive\"`): CNN image tower on {config.channels}x{config.image_height}x"
                f"{config.image_width} pixels, frozen all-MiniLM-L6-v2 text tower with a trained projection, "
                f"{config.embed_dim}-d space.\n\nTrained: step {source.get('step')}, {source.get('samples')} "
                "examples.\n")
    if card is None:
        card = (f"# {source.get('name', 'clap')}\n\nIn-house contrastive text-audio model (sonodiff "
                f"`task = \"contrastive\"`): CNN audio tower on {config.n_mels}-bin log-mels at {config.sample_rate} "
                f"Hz, frozen all-MiniLM-L6-v2 text tower with a trained projection, {config.embed_dim}-d space.\n\n"
                f"Trained: step {source.get('step')}, {source.get('samples')} examples.\n")
    atomic_write_text(out / "MODEL_CARD.md", card)
    return out


def load_clap(name_or_path: str | Path, device="cpu") -> ClapLike:
    """An in-house CLAP directory, a shipped CLAP name, or a transformers ``ClapModel`` directory."""
    from sonodiff.conditioning.inhouse_clap import resolve_clap_dir

    p = resolve_clap_dir(name_or_path)
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{p} holds no config.json: not a CLAP model directory")
    c = json.loads(cfg_file.read_text())
    if c.get("model_type") == "clap":
        return TransformersClap(p, device=device)
    if c.get("kind") != "clap":
        raise ValueError(f"{cfg_file}: kind={c.get('kind', c.get('model_type'))!r}, not a CLAP model (an in-house "
                         f"one has kind 'clap', a transformers one model_type 'clap')")
    net = load_clap_net(p)
    return InHouseClap(net, name=c.get("source", {}).get("name", p.name), device=device)


# --- metrics ----------------------------------------------------------------------------------------------

def clap_score(clap: ClapLike, audio, sample_rate: int, captions: Sequence[str]) -> Tensor:
    """Per-clip cosine between each clip's audio embedding and its caption's text embedding ``[N]``."""
    clips = _audio_list(audio, sample_rate, sample_rate)
    if len(clips) != len(captions):
        raise ValueError(f"clap_score got {len(clips)} clips and {len(captions)} captions")
    if not clips:
        raise ValueError("clap_score needs at least one clip")
    a = clap.embed_audio(clips, sample_rate)
    t = clap.embed_text(list(captions))
    return (a * t).sum(dim=-1)


def _chance_any(n: int, r: int, k: int) -> float:
    """P(at least one of r relevant items among the top k of n in a random order)."""
    if k >= n:
        return 1.0
    if n - r < k:
        return 1.0
    return 1.0 - math.exp(math.lgamma(n - r + 1) - math.lgamma(n - r - k + 1) - math.lgamma(n + 1) + math.lgamma(n - k + 1))


def retrieval_recall(audio_emb: Tensor, text_emb: Tensor, captions: Sequence[str], ks=(1, 5, 10)) -> dict:
    """Recall@k both ways on a pool of clips and their captions (each clip has one caption; captions may repeat).

    Text-to-audio: one query per distinct caption, a hit when any clip of that caption is in the top k.
    Audio-to-text: one query per clip over the distinct captions, a hit when its caption is in the top k.
    ``audio_emb`` ``[N, D]`` is the pool in clip order; ``text_emb`` ``[N, D]`` the embeddings of ``captions``.
    Chance rates of a random ranking are given beside each figure."""
    n = len(captions)
    if audio_emb.shape[0] != n or text_emb.shape[0] != n:
        raise ValueError(f"retrieval_recall: {audio_emb.shape[0]} audio and {text_emb.shape[0]} text embeddings "
                         f"for {n} captions")
    uniq = sorted(set(captions))
    index = {c: i for i, c in enumerate(uniq)}
    cid = torch.tensor([index[c] for c in captions])
    first = {}
    for i, c in enumerate(captions):
        first.setdefault(c, i)
    q = text_emb[[first[c] for c in uniq]]  # one text embedding per distinct caption
    sim = q @ audio_emb.t()  # [U, N]
    rel = cid[None, :] == torch.arange(len(uniq))[:, None]  # [U, N]
    order = sim.argsort(dim=1, descending=True)
    out = {"pool": n, "distinct_captions": len(uniq)}
    for k in ks:
        top = rel.gather(1, order[:, :k])
        out[f"t2a_R@{k}"] = float(top.any(dim=1).float().mean())
        out[f"t2a_R@{k}_chance"] = float(np.mean([_chance_any(n, int(r), k) for r in rel.sum(dim=1)]))
    a_order = (audio_emb @ q.t()).argsort(dim=1, descending=True)  # [N, U]
    for k in ks:
        out[f"a2t_R@{k}"] = float((a_order[:, :k] == cid[:, None]).any(dim=1).float().mean())
        out[f"a2t_R@{k}_chance"] = min(1.0, k / len(uniq))
    return out


def zero_shot_accuracy(audio_emb: Tensor, label_text_emb: Tensor, labels: Sequence[int]) -> float:
    """Fraction of clips whose nearest label prompt (``label_text_emb`` ``[K, D]``) is their own label."""
    pred = (audio_emb @ label_text_emb.t()).argmax(dim=1)
    return float((pred == torch.as_tensor(list(labels))).float().mean())


# --- CLAP in the pipeline: re-ranking and gradient guidance --------------------------------------------------

def clap_scorer(clap: ClapLike):
    """A :meth:`sonodiff.pipelines.Pipeline.best_of` scorer: cosine of each clip's CLAP audio embedding with its
    prompt's text embedding (``audio [N, C, T]`` is mixed to mono)."""

    def score(audio: Tensor, sample_rate: int, prompts: list) -> Tensor:
        if any(p is None for p in prompts):
            raise ValueError("CLAP re-ranking needs a text prompt for every sample")
        return clap_score(clap, audio.float().mean(dim=1), sample_rate, [str(p) for p in prompts])

    return score


def check_codec_matches(clap: InHouseClap, codec) -> None:
    """The in-house CLAP reads a mel codec's features directly only when their mel settings agree."""
    c, m = clap.net.config, getattr(codec, "config", None)
    if getattr(codec, "name", None) != "mel":
        raise ValueError(f"CLAP guidance works in a mel codec's feature space; this model's codec is "
                         f"{getattr(codec, 'name', None)!r}")
    keys = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max")
    diff = {k: (getattr(m, k), getattr(c, k)) for k in keys if getattr(m, k) != getattr(c, k)}
    if diff:
        raise ValueError("CLAP guidance needs the CLAP's mel settings to equal the model codec's; they differ in " +
                         ", ".join(f"{k} (codec {a}, CLAP {b})" for k, (a, b) in diff.items()))


def clap_feature_score(clap: InHouseClap, codec, prompts: Sequence[str]):
    """``score_fn(x0 [B, C, n_mels, frames], sigma, cond) -> [B]``: the CLAP cosine of the denoised estimate (a mel
    codec's normalised features, de-normalised to log-mel and channel-averaged) with each row's prompt;
    differentiable in ``x0`` (for :class:`sonodiff.core.guidance.GradientGuidance`)."""
    if not isinstance(clap, InHouseClap):
        raise ValueError("CLAP gradient guidance needs the in-house CLAP (its audio tower reads the codec's log-mels); "
                         f"got {getattr(clap, 'name', type(clap).__name__)}")
    check_codec_matches(clap, codec)
    text = clap.embed_text(list(prompts))

    def score(x0: Tensor, sigma: Tensor, cond=None) -> Tensor:
        if x0.shape[0] != len(text):
            raise ValueError(f"CLAP guidance has {len(text)} prompts for a batch of {x0.shape[0]}")
        mel = codec.denormalize(x0.float()).mean(dim=1)
        emb = clap.net.embed_mel(mel.to(clap.device))
        return (emb * text.to(emb.device)).sum(-1).to(x0.dtype)

    return score
