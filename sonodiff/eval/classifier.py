"""An in-house audio classifier, its class accuracy, and a Frechet distance in its embedding space.

Generated audio is scored by a small CNN trained on *real held-out* audio (e.g. FSDD takes 0-4, which
the diffusion model never saw). Its penultimate layer gives the embeddings of a Frechet distance
(Heusel et al. 2017, as FAD does with VGGish; Kilgour et al. 2019). Labelled "in-house": the numbers are
comparable only with each other (same classifier, same data), never with published FAD values.

Features are fixed (not the diffusion model's codec): log-mel ``n_mels`` bins at ``sample_rate``, cropped
or padded with silence to ``seconds``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = ["ClassifierConfig", "AudioClassifier", "train_classifier", "frechet_distance", "evaluate_audio",
           "score_row", "rows_markdown"]


@dataclass(frozen=True)
class ClassifierConfig:
    labels: tuple[str, ...]
    sample_rate: int = 8000
    seconds: float = 0.75
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int = 128
    width: int = 64
    embed_dim: int = 128


class EmbeddingClassifier(nn.Module):
    """The shared head of the in-house classifiers: ``features(x)`` (a subclass's input scaling) -> ``body`` (a 2-D
    CNN) -> global mean -> ``proj`` + ReLU (the embedding of Frechet distances) -> ``head`` (logits)."""

    def embed(self, x: Tensor) -> Tensor:
        h = self.body(self.features(x))
        return torch.relu(self.proj(h.mean(dim=(2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class AudioClassifier(EmbeddingClassifier):
    """audio ``[B, T]`` or ``[B, 1, T]`` at ``config.sample_rate`` -> logits ``[B, K]`` (``embed`` gives ``[B, E]``)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        from sonodiff.audio.features import MelConfig, mel_filterbank

        self.config = config
        self.mel = MelConfig(sample_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
                             n_mels=config.n_mels)
        self.register_buffer("fb", mel_filterbank(self.mel), persistent=False)
        w = config.width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.SiLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, w // 2), block(w // 2, w), block(w, 2 * w))
        self.proj = nn.Linear(2 * w, config.embed_dim)
        self.head = nn.Linear(config.embed_dim, len(config.labels))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def features(self, audio: Tensor) -> Tensor:
        from sonodiff.audio.features import log_mel

        a = audio.reshape(audio.shape[0], -1).float()
        n = int(round(self.config.seconds * self.config.sample_rate))
        a = a[:, :n] if a.shape[1] >= n else torch.nn.functional.pad(a, (0, n - a.shape[1]))
        f = log_mel(a[:, None], self.mel, self.fb.to(a.device))  # [B, 1, n_mels, frames]
        return (f - self.mean) / self.std



def train_classifier(audio: Tensor, labels: list[str], config: ClassifierConfig, *, steps: int = 600,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0, log=None) -> AudioClassifier:
    """Train on ``audio [N, T]`` with string ``labels``; light augmentation (gain, time shift) from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    # torch's layer initialisers draw from the global generator and take none of their own: seed it inside a
    # fork, so the caller's global RNG state is exactly as it was (library code never reseeds it)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AudioClassifier(config)
    idx = torch.tensor([config.labels.index(l) for l in labels])
    with torch.no_grad():
        f = model.features(audio)
        model.mean.fill_(f.mean())
        model.std.fill_(f.std())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    for step in range(steps):
        b = torch.randint(0, len(audio), (batch_size,), generator=g)
        x = audio[b]
        gain = 10 ** (torch.empty(batch_size, 1).uniform_(-0.5, 0.5, generator=g))
        shift = torch.randint(0, int(0.05 * config.sample_rate), (batch_size,), generator=g)
        x = torch.stack([torch.nn.functional.pad(xi, (int(s), 0))[: xi.shape[-1]] for xi, s in zip(x * gain, shift)])
        loss = nn.functional.cross_entropy(model(x), idx[b], label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % 100 == 0:
            log(f"classifier step {step + 1}: loss {loss.item():.3f}")
    return model.eval()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of embeddings ``[N, E]`` (float64)."""
    a, b = a.double(), b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 embeddings on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    ev, U = torch.linalg.eigh(sa)
    ra = U @ torch.diag(ev.clamp_min(0).sqrt()) @ U.T
    m = ra @ sb @ ra
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()
    d = float((mu_a - mu_b).pow(2).sum() + sa.trace() + sb.trace() - 2 * tr_sqrt)
    return max(d, 0.0)  # >= 0 exactly; identical sets give round-off of either sign


@torch.no_grad()
def evaluate_audio(clf: AudioClassifier, audio: Tensor, labels: list[str] | None, reference_embeddings: Tensor,
                   batch_size: int = 128) -> dict:
    """Accuracy against ``labels`` (if given) and Frechet distance to ``reference_embeddings``."""
    embs, preds = [], []
    for i in range(0, len(audio), batch_size):
        e = clf.embed(audio[i:i + batch_size])
        embs.append(e)
        preds.append(clf.head(e).argmax(1))
    emb, pred = torch.cat(embs), torch.cat(preds)
    out = {"n": len(audio), "frechet": frechet_distance(emb, reference_embeddings)}
    if labels is not None:
        truth = torch.tensor([clf.config.labels.index(l) for l in labels])
        acc = (pred == truth).double().mean().item()
        out["accuracy"] = acc
        out["accuracy_stderr"] = math.sqrt(max(acc * (1 - acc), 1e-12) / len(audio))
    return out


def score_row(rows: list[dict], clf: AudioClassifier, name: str, audio: Tensor, labels: list[str] | None,
              reference_embeddings: Tensor) -> dict:
    """Evaluate ``audio``, append ``{"row": name, ...}`` to ``rows``, print a one-line summary, return the row."""
    r = {"row": name, **evaluate_audio(clf, audio, labels, reference_embeddings)}
    rows.append(r)
    print(f"{name:40s} n={r['n']:4d} accuracy={r.get('accuracy', float('nan')):.3f} frechet={r['frechet']:.2f}",
          flush=True)
    return r


def rows_markdown(rows: list[dict]) -> str:
    """The rows of :func:`score_row` as a Markdown table (accuracy with its standard error)."""
    out = ["| rows | n | class accuracy | Frechet distance (in-house) |", "|---|---|---|---|"]
    for r in rows:
        acc = f"{r['accuracy']:.3f} ± {r['accuracy_stderr']:.3f}" if "accuracy" in r else "-"
        out.append(f"| {r['row']} | {r['n']} | {acc} | {r['frechet']:.2f} |")
    return "\n".join(out)


def classifier_to_dict(clf: AudioClassifier) -> dict:
    return asdict(clf.config)
