"""The `--preview` picture: frames of the noised batch in colour, least noise first.

Frames are decoded with the model family's latent-to-RGB approximation (`LatentFormat.to_rgb`),
the quick preview ComfyUI shows while sampling. Needs Pillow (the `viz` extra).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._latent_format import LatentFormat

MIN_FRAME_PX = 128
"""Frames are enlarged (nearest neighbour) by a whole factor to at least this many pixels."""

_LABEL_PX = 14
_GAP_PX = 2


class PreviewCollector:
    """Keeps the few frames the preview shows while the batch streams past in chunks.

    For one latent: the input and up to 15 steps picked evenly (the first and the last
    included), in a grid four wide. For a batch: one row per item (at most 4), the input and
    up to 7 steps each.

    **Arguments:**

    - `latent`: the `(B, C, *spatial)` input latent.
    - `sigmas`: the `n` sigmas of the run, least noise first.
    """

    def __init__(self, latent: np.ndarray, sigmas: np.ndarray):
        self.batch = latent.shape[0]
        self.items = min(self.batch, 4)
        per_row = 16 if self.batch == 1 else 8
        n = len(sigmas)
        picks = min(n, per_row - 1)
        self.steps = sorted({int(i) for i in np.linspace(0, n - 1, picks).round()}) if picks else []
        self.sigmas = np.asarray(sigmas)
        self.inputs = [np.array(latent[b]) for b in range(self.items)]
        self.frames: dict[tuple[int, int], np.ndarray] = {}

    def add(self, first_step: int, chunk: np.ndarray) -> None:
        """Take the picked frames out of a chunk that starts at step `first_step`."""
        count = chunk.shape[0] // self.batch
        for step in self.steps:
            if first_step <= step < first_step + count:
                for b in range(self.items):
                    self.frames[step, b] = np.array(chunk[(step - first_step) * self.batch + b])

    def image(self, latent_format: LatentFormat) -> Image.Image:
        """The preview picture (all picked frames must have been added)."""
        rows = []
        for b in range(self.items):
            row = [(latent_format_rgb(latent_format, self.inputs[b]), "input")]
            for step in self.steps:
                label = f"#{step} sigma {self.sigmas[step]:.3g}"
                row.append((latent_format_rgb(latent_format, self.frames[step, b]), label))
            rows.append(row)
        if self.batch == 1:
            cells = rows[0]
            rows = [cells[i : i + 4] for i in range(0, len(cells), 4)]
        return _grid(rows)


def latent_format_rgb(latent_format: LatentFormat, latent: np.ndarray) -> np.ndarray:
    """One latent `(C, *spatial)` as `(H, W, 3)` colours in [0, 1].

    Images go through the family's RGB approximation; video shows its first frame; audio
    (`(C, L)`) shows channels by length in grey.
    """
    x = np.asarray(latent, np.float32)
    if x.ndim == 2:
        grey = np.clip((x / 4 + 1) / 2, 0, 1)
        return np.repeat(grey[..., None], 3, axis=-1)
    while x.ndim > 3:
        x = x[:, 0]
    return latent_format.to_rgb(x)


def _grid(rows: list[list[tuple[np.ndarray, str]]]) -> Image.Image:
    h, w = rows[0][0][0].shape[:2]
    zoom = max(1, -(-MIN_FRAME_PX // max(h, w)))
    cell_w, cell_h = w * zoom + _GAP_PX, h * zoom + _LABEL_PX + _GAP_PX
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * cell_w + _GAP_PX, len(rows) * cell_h + _GAP_PX), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        for c, (rgb, label) in enumerate(row):
            frame = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
            x0, y0 = _GAP_PX + c * cell_w, _GAP_PX + r * cell_h
            sheet.paste(frame.resize((w * zoom, h * zoom), Image.Resampling.NEAREST), (x0, y0 + _LABEL_PX))
            draw.text((x0 + 1, y0 + 1), label, fill=(230, 230, 230), font=font)
    return sheet
