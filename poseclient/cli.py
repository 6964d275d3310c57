"""`margipose`: poses from the command line, through a running service or the local model.

    margipose predict photo.jpg --box 120,40,200,420 --out result.json --render overlay.png
    margipose predict *.jpg --grpc 127.0.0.1:50051 --out 'out/{stem}.json'
    margipose predict photo.jpg --local model_repository --fov 70 --heatmaps
    margipose video clip.mp4 --grpc 127.0.0.1:50051 --out poses.jsonl
    margipose model --url http://127.0.0.1:8080

`predict` writes the REST API's JSON response (whichever way it was obtained) to `--out`, or
one line per image to stdout; `--render` the PNG of `POST /v1/render` (the service's renderer).
`video` streams the frames of a video or animated image through gRPC StreamPredict and writes
one JSON line per frame. `model` prints the model description and card. Failures print one
line naming the service and the cause, and exit with status 1; bad usage exits with 2.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

from poseclient.draw import scene
from poseclient.errors import BadInput, PoseClientError
from poseclient.grpc import DEFAULT_TARGET, GrpcClient, Tracking
from poseclient.options import Options, make_options
from poseclient.rest import DEFAULT_URL, RestClient
from poseclient.results import FrameError, ModelDescription, PredictResult
from poseclient.video import Frame, Mp4Writer, open_video
from posecontract.geometry import Intrinsics
from posecontract.skeleton import JOINT_NAMES

TOKEN_ENV = "MARGIPOSE_TOKEN"


def _box(text: str) -> tuple[float, float, float, float]:
    """Parse `x,y,w,h`."""
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a box is x,y,w,h (four numbers, pixels), got {text!r}") from None
    return x, y, w, h


def _add_target(p: argparse.ArgumentParser, local: bool) -> None:
    where = p.add_argument_group("where the model runs (default: REST at " + DEFAULT_URL + ")")
    one = where.add_mutually_exclusive_group()
    one.add_argument("--url", help=f"a running service's REST API, e.g. {DEFAULT_URL}")
    one.add_argument("--grpc", metavar="HOST:PORT",
                     help=f"a running service's gRPC API, e.g. {DEFAULT_TARGET}")
    if local:
        one.add_argument("--local", metavar="MODEL_REPOSITORY", type=Path,
                         help="run the model in this process from a model repository, no server")
        where.add_argument("--model", metavar="NAME",
                           help="with --local: the model to load (default: the repository's "
                                "only model, else margipose-lite)")
    where.add_argument("--token", help=f"bearer token of the service (default: ${TOKEN_ENV})")
    where.add_argument("--timeout", type=float, default=30.0, metavar="S",
                       help="deadline of each call in seconds, retries included (default 30)")


def _add_options(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("request options")
    o.add_argument("--box", type=_box, action="append", metavar="x,y,w,h",
                   help="a person box in pixels; repeat for several people (default: the "
                        "service finds one person)")
    for name in ("fx", "fy", "cx", "cy"):
        o.add_argument(f"--{name}", type=float, metavar="PX",
                       help="camera intrinsics in pixels: give all four, or --fov")
    o.add_argument("--fov", type=float, metavar="DEG",
                   help="diagonal field of view in degrees, principal point centred "
                        "(default: the service's, 60)")
    o.add_argument("--root-depth-mm", type=float, metavar="MM",
                   help="distance of the pelvis from the camera (default: from a size prior)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="margipose", description="3D human poses from MargiPose Serve or a local model.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="poses in images: JSON and a picture",
                       description="Estimate the 3D poses in images.")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _add_options(p)
    p.add_argument("--heatmaps", action="store_true",
                   help="include the marginal heatmaps (float16, base64) in the JSON")
    p.add_argument("--out", metavar="JSON",
                   help="write the response here ({stem} is the image's name, needed for "
                        "several images); default: one JSON line per image on stdout")
    p.add_argument("--render", metavar="PNG",
                   help="draw the poses: 2D overlay, 3D view, heatmaps of --joint "
                        "({stem} as for --out)")
    p.add_argument("--joint", default="left_wrist", choices=JOINT_NAMES, metavar="NAME",
                   help="the joint whose heatmaps --render draws (default left_wrist)")
    _add_target(p, local=True)

    v = sub.add_parser("video", help="poses in every frame of a video, over gRPC",
                       description="Stream the frames of a video or animated image through "
                                   "gRPC StreamPredict; one JSON line per frame.")
    v.add_argument("video", type=Path, metavar="VIDEO",
                   help="a GIF or other animated image, or a video file (needs PyAV: pip "
                        "install av)")
    _add_options(v)
    v.add_argument("--out", metavar="JSONL", help="where to write (default: stdout)")
    v.add_argument("--mp4", metavar="FILE", help="also write the video with each person's "
                   "skeleton, box and track id drawn (H.264; needs PyAV)")
    v.add_argument("--mp4-width", type=int, metavar="PX",
                   help="width of the --mp4 video (default: the input's)")
    t = v.add_argument_group("tracking", "Each person gets a track_id that follows them from "
                             "frame to frame; their joints are smoothed by a One Euro filter on "
                             "the video's own times (parameter defaults: the server's, "
                             "MediaPipe's pose smoothing)")
    t.add_argument("--no-smooth", action="store_true", help="each frame's own joints")
    t.add_argument("--min-cutoff", type=float, metavar="HZ",
                   help="cutoff of a still joint (server default 0.1; lower: steadier, more lag)")
    t.add_argument("--beta", type=float, help="cutoff added per person size per second of "
                   "speed (server default 40)")
    t.add_argument("--d-cutoff", type=float, metavar="HZ",
                   help="cutoff of the speed estimate (server default 1)")
    t.add_argument("--max-missed", type=int, metavar="FRAMES",
                   help="frames a track survives without its person (server default 10)")
    t.add_argument("--detect-every", type=int, metavar="N",
                   help="video mode: the person detector every N frames (and when someone is "
                        "lost), the crops between from the frame before (server default 1)")
    g = v.add_argument_group("where the model runs")
    g.add_argument("--grpc", metavar="HOST:PORT", default=DEFAULT_TARGET,
                   help=f"the service's gRPC API (default {DEFAULT_TARGET})")
    g.add_argument("--token", help=f"bearer token of the service (default: ${TOKEN_ENV})")
    g.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="deadline of each frame in seconds (default 30)")

    m = sub.add_parser("model", help="print the served model's description and card")
    _add_target(m, local=True)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors argparse cannot see on its own."""
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if getattr(args, "model", None) and not args.local:
        parser.error("--model goes with --local (a running service serves its own model)")
    if args.command == "model":
        return
    given = [n for n in ("fx", "fy", "cx", "cy") if getattr(args, n) is not None]
    if given and len(given) != 4:
        parser.error(f"give all of --fx --fy --cx --cy or none; got only "
                     f"{' '.join('--' + n for n in given)}")
    if given and args.fov is not None:
        parser.error("give either --fx --fy --cx --cy or --fov, not both")
    if args.fov is not None and not 1 <= args.fov <= 179:
        parser.error(f"--fov must be in [1, 179] degrees, got {args.fov}")
    if args.command == "predict" and len(args.images) > 1:
        for flag in ("out", "render"):
            if getattr(args, flag) and "{stem}" not in getattr(args, flag):
                parser.error(f"with several images --{flag} needs {{stem}} in its path, e.g. "
                             f"'out/{{stem}}.{'json' if flag == 'out' else 'png'}'")


def _oriented_size(path: Path) -> tuple[int, int]:
    """Width and height of an image after its EXIF orientation, without decoding pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # Orientation: a quarter turn
    except (OSError, UnidentifiedImageError) as exc:
        raise BadInput(f"Cannot read {path} as an image: {exc}") from None
    return (h, w) if turned else (w, h)


def _options(args: argparse.Namespace, size: tuple[int, int] | None, heatmaps: bool) -> Options:
    intrinsics = None
    if args.fx is not None:
        intrinsics = Intrinsics(args.fx, args.fy, args.cx, args.cy)
    elif args.fov is not None and size is not None:
        intrinsics = Intrinsics.from_fov(size[0], size[1], args.fov)
    try:
        return make_options(args.box, intrinsics, args.root_depth_mm, heatmaps)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"Cannot read {path}: {exc.strerror or exc}") from None


def _write(path: str, data: bytes) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)


def _summary(name: str, result: PredictResult) -> str:
    people = ", ".join(f"root depth {p.root_depth_mm:.0f} mm ({p.root_depth_source})"
                       for p in result.persons)
    n = len(result.persons)
    return (f"{name}: {n} person{'s' if n != 1 else ''}" + (f", {people}" if people else "")
            + f", {result.timings_ms.get('total', 0):.0f} ms")


def _without_heatmaps(body: dict[str, Any]) -> dict[str, Any]:
    return body | {"persons": [p | {"heatmaps": None} for p in body["persons"]]}


class _Target:
    """Predict, render and describe through whichever of REST, gRPC or local was chosen."""

    def __init__(self, args: argparse.Namespace, token: str | None):
        self.local = self.rest = self.grpc = None
        self._stack = contextlib.ExitStack()
        if getattr(args, "local", None):
            # Imported on demand: it loads the service core and torch.
            from poseclient.local import LocalService

            self.local = self._stack.enter_context(LocalService(args.local, args.model,
                                                                 timeout=args.timeout))
        elif args.grpc:
            self.grpc = self._stack.enter_context(
                GrpcClient(args.grpc, token=token, timeout=args.timeout))
        else:
            self.rest = self._stack.enter_context(
                RestClient(args.url or DEFAULT_URL, token=token, timeout=args.timeout))

    def __enter__(self) -> _Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def model(self) -> ModelDescription:
        return (self.local or self.grpc or self.rest).model()

    def predict(self, image: bytes, options: Options, render_joint: str | None
                ) -> tuple[PredictResult, bytes | None]:
        """The result and, when `render_joint` is set, the picture with its heatmaps."""
        png = None
        if self.local is not None:
            result = self.local.predict(image, options)
            if render_joint:
                png = self.local.render(image, options, render_joint)
        elif self.rest is not None:
            result = self.rest.predict(image, **_kwargs(options))
            if render_joint:
                png = self.rest.render(image, joint=render_joint,
                                       **_kwargs(options, heatmaps=False))
        else:
            # gRPC has no render call: draw here with the service's renderer, which wants the
            # first person's heatmaps.
            asked = options.heatmaps
            if render_joint:
                options = dataclasses.replace(options, heatmaps="f16")
            result = self.grpc.predict(image, **_kwargs(options))
            if render_joint:
                from poseclient.draw import render_result

                png = render_result(image, result, render_joint)
                if asked == "none":
                    result = PredictResult.from_json(_without_heatmaps(result.to_json()),
                                                     result.request_id)
        return result, png


def _kwargs(options: Options, heatmaps: bool = True) -> dict[str, Any]:
    """Client keyword arguments for `options` (render takes no heatmaps)."""
    kw = {"boxes": list(options.boxes), "intrinsics": options.intrinsics,
          "root_depth_mm": options.root_depth_mm}
    return kw | {"heatmaps": options.heatmaps} if heatmaps else kw


def _predict(args: argparse.Namespace, token: str | None, stdout: IO[str],
             stderr: IO[str]) -> int:
    for path in args.images:
        if not path.is_file():
            raise BadInput(f"No such image file: {path}")
    with _Target(args, token) as target:
        for path in args.images:
            size = _oriented_size(path) if args.fov is not None else None
            options = _options(args, size, args.heatmaps)
            result, png = target.predict(_read(path), options,
                                         args.joint if args.render else None)
            text = json.dumps(result.to_json())
            if args.out:
                _write(args.out.format(stem=path.stem), (text + "\n").encode())
            else:
                stdout.write(text + "\n")
            if png is not None:
                _write(args.render.format(stem=path.stem), png)
            print(_summary(str(path), result), file=stderr)
    return 0


def _model(args: argparse.Namespace, token: str | None, stdout: IO[str]) -> int:
    with _Target(args, token) as target:
        stdout.write(json.dumps(target.model().to_json(), indent=2) + "\n")
    return 0


def overlay_frame(frame: Frame, answer: PredictResult | FrameError) -> Image.Image:
    """A video frame with its people drawn: skeletons, boxes and "id N" in a colour per track
    (a failed frame: as it was)."""
    from poseapi.render import PERSON_COLOURS, draw_overlay

    image = Image.open(io.BytesIO(frame.jpeg)).convert("RGB")
    if isinstance(answer, FrameError) or not answer.persons:
        return image
    labels, colours = [], []
    for i, p in enumerate(answer.persons):
        key = p.track_id if p.track_id is not None else i
        labels.append(f"id {key}" if p.track_id is not None else f"#{i}")
        colours.append(PERSON_COLOURS[(key - 1) % len(PERSON_COLOURS)])
    return draw_overlay(image, scene(answer), labels, colours)


def _video(args: argparse.Namespace, token: str | None, stdout: IO[str], stderr: IO[str]
           ) -> int:
    from tqdm import tqdm

    video = open_video(args.video)
    options = _options(args, video.size, heatmaps=False)
    sent: collections.deque[Frame] = collections.deque()
    unreadable: list[Exception] = []

    def frames() -> Iterator[Frame]:
        # gRPC reads this on its own thread and would hide the error: keep it for later.
        try:
            for frame in video.frames:
                sent.append(frame)
                yield frame  # its JPEG, and its time for the smoothing
        except Exception as exc:
            unreadable.append(exc)

    tracking = Tracking(smooth=not args.no_smooth, min_cutoff=args.min_cutoff,
                        beta=args.beta, d_cutoff=args.d_cutoff, max_missed=args.max_missed,
                        detect_every=args.detect_every)

    failed = done = 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.out, "w")) if args.out else stdout
        mp4 = stack.enter_context(Mp4Writer(args.mp4, video.size, video.rate or 30.0,
                                            args.mp4_width)) if args.mp4 else None
        client = stack.enter_context(GrpcClient(args.grpc, token=token, timeout=args.timeout))
        bar = stack.enter_context(tqdm(total=video.count, unit="frame", desc=args.video.name,
                                       file=stderr))
        for answer in client.stream(frames(), boxes=list(options.boxes),
                                    intrinsics=options.intrinsics,
                                    root_depth_mm=options.root_depth_mm, tracking=tracking):
            frame = sent.popleft()
            record: dict[str, Any] = {"frame": frame.index, "time_s": frame.time_s}
            if mp4 is not None:
                mp4.write(overlay_frame(frame, answer))
            if isinstance(answer, FrameError):
                failed += 1
                record["error"] = {"code": answer.code, "message": answer.message,
                                   "retry_after": answer.retry_after}
            else:
                record |= answer.to_json()
            out.write(json.dumps(record) + "\n")
            done += 1
            bar.update()
    if unreadable:
        raise BadInput(f"Reading {args.video} failed after {done} frames: {unreadable[0]}")
    where = f" to {args.out}" if args.out else ""
    print(f"{args.video}: {done} frames ({video.reader}){where}, {failed} failed", file=stderr)
    if failed:
        print(f"margipose: {failed} of {done} frames failed; their lines carry the error",
              file=stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 failed, 2 bad usage)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    parser = get_args_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    environ = os.environ if environ is None else environ
    token = args.token or environ.get(TOKEN_ENV) or None
    try:
        if args.command == "predict":
            return _predict(args, token, stdout, stderr)
        if args.command == "video":
            return _video(args, token, stdout, stderr)
        return _model(args, token, stdout)
    except PoseClientError as exc:
        print(f"margipose: {exc}", file=stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
