"""Decode + 256x256 crop time of a 12-megapixel JPEG: full decode against JPEG draft mode.

    python -m bench.decode_draft --iters 30 --json bench/results/decode_draft.json

A 4000x3000 JPEG (quality 90, about the size of a phone photo) is built in memory from a smooth
synthetic picture with Gaussian noise. Each call decodes it with `service.imaging.decode_image`
and renders one 256x256 crop of a centred person box with `crop_for_model`, as the service does:

- full: `min_detail=None`, every pixel decoded;
- draft: `min_detail` pixels kept on the smaller side, so libjpeg decodes at 1/2, 1/4 or 1/8.

Draft mode saves the inverse DCT, upsampling and colour conversion of the pixels it drops, not
the Huffman decoding of the file, so its gain shrinks as the file grows (try `--noise 2`).

The two modes alternate call by call, order flipping each iteration, so slow spells of a shared
machine hit both alike; the speed-up is full median / draft median of decode + crop.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.report import describe_machine, machine_info, markdown_table, median_and_p90, write_json
from posecontract.geometry import Intrinsics, make_crop
from service.imaging import crop_for_model, decode_image

MODES = ("full", "draft")


def make_photo(width: int, height: int, quality: int, noise: float, seed: int) -> bytes:
    """A JPEG of slow colour waves plus Gaussian noise of `noise` levels (texture and grain)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[:height, :width].astype(np.float32)
    picture = np.stack([128 + 90 * np.sin(u / 230), 128 + 90 * np.cos(v / 170),
                        255 * (u + v) / (width + height)], axis=-1)
    picture += rng.normal(0.0, noise, picture.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                    quality=quality)
    return buffer.getvalue()


def time_modes(data: bytes, min_details: dict[str, int | None], box_side: float, warmup: int,
               iters: int) -> dict[str, dict[str, Any]]:
    """Per mode: decode and crop seconds of every timed call, decoded size and scale."""
    with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
    crop = make_crop(Intrinsics.from_fov(width, height, 60.0), (width / 2, height / 2), box_side)
    stats: dict[str, dict[str, Any]] = {m: {"decode": [], "crop": []} for m in min_details}

    def run(mode: str, record: bool) -> None:
        start = time.perf_counter()
        decoded = decode_image(data, content_type="image/jpeg", max_bytes=len(data),
                               max_pixels=width * height, min_detail=min_details[mode])
        decoded_at = time.perf_counter()
        crop_for_model(decoded, crop)
        if record:
            stats[mode]["decode"].append(decoded_at - start)
            stats[mode]["crop"].append(time.perf_counter() - decoded_at)
        stats[mode]["size"], stats[mode]["scale"] = decoded.image.size, decoded.scale

    for _ in range(warmup):
        for mode in min_details:
            run(mode, record=False)
    names = list(min_details)
    for i in range(iters):
        for mode in names if i % 2 == 0 else reversed(names):
            run(mode, record=True)
    return stats


def summarise(stats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (mode, decoded size, scale, median decode/crop/total ms, p90 total, speed-up)."""
    rows = []
    for mode in MODES:
        s = stats[mode]
        totals = [d + c for d, c in zip(s["decode"], s["crop"], strict=True)]
        total, p90 = median_and_p90(totals)
        rows.append({
            "mode": mode, "decoded": f"{s['size'][0]}x{s['size'][1]}", "scale": s["scale"],
            "decode_ms": 1000 * median_and_p90(s["decode"])[0],
            "crop_ms": 1000 * median_and_p90(s["crop"])[0],
            "total_ms": 1000 * total, "total_p90_ms": 1000 * p90,
        })
    for row in rows:
        row["speedup_vs_full"] = rows[0]["total_ms"] / row["total_ms"]
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of `summarise` rows."""
    header = ["mode", "decoded size", "scale", "decode ms", "crop ms", "total ms",
              "total p90 ms", "speed-up vs full"]
    body = [[r["mode"], r["decoded"], f"1/{round(1 / r['scale'])}", f"{r['decode_ms']:.1f}",
             f"{r['crop_ms']:.1f}", f"{r['total_ms']:.1f}", f"{r['total_p90_ms']:.1f}",
             "-" if r["mode"] == "full" else f"{r['speedup_vs_full']:.2f}x"] for r in rows]
    return markdown_table(header, body, text_columns=3)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the test photo")
    p.add_argument("--box-side", type=float, default=1500.0,
                   help="side of the centred person box in original pixels")
    p.add_argument("--min-detail", type=int, default=512,
                   help="draft mode: pixels kept on the smaller side (2 x 256, the supersampled "
                        "crop, for a box as tall as the image)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per mode")
    p.add_argument("--iters", type=int, default=30, help="timed calls per mode")
    p.add_argument("--noise", type=float, default=8.0,
                   help="noise sigma in levels: entropy decoding, which draft mode cannot skip, "
                        "grows with it (8 gives about 3 MiB, like a phone photo)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the test photo")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return p


def main(args: argparse.Namespace) -> None:
    if args.iters < 1 or args.warmup < 0 or args.min_detail < 1:
        raise SystemExit(f"Need --iters >= 1, --warmup >= 0 and --min-detail >= 1; got "
                         f"{args.iters}, {args.warmup} and {args.min_detail}")
    data = make_photo(args.width, args.height, args.quality, args.noise, args.seed)
    stats = time_modes(data, {"full": None, "draft": args.min_detail}, args.box_side,
                       args.warmup, args.iters)
    rows = summarise(stats)
    machine = machine_info()
    print(f"# JPEG decode + crop: {describe_machine(machine)}, Pillow {Image.__version__}")
    print(f"# {args.width}x{args.height} JPEG, quality {args.quality}, noise {args.noise:g}, "
          f"{len(data) / 2**20:.1f} MiB; one 256x256 crop of a {args.box_side:g} px centred "
          f"box; min_detail {args.min_detail}; warm-up {args.warmup}, median of {args.iters} "
          "alternating calls\n")
    print(format_table(rows))
    if args.json is not None:
        write_json(args.json, {"benchmark": "decode_draft", "machine": machine,
                               "pillow": Image.__version__, "jpeg_bytes": len(data),
                               "settings": {k: v for k, v in vars(args).items() if k != "json"},
                               "rows": rows})


if __name__ == "__main__":
    main(get_args_parser().parse_args())
