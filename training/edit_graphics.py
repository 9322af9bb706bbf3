"""Graphics people paste onto photos: captions, logos, stickers and watermarks, drawn with Pillow as RGBA
layers (the ``graphic`` edit family and the video graphics). Text uses matplotlib's bundled fonts, so
nothing is read from the system; all randomness comes from the ``rng`` given."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from deepfake_edge.training.edit_geometry import shape_mask

GRAPHIC_KINDS = ("caption", "logo", "sticker", "watermark")
_WORDS = ("SALE", "NEW", "LIVE", "BREAKING", "EXCLUSIVE", "Summer", "Holiday", "vibes", "Best day ever",
          "Follow me", "OFFICIAL", "Limited offer", "50% OFF", "Photo:", "Studio", "Press", "News",
          "Happy Birthday", "Weekend", "#travel", "#nofilter", "@", "Shop now", "Free", "Proof", "Sample",
          "DRAFT", "CONFIDENTIAL", "Copyright", "All rights reserved", "Lorem ipsum", "Welcome", "Good morning",
          "Team", "2019", "2023", "2024", "Paris", "Berlin", "Tokyo", "WOW", "LOL", "OMG", "Love", "Friends")


@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """TrueType fonts for drawn text: matplotlib's bundled DejaVu and STIX text faces (sorted)."""
    try:
        import matplotlib
        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        return tuple(sorted(str(p) for p in folder.glob("*.ttf")
                            if p.name.startswith(("DejaVu", "STIXGeneral")) and "Display" not in p.name))
    except Exception:  # noqa: BLE001 - matplotlib missing or unusual: Pillow's default font below
        return ()


def _font(rng: np.random.Generator, size: int):
    files = font_files()
    size = max(6, int(size))
    if files:
        return ImageFont.truetype(files[int(rng.integers(len(files)))], size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text(rng: np.random.Generator) -> str:
    n = int(rng.integers(1, 4))
    words = [str(_WORDS[int(rng.integers(len(_WORDS)))]) for _ in range(n)]
    if rng.random() < 0.3:
        words.append(f"{int(rng.integers(1, 32)):02d}.{int(rng.integers(1, 13)):02d}.{int(rng.integers(2000, 2026))}")
    text = " ".join(words)
    return text.upper() if rng.random() < 0.3 else text


def _colour(rng: np.random.Generator, alpha: int = 255) -> tuple[int, int, int, int]:
    if rng.random() < 0.35:
        grey = int(rng.choice((0, 20, 235, 255)))
        return grey, grey, grey, alpha
    hsv = np.uint8([[[int(rng.integers(0, 180)), int(rng.integers(120, 256)), int(rng.integers(120, 256))]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b), alpha


def _text_layer(text: str, font, fill, stroke: int, stroke_fill, pad: int) -> Image.Image:
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=stroke)
    layer = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((pad - left, pad - top), text, font=font, fill=fill, stroke_width=stroke,
                               stroke_fill=stroke_fill)
    return layer


def _caption(rng, height, width) -> tuple[Image.Image, dict]:
    text = _text(rng)
    size = int(min(height, width) * rng.uniform(0.035, 0.11))
    font = _font(rng, size)
    outlined = rng.random() < 0.4
    layer = _text_layer(text, font, _colour(rng), max(1, size // 14) if outlined else 0, _colour(rng), size // 3)
    boxed = rng.random() < 0.4
    if boxed:  # a banner behind the text
        box = Image.new("RGBA", layer.size, _colour(rng, int(rng.integers(140, 256))))
        layer = Image.alpha_composite(box, layer)
    elif rng.random() < 0.4:  # drop shadow
        shadow_alpha = layer.getchannel("A").filter(ImageFilter.GaussianBlur(max(1, size // 12)))
        shadow = Image.new("RGBA", layer.size, (0, 0, 0, 0))
        shadow.putalpha(shadow_alpha.point(lambda v: int(v * 0.7)))
        layer = Image.alpha_composite(shadow, layer)
    return layer, {"kind": "caption", "text": text, "font_size": size, "outlined": outlined, "boxed": boxed}


def _logo(rng, height, width) -> tuple[Image.Image, dict]:
    side = int(min(height, width) * rng.uniform(0.06, 0.2))
    mark = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    shape = str(rng.choice(("circle", "square", "triangle", "star", "ring")))
    fill, accent = _colour(rng), _colour(rng)
    if shape == "circle":
        draw.ellipse((1, 1, side - 2, side - 2), fill=fill)
    elif shape == "ring":
        draw.ellipse((1, 1, side - 2, side - 2), outline=fill, width=max(2, side // 8))
    elif shape == "square":
        draw.rounded_rectangle((1, 1, side - 2, side - 2), radius=side // 6, fill=fill)
    elif shape == "triangle":
        draw.polygon([(side / 2, 1), (side - 2, side - 2), (1, side - 2)], fill=fill)
    else:
        points = [(side / 2 + (side / 2 - 1) * (1 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5),
                   side / 2 - (side / 2 - 1) * (1 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5))
                  for i in range(10)]
        draw.polygon(points, fill=fill)
    letters = "".join(chr(int(rng.integers(65, 91))) for _ in range(int(rng.integers(1, 3))))
    letter_font = _font(rng, side * 0.45)
    draw.text((side / 2, side / 2), letters, font=letter_font, fill=accent, anchor="mm")
    name = str(_WORDS[int(rng.integers(len(_WORDS)))])
    if rng.random() < 0.6:
        words = _text_layer(name, _font(rng, side * rng.uniform(0.3, 0.6)), fill, 0, None, side // 10)
        layer = Image.new("RGBA", (side + words.width, max(side, words.height)), (0, 0, 0, 0))
        layer.alpha_composite(mark, (0, (layer.height - side) // 2))
        layer.alpha_composite(words, (side, (layer.height - words.height) // 2))
    else:
        layer, name = mark, ""
    return layer, {"kind": "logo", "mark": shape, "text": f"{letters} {name}".strip(), "size": side}


def _sticker(rng, height, width) -> tuple[Image.Image, dict]:
    side = int(min(height, width) * rng.uniform(0.08, 0.3))
    outline = max(2, side // int(rng.integers(12, 25)))
    layer = Image.new("RGBA", (side + 2 * outline, side + 2 * outline), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    blob = shape_mask(side, side, str(rng.choice(("ellipse", "blob", "polygon", "rounded"))), rng)
    blob_image = Image.fromarray((blob * 255).astype(np.uint8))
    border = blob_image.filter(ImageFilter.MaxFilter(2 * (outline // 2) + 1))
    edge_colour = (255, 255, 255, 255) if rng.random() < 0.6 else (0, 0, 0, 255)
    layer.paste(Image.new("RGBA", (side, side), edge_colour), (outline, outline), border)
    inner = blob_image.filter(ImageFilter.MinFilter(2 * (outline // 2) + 1))
    layer.paste(Image.new("RGBA", (side, side), _colour(rng)), (outline, outline), inner)
    face = rng.random() < 0.5
    if face:  # emoji-like: two eyes and a smile
        c, r = outline + side / 2, side / 2
        eye = max(2, side // 12)
        for dx in (-0.3, 0.3):
            draw.ellipse((c + dx * r - eye, c - 0.2 * r - eye, c + dx * r + eye, c - 0.2 * r + eye), fill=(0, 0, 0, 255))
        draw.arc((c - 0.45 * r, c - 0.3 * r, c + 0.45 * r, c + 0.45 * r), 20, 160, fill=(0, 0, 0, 255),
                 width=max(2, side // 25))
    elif rng.random() < 0.6:
        text = str(_WORDS[int(rng.integers(len(_WORDS)))])[:6]
        draw.text((layer.width / 2, layer.height / 2), text, font=_font(rng, side / max(3, len(text) * 0.7)),
                  fill=_colour(rng), anchor="mm")
    return layer, {"kind": "sticker", "size": side, "face": face}


def _watermark(rng, height, width) -> tuple[Image.Image, dict]:
    text = str(rng.choice(("© ", "(c) ", "", "Photo by "))) + _text(rng)
    size = int(min(height, width) * rng.uniform(0.04, 0.14))
    opacity = float(rng.uniform(0.15, 0.55))
    grey = int(rng.choice((255, 235, 0, 40)))
    layer = _text_layer(text, _font(rng, size), (grey, grey, grey, int(round(255 * opacity))), 0, None, size // 4)
    tiled = rng.random() < 0.3
    if tiled:  # a repeated diagonal pattern over part of the picture
        rows, cols = int(rng.integers(2, 4)), int(rng.integers(1, 3))
        tile = Image.new("RGBA", (layer.width * cols + layer.width // 2, layer.height * rows * 2), (0, 0, 0, 0))
        for row in range(rows):
            for col in range(cols):
                tile.alpha_composite(layer, (col * layer.width + (row % 2) * layer.width // 2, row * 2 * layer.height))
        layer = tile
    return layer, {"kind": "watermark", "text": text, "font_size": size, "opacity": opacity, "tiled": tiled}


def graphic_layer(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, dict]:
    """A caption, logo, sticker or watermark (one of GRAPHIC_KINDS, named by the detail's ``kind``) drawn for
    a (height, width) picture: an RGBA layer at its drawn size, and its detail."""
    kind = str(rng.choice(GRAPHIC_KINDS))
    return {"caption": _caption, "logo": _logo, "sticker": _sticker, "watermark": _watermark}[kind](rng, height, width)


def layer_pixels(layer: Image.Image, height: int, width: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """``layer`` shrunk, if need be, to at most ``fill`` of a (height, width) picture's sides (a long caption
    on a small picture), as an RGB patch (h, w, 3) and its alpha (h, w) in [0, 1]."""
    fit = min(1.0, fill * width / layer.width, fill * height / layer.height)
    if fit < 1.0:
        layer = layer.resize((max(1, int(layer.width * fit)), max(1, int(layer.height * fit))), Image.LANCZOS)
    rgba = np.asarray(layer, dtype=np.uint8)
    return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0
