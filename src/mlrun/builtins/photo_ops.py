"""The tensor arithmetic behind :mod:`mlrun.builtins.photo_transforms`, on whole batches.

Every function here works on a batch in ``N x C x H x W`` layout (uint8 or float) and
treats each sample on its own with elementwise operations and gathers only (no
reductions across samples, no matrix products), so a sample comes out bit for bit the
same alone or in any batch. The per-sample transforms call these same functions on a
batch of one; that is what makes their batch versions exact.

Layouts: a raw batch is uint8 ``N x H x W`` (grayscale) or ``N x H x W x C`` (as PIL
images convert to arrays); a float batch (after ``to_tensor``) is ``N x C x H x W``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Op = Callable[[torch.Tensor], torch.Tensor]


def to_nchw(batch: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The batch as ``N x C x H x W``, and the function that gives a result back its layout."""
    if batch.dtype == torch.uint8 and batch.dim() == 3:
        return batch.unsqueeze(1), _channels_last
    if batch.dtype == torch.uint8 and batch.dim() == 4:
        return batch.permute(0, 3, 1, 2), _channels_last
    if batch.dim() == 4:
        return batch, lambda out: out
    raise ValueError(f"expected a batch of images (N x H x W, N x H x W x C or N x C x H x W), got {list(batch.shape)}")


def _channels_last(out: torch.Tensor) -> torch.Tensor:
    return out[:, 0].contiguous() if out.shape[1] == 1 else out.permute(0, 2, 3, 1).contiguous()


def on_batch(op: Op) -> Op:
    """Apply a ``N x C x H x W`` operation to a raw or float batch, keeping its layout."""

    def apply(batch: torch.Tensor) -> torch.Tensor:
        nchw, back = to_nchw(batch)
        return back(op(nchw))

    return apply


def on_sample(op: Op) -> Callable[[Any], Any]:
    """Apply a ``N x C x H x W`` operation to one sample: a PIL image (L or RGB) or a ``C x H x W`` tensor."""

    def apply(sample: Any) -> Any:
        if isinstance(sample, torch.Tensor):
            return op(sample.unsqueeze(0))[0]
        import numpy
        from PIL import Image

        if not isinstance(sample, Image.Image) or sample.mode not in ("L", "RGB"):
            raise TypeError(
                f"expected a PIL image in mode L or RGB, or a C x H x W tensor, got {getattr(sample, 'mode', type(sample).__name__)}"
            )
        out = on_batch(op)(torch.from_numpy(numpy.array(sample)).unsqueeze(0))[0]
        return Image.fromarray(out.numpy(), "L" if out.dim() == 2 else "RGB")

    return apply


def as_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 to float 0..1; floats unchanged (a copy either way)."""
    return batch.to(torch.get_default_dtype()).div_(255) if batch.dtype == torch.uint8 else batch.clone()


def like(result: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """A float 0..1 result back in the original's dtype (uint8: rounded to the nearest level)."""
    if original.dtype == torch.uint8:
        return result.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return result


# ------------------------------------------------------------------ colour


def pil_luma(rgb: torch.Tensor) -> torch.Tensor:
    """PIL's exact RGB-to-L conversion of a uint8 ``N x 3 x H x W`` batch (ITU-R 601-2, fixed point)."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def gray(x: torch.Tensor) -> torch.Tensor:
    """Luminance of a float ``N x C x H x W`` batch, as torchvision computes it (1 channel stays)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def grayscale(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``channels`` (1 or 3) copies of the luminance; uint8 as PIL converts, floats as torchvision."""
    if x.shape[1] not in (1, 3):
        raise ValueError(f"grayscale expects 1- or 3-channel images, got {x.shape[1]} channels")
    if x.shape[1] == 3:
        x = pil_luma(x) if x.dtype == torch.uint8 else gray(x).to(x.dtype)
    return x.expand(-1, channels, -1, -1).contiguous()


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Float RGB to HSV, all in [0, 1] (Pillow's algorithm, as torchvision uses)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    equal = maxc == minc
    span = torch.where(equal, torch.ones_like(maxc), maxc - minc)
    s = (maxc - minc) / torch.where(equal, torch.ones_like(maxc), maxc)
    rc, gc, bc = (maxc - r) / span, (maxc - g) / span, (maxc - b) / span
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(equal, torch.zeros_like(h), h)
    return torch.stack((torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Float HSV back to RGB (selection by sector, no matrix products)."""
    h, s, v = x.unbind(1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = sector.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    table = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    channels = []
    for c in range(3):
        out = table[5][c]
        for k in range(4, -1, -1):
            out = torch.where(sector == k, table[k][c], out)
        channels.append(out)
    return torch.stack(channels, dim=1)


def adjust(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """One colour operation on float images: 0 brightness, 1 contrast, 2 saturation, 3 hue."""
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    if op == 0:
        return (x * f).clamp_(0, 1)
    if op == 1:
        return _blend(x, gray(x).mean(dim=(1, 2, 3), keepdim=True), f)
    if x.shape[1] == 1:  # saturation and hue leave grayscale images alone (as torchvision)
        return x
    if op == 2:
        return _blend(x, gray(x), f)
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, :1] + f, 1.0)
    return hsv_to_rgb(torch.cat((hue, hsv[:, 1:]), dim=1))


def color_jitter(x: torch.Tensor, draws: torch.Tensor, ranges: list[tuple[float, float]]) -> torch.Tensor:
    """Jitter each sample with its own draws (``N x 8``: an order, then four factors in ``ranges``)."""
    order = draws[:, :4].argsort(dim=1)
    factors = [low + (high - low) * draws[:, 4 + k].double() for k, (low, high) in enumerate(ranges)]
    out = as_float(x)
    for position in range(4):
        for op in range(4):
            low, high = ranges[op]
            chosen = (order[:, position] == op).nonzero().flatten()
            if low == high == (0.0 if op == 3 else 1.0) or len(chosen) == 0:
                continue  # this operation is off
            out[chosen] = adjust(out[chosen], op, factors[op][chosen])
    return like(out, x)


# ------------------------------------------------------------------ geometry


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's center crop: zero padding first when the crop is larger than the image."""
    h, w = x.shape[-2:]
    if height > h or width > w:
        pad = [(width - w) // 2 if width > w else 0, (width - w + 1) // 2 if width > w else 0,
               (height - h) // 2 if height > h else 0, (height - h + 1) // 2 if height > h else 0]  # fmt: skip
        x = torch.nn.functional.pad(x, pad)
        h, w = x.shape[-2:]
        if height == h and width == w:
            return x.contiguous()
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return x[..., top : top + height, left : left + width].contiguous()


def crop_boxes(draws: torch.Tensor, height: int, width: int, scale: list[float], ratio: list[float]) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes ``(top, left, h, w)`` from ``N x 40`` uniform draws.

    Ten tries of four draws each (area, aspect ratio, top, left); the first box that fits
    wins, else the central crop of the largest allowed aspect ratio, as torchvision does.
    """
    u = draws.double().view(-1, 10, 4)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    top, left = torch.floor(u[..., 2] * (height - h + 1)), torch.floor(u[..., 3] * (width - w + 1))
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)
    boxes = torch.stack([t.gather(1, first)[:, 0] for t in (top, left, h, w)], dim=1)
    in_ratio = width / height
    fw, fh = float(width), float(height)
    if in_ratio < min(ratio):
        fh = float(round(fw / min(ratio)))
    elif in_ratio > max(ratio):
        fw = float(round(fh * max(ratio)))
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float64)
    return torch.where(fits.any(dim=1, keepdim=True), boxes, fallback).to(torch.int64)


def _source(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps (align_corners=False, as torch's interpolate) of ``size`` outputs over each box side."""
    scale = length.to(torch.float32) / size
    src = ((torch.arange(size, dtype=torch.float32) + 0.5) * scale[:, None] - 0.5).clamp_(min=0)
    low = src.floor().to(torch.int64)
    high = torch.minimum(low + 1, length[:, None] - 1)
    return start[:, None] + low, start[:, None] + high, src - low


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Each sample's box ``(top, left, h, w)`` resized to ``height x width``, bilinear (no antialiasing)."""
    n, c = x.shape[:2]
    y0, y1, wy = _source(boxes[:, 0], boxes[:, 2], height)
    x0, x1, wx = _source(boxes[:, 1], boxes[:, 3], width)
    image = as_float(x) if x.dtype == torch.uint8 else x
    samples, channels = torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None]

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return image[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]

    wy, wx = wy[:, None, :, None].to(image.dtype), wx[:, None, None, :].to(image.dtype)
    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return like(top * (1 - wy) + bottom * wy, x)


def affine(x: torch.Tensor, draws: torch.Tensor, degrees: float, translate: list[float],
           scale: list[float], shear: float) -> torch.Tensor:  # fmt: skip
    """torchvision's RandomAffine (nearest, fill 0) with each sample's ``N x 5`` uniform draws."""
    n, c, h, w = x.shape
    u = draws.double()
    angle = torch.deg2rad(-degrees + 2 * degrees * u[:, 0])
    tx = (translate[0] * w * (2 * u[:, 1] - 1)).round()
    ty = (translate[1] * h * (2 * u[:, 2] - 1)).round()
    zoom = scale[0] + (scale[1] - scale[0]) * u[:, 3]
    sx = torch.deg2rad(-shear + 2 * shear * u[:, 4])
    # The inverse of rotation * shear * scale (torchvision's _get_inverse_affine_matrix, centre 0).
    a, b = torch.cos(angle), -torch.cos(angle) * torch.tan(sx) - torch.sin(angle)
    cc, d = torch.sin(angle), -torch.sin(angle) * torch.tan(sx) + torch.cos(angle)
    m = torch.stack([d, -b, -cc, a], dim=1) / zoom[:, None]
    ys = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2)[None, :, None] - ty[:, None, None]
    xs = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2)[None, None, :] - tx[:, None, None]
    src_x = m[:, 0, None, None] * xs + m[:, 1, None, None] * ys + (w - 1) / 2
    src_y = m[:, 2, None, None] * xs + m[:, 3, None, None] * ys + (h - 1) / 2
    cols, rows = src_x.round().to(torch.int64), src_y.round().to(torch.int64)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    picked = x[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
               rows.clamp(0, h - 1)[:, None], cols.clamp(0, w - 1)[:, None]]  # fmt: skip
    return torch.where(inside[:, None], picked, torch.zeros((), dtype=x.dtype))
