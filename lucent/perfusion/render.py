"""Rendering of result pages as RGB arrays (colour maps with colour bar, overlays, reports).

These become Secondary Capture images (seed Conformance 8.1.3): what the reader sees on any
PACS viewer, so every page carries its title, units and scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (0, 0, 0)
FOREGROUND = (235, 235, 235)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def colour_table(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table; 'rainbow' for flow/volume maps, 'tmax' green-yellow-red."""
    x = np.linspace(0, 1, 256)
    if name == "tmax":
        stops = [
            (0.0, (0, 0, 0)),
            (0.2, (0, 90, 160)),
            (0.4, (0, 200, 80)),
            (0.6, (240, 240, 0)),
            (0.8, (255, 120, 0)),
            (1.0, (220, 0, 0)),
        ]
    else:
        stops = [
            (0.0, (0, 0, 0)),
            (0.15, (0, 0, 180)),
            (0.35, (0, 160, 255)),
            (0.55, (0, 220, 0)),
            (0.75, (255, 230, 0)),
            (1.0, (255, 0, 0)),
        ]
    pos = [s[0] for s in stops]
    lut = np.stack([np.interp(x, pos, [s[1][c] for s in stops]) for c in range(3)], axis=1)
    return lut.astype(np.uint8)


_PLAIN = str.maketrans({"²": "2", "≤": "<=", "≥": ">=", "µ": "u"})
"""Characters Pillow's default font lacks (drawn as boxes: "mm²/s" read "mm?/s")."""


def plain(text: str) -> str:
    return text.translate(_PLAIN)


TITLE_SIZE = 20
HEADER = 40
"""Height of a one-line title bar; every further line of a wrapped title adds LINE."""
LINE = 24
MARGIN = 8


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` px, broken at its double spaces (the
    separators of a title's parts) and, where a part alone is too wide, at single spaces: a
    long title (FLAIR: slice, shift and rotation) ran off the right edge (outside probe)."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def fits(line: str) -> bool:
        return draw.textlength(line, font=font) <= width

    tokens: list[tuple[str, str]] = []  # (text, separator before it on the same line)
    for part in filter(None, text.split("  ")):
        words = [part] if fits(part) else [w for w in part.split(" ") if w]
        tokens.extend((word, "  " if i == 0 else " ") for i, word in enumerate(words))
    lines: list[str] = []
    for word, sep in tokens:
        if lines and fits(lines[-1] + sep + word):
            lines[-1] += sep + word
        else:
            lines.append(word)
    return lines or [""]


def _title_bar(title: str, width: int) -> tuple[list[str], int]:
    lines = _wrap(plain(title), _font(TITLE_SIZE), width - 2 * MARGIN)
    return lines, HEADER + LINE * (len(lines) - 1)


def _draw_title(draw: ImageDraw.ImageDraw, lines: list[str]) -> None:
    for i, line in enumerate(lines):
        draw.text((MARGIN, 8 + LINE * i), line, fill=FOREGROUND, font=_font(TITLE_SIZE))


def _draw_markers(
    draw: ImageDraw.ImageDraw, markers: dict[str, str] | None, top: int, w: int, h: int
) -> None:
    """Orientation letters at the middle of each edge of the image (``orientation``), with a
    dark outline so that they read on any colour."""
    if not markers:
        return
    font = _font(18)
    style = {"fill": FOREGROUND, "font": font, "stroke_width": 2, "stroke_fill": BACKGROUND}
    for edge, text in markers.items():
        if not text:
            continue
        tw = draw.textlength(text, font=font)
        x, y = {
            "left": (6, top + h / 2 - 10),
            "right": (w - tw - 6, top + h / 2 - 10),
            "top": (w / 2 - tw / 2, top + 4),
            "bottom": (w / 2 - tw / 2, top + h - 24),
        }[edge]
        draw.text((x, y), text, **style)  # type: ignore[arg-type]


def _upscale(img: np.ndarray, min_size: int) -> np.ndarray:
    factor = max(1, int(np.ceil(min_size / max(img.shape[:2]))))
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1) if factor > 1 else img


def render_map(
    values: np.ndarray,
    vmin: float,
    vmax: float,
    table: str,
    title: str,
    unit: str,
    mask: np.ndarray | None = None,
    min_size: int = 512,
    markers: dict[str, str] | None = None,
) -> np.ndarray:
    """A colour map with a labelled colour bar on the right; ``markers``: orientation
    letters by edge ("left", "right", "top", "bottom"), see ``orientation.image_markers``."""
    lut = colour_table(table)
    norm = np.clip((values - vmin) / max(vmax - vmin, 1e-9), 0, 1)
    rgb = lut[(norm * 255).astype(np.uint8)]
    if mask is not None:
        rgb[~mask] = 0
    rgb = _upscale(rgb, min_size)
    h, w = rgb.shape[:2]
    bar_w = 110
    lines, head = _title_bar(title, w + bar_w)
    canvas = Image.new("RGB", (w + bar_w, h + head), BACKGROUND)
    canvas.paste(Image.fromarray(rgb), (0, head))
    draw = ImageDraw.Draw(canvas)
    _draw_title(draw, lines)
    _draw_markers(draw, markers, head, w, h)
    top, bottom = head + 20, h + head - 20
    bar = np.linspace(255, 0, bottom - top).astype(np.uint8)
    bar_rgb = np.repeat(lut[bar][:, None, :], 24, axis=1)
    canvas.paste(Image.fromarray(bar_rgb), (w + 12, top))
    small = _font(14)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = int(bottom - frac * (bottom - top))
        value = vmin + frac * (vmax - vmin)
        draw.line([(w + 36, y), (w + 42, y)], fill=FOREGROUND)
        draw.text((w + 45, y - 8), f"{value:g}", fill=FOREGROUND, font=small)
    draw.text((w + 10, top - 18), unit, fill=FOREGROUND, font=small)
    return np.asarray(canvas)


def render_overlay(
    base: np.ndarray,
    window: tuple[float, float],
    layers: Sequence[tuple[np.ndarray, tuple[int, int, int], str]],
    title: str,
    min_size: int = 512,
    markers: dict[str, str] | None = None,
) -> np.ndarray:
    """Segmentations (mask, colour, legend text) drawn semi-transparently on the grey source
    image, later layers on top; the legend lists them in the same order, each with its own
    colour (a separate legend list once named the core green and Tmax > 6 s magenta).
    A title wider than the image is wrapped; ``markers`` as in ``render_map``."""
    lo, hi = window
    grey = (np.clip((base - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for mask, colour, _ in layers:
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.asarray(colour, np.float32)
    img = _upscale(rgb.astype(np.uint8), min_size)
    h, w = img.shape[:2]
    lines, head = _title_bar(title, w)
    canvas = Image.new("RGB", (w, h + head + 22 * len(layers)), BACKGROUND)
    canvas.paste(Image.fromarray(img), (0, head))
    draw = ImageDraw.Draw(canvas)
    _draw_title(draw, lines)
    _draw_markers(draw, markers, head, w, h)
    for i, (_mask, colour, text) in enumerate(layers):
        y = h + head + 4 + 22 * i
        draw.rectangle([8, y + 2, 24, y + 16], fill=colour)
        draw.text((32, y), plain(text), fill=FOREGROUND, font=_font(14))
    return np.asarray(canvas)


def render_report(
    title: str,
    lines: Sequence[str],
    curves: Sequence[tuple[str, Sequence[float], tuple[int, int, int]]] = (),
    x_values: Sequence[float] | None = None,
    x_label: str = "time (s)",
    size: tuple[int, int] = (1024, 768),
) -> np.ndarray:
    """A text page with an optional line plot (time curves, motion traces)."""
    w, h = size
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((16, 12), plain(title), fill=FOREGROUND, font=_font(26))
    font = _font(16)
    y = 56
    for line in lines:
        # wrapped at the page edge, continuation lines indented: a QC warning ran off the
        # right edge and could not be read in full on the PACS (outside probe 39)
        text = plain(line)
        indent = draw.textlength(text[: len(text) - len(text.lstrip(" "))], font=font)
        hang = draw.textlength("    ", font=font)
        for k, piece in enumerate(_wrap(text.strip(), font, int(w - 32 - indent - hang))):
            draw.text((16 + indent + (hang if k else 0), y), piece, fill=FOREGROUND, font=font)
            y += 22
    if curves:
        x0, y0, x1, y1 = 70, max(y + 20, h // 2), w - 30, h - 50
        draw.rectangle([x0, y0, x1, y1], outline=(120, 120, 120))
        all_y = np.concatenate([np.asarray(c[1], float) for c in curves])
        lo, hi = float(min(all_y.min(), 0)), float(all_y.max()) or 1.0
        n = max(len(c[1]) for c in curves)
        xs = np.asarray(x_values if x_values is not None else np.arange(n), float)
        xlo, xhi = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min() + 1)
        for k, (name, values, colour) in enumerate(curves):
            v = np.asarray(values, float)
            px = x0 + (xs[: len(v)] - xlo) / (xhi - xlo) * (x1 - x0)
            py = y1 - (v - lo) / max(hi - lo, 1e-9) * (y1 - y0)
            draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=colour, width=2)
            draw.text((x1 - 200, y0 + 8 + 20 * k), name, fill=colour, font=font)
        small = _font(13)
        draw.text((x0, y1 + 8), f"{xlo:g}", fill=FOREGROUND, font=small)
        draw.text((x1 - 40, y1 + 8), f"{xhi:g}", fill=FOREGROUND, font=small)
        draw.text(((x0 + x1) // 2 - 30, y1 + 8), x_label, fill=FOREGROUND, font=small)
        draw.text((8, y0), f"{hi:.3g}", fill=FOREGROUND, font=small)
        draw.text((8, y1 - 14), f"{lo:.3g}", fill=FOREGROUND, font=small)
    return np.asarray(canvas)
