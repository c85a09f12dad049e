"""Small generated image folders (ROOT/<class>/<image>.png) for image_folder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_images(
    root: Path,
    *,
    classes: int = 3,
    per_class: int = 12,
    size: tuple[int, int] = (28, 28),
    rgb: bool = False,
    seed: int = 0,
) -> Path:
    """``root/class_<c>/<i>.png``: noise with a bright band whose height gives the class (learnable); returns root."""
    rng = np.random.default_rng(seed)
    height, width = size
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 96, (height, width, 3) if rgb else (height, width), dtype=np.uint8)
            top = c * height // classes
            pixels[top : top + max(height // classes - 1, 1)] = 255
            Image.fromarray(pixels, mode="RGB" if rgb else "L").save(folder / f"{i:03d}.png")
    return root
