"""Draw a contact sheet of synthetic samples with their projected skeletons.

    python -m training.synthetic.contact_sheet --split train --rows 6 --cols 6 \
        --out docs/synthetic_contact_sheet.png

Each tile is one sample's full frame (shrunk to fit), its 17 joints projected with its camera:
right-side joints red, left-side green, centre joints yellow, bones white.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.data.sample import Sample
from training.skeleton import BONES, JOINT_NAMES
from training.synthetic.source import SyntheticHumans


def draw_sample(sample: Sample, tile: int) -> Image.Image:
    """The sample's image with its projected skeleton, fitted into a tile x tile square."""
    image = sample.image.copy()
    scale = tile / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)),
                         Image.Resampling.LANCZOS)
    uv = sample.camera.project(sample.joints) * scale
    draw = ImageDraw.Draw(image)
    for child, parent in BONES:
        if not np.isfinite(uv[[child, parent]]).all():  # an unlabelled joint (NaN)
            continue
        draw.line([tuple(uv[child]), tuple(uv[parent])], fill=(255, 255, 255), width=1)
    for name, (u, v) in zip(JOINT_NAMES, uv, strict=True):
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        colour = ((230, 40, 40) if name.startswith("right") else
                  (40, 220, 40) if name.startswith("left") else (250, 220, 0))
        draw.ellipse([u - 2, v - 2, u + 2, v + 2], fill=colour)
    out = Image.new("RGB", (tile, tile), (20, 20, 20))
    out.paste(image, ((tile - image.width) // 2, (tile - image.height) // 2))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Contact sheet of synthetic samples")
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--tile", type=int, default=192, help="tile side, pixels")
    p.add_argument("--out", type=Path, default=Path("docs/synthetic_contact_sheet.png"))
    return p


def main(args: argparse.Namespace) -> None:
    """Render the samples and save the sheet."""
    count = args.rows * args.cols
    source = SyntheticHumans(args.split, size=count, seed=args.seed)
    sheet = Image.new("RGB", (args.cols * args.tile, args.rows * args.tile))
    for i in range(count):
        tile = draw_sample(source[i], args.tile)
        sheet.paste(tile, ((i % args.cols) * args.tile, (i // args.cols) * args.tile))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".png":  # a 256-colour palette keeps the file small
        sheet = sheet.quantize(256, method=Image.Quantize.MEDIANCUT)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({count} {args.split} samples, seed {args.seed})")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
