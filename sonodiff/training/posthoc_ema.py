"""Post-hoc EMA: power-function averages stored as snapshots, any EMA length reconstructed after training.

Karras et al. (2024), "Analyzing and Improving the Training Dynamics of Diffusion Models" (EDM2), Section 3
and Appendix C.1-C.2. A power-function EMA averages the training trajectory theta(tau) with the profile

    p_{gamma,t}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1),    0 < tau <= t,

whose width relative to t is sigma_rel, with sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)). Per
optimizer step t = 1, 2, ... it is the EMA with beta_t = (1 - 1/t)^(gamma + 1): step tau then carries the
weight (tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1), which is exactly the integral of p over (tau-1, tau],
so the discrete average is the continuous profile applied to the piecewise-constant trajectory.

During training a few profiles (EDM2: sigma_rel 0.05 and 0.10) are written every N steps as snapshots
(:func:`save_snapshot`)::

    RUN_DIR/posthoc_ema/
        0.05/step_00001000.safetensors     the averaged weights; metadata: format, sigma_rel, gamma, step, buffers
        0.05/step_00002000.safetensors
        0.1/step_00001000.safetensors
        ...

After training, :func:`reconstruct` approximates the profile of any other sigma_rel at any snapshot step by
a linear combination of the stored profiles: least squares in L2 over tau, with the closed-form inner product
of two truncated power functions (:func:`solve_coefficients`), and applies the same coefficients to the
snapshot weights. Snapshots are never pruned: every one of them is a basis function of the reconstruction.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sonodiff.utils.atomic import atomic_save_tensors

__all__ = [
    "GAMMA_MIN",
    "SIGMA_REL_MAX",
    "sigma_rel_to_gamma",
    "gamma_to_sigma_rel",
    "profile_name",
    "PowerEMA",
    "Snapshot",
    "save_snapshot",
    "list_snapshots",
    "solve_coefficients",
    "profile_error",
    "reconstruct",
    "pack_power_emas",
    "unpack_power_emas",
]

SNAPSHOT_FORMAT = "sonodiff-posthoc-ema"
_SNAPSHOT_FILE = re.compile(r"^step_(\d{8,})\.safetensors$")

# sigma_rel(gamma) rises from 0 at gamma = -1 to its maximum at gamma = (sqrt(5) - 3) / 2 (the root of
# gamma^2 + 3 gamma + 1 = 0, where d log sigma_rel^2 / d gamma vanishes), then falls to 0 as gamma -> infinity.
# Only the falling branch is used, so that sigma_rel <-> gamma is one-to-one.
GAMMA_MIN = (math.sqrt(5.0) - 3.0) / 2.0  # about -0.382


def _sigma_rel(gamma: float) -> float:
    return math.sqrt((gamma + 1.0) / ((gamma + 2.0) ** 2 * (gamma + 3.0)))


SIGMA_REL_MAX = _sigma_rel(GAMMA_MIN)  # about 0.3003


def _real(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{name}={x!r} is not a finite number")
    return float(x)


def gamma_to_sigma_rel(gamma: float) -> float:
    """sigma_rel of the power-function profile with exponent ``gamma`` (EDM2 eq. 3), for gamma >= GAMMA_MIN."""
    g = _real(gamma, "gamma")
    if g < GAMMA_MIN:
        raise ValueError(f"gamma={gamma!r} is out of range: gamma must be >= {GAMMA_MIN:.6f} ((sqrt(5) - 3) / 2, where "
                         f"sigma_rel peaks at {SIGMA_REL_MAX:.6f}; below it sigma_rel would repeat a larger gamma's)")
    return _sigma_rel(g)


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma >= GAMMA_MIN with ``gamma_to_sigma_rel(gamma) == sigma_rel``, for 0 < sigma_rel <= SIGMA_REL_MAX.

    Solves sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)) by bisection on the branch where the right
    side falls monotonically, to the last bit of a float64. EDM2's profiles: sigma_rel 0.05 -> gamma 16.97,
    0.10 -> gamma 6.94.
    """
    s = _real(sigma_rel, "sigma_rel")
    if not 0.0 < s <= SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel={sigma_rel!r} is out of range: a power-function EMA has 0 < sigma_rel <= "
                         f"{SIGMA_REL_MAX:.6f} (its width relative to the training length; EDM2 stores 0.05 and 0.10)")
    lo, hi = GAMMA_MIN, max(1.0 / s, 1.0)  # sigma_rel(gamma) < 1 / (gamma + 2), so sigma_rel(1 / s) < s
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _sigma_rel(mid) > s:
            lo = mid
        else:
            hi = mid
    return lo if abs(_sigma_rel(lo) - s) <= abs(_sigma_rel(hi) - s) else hi


def profile_name(sigma_rel: float) -> str:
    """The folder name of a profile's snapshots: ``0.05``, ``0.1`` (6 significant digits)."""
    return format(float(sigma_rel), ".6g")


# ----------------------------------------------------------------------------------------------- averaging
class PowerEMA:
    """A power-function EMA of ``model``'s parameters (EDM2 eq. 2): beta_t = (1 - 1/t)^(gamma + 1) at step t.

    Holds an averaged copy of the model: parameters in ``dtype`` (float32 by default), buffers copied from the
    live model at every update (like :class:`sonodiff.training.ema.EMA`). ``update(model, t)`` is called after
    optimizer step t = 1, 2, ...; at t = 1 beta is 0, so the initial copy never enters the average.

    Args:
        model: the live model (its state is copied, never modified).
        sigma_rel: the profile's width relative to the training length, 0 < sigma_rel <= SIGMA_REL_MAX.
        dtype: floating dtype of the averaged parameters.
    """

    def __init__(self, model: nn.Module, sigma_rel: float, dtype: torch.dtype = torch.float32) -> None:
        self.gamma = sigma_rel_to_gamma(sigma_rel)
        self.sigma_rel = float(sigma_rel)
        self.t = 0  # optimizer steps averaged so far
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        for p in self.model.parameters():
            if p.is_floating_point():
                p.data = p.data.to(dtype)

    def beta(self, t: int) -> float:
        if t < 1:
            raise ValueError(f"the step index t is 1-based, got {t}")
        return (1.0 - 1.0 / t) ** (self.gamma + 1.0)

    @torch.no_grad()
    def update(self, model: nn.Module, t: int) -> float:
        """Average ``model`` in after optimizer step ``t`` (which must be the step after the last one); returns beta."""
        if t != self.t + 1:
            raise ValueError(f"PowerEMA(sigma_rel={self.sigma_rel}) has averaged {self.t} steps, so the next update is "
                             f"step {self.t + 1}, got step {t}")
        b = self.beta(t)
        for pe, pm in zip(self.model.parameters(), model.parameters()):
            pe.lerp_(pm.detach().to(pe.dtype), 1.0 - b)
        for be, bm in zip(self.model.buffers(), model.buffers()):
            be.copy_(bm)
        self.t = t
        return b

    def buffer_names(self) -> list[str]:
        """state_dict keys that are buffers (copied, never averaged)."""
        params = {n for n, _ in self.model.named_parameters(remove_duplicate=False)}
        return sorted(k for k in self.model.state_dict() if k not in params)

    def state_dict(self) -> dict:
        """{"sigma_rel", "t", "weights": the averaged model's state dict}: all an exact resume needs."""
        return {"sigma_rel": self.sigma_rel, "t": self.t, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if profile_name(state["sigma_rel"]) != profile_name(self.sigma_rel):
            raise ValueError(f"state of the sigma_rel={state['sigma_rel']} profile loaded into the "
                             f"sigma_rel={self.sigma_rel} one")
        self.model.load_state_dict(state["weights"])
        self.t = int(state["t"])


def pack_power_emas(emas: Sequence[PowerEMA]) -> dict[str, torch.Tensor]:
    """The averaged weights of several profiles as one flat dict (keys ``"<profile_name>/<state key>"``)."""
    return {f"{profile_name(e.sigma_rel)}/{k}": v for e in emas for k, v in e.model.state_dict().items()}


def unpack_power_emas(emas: Sequence[PowerEMA], flat: dict[str, torch.Tensor], t: int) -> None:
    """Load :func:`pack_power_emas`'s dict back into ``emas``, which have averaged ``t`` steps."""
    for e in emas:
        pre = profile_name(e.sigma_rel) + "/"
        weights = {k[len(pre):]: v for k, v in flat.items() if k.startswith(pre)}
        if not weights:
            raise ValueError(f"the saved post-hoc EMA state has no sigma_rel={e.sigma_rel} profile (it holds "
                             f"{sorted({k.split('/', 1)[0] for k in flat})})")
        e.load_state_dict({"sigma_rel": e.sigma_rel, "t": t, "weights": weights})


# ----------------------------------------------------------------------------------------------- snapshots
@dataclass(frozen=True)
class Snapshot:
    """One stored (profile, step): the weights of the sigma_rel profile averaged over steps 1..step."""

    path: Path
    sigma_rel: float
    gamma: float
    step: int
    buffers: tuple[str, ...] = ()  # state keys copied from the live model, not averaged

    def load(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path), device=str(device))


def save_snapshot(root: str | Path, ema: PowerEMA) -> Path:
    """Write ``ema``'s current average to ``root/<profile_name>/step_XXXXXXXX.safetensors`` atomically."""
    if ema.t < 1:
        raise ValueError("a PowerEMA that has averaged no step has no snapshot to save")
    path = Path(root) / profile_name(ema.sigma_rel) / f"step_{ema.t:08d}.safetensors"
    meta = {"format": SNAPSHOT_FORMAT, "sigma_rel": repr(ema.sigma_rel), "gamma": repr(ema.gamma), "step": str(ema.t),
            "buffers": json.dumps(ema.buffer_names())}
    atomic_save_tensors(path, ema.model.state_dict(), metadata=meta)
    return path


def _read_snapshot(path: Path) -> Snapshot:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{path} is not a post-hoc EMA snapshot (its metadata format is {meta.get('format')!r}, "
                         f"expected {SNAPSHOT_FORMAT!r})")
    return Snapshot(path, float(meta["sigma_rel"]), float(meta["gamma"]), int(meta["step"]),
                    tuple(json.loads(meta.get("buffers", "[]"))))


def list_snapshots(root: str | Path, max_step: int | None = None) -> list[Snapshot]:
    """The snapshots stored under ``root`` (at steps <= ``max_step`` if given), by step then sigma_rel."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.iterdir()):
            m = _SNAPSHOT_FILE.match(f.name)
            if m and f.is_file() and (max_step is None or int(m.group(1)) <= max_step):
                out.append(_read_snapshot(f))
    return sorted(out, key=lambda s: (s.step, s.sigma_rel))


# ----------------------------------------------------------------------------------------------- reconstruction
def _dot(g1: torch.Tensor, t1: torch.Tensor, g2: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """<p_{g1,t1}, p_{g2,t2}> = (g1+1)(g2+1) min(t1,t2)^(g1+g2+1) / ((g1+g2+1) t1^(g1+1) t2^(g2+1)), in log space
    (the powers over- or underflow a float64 for large gamma otherwise)."""
    s = g1 + g2 + 1.0
    return torch.exp(torch.log(g1 + 1.0) + torch.log(g2 + 1.0) - torch.log(s) + s * torch.log(torch.minimum(t1, t2))
                     - (g1 + 1.0) * torch.log(t1) - (g2 + 1.0) * torch.log(t2))


def _as64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def solve_coefficients(gammas: Sequence[float], steps: Sequence[float], target_gamma: float,
                       target_step: float) -> torch.Tensor:
    """Least-squares coefficients x [N] (float64) with sum_i x_i p_{gamma_i, t_i} closest in L2 to p_{target}.

    The normal equations A x = b use the closed-form Gram matrix A_ij = <p_i, p_j> and b_i = <p_i, p_target>
    (EDM2 Appendix C.2). Steps are divided by ``target_step`` (profiles are scale-free, so this changes nothing
    but the magnitudes), A is scaled to a unit diagonal, and the system is solved by SVD least squares, which
    returns the smallest-norm solution when profiles are (nearly) linearly dependent.
    """
    g, t = _as64(gammas), _as64(steps) / float(target_step)
    if g.ndim != 1 or g.shape != t.shape or len(g) == 0:
        raise ValueError(f"need equally long, non-empty lists of gammas and steps, got {len(g)} and {len(t)}")
    if not (g > -0.5).all() or not (t > 0).all():
        raise ValueError("every gamma must be > -0.5 (square-integrable profile) and every step > 0")
    gr, tr = _as64(target_gamma), _as64(1.0)
    a = _dot(g[:, None], t[:, None], g[None, :], t[None, :])
    b = _dot(g, t, gr, tr)
    d = a.diagonal().rsqrt()
    y = torch.linalg.lstsq(a * d[:, None] * d[None, :], (b * d)[:, None], driver="gelsd").solution[:, 0]
    return y * d


def profile_error(gammas: Sequence[float], steps: Sequence[float], coefficients: torch.Tensor, target_gamma: float,
                  target_step: float) -> float:
    """Relative L2 error ||sum_i x_i p_i - p_target|| / ||p_target|| of a reconstruction's averaging profile."""
    g, t, x = _as64(gammas), _as64(steps) / float(target_step), _as64(coefficients)
    gr, tr = _as64(target_gamma), _as64(1.0)
    a = _dot(g[:, None], t[:, None], g[None, :], t[None, :])
    b = _dot(g, t, gr, tr)
    c = _dot(gr, tr, gr, tr)
    return float(torch.sqrt(torch.clamp(x @ a @ x - 2.0 * (x @ b) + c, min=0.0) / c))


def reconstruct(snapshots: Sequence[Snapshot], target_sigma_rel: float, at_step: int | None = None,
                device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The weights of a ``target_sigma_rel`` power-function EMA at step ``at_step`` from stored snapshots.

    Args:
        snapshots: stored profiles (:func:`list_snapshots`), any sigma_rels and steps; those after ``at_step``
            are not used (they hold steps the target has not seen).
        target_sigma_rel: the EMA length wanted, 0 < sigma_rel <= SIGMA_REL_MAX.
        at_step: the training step the average ends at; default the last snapshot's step.

    Returns:
        (state dict, coefficients): averaged tensors are sum_i x_i * snapshot_i (accumulated in float64, returned
        in the snapshots' dtype); buffers and non-float tensors are the newest used snapshot's. ``coefficients``
        is a float64 tensor [len(snapshots)] aligned with ``snapshots``, 0 for the unused ones.
    """
    if not snapshots:
        raise ValueError("no post-hoc EMA snapshots to reconstruct from (train with train.posthoc_ema and "
                         "train.posthoc_ema_every > 0 to store them)")
    target_gamma = sigma_rel_to_gamma(target_sigma_rel)
    last = max(s.step for s in snapshots)
    at = last if at_step is None else int(at_step)
    first = min(s.step for s in snapshots)
    if not first <= at <= last:
        raise ValueError(f"at_step={at_step} is outside the snapshots' steps {first}..{last}: a reconstruction needs "
                         "a snapshot at or before it and cannot see past the last one")
    used = [i for i, s in enumerate(snapshots) if s.step <= at]
    x = solve_coefficients([snapshots[i].gamma for i in used], [snapshots[i].step for i in used], target_gamma, at)
    newest = max(used, key=lambda i: snapshots[i].step)
    copied = set(snapshots[newest].buffers)
    acc: dict[str, torch.Tensor] = {}  # float64 sums of the averaged tensors
    dtypes: dict[str, torch.dtype] = {}
    out: dict[str, torch.Tensor] = {}
    keys = None
    for xi, i in zip(x.tolist(), used):
        state = snapshots[i].load(device)
        if keys is None:
            keys = set(state)
        elif set(state) != keys:
            raise ValueError(f"snapshot {snapshots[i].path} holds other tensors than {snapshots[used[0]].path} "
                             f"(differing keys: {sorted(set(state) ^ keys)[:5]}): the snapshots are of different models")
        for k, v in state.items():
            if k in copied or not v.is_floating_point():
                if i == newest:
                    out[k] = v
                continue
            if k not in acc:
                acc[k] = torch.zeros(v.shape, dtype=torch.float64, device=v.device)
                dtypes[k] = v.dtype
            acc[k].add_(v.double(), alpha=xi)
    for k, v in acc.items():
        out[k] = v.to(dtypes[k])
    coefficients = torch.zeros(len(snapshots), dtype=torch.float64)
    coefficients[used] = x
    return out, coefficients
