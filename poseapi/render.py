"""Draw a pose response as one PNG for people: the image, a 3D view and the marginals.

`render_pose_png` is pure: it takes the oriented image, the `Scene` to draw (the image size and
each person's box and joints, from the core's result or from a client's) and, optionally,
the first person's marginal heatmaps, and returns a PNG of `panels * size` x `size` pixels:

1. image: the picture scaled to fit the panel and centred; each person's box (thin, in the
   person's colour) and 2D skeleton (bones and joint dots in side colours LEFT, RIGHT, CENTRE).
   A joint the model says is out of view (visibility < SEEN_VISIBILITY) is a hollow UNSEEN ring,
   and a bone that reaches one a thin dashed UNSEEN line, here and in the 3D view.
2. 3D view: every person's `relative_mm`, orthographic, seen from azimuth AZIMUTH_DEG and
   elevation ELEVATION_DEG (see `view_matrix`), camera Y pointing down the screen so people
   stand upright. Bones in the person's colour, joint dots in side colours, head_top in
   HEAD_TOP; a floor grid at the lowest joint, the camera axes and a scale bar in mm. Persons
   stand PERSON_SPACING_MM apart along camera X, in response order.
3. heatmaps (only when `heatmaps` is given): the chosen joint's marginals laid out like an
   engineering drawing: xy top left, zy to its right (sharing rows y), xz below it (sharing
   columns x). Each map is scaled to its own peak, coloured with an inferno-like LUT, and
   the first person's predicted location (`normalised`) is marked by a MARKER cross.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from poseapi.values import SEEN_VISIBILITY
from posecontract.skeleton import BONES, JOINT_NAMES

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

# Exact colours (drawing is not antialiased) so tests and people can find what is drawn.
LEFT: RGB = (40, 150, 255)
RIGHT: RGB = (255, 100, 40)
CENTRE: RGB = (90, 220, 110)
HEAD_TOP: RGB = (255, 230, 0)
MARKER: RGB = (0, 255, 255)  # absent from the inferno LUT, so it shows on any heatmap
PERSON_COLOURS: tuple[RGB, ...] = (
    (235, 235, 235), (200, 140, 255), (255, 150, 200), (150, 230, 230), (190, 190, 110),
)
BACKGROUND: RGB = (24, 24, 28)
GRID: RGB = (64, 64, 72)
AXES: RGB = (150, 150, 160)
TEXT: RGB = (225, 225, 225)
UNSEEN: RGB = (150, 150, 150)  # joints the model says are out of view, and bones to them

AZIMUTH_DEG = 45.0
ELEVATION_DEG = 20.0
PERSON_SPACING_MM = 1000.0
PLANES = ("xy", "zy", "xz")  # heatmap order; columns then rows, as in posecontract.layout

# A few control points of matplotlib's inferno, interpolated linearly.
_LUT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_LUT_RGB = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)],
                    dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ScenePerson:
    """What is drawn of one person; joints in skeleton order (`JOINT_NAMES`)."""

    box: tuple[float, float, float, float]  # x, y, w, h in original-image pixels
    pixels: np.ndarray       # (17, 2) original-image pixels
    relative_mm: np.ndarray  # (17, 3) camera-space offsets from the pelvis
    normalised: np.ndarray   # (17, 3) the model's output, in (-1, 1)
    visibility: np.ndarray | None = None  # (17,) in-view probability; None: all drawn as seen
    score: float | None = None  # the person detector's score, when it found the person

    def seen(self) -> np.ndarray:
        """(17,) bool: the joints drawn as seen."""
        if self.visibility is None:
            return np.ones(len(JOINT_NAMES), dtype=bool)
        return np.asarray(self.visibility, dtype=np.float64) >= SEEN_VISIBILITY


@dataclass(frozen=True, eq=False)
class Scene:
    """The persons of one image, whose joints are in pixels of a `width` x `height` image."""

    width: int
    height: int
    persons: Sequence[ScenePerson]


def render_pose_png(image: Image.Image, response: Scene, joint: str = "left_wrist",
                    heatmaps: np.ndarray | None = None, size: int = 512) -> bytes:
    """Render `response` over `image` (the EXIF-oriented original) as PNG bytes.

    `heatmaps` is the first person's (3, 17, H, W) marginals, planes xy, zy, xz; when given,
    a third panel shows those of `joint`. The PNG is `size` high and `size` wide per panel.
    """
    if joint not in JOINT_NAMES:
        raise ValueError(f"Unknown joint {joint!r}; joints are {', '.join(JOINT_NAMES)}")
    if size < 128:
        raise ValueError(f"Panel size must be at least 128 pixels, got {size}")
    if heatmaps is not None and (heatmaps.ndim != 4
                                 or heatmaps.shape[:2] != (len(PLANES), len(JOINT_NAMES))):
        raise ValueError(f"heatmaps must have shape (3, {len(JOINT_NAMES)}, H, W) (planes xy, "
                         f"zy, xz; joints), got {tuple(heatmaps.shape)}")
    # Pillow falls back to its bitmap font (ignoring size) when FreeType is missing.
    font = ImageFont.load_default(size=max(10, size // 40))
    panels = [_image_panel(image.convert("RGB"), response, size, font),
              _view_panel(response, size, font)]
    if heatmaps is not None:
        maps = np.asarray(heatmaps[:, JOINT_NAMES.index(joint)], dtype=np.float64)
        panels.append(_heatmap_panel(maps, response, joint, size, font))
    canvas = Image.new("RGB", (size * len(panels), size), BACKGROUND)
    for i, panel in enumerate(panels):
        canvas.paste(panel, (i * size, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def side_colour(name: str) -> RGB:
    """Return the colour of a joint, or of the bone ending at it, by body side."""
    if name.startswith("left_"):
        return LEFT
    if name.startswith("right_"):
        return RIGHT
    return CENTRE


def colourise(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1], shape (H, W), to inferno-like RGB uint8 (H, W, 3)."""
    v = np.clip(np.nan_to_num(values), 0.0, 1.0)
    rgb = [np.interp(v, _LUT_STOPS, _LUT_RGB[:, c]) for c in range(3)]
    return np.round(np.stack(rgb, axis=-1)).astype(np.uint8)


def view_matrix(azimuth_deg: float = AZIMUTH_DEG,
                elevation_deg: float = ELEVATION_DEG) -> np.ndarray:
    """Return the (3, 3) rotation from camera mm to screen (u right, v down, depth away).

    Camera space is X right, Y down, Z forward. Azimuth 0 and elevation 0 is the camera's own
    view; azimuth turns the viewer about the vertical axis towards the image's left, and
    elevation raises the viewer so that it looks down on the floor.
    """
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([
        [math.cos(a), 0.0, -math.sin(a)],
        [-math.sin(a) * math.sin(e), math.cos(e), -math.cos(a) * math.sin(e)],
        [math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)],
    ])


def _joints(person: ScenePerson, field: str) -> np.ndarray:
    """One field of a person's joints in skeleton order, (17, 2) or (17, 3), as float64."""
    return np.asarray(getattr(person, field), dtype=np.float64)


def _nice(x: float) -> float:
    """The largest of 1, 2 or 5 times a power of ten not above x (for grids and scale bars)."""
    power = 10.0 ** math.floor(math.log10(x))
    return max(m * power for m in (1, 2, 5) if m * power <= x)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Font,
           fill: RGB = TEXT) -> None:
    """Write text on a dark backing so that it reads over any image."""
    box = draw.textbbox(xy, text, font=font)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=BACKGROUND)
    draw.text(xy, text, fill=fill, font=font)


def _centred_note(draw: ImageDraw.ImageDraw, size: int, text: str, font: Font) -> None:
    box = draw.textbbox((0, 0), text, font=font)
    _label(draw, ((size - box[2]) / 2, (size - box[3]) / 2), text, font)


def _dot(draw: ImageDraw.ImageDraw, p: np.ndarray, r: float, colour: RGB) -> None:
    draw.ellipse((p[0] - r, p[1] - r, p[0] + r, p[1] + r), fill=colour, outline=(0, 0, 0))


def _ring(draw: ImageDraw.ImageDraw, p: np.ndarray, r: float) -> None:
    """An unseen joint: a hollow grey ring, not a confident point."""
    draw.ellipse((p[0] - r, p[1] - r, p[0] + r, p[1] + r), outline=UNSEEN, width=1)


def _bone(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, colour: RGB, width: int,
          seen: bool) -> None:
    """A bone; one with an unseen end is a thin grey dashed line."""
    if seen:
        draw.line([tuple(a), tuple(b)], fill=colour, width=width)
        return
    length = float(np.linalg.norm(b - a))
    dashes = max(1, int(length // 6))
    for k in range(0, dashes, 2):
        start, stop = a + (b - a) * (k / dashes), a + (b - a) * (min(k + 1, dashes) / dashes)
        draw.line([tuple(start), tuple(stop)], fill=UNSEEN, width=1)


def _draw_people(draw: ImageDraw.ImageDraw, persons: list[ScenePerson], offset: np.ndarray,
                 scale: np.ndarray, area: tuple[int, int], width: int, radius: int, font: Font,
                 labels: list[str], colours: list[RGB]) -> None:
    """Each person's box (labelled), bones and joints, at `offset + scale * pixel`; `area` is
    the picture's drawn size, inside which the labels stay."""
    for person, text, colour in zip(persons, labels, colours, strict=True):
        bx, by, bw, bh = person.box
        corners = offset + np.array([[bx, by], [bx + bw, by + bh]]) * scale
        draw.rectangle(tuple(corners.reshape(-1)), outline=colour, width=max(1, width // 2))
        # A detector's box may reach beyond the picture: the label stays inside it.
        box = draw.textbbox((0, 0), text, font=font)
        at = np.clip(corners[0] + 2, offset, offset + [area[0] - box[2] - 4,
                                                       area[1] - box[3] - 4])
        _label(draw, tuple(at), text, font, colour)
        pts = offset + _joints(person, "pixels") * scale
        seen = person.seen()
        for child, parent in BONES:
            _bone(draw, pts[child], pts[parent], side_colour(JOINT_NAMES[child]), width,
                  bool(seen[child] and seen[parent]))
        for j, (name, p) in enumerate(zip(JOINT_NAMES, pts, strict=True)):
            if seen[j]:
                _dot(draw, p, radius, side_colour(name))
            else:
                _ring(draw, p, radius)


def draw_overlay(image: Image.Image, response: Scene, labels: list[str],
                 colours: list[RGB]) -> Image.Image:
    """The 2D skeletons drawn over `image` (RGB) at its own size, each person's box with its
    label in its colour (a video's frames: labelled by track id). `image` may be a scaled copy
    of the response's picture."""
    out = image.convert("RGB")
    scale = np.array([out.width / response.width, out.height / response.height])
    size = max(out.width, out.height)
    font = ImageFont.load_default(size=max(12, size // 60))
    _draw_people(ImageDraw.Draw(out), response.persons, np.zeros(2), scale, out.size,
                 max(2, size // 400), max(2, size // 300), font, labels, colours)
    return out


def _image_panel(image: Image.Image, response: Scene, size: int,
                 font: Font) -> Image.Image:
    """The image scaled to fit, centred, with every person's box and 2D skeleton."""
    panel = Image.new("RGB", (size, size), BACKGROUND)
    scale = min(size / image.width, size / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    offset = np.array([(size - w) // 2, (size - h) // 2], dtype=np.float64)
    panel.paste(image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0),
                tuple(int(v) for v in offset))
    # Joint pixels are in the response's image frame; the image given may be a smaller copy.
    ref = np.array([response.width, response.height], dtype=np.float64)
    to_panel = np.array([w, h]) / ref
    draw = ImageDraw.Draw(panel)
    width, radius = max(2, size // 170), max(2, size // 128)
    labels = [f"#{i}" if p.score is None else f"#{i} {p.score:.2f}"
              for i, p in enumerate(response.persons)]
    colours = [PERSON_COLOURS[i % len(PERSON_COLOURS)] for i in range(len(response.persons))]
    _draw_people(draw, response.persons, offset, to_panel, (w, h), width, radius, font,
                 labels, colours)
    _label(draw, (4, 4), f"image {int(ref[0])}x{int(ref[1])}, "
           f"{len(response.persons)} person(s)", font)
    if not response.persons:
        _centred_note(draw, size, "no person", font)
    return panel


def _view_panel(response: Scene, size: int, font: Font) -> Image.Image:
    """Root-relative skeletons in 3D over a floor grid, with axes and a scale bar."""
    panel = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    rot = view_matrix()
    n = len(response.persons)
    skeletons = [_joints(p, "relative_mm") + [(i - (n - 1) / 2) * PERSON_SPACING_MM, 0.0, 0.0]
                 for i, p in enumerate(response.persons)]  # each (17, 3) mm
    # Without people, a grid around a standing pelvis (about 900 mm above the floor).
    pts = np.concatenate(skeletons) if skeletons else np.zeros((1, 3))
    floor = float(pts[:, 1].max()) if skeletons else 900.0
    lo, hi = pts[:, [0, 2]].min(axis=0) - 500.0, pts[:, [0, 2]].max(axis=0) + 500.0
    step = _nice(float((hi - lo).max()) / 5)
    gx = np.arange(math.floor(lo[0] / step), math.ceil(hi[0] / step) + 1) * step
    gz = np.arange(math.floor(lo[1] / step), math.ceil(hi[1] / step) + 1) * step
    grid = np.array([[(x, floor, gz[0]), (x, floor, gz[-1])] for x in gx]
                    + [[(gx[0], floor, z), (gx[-1], floor, z)] for z in gz])  # (S, 2, 3)

    # Fit grid and people between the title band and the scale-bar band, same scale on u and v.
    band = font.size + 10 if isinstance(font, ImageFont.FreeTypeFont) else 20
    top, bottom, margin = 2 * band, size - 3 * band, size // 20
    uv = np.concatenate([grid.reshape(-1, 3), pts]) @ rot[:2].T
    span = np.maximum(uv.max(axis=0) - uv.min(axis=0), 1.0)
    scale = min((size - 2 * margin) / span[0], (bottom - top) / span[1])  # pixels per mm
    centre = (uv.max(axis=0) + uv.min(axis=0)) / 2
    target = np.array([size / 2, (top + bottom) / 2])

    def project(p: np.ndarray) -> np.ndarray:
        return (p @ rot[:2].T - centre) * scale + target

    for a, b in project(grid.reshape(-1, 3)).reshape(-1, 2, 2):
        draw.line([tuple(a), tuple(b)], fill=GRID, width=1)
    width, radius = max(2, size // 170), max(2, size // 128)
    for i, skel in enumerate(skeletons):
        colour = PERSON_COLOURS[i % len(PERSON_COLOURS)]
        px, depth = project(skel), skel @ rot[2]
        seen = response.persons[i].seen()
        # Painter's order: the farthest bones and joints first.
        for child, parent in sorted(BONES, key=lambda bone: -depth[list(bone)].mean()):
            _bone(draw, px[child], px[parent], colour, width, bool(seen[child] and seen[parent]))
        for j in np.argsort(-depth):
            name = JOINT_NAMES[j]
            if not seen[j]:
                _ring(draw, px[j], radius)
            elif name == "head_top":
                _dot(draw, px[j], radius + 2, HEAD_TOP)
            else:
                _dot(draw, px[j], radius, side_colour(name))

    # Scale bar (orthographic: the same at every depth) and camera axes, under the people.
    length = _nice(0.25 * size / scale)
    y = size - 1.5 * band
    draw.line([(margin, y), (margin + length * scale, y)], fill=TEXT, width=2)
    for x in (margin, margin + length * scale):
        draw.line([(x, y - 4), (x, y + 4)], fill=TEXT, width=1)
    draw.text((margin + length * scale + 6, y - band / 3), f"{length:g} mm", fill=TEXT,
              font=font)
    origin, arm = np.array([size - 3 * band, size - 2.6 * band]), 1.4 * band
    for axis, name in zip(np.eye(3), "XYZ", strict=True):
        end = origin + rot[:2] @ axis * arm
        draw.line([tuple(origin), tuple(end)], fill=AXES, width=1)
        draw.text(tuple(end + rot[:2] @ axis * 6 - 3), name, fill=AXES, font=font)

    _label(draw, (4, 4), f"3D, root-relative mm, azimuth {AZIMUTH_DEG:g}\u00b0, "
           f"elevation {ELEVATION_DEG:g}\u00b0", font)
    x = 4.0
    legend = [("left", LEFT), ("right", RIGHT), ("centre", CENTRE), ("head top", HEAD_TOP)]
    if any(p.visibility is not None for p in response.persons):
        legend.append(("unseen", UNSEEN))
    for text, colour in legend:
        draw.rectangle((x, band + 2, x + 8, band + 10), fill=colour)
        draw.text((x + 12, band), text, fill=TEXT, font=font)
        x += 20 + draw.textlength(text, font=font)
    if not response.persons:
        _centred_note(draw, size, "no person", font)
    return panel


def _heatmap_panel(maps: np.ndarray, response: Scene, joint: str, size: int,
                   font: Font) -> Image.Image:
    """The three (H, W) marginals of one joint, colour-mapped, with the prediction marked."""
    panel = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    cells = maps.shape[-1]
    gap, band = size // 32, max(12, size // 40 + 4)
    tile = (size - 3 * gap - 2 * band) // 2
    if tile >= cells:
        tile -= tile % cells  # whole pixels per cell, so nearest-neighbour cells look equal
    # Centre the 2 x 2 layout: rounding tiles to whole cells leaves some space over.
    left = (size - gap - 2 * tile) // 2
    top = (size - gap - 2 * tile - 2 * band) // 2 + band
    origins = {"xy": (left, top), "zy": (left + gap + tile, top),
               "xz": (left, top + tile + gap + band)}
    # Index of the normalised (x, y, z) coordinate along columns and rows of each plane.
    axes = {"xy": (0, 1), "zy": (2, 1), "xz": (0, 2)}
    nrm = (_joints(response.persons[0], "normalised")[JOINT_NAMES.index(joint)]
           if response.persons else None)
    for plane, m in zip(PLANES, maps, strict=True):
        peak = float(np.nan_to_num(m).max())
        values = m / peak if peak > 0 else np.zeros_like(m)
        x0, y0 = origins[plane]
        panel.paste(Image.fromarray(colourise(values)).resize((tile, tile),
                                                              Image.Resampling.NEAREST), (x0, y0))
        draw.text((x0, y0 - band), f"{plane}: columns {plane[0]}, rows {plane[1]}", fill=TEXT,
                  font=font)
        if nrm is not None:
            # Normalised -1 and +1 are the map's outer edges; cell j's centre is (2j+1)/W - 1.
            c, r = np.clip(nrm[list(axes[plane])], -1.0, 1.0)
            u, v = x0 + (c + 1) / 2 * tile, y0 + (r + 1) / 2 * tile
            arm = max(4, tile // 16)
            draw.line([(u - arm, v), (u + arm, v)], fill=MARKER, width=2)
            draw.line([(u, v - arm), (u, v + arm)], fill=MARKER, width=2)

    # Bottom right: what is shown, and the colour scale.
    x0, y0 = origins["xz"][0] + tile + gap, origins["xz"][1]
    lines = [f"joint: {joint}", f"{maps.shape[-2]}x{cells} maps, each scaled",
             "to its own peak", "person #0: predicted" if nrm is not None else "no person"]
    for k, text in enumerate(lines):
        draw.text((x0, y0 + k * band), text, fill=TEXT, font=font)
    if nrm is not None:  # the legend's cross, after the last line
        cu = x0 + draw.textlength(lines[-1], font=font) + 10
        cv, arm = y0 + (len(lines) - 0.5) * band, 5
        draw.line([(cu - arm, cv), (cu + arm, cv)], fill=MARKER, width=2)
        draw.line([(cu, cv - arm), (cu, cv + arm)], fill=MARKER, width=2)
    bar_y = y0 + len(lines) * band + gap
    ramp = np.repeat(np.linspace(0.0, 1.0, tile)[None, :], band, axis=0)
    panel.paste(Image.fromarray(colourise(ramp)), (x0, bar_y))
    draw.text((x0, bar_y + band + 2), "0", fill=TEXT, font=font)
    draw.text((x0 + tile - draw.textlength("peak", font=font), bar_y + band + 2), "peak",
              fill=TEXT, font=font)
    return panel
