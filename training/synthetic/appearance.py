"""How a rendered body looks: skin, hair, clothes with procedural textures, and lighting.

An `Outfit` is drawn per sample. It dresses the body per pixel from the asset's region fields
(`training.synthetic.body.PARTS`): the top covers the torso above its hem and below its
neckline and the arms up to the sleeve length; the bottom covers the torso below the waist and
the legs down to its length; shoes cover the feet; hair covers the skull above a hairline
score; everything else is skin. Textures are solid (evaluated at the rest-pose position of the
surface point, in metres), so stripes and checks stick to the body as it moves.

Shading is Lambertian in linear RGB: ambient (a sky/ground hemisphere) plus one key light from
a random direction, with a little Blinn-Phong specular on skin and hair; the result is gamma
encoded to sRGB.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from training.synthetic.body import PART_IDS

# Skin tones, linear RGB, light to dark (roughly Fitzpatrick I-VI).
SKIN_TONES = np.array([
    [0.84, 0.62, 0.50], [0.76, 0.52, 0.40], [0.62, 0.40, 0.28], [0.46, 0.27, 0.17],
    [0.29, 0.16, 0.09], [0.16, 0.08, 0.05],
])
HAIR_COLOURS = np.array([
    [0.015, 0.012, 0.010], [0.05, 0.03, 0.02], [0.12, 0.07, 0.04], [0.25, 0.15, 0.07],
    [0.55, 0.40, 0.20], [0.35, 0.12, 0.04], [0.45, 0.45, 0.45], [0.75, 0.72, 0.68],
])
HAIR_PROBS = np.array([0.3, 0.25, 0.15, 0.1, 0.07, 0.04, 0.06, 0.03])
PATTERNS = ("solid", "stripes", "checks", "heather", "dots", "blotches")
_PATTERN_PROBS = (0.42, 0.18, 0.12, 0.14, 0.06, 0.08)


@dataclass(frozen=True)
class Garment:
    """A piece of clothing: two colours (linear RGB) and a pattern mixing them."""

    colour: tuple[float, float, float]
    second: tuple[float, float, float]
    pattern: str
    scale: float  # pattern period, metres
    direction: tuple[float, float, float]  # unit vector the stripes run across
    shine: float  # specular strength


@dataclass(frozen=True)
class Outfit:
    """Everything that dresses one body."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hairline: float  # hair where the head's hair score exceeds this (inf: bald)
    top: Garment
    bottom: Garment
    shoes: Garment
    hem: float  # top covers torso height >= hem ...
    neckline: float  # ... and < neckline
    sleeve: float  # arm coordinate the sleeves reach (0 shoulder, 1 elbow, 2 wrist)
    waist: float  # bottom covers torso height < waist ...
    leg: float  # ... and leg coordinate < leg (1 knee, 2 ankle)
    shoe_top: float  # shoes cover leg coordinate >= shoe_top
    gloves: bool


@dataclass(frozen=True)
class Lighting:
    """Light in camera space (x right, y down, z forward)."""

    direction: tuple[float, float, float]  # unit vector towards the key light
    key: tuple[float, float, float]  # key light colour x intensity
    sky: tuple[float, float, float]  # ambient from above
    ground: tuple[float, float, float]  # ambient from below
    up: tuple[float, float, float]  # world up in camera space


def _clothing_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A clothing colour in linear RGB: often neutral, else a random hue, mostly muted."""
    if rng.random() < 0.35:
        value = float(rng.choice([0.03, 0.08, 0.2, 0.45, 0.8, 0.9]) * rng.uniform(0.8, 1.1))
        tint = rng.normal(0, 0.03, 3)
        return tuple(np.clip(value + tint * value, 0, 1).tolist())
    hue = rng.random()
    sat = float(rng.beta(2, 2.5))
    val = float(rng.beta(2.5, 2))
    rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val)) ** 2.2
    return tuple(rgb.tolist())


def _garment(rng: np.random.Generator, patterned: bool = True) -> Garment:
    """Draw one garment."""
    pattern = str(rng.choice(PATTERNS, p=_PATTERN_PROBS)) if patterned else "solid"
    base = _clothing_colour(rng)
    second = _clothing_colour(rng) if rng.random() < 0.7 else tuple(
        (np.array(base) * rng.uniform(0.3, 0.7)).tolist())
    direction = rng.normal(0, 1, 3) * np.array([0.3, 0.3, 1.0])
    direction /= np.linalg.norm(direction)
    return Garment(base, second, pattern, float(rng.uniform(0.015, 0.08)),
                   tuple(direction.tolist()), float(rng.uniform(0.0, 0.25)))


def sample_outfit(rng: np.random.Generator) -> Outfit:
    """Draw skin tone, hair and clothes."""
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(t)
    skin = SKIN_TONES[lo] + (t - lo) * (SKIN_TONES[min(lo + 1, len(SKIN_TONES) - 1)]
                                        - SKIN_TONES[lo])
    skin = np.clip(skin * rng.uniform(0.9, 1.1, 3), 0, 1)
    hair = HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_PROBS)] * rng.uniform(0.8, 1.2)
    hairline = float(rng.uniform(0.05, 0.7)) if rng.random() < 0.93 else math.inf
    sleeve = float(rng.choice([0.05, 0.45, 0.95, 1.6, 2.05], p=[0.12, 0.3, 0.08, 0.1, 0.4]))
    leg = float(rng.choice([0.35, 0.7, 1.05, 1.6, 2.0], p=[0.1, 0.12, 0.1, 0.08, 0.6]))
    return Outfit(
        skin=tuple(skin.tolist()),
        hair=tuple(np.clip(hair, 0, 1).tolist()),
        hairline=hairline,
        top=_garment(rng),
        bottom=_garment(rng, patterned=rng.random() < 0.4),
        shoes=_garment(rng, patterned=False),
        hem=float(rng.uniform(-0.25, 0.3)),
        neckline=float(rng.uniform(0.86, 1.08)),
        sleeve=sleeve,
        waist=float(rng.uniform(0.22, 0.42)),
        leg=leg,
        shoe_top=float(rng.uniform(1.85, 2.05)) if rng.random() < 0.95 else 9.0,
        gloves=bool(rng.random() < 0.04),
    )


def sample_lighting(rng: np.random.Generator, up: np.ndarray) -> Lighting:
    """Draw a key light (from the camera's side and above, mostly) and hemisphere ambient."""
    up = np.asarray(up, dtype=np.float64)
    # Towards the light: mostly back towards the camera (-z) and up, with a random side.
    d = np.array([rng.normal(0, 0.8), 0.0, -abs(rng.normal(0.6, 0.5))]) + up * rng.uniform(
        0.2, 1.5)
    d /= np.linalg.norm(d)
    warmth = rng.normal(0, 0.08)
    key = rng.uniform(0.6, 1.6) * np.array([1 + warmth, 1.0, 1 - warmth])
    ambient = rng.uniform(0.15, 0.55)
    tint = 1 + rng.normal(0, 0.06, 3)
    return Lighting(tuple(d.tolist()), tuple(key.tolist()),
                    tuple((ambient * tint).tolist()),
                    tuple((ambient * rng.uniform(0.3, 0.8) * tint).tolist()),
                    tuple(up.tolist()))


def _pattern(garment: Garment, pos: np.ndarray, rng_phase: float) -> np.ndarray:
    """Mixing weight (N,) of the garment's second colour at rest positions pos (N, 3)."""
    s = garment.scale
    along = pos @ np.asarray(garment.direction) / s + rng_phase
    if garment.pattern == "stripes":
        return (np.sin(2 * np.pi * along) > 0.2).astype(np.float32)
    if garment.pattern == "checks":
        a = np.sin(2 * np.pi * (pos[:, 0] / s + rng_phase))
        b = np.sin(2 * np.pi * (pos[:, 2] / s))
        return (0.5 * (a > 0) + 0.5 * (b > 0)).astype(np.float32)
    if garment.pattern == "heather":
        return 0.5 + 0.5 * _noise3(pos / (0.08 * s), rng_phase) * 0.6
    if garment.pattern == "dots":
        cell = pos / s + rng_phase
        frac = cell - np.floor(cell) - 0.5
        return (np.linalg.norm(frac, axis=1) < 0.3).astype(np.float32)
    if garment.pattern == "blotches":
        return (_noise3(pos / (3 * s), rng_phase) > 0.1).astype(np.float32)
    return np.zeros(len(pos), dtype=np.float32)


def _noise3(p: np.ndarray, phase: float) -> np.ndarray:
    """Cheap smooth pseudo-noise in [-1, 1] from summed sines of incommensurate frequencies."""
    out = np.zeros(len(p), dtype=np.float32)
    for k, (a, b, c) in enumerate(((1.0, 1.7, 0.6), (2.3, -0.9, 1.9), (-1.4, 2.9, 2.2))):
        out += np.sin(a * p[:, 0] + b * p[:, 1] + c * p[:, 2] + phase * (k + 1) * 3.1)
    return out / 3


def albedo(outfit: Outfit, part: np.ndarray, coord: np.ndarray, pos: np.ndarray,
           phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear-RGB albedo (N, 3) and specular strength (N,) of surface points: part ids (N,),
    region coordinates (N,) and rest positions (N, 3)."""
    n = len(part)
    colour = np.tile(np.asarray(outfit.skin, dtype=np.float32), (n, 1))
    shine = np.full(n, 0.12, dtype=np.float32)
    torso, arm, leg = (part == PART_IDS[k] for k in ("torso", "arm", "leg"))
    head = (part == PART_IDS["head"]) | (part == PART_IDS["neck"])

    def dress(where: np.ndarray, garment: Garment) -> None:
        if not np.any(where):
            return
        mix = _pattern(garment, pos[where], phase)[:, None]
        colour[where] = (1 - mix) * np.asarray(garment.colour) + mix * np.asarray(garment.second)
        shine[where] = garment.shine

    dress((torso & (coord < outfit.waist)) | (leg & (coord < outfit.leg)), outfit.bottom)
    dress((torso & (coord >= outfit.hem) & (coord < outfit.neckline))
          | (arm & (coord < outfit.sleeve)), outfit.top)
    dress(leg & (coord >= outfit.shoe_top), outfit.shoes)
    if outfit.gloves:
        dress(arm & (coord >= 2.0), outfit.shoes)
    hair = head & (coord > outfit.hairline)
    colour[hair] = np.asarray(outfit.hair) * (
        1 + 0.25 * _noise3(pos[hair] * 400.0, phase)[:, None])
    shine[hair] = 0.3
    eye = part == PART_IDS["eye"]
    colour[eye] = np.array([0.02, 0.015, 0.01])
    shine[eye] = 0.6
    return colour, shine


def shade(albedo_rgb: np.ndarray, shine: np.ndarray, normals: np.ndarray, view: np.ndarray,
          light: Lighting) -> np.ndarray:
    """Lit linear RGB (N, 3) of surface points with unit normals (N, 3) and unit directions
    towards the camera (N, 3)."""
    d = np.asarray(light.direction)
    lambert = np.clip(normals @ d, 0, None)[:, None]
    # Hemisphere ambient: blend sky and ground by how much the normal faces up.
    upness = (0.5 + 0.5 * (normals @ np.asarray(light.up)))[:, None]
    ambient = upness * np.asarray(light.sky) + (1 - upness) * np.asarray(light.ground)
    half = view + d
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = (np.clip(np.sum(normals * half, axis=1), 0, 1) ** 24 * shine)[:, None]
    return albedo_rgb * (ambient + lambert * np.asarray(light.key)) + spec * np.asarray(light.key)

