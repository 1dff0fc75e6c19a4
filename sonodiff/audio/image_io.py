"""Image files: reading with checks (PNG / JPEG through Pillow) and atomic PNG writing.

The image path of the data cache, the editing commands and the CLI read images here, so a bad file gets one
kind of message everywhere: it names the file, what was found and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "ImageFileError", "read_image", "save_png", "image_grid"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Pillow modes an image of C channels may be stored in (read without any change of its values)
_MODES = {1: ("L", "1"), 3: ("RGB",)}


class ImageFileError(ValueError):
    """An image file that cannot be used: ``reason`` is a short code (the data cache's bad-file reasons)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_image(path: str | os.PathLike, channels: int | None = None, size: tuple[int, int] | None = None,
               resize: bool = False) -> Tensor:
    """``path`` as uint8 ``[C, H, W]``.

    ``channels``: 1 (greyscale: Pillow modes L or 1) or 3 (RGB); another stored mode is an error, never
    converted. ``size``: ``(height, width)`` the caller needs; a different size is an error unless ``resize``
    (bicubic resampling). Raises :class:`ImageFileError` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageFileError("missing_file", f"{path}: no such file")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        from sonodiff.audio.io import AUDIO_EXTENSIONS

        kind = "an audio file" if path.suffix.lower() in AUDIO_EXTENSIONS else f"a {path.suffix or 'suffix-less'} file"
        raise ImageFileError("not_image", f"{path} is {kind}; an image model takes images "
                                          f"({', '.join(IMAGE_EXTENSIONS)})")
    if os.path.getsize(path) == 0:
        raise ImageFileError("zero_length", f"{path}: file is 0 bytes")
    try:
        with Image.open(path) as im:
            im.load()
            mode, img = im.mode, im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageFileError("unreadable", f"{path} is not a readable image ({type(e).__name__}: "
                                           f"{str(e).replace(str(path), path.name)})") from None
    if channels is not None:
        if channels not in _MODES:
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if mode not in _MODES[channels]:
            raise ImageFileError("wrong_channels", f"{path} is a {mode!r} image; this model takes "
                                                   f"{channels}-channel images (Pillow modes {list(_MODES[channels])})")
    if mode == "1":
        img = img.convert("L")  # a bilevel image: 0/1 become 0/255, the same picture
    if size is not None and (img.height, img.width) != tuple(size):
        if not resize:
            raise ImageFileError("wrong_size", f"{path} is {img.height}x{img.width} (HxW); this model takes "
                                               f"{size[0]}x{size[1]} images (pass --resize to resample it)")
        img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    a = np.asarray(img, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(a.copy())


def save_png(path: str | os.PathLike, image: Tensor) -> Path:
    """Write uint8 ``[C, H, W]`` (C = 1 or 3) as a PNG, atomically; returns the path."""
    from PIL import Image

    from sonodiff.utils.atomic import atomic_path

    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"save_png needs uint8 [C, H, W] with C = 1 or 3, got {image.dtype} {list(image.shape)}")
    a = image.cpu().numpy()
    pil = Image.fromarray(a[0], mode="L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), mode="RGB")
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return Path(path)


def image_grid(images: Tensor, columns: int | None = None, pad: int = 2, value: int = 0) -> Tensor:
    """uint8 ``[B, C, H, W]`` tiled into one ``[C, H', W']`` image, ``columns`` per row (default about sqrt(B)),
    ``pad`` pixels of ``value`` between and around the tiles."""
    if images.ndim != 4:
        raise ValueError(f"image_grid needs [B, C, H, W], got {list(images.shape)}")
    B, C, H, W = images.shape
    cols = columns or int(np.ceil(np.sqrt(B)))
    rows = int(np.ceil(B / cols))
    out = torch.full((C, rows * (H + pad) + pad, cols * (W + pad) + pad), value, dtype=images.dtype)
    for i in range(B):
        r, c = divmod(i, cols)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        out[:, y:y + H, x:x + W] = images[i]
    return out
