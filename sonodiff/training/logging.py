"""What the trainer writes while it learns: ``metrics.jsonl`` (always) and TensorBoard event files.

One JSON object per logged step (``{"step": ..., "loss": ..., ...}``), appended and flushed, so a killed
run keeps every line written before the kill. TensorBoard gets the same scalars plus demo audio and
spectrogram images (``RUN_DIR/tb``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["MetricsLogger", "read_metrics"]


class MetricsLogger:
    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._tb = None
        self._file = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (float(v) if math.isfinite(float(v)) else str(v)) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, float(v), step)

    def audio(self, tag: str, step: int, audio, sample_rate: int) -> None:
        """``audio`` ``[T]`` or ``[1, T]`` float in [-1, 1]."""
        if self._tb is not None:
            self._tb.add_audio(tag, audio.reshape(1, -1).clamp(-1, 1).cpu(), step, sample_rate=sample_rate)

    def image(self, tag: str, step: int, image_hwc) -> None:
        """``image_hwc`` uint8 numpy ``[H, W, 3]``."""
        if self._tb is not None:
            self._tb.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of ``metrics.jsonl`` by step, ascending.

    The rows written for one step (training scalars, then e.g. the validation loss) are merged into one. A torn
    last line from a kill is ignored; steps logged twice (logged, then killed before the next checkpoint, then
    re-run after resuming) keep their latest values, which are the ones the model continued from.
    """
    by_step: dict[int, dict] = {}
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        by_step.setdefault(row["step"], {}).update(row)
    return [by_step[k] for k in sorted(by_step)]
