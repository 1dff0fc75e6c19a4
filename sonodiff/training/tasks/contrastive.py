"""The contrastive task: the in-house CLAP (``task = "contrastive"``; :mod:`sonodiff.eval.clap`).

Data: every item of ``data.split`` under ``data.root`` (any layout) with a non-empty ``contrastive.text_field``,
read once at the codec's sample rate, mono, and turned into natural-log mels once (kept in memory). The frozen
sentence encoder runs once per distinct text at set-up: no per-step tokenisation or text encoding. An example is a
random crop of ``data.seconds`` of one clip's mel frames (shorter clips padded with the log floor, i.e. silence) at
a random gain in +-``contrastive.gain_db`` (an additive constant of the log-mel), all drawn from
``example_generator(seed, position)``, so resume is exact.

The loss is symmetric InfoNCE over the batch (:func:`sonodiff.eval.clap.contrastive_loss`), examples with the same
text being positives of each other. Under DDP each rank contrasts its own slice of the batch (no gather across
ranks), so a multi-process run has the negatives of its per-rank batch.

Validation: the InfoNCE of fixed start crops of the validation clips (batches of ``train.batch_size``), and a log
line with text-to-audio / audio-to-text recall@1/5/10 on the first ``contrastive.retrieval_pool`` validation clips
embedded whole.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from sonodiff.training.data import PositionOrder, example_generator
from sonodiff.training.task import Task

__all__ = ["ContrastiveTask", "clap_config_of"]

SHIFT = 2  # images: training examples are translated by up to this many pixels


def clap_config_of(cfg):
    """The :class:`~sonodiff.eval.clap.ClapConfig` of a contrastive recipe (mel settings from codec.options; an
    ``image`` codec gives the in-house CLIP, its channels and size from codec.options)."""
    from sonodiff.audio.codecs import make_codec
    from sonodiff.eval.clap import ClapConfig

    if cfg.codec.name == "image":
        c = make_codec("image", **cfg.codec.options)
        if c.size is None:
            raise ValueError("task 'contrastive' on images needs codec.options height and width")
        fixed = sorted({"modality", "channels", "image_height", "image_width"} & set(cfg.contrastive.model))
        if fixed:
            raise ValueError(f"contrastive.model sets {fixed}: the CLIP's image settings come from codec.options")
        return ClapConfig.from_dict({"modality": "image", "channels": c.channels, "image_height": c.size[0],
                                     "image_width": c.size[1], **cfg.contrastive.model})
    if cfg.codec.name != "mel":
        raise ValueError(f"task 'contrastive' embeds log-mels (codec 'mel') or images (codec 'image'), got "
                         f"codec.name={cfg.codec.name!r}")
    c = make_codec("mel", **cfg.codec.options).config
    mel_fields = {"sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "log_floor"}
    fixed = sorted(mel_fields & set(cfg.contrastive.model))
    if fixed:
        raise ValueError(f"contrastive.model sets {fixed}: the CLAP's mel settings come from codec.options")
    base = {k: getattr(c, k) for k in mel_fields}
    return ClapConfig.from_dict({**base, **cfg.contrastive.model})


class ContrastiveTask(Task):
    name = "contrastive"
    resume_fixed = ("data", "codec", "contrastive")
    resume_free = {"data": ("root", "cache_dir", "prepare_workers"), "contrastive": ("retrieval_pool",)}

    def prepare(self) -> None:
        if self.rank == 0 and self.cfg.data.bundled:
            from sonodiff.data.bundled import build_bundled

            build_bundled(self.cfg.data.bundled, self.cfg.data.root, log=self.log)  # no-op once built

    def setup(self) -> None:
        from sonodiff.eval.clap import ClapNet

        cfg = self.cfg
        self.clap_cfg = clap_config_of(cfg)
        self.image = self.clap_cfg.modality == "image"
        self.model = ClapNet(self.clap_cfg).to(self.device)
        self.frames = max(8, int(round(cfg.data.seconds * self.clap_cfg.sample_rate / self.clap_cfg.hop_length)))
        self.floor = math.log(self.clap_cfg.log_floor) if not self.image else -1.0  # images: no floor (all pixels)
        self.mels, texts = self._load(cfg.data.split)
        if not self.mels:
            raise ValueError(f"no readable {'image' if self.image else 'audio'} with a {cfg.contrastive.text_field!r} in split "
                             f"{cfg.data.split!r} of "
                             f"{cfg.data.root} (layout {cfg.data.layout!r})")
        self.valid_mels, valid_texts = self._load(cfg.data.valid_split) if cfg.data.valid_split else ([], [])
        vocab = sorted(set(texts) | set(valid_texts))
        self.text_index = {t: i for i, t in enumerate(vocab)}
        self.text_ids = torch.tensor([self.text_index[t] for t in texts])
        self.valid_ids = torch.tensor([self.text_index[t] for t in valid_texts], dtype=torch.long)
        self.texts, self.valid_texts = texts, valid_texts
        self.text_feats = self._encode_texts(vocab).to(self.device)
        # log-mel normalisation over the training clips' frames above the silence floor (images: every pixel)
        allm = torch.cat([m.reshape(-1) for m in self.mels])
        voiced = allm[allm > self.floor + 1.0] if not self.image else allm
        voiced = voiced if voiced.numel() else allm
        self.model.feat_mean.fill_(float(voiced.mean()))
        self.model.feat_std.fill_(float(voiced.std().clamp_min(1e-3)))
        self.order = PositionOrder(len(self.mels), cfg.train.seed)
        self.spec = {"kind": "clap", "config": self.clap_cfg.to_dict()}

    def _load(self, split: str) -> tuple[list[torch.Tensor], list[str]]:
        from sonodiff.audio.features import log_mel, mel_filterbank
        from sonodiff.audio.io import load_audio
        from sonodiff.data.layouts import scan

        root, field = Path(self.cfg.data.root), self.cfg.contrastive.text_field
        opts = {}
        if self.image:
            from sonodiff.audio.image_io import IMAGE_EXTENSIONS

            opts = {"extensions": IMAGE_EXTENSIONS}
        items = sorted((it for it in scan(root, self.cfg.data.layout, **opts).items if it.split == split),
                       key=lambda it: it.key)
        items = [it for it in items if (getattr(it, field) or "").strip()]
        if self.cfg.data.max_items:
            items = items[: self.cfg.data.max_items]
        mel_cfg = self.clap_cfg.mel_config()
        fb = mel_filterbank(mel_cfg) if not self.image else None
        mels, texts, bad = [], [], 0
        c = self.clap_cfg
        for it in items:
            if self.image:  # the tower's input is the pixels themselves, kept as float 0..255
                from sonodiff.audio.image_io import ImageFileError, read_image

                try:
                    mels.append(read_image(root / it.path, c.channels, (c.image_height, c.image_width)).float())
                except ImageFileError as e:
                    bad += 1
                    self.log(f"skipping {root / it.path}: {e}")
                    continue
                texts.append(getattr(it, field).strip())
                continue
            try:
                a = load_audio(root / it.path, sample_rate=mel_cfg.sample_rate, channels="mono")[0][0]
            except Exception as e:  # noqa: BLE001 - an unreadable file is reported and skipped, as the cache does
                bad += 1
                self.log(f"skipping {root / it.path}: {e}")
                continue
            if len(a) <= mel_cfg.n_fft:
                a = torch.nn.functional.pad(a, (0, mel_cfg.n_fft + 1 - len(a)))
            mels.append(log_mel(a[None].float(), mel_cfg, fb)[0])
            texts.append(getattr(it, field).strip())
        if bad:
            self.log(f"{bad} unreadable files skipped in split {split!r}")
        return mels, texts

    def _encode_texts(self, vocab: list[str]) -> torch.Tensor:
        """The frozen sentence encoder's pooled, normalised vectors of every distinct text, once."""
        from sonodiff.conditioning.text import SentenceConfig, SentenceEncoder

        enc = SentenceEncoder(SentenceConfig(normalize=True))
        tok = enc.get_tokenizer()
        out = []
        with torch.no_grad():
            for i in range(0, len(vocab), 128):
                out.append(enc.encode(tok(vocab[i:i + 128])).pooled.float())
        feats = torch.cat(out)
        if feats.shape[1] != self.clap_cfg.text_dim:
            raise ValueError(f"the sentence encoder gives {feats.shape[1]}-d vectors; contrastive.model.text_dim is "
                             f"{self.clap_cfg.text_dim}")
        return feats

    def describe(self) -> str:
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        if self.image:
            c = self.clap_cfg
            return (f"{len(self.mels)} training images with {len(set(self.texts))} distinct texts "
                    f"({self.cfg.contrastive.text_field}), {len(self.valid_mels)} validation images of {c.channels}x"
                    f"{c.image_height}x{c.image_width}, translated by up to {SHIFT} px; CLIP {n / 1e6:.2f} M trainable "
                    f"parameters (text encoder frozen)")
        return (f"{len(self.mels)} training clips with {len(set(self.texts))} distinct texts "
                f"({self.cfg.contrastive.text_field}), {len(self.valid_mels)} validation clips; crops of {self.frames} "
                f"mel frames; CLAP {n / 1e6:.2f} M trainable parameters (text encoder frozen)")

    # --- a step -------------------------------------------------------------------------------
    def _crop(self, mel: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        if self.image:  # images: a random translation of up to SHIFT px (edges replicated); none for validation
            if g is None:
                return mel
            dy, dx = (int(v) for v in torch.randint(-SHIFT, SHIFT + 1, (2,), generator=g))
            p = torch.nn.functional.pad(mel[None], (SHIFT, SHIFT, SHIFT, SHIFT), mode="replicate")[0]
            H, W = mel.shape[-2:]
            return p[:, SHIFT + dy:SHIFT + dy + H, SHIFT + dx:SHIFT + dx + W]
        n, T = self.frames, mel.shape[-1]
        if T <= n:
            return torch.nn.functional.pad(mel, (0, n - T), value=self.floor)
        start = int(torch.randint(0, T - n + 1, (1,), generator=g)) if g is not None else 0
        return mel[:, start:start + n]

    def batch(self, positions: range):
        crops, ids = [], []
        gain = self.cfg.contrastive.gain_db * math.log(10.0) / 20.0 if not self.image else 0.0
        for p in positions:
            g = example_generator(self.cfg.train.seed, p)
            i = self.order(p)
            m = self._crop(self.mels[i], g)
            if gain:
                shift = (2 * float(torch.rand((), generator=g)) - 1) * gain
                m = torch.where(m > self.floor, m + shift, m)  # silence stays at the floor
            crops.append(m)
            ids.append(int(self.text_ids[i]))
        return torch.stack(crops).to(self.device), torch.tensor(ids, device=self.device)

    def loss(self, phase, batch, state):
        from sonodiff.eval.clap import contrastive_loss

        mel, ids = batch
        audio = self.nets["model"](mel)
        model = self.model
        text = model.embed_text_features(self.text_feats[ids])
        per_ex, hits = contrastive_loss(audio, text, ids, model.scale())
        n = torch.tensor(float(len(ids)), device=mel.device)
        one = torch.ones((), device=mel.device)
        return per_ex, {"clap/in_batch_top1": (hits.sum().detach(), n),
                        "clap/temperature": ((1.0 / model.scale()).detach(), one)}

    def forward_modules(self):
        return {"model": _AudioTower(self.model)}

    # --- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, ema_module) -> float | None:
        from sonodiff.eval.clap import contrastive_loss, retrieval_recall

        if not self.valid_mels:
            return None
        ema_module.eval()
        bs = max(2, self.cfg.train.batch_size)
        total, n = 0.0, 0
        for i in range(0, len(self.valid_mels) - bs + 1, bs):  # whole batches only: the loss depends on B
            mel = torch.stack([self._crop(m, None) for m in self.valid_mels[i:i + bs]]).to(self.device)
            ids = self.valid_ids[i:i + bs].to(self.device)
            a = ema_module.embed_input(mel)
            t = ema_module.embed_text_features(self.text_feats[ids])
            total += float(contrastive_loss(a, t, ids, ema_module.scale())[0].sum())
            n += len(ids)
        pool = self.cfg.contrastive.retrieval_pool
        if pool:
            mels, texts = self.valid_mels[:pool], self.valid_texts[:pool]
            a = torch.cat([ema_module.embed_input(m[None].to(self.device)) for m in mels])
            t = ema_module.embed_text_features(self.text_feats[self.valid_ids[:pool].to(self.device)])
            r = retrieval_recall(a.cpu(), t.cpu(), texts)
            what = "image" if self.image else "audio"
            self.log(f"validation retrieval on {r['pool']} {what}s / {r['distinct_captions']} texts: text->{what} "
                     f"R@1 {r['t2a_R@1']:.3f} R@5 {r['t2a_R@5']:.3f} R@10 {r['t2a_R@10']:.3f} (chance "
                     f"{r['t2a_R@10_chance']:.3f}); {what}->text R@1 {r['a2t_R@1']:.3f} R@10 {r['a2t_R@10']:.3f}")
        return total / n if n else None


class _AudioTower(torch.nn.Module):
    """The forward the engine wraps (DDP / compile): log-mel crops -> audio embeddings of the CLAP."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, mel):
        return self.net.embed_input(mel)
