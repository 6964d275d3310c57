"""Draw the served model's poses on the committed real photos (docs/default-model/).

    python scripts/overlays.py --url http://127.0.0.1:8080 --out docs/default-model

Goes through a running service (REST, `poseclient`'s `margipose predict --render`), as a user
would: each photo once with the service's own person finding (no box), and the Sports2D frame
75 once more with a box per person. The renderer's PNGs are re-encoded as JPEG (q85) to keep
the repository small; the JSON responses go next to them.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from PIL import Image

from poseclient.cli import main as margipose

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "data" / "photos"
RUNS = [
    ("astronaut", PHOTOS / "astronaut.jpg", []),
    ("camera", PHOTOS / "camera.png", []),
    ("grace_hopper", PHOTOS / "grace_hopper.jpg", []),
    ("sports2d_frame000", PHOTOS / "sports2d_frame000.jpg", []),
    ("sports2d_frame075", PHOTOS / "sports2d_frame075.jpg", []),
    ("sports2d_frame150", PHOTOS / "sports2d_frame150.jpg", []),
    ("sports2d_frame225", PHOTOS / "sports2d_frame225.jpg", []),
    ("pose2sim_cam4_frame050", PHOTOS / "pose2sim" / "cam4_frame050.jpg", []),
    # The man on the box and the walking woman (the boxes of peers/bench_blazepose.py).
    ("sports2d_frame075_boxes", PHOTOS / "sports2d_frame075.jpg",
     ["--box", "391,33,480,480", "--box", "1018,478,500,500"]),
    # The portraits with a box around the visible person, as a detector or a user gives it:
    # cut by the image's bottom edge (issue 22's half bodies).
    ("astronaut_box", PHOTOS / "astronaut.jpg", ["--box", "20,0,470,512"]),
    ("grace_hopper_box", PHOTOS / "grace_hopper.jpg", ["--box", "40,10,430,590"]),
    ("camera_box", PHOTOS / "camera.png", ["--box", "0,55,330,457"]),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "default-model")
    p.add_argument("--joint", default="left_wrist")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, photo, extra in RUNS:
        png, result = args.out / f"{name}.png", args.out / f"{name}.json"
        status = margipose(["predict", str(photo), "--url", args.url, "--render", str(png),
                            "--out", str(result), "--joint", args.joint, *extra])
        if status:
            return status
        with Image.open(png) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
        (args.out / f"{name}.jpg").write_bytes(buffer.getvalue())
        png.unlink()
        people = json.loads(result.read_text()).get("persons", [])
        print(f"{name}: {len(people)} person(s) -> {name}.jpg", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
