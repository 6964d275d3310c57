"""Backgrounds behind the synthetic people: procedural images, photo crops and a floor.

- procedural: multi-octave value noise in two colours, a gradient, and random flat shapes;
- photo: a random crop of one of the committable photos in `assets/backgrounds/` (scikit-image,
  matplotlib and Sports2D images; see `assets/README.md`), rescaled, mirrored, colour-shifted;
- floor: the ground plane z = 0 seen by the scene's camera (tiles, planks or noise, fading
  into the distance), over a procedural or photo "wall" above the horizon, so that people stand
  on something.

Photos are split like the bodies: `TEST_PHOTOS` only appear in the test split. All images are
float32 sRGB in [0, 1], (H, W, 3).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PHOTO_DIR = Path(__file__).with_name("assets") / "backgrounds"
# Portraits (astronaut, camera, grace_hopper) are not backgrounds: a real, unlabelled person
# filling the crop behind the synthetic one would teach the model that real people are scenery.
TEST_PHOTOS = ("sports2d_frame225",)
KINDS = ("procedural", "photo", "floor")


@cache
def photos(split: str) -> tuple[np.ndarray, ...]:
    """The background photos of `split` as float32 sRGB arrays, loaded once."""
    files = sorted(PHOTO_DIR.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"No background photos in {PHOTO_DIR}; rebuild them with "
                                "scripts/export_anny_asset.py")
    chosen = [f for f in files if (f.stem in TEST_PHOTOS) == (split == "test")]
    return tuple(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255
                 for f in chosen)


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of a float (h, w, C) array."""
    channels = [Image.fromarray(np.ascontiguousarray(array[..., c], dtype=np.float32)).resize(
        (width, height), Image.Resampling.BICUBIC) for c in range(array.shape[-1])]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


def value_noise(rng: np.random.Generator, width: int, height: int, octaves: int = 4,
                base_cells: int = 3) -> np.ndarray:
    """Smooth noise (H, W) in about [0, 1]: random grids of growing resolution, upsampled."""
    out = np.zeros((height, width), dtype=np.float32)
    total = 0.0
    for o in range(octaves):
        cells = base_cells * 2**o
        grid = rng.random((cells, cells, 1)).astype(np.float32)
        amp = 0.55**o
        out += amp * _resize(grid, width, height)[..., 0]
        total += amp
    return out / total


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random sRGB colour, (3,), mostly muted like real scenes (walls, floors, foliage)."""
    grey = rng.uniform(0.1, 0.9)
    chroma = rng.random(3) - 0.5
    saturation = rng.uniform(0.05, 0.35) if rng.random() < 0.8 else rng.uniform(0.35, 0.9)
    return np.clip(grey + saturation * chroma, 0, 1).astype(np.float32)


def procedural(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Noise between two colours over a gradient, with some flat shapes on top."""
    noise = value_noise(rng, width, height, octaves=int(rng.integers(2, 6)),
                        base_cells=int(rng.integers(2, 6)))[..., None]
    image = (1 - noise) * _colour(rng) + noise * _colour(rng)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = image * (1 - 0.5 * t * rng.random()) + 0.3 * t * _colour(rng) * rng.random()
    canvas = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.poisson(2.5))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(5, width / 3), rng.uniform(5, height / 3)
        fill = tuple(int(c) for c in _colour(rng) * 255)
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse(box, fill=fill)
        elif shape == 1:
            draw.rectangle(box, fill=fill)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=fill)
    return np.asarray(canvas, dtype=np.float32) / 255


def photo(rng: np.random.Generator, width: int, height: int, split: str) -> np.ndarray:
    """A random crop of a background photo of `split`, resized to (height, width)."""
    pool = photos(split)
    src = pool[int(rng.integers(len(pool)))]
    h, w = src.shape[:2]
    zoom = rng.uniform(0.35, 1.0)
    cw = max(8, int(w * zoom))
    ch = max(8, min(h, int(cw * height / width)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = src[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = _resize(np.ascontiguousarray(crop), width, height)
    gain = rng.uniform(0.6, 1.3) * (1 + rng.normal(0, 0.08, 3))
    return np.clip(out * gain.astype(np.float32), 0, 1)


def floor(rng: np.random.Generator, wall: np.ndarray, rays: np.ndarray,
          camera_height: float) -> np.ndarray:
    """The ground plane z = 0 under a camera `camera_height` metres up, over `wall`.

    `rays` (H, W, 3) are the world directions through each pixel (any length). Pixels whose
    ray goes down hit the floor; the others keep the wall.
    """
    down = rays[..., 2] < -1e-6
    t = np.where(down, -camera_height / np.where(down, rays[..., 2], -1.0), 0.0)
    x, y = t * rays[..., 0], t * rays[..., 1]
    size = rng.uniform(0.25, 1.2)  # tile or plank size, metres
    a, b = _colour(rng), _colour(rng)
    style = rng.integers(3)
    if style == 0:  # tiles
        mix = ((np.floor(x / size) + np.floor(y / size)) % 2).astype(np.float32)
        mix = 0.5 + (mix - 0.5) * rng.uniform(0.1, 1.0)
    elif style == 1:  # planks
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * y / (0.2 * size)).astype(np.float32) * 0.3
        mix += (np.floor(x / (2 * size)) % 2) * 0.2
    else:  # grass, gravel, asphalt: fine noise in world coordinates
        mix = 0.5 + 0.25 * (np.sin(37 * x) * np.sin(41 * y) + np.sin(13 * x + 7 * y))
    texture = (1 - mix[..., None]) * a + mix[..., None] * b
    # Fade to a haze colour with distance, and keep the wall above the horizon.
    haze = np.clip(t / rng.uniform(8, 40), 0, 1)[..., None].astype(np.float32)
    ground = texture * (1 - haze) + haze * wall.mean(axis=(0, 1))
    return np.where(down[..., None], ground, wall).astype(np.float32)


def sample_background(rng: np.random.Generator, width: int, height: int, split: str,
                      rays: np.ndarray, camera_height: float) -> tuple[np.ndarray, str]:
    """Draw a background (H, W, 3) float32 sRGB and say which kind it is."""
    kind = KINDS[int(rng.choice(3, p=(0.35, 0.3, 0.35)))]
    if kind == "procedural":
        return procedural(rng, width, height), kind
    if kind == "photo":
        return photo(rng, width, height, split), kind
    wall = photo(rng, width, height, split) if rng.random() < 0.5 else procedural(
        rng, width, height)
    return floor(rng, wall, rays, camera_height), kind
