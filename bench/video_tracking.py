"""Tracking and smoothing on real videos: jitter, track ids, accuracy against the teacher.

    python -m bench.video_tracking tune --json bench/results/video/tune.json
    python -m bench.video_tracking measure --json bench/results/video/measure.json

Videos (`training.data.real2d.fetch_videos`: the pose2sim and sports2d wheels): Pose2Sim
cameras 1-3 (train: `tune` chooses smoothing parameters there) and camera 4, and the Sports2D
demo. Every frame goes once through an in-process `PoseService` with the person detector
(margipose-lite and the detector on ONNX Runtime, no boxes); then a `service.tracking.Tracker`
runs over the answers in order with the video's frame times, once per smoothing setting, as
StreamPredict does.

Reported per video and setting:
- jitter: mean norm of the frame-to-frame acceleration of each joint, |x[t+1] - 2 x[t] +
  x[t-1]|, over the triples of consecutive frames a track spans, in pixels and in camera mm;
- error against the teacher (BlazePose heavy, `training.data.real2d`) where it labelled the
  frame: each teacher person's nearest answered person (mean distance over the teacher's
  visible joints, under half the person's height), mean distance in % of their height;
- tracks: ids created, and for Pose2Sim (one subject, the teacher's largest person) the number
  of times the subject's track id changed from one labelled frame to the next (id switches).

Camera 4 and the Sports2D frames around the committed photos are held out of training; the
Sports2D frames elsewhere are train frames of the pose model (`training.data.real2d` splits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import describe_machine, machine_info, markdown_table, write_json
from poseclient.video import open_video
from posecontract.skeleton import JOINT_NAMES
from service.backends import make_backend
from service.core import PoseService
from service.detector import make_detector
from service.options import PredictOptions
from service.results import PoseResult
from service.settings import Settings
from service.tracking import Smoothing, Tracker

ROOT = Path(__file__).resolve().parents[1]
TUNE_VIDEOS = ("pose2sim-cam1", "pose2sim-cam2", "pose2sim-cam3")
MEASURE_VIDEOS = ("pose2sim-cam4", "sports2d")
GRID = {"min_cutoff": (0.05, 0.1, 0.3, 1.0, 3.0), "beta": (0.0, 0.5, 2.0, 10.0, 40.0)}
NECK = JOINT_NAMES.index("neck")


def video_paths(cache: Path) -> dict[str, Path]:
    from training.data.real2d import fetch_videos

    return fetch_videos(cache)


def teacher(root: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(source, frame) -> the teacher's people there."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    with open(root / "real2d" / "labels.jsonl") as f:
        for line in f:
            r = json.loads(line)
            joints, mask = np.array(r["joints"]), np.array(r["mask"], bool)
            seen = joints[mask]
            out[(r["source"], r["frame"])].append({
                "joints": joints, "mask": mask,
                "height": float((seen.max(0) - seen.min(0)).max())})
    return dict(out)


async def answer_frames(path: Path, repository: Path) -> tuple[list[PoseResult], list[float],
                                                               float]:
    """Every frame's answer, the frame times, and the core's seconds per frame."""
    settings = Settings(model_repository=repository, runtime="onnxruntime",
                        max_batch_wait_ms=0)
    service = PoseService(settings, make_backend(settings), detector=make_detector(settings))
    await service.start()
    results, times = [], []
    try:
        video = open_video(path)
        start = time.perf_counter()
        for frame in video.frames:
            results.append(await service.predict(frame.jpeg, "image/jpeg", PredictOptions()))
            times.append(frame.time_s if frame.time_s is not None else frame.index / 30)
        elapsed = time.perf_counter() - start
    finally:
        await service.stop()
    return results, times, elapsed / max(len(results), 1)


async def video_mode(path: Path, repository: Path, detect_every: int, smoothing: Smoothing
                     ) -> tuple[list[PoseResult], float]:
    """StreamPredict's video mode one frame after the other (service.tracking.VideoCrops, as
    the servicer runs it): the tracked answers and the core's seconds per frame."""
    from service.options import Box
    from service.tracking import VideoCrops

    settings = Settings(model_repository=repository, runtime="onnxruntime",
                        max_batch_wait_ms=0)
    service = PoseService(settings, make_backend(settings), detector=make_detector(settings))
    await service.start()
    tracker, crops, size, out = Tracker(), VideoCrops(detect_every), None, []
    try:
        start = time.perf_counter()
        for frame in open_video(path).frames:
            boxes = crops.boxes(tracker, *size) if size else None
            options = PredictOptions(boxes=[Box(x=x, y=y, w=w, h=h) for x, y, w, h in boxes]) \
                if boxes is not None else PredictOptions()
            result = await service.predict(frame.jpeg, "image/jpeg", options,
                                           "track" if boxes is not None else "request")
            size = (result.width, result.height)
            result = crops.answered(result, reused=boxes is not None)
            t = frame.time_s if frame.time_s is not None else frame.index / 30
            out.append(tracker.update(result, t, smoothing))
        elapsed = time.perf_counter() - start
    finally:
        await service.stop()
    return out, elapsed / max(len(out), 1)


def track(results: list[PoseResult], times: list[float], smoothing: Smoothing
          ) -> list[PoseResult]:
    tracker = Tracker()
    return [tracker.update(r, t, smoothing) for r, t in zip(results, times, strict=True)]


def jitter(tracked: list[PoseResult]) -> tuple[float, float]:
    """Mean joint acceleration norm (pixels, camera mm) over consecutive-frame triples."""
    series: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    for t, result in enumerate(tracked):
        for p in result.persons:
            series[p.track_id][t] = (p.pose.pixels, p.pose.camera_mm)
    px, mm = [], []
    for frames in series.values():
        for t in frames:
            if t - 1 in frames and t + 1 in frames:
                for k, out in ((0, px), (1, mm)):
                    acc = frames[t + 1][k] - 2 * frames[t][k] + frames[t - 1][k]
                    out.append(np.linalg.norm(acc, axis=1).mean())
    return (float(np.mean(px)) if px else float("nan"),
            float(np.mean(mm)) if mm else float("nan"))


def against_teacher(tracked: list[PoseResult], source: str,
                    labels: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[str, Any]:
    errors, subject_ids, labelled, found = [], [], 0, 0
    for t, result in enumerate(tracked):
        people = labels.get((source, t), [])
        for k, person in enumerate(people):
            labelled += 1
            best, best_err = None, 0.5
            for p in result.persons:
                d = np.linalg.norm(p.pose.pixels - person["joints"], axis=1)[person["mask"]]
                err = float(d.mean()) / person["height"]
                if err < best_err:
                    best, best_err = p, err
            is_subject = k == int(np.argmax([q["height"] for q in people]))
            if best is None:
                continue
            found += 1
            errors.append(best_err)
            if is_subject:
                subject_ids.append(best.track_id)
    # Only Pose2Sim has one subject throughout; in Sports2D the teacher's largest person is the
    # woman in some frames and the man in others: no identity to count switches against.
    switches = sum(a != b for a, b in zip(subject_ids, subject_ids[1:], strict=False)) \
        if source.startswith("pose2sim") else None
    return {"labelled": labelled, "found": found,
            "error_pct_of_height": 100 * float(np.mean(errors)) if errors else None,
            "subject_id_switches": switches}


def summarise(tracked: list[PoseResult], source: str, labels) -> dict[str, Any]:
    px, mm = jitter(tracked)
    spans: dict[int, list[int]] = {}
    for t, r in enumerate(tracked):
        for p in r.persons:
            span = spans.setdefault(p.track_id, [t, t, 0])
            span[1], span[2] = t, span[2] + 1
    return {"jitter_px": px, "jitter_mm": mm, "track_ids": len(spans),
            "tracks": [{"id": i, "first": a, "last": b, "frames": n}
                       for i, (a, b, n) in sorted(spans.items())],
            "persons_answered": sum(len(r.persons) for r in tracked),
            **against_teacher(tracked, source, labels)}


def stream_rate(paths: dict[str, Path], repository: Path, workdir: Path) -> dict[str, Any]:
    """Frames per second of StreamPredict through a real gateway process (`serve`, ONNX
    Runtime, the detector), smoothing on, the client sending each video's frames as fast as
    the stream takes them (the servicer keeps up to 4 frames in the core at once)."""
    from bench.serving import Spawned, gateway_command
    from deploy.triton_server import free_port
    from poseclient.grpc import GrpcClient, Tracking

    port, grpc_port = free_port(), free_port()
    command = gateway_command(repository, "margipose-lite", port, grpc_port,
                              ["--runtime", "onnxruntime"])
    workdir.mkdir(parents=True, exist_ok=True)
    out = {}
    with Spawned(command, f"http://127.0.0.1:{port}/health/ready", workdir, "gateway"):
        with GrpcClient(f"127.0.0.1:{grpc_port}", timeout=60) as client:
            for name in MEASURE_VIDEOS:
                frames = list(open_video(paths[name]).frames)
                list(client.stream(frames[:4], tracking=Tracking(smooth=True)))  # warm-up
                start = time.perf_counter()
                answers = list(client.stream(frames, tracking=Tracking(smooth=True)))
                elapsed = time.perf_counter() - start
                out[name] = {"frames": len(answers), "seconds": elapsed,
                             "frames_per_second": len(answers) / elapsed,
                             "failed": sum(not hasattr(a, "persons") for a in answers)}
                print(f"{name}: StreamPredict {len(answers) / elapsed:.2f} frames/s", flush=True)
    return out


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["tune", "measure", "stream", "video-mode"])
    p.add_argument("--detect-every", type=int, nargs="+", default=[1, 3, 5, 10],
                   help="video-mode: the settings compared")
    p.add_argument("--root", type=Path, default=ROOT / "build")
    p.add_argument("--cache", type=Path, default=ROOT / "build" / "wheels")
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--min-cutoff", type=float, default=None,
                   help="measure: the chosen setting besides off and MediaPipe's")
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    paths, labels = video_paths(args.cache), teacher(args.root)
    if args.command == "video-mode":
        rows, results = [], {}
        for name in MEASURE_VIDEOS:
            for n in args.detect_every:
                tracked, seconds = asyncio.run(video_mode(paths[name], args.repository, n,
                                                          Smoothing(enabled=False)))
                s = summarise(tracked, name, labels)
                s["frames_per_second_core"] = 1 / seconds
                s["detector_frames"] = sum(
                    any(p.box_source == "detector" for p in r.persons) or not r.persons
                    for r in tracked)
                results[f"{name}/{n}"] = s
                rows.append([name, str(n), f"{1 / seconds:.2f}", str(s["detector_frames"]),
                             f"{s['error_pct_of_height']:.2f}", f"{s['found']}/{s['labelled']}",
                             str(s["track_ids"]), f"{s['jitter_px']:.2f}"])
                print(rows[-1], flush=True)
        info = machine_info()
        print(describe_machine(info))
        print(markdown_table(["video", "detect every", "frames/s (core)", "frames detected",
                              "error % height", "teacher people found", "track ids",
                              "jitter px"], rows, text_columns=2))
        payload = {"machine": info, "command": "video-mode", "results": results}
        if args.json:
            write_json(args.json, payload)
        return payload
    if args.command == "stream":
        rates = stream_rate(paths, args.repository, args.root / "bench-stream")
        payload = {"machine": machine_info(), "command": "stream", "results": rates}
        if args.json:
            write_json(args.json, payload)
        return payload
    names = TUNE_VIDEOS if args.command == "tune" else MEASURE_VIDEOS
    answered = {}
    for name in names:
        results, times, seconds = asyncio.run(answer_frames(paths[name], args.repository))
        answered[name] = (results, times, seconds)
        print(f"{name}: {len(results)} frames, {1 / seconds:.2f} frames/s through the core",
              flush=True)
    settings: dict[str, Smoothing] = {"off": Smoothing(enabled=False),
                                      "mediapipe": Smoothing()}
    if args.command == "tune":
        for mc in GRID["min_cutoff"]:
            for beta in GRID["beta"]:
                settings[f"{mc}/{beta}"] = Smoothing(min_cutoff=mc, beta=beta)
    elif args.min_cutoff is not None:
        settings["chosen"] = Smoothing(min_cutoff=args.min_cutoff,
                                       beta=args.beta if args.beta is not None else 40.0)
    table, out = [], {}
    for key, smoothing in settings.items():
        per_video = {name: summarise(track(r, t, smoothing), name, labels)
                     for name, (r, t, _) in answered.items()}
        out[key] = {"smoothing": asdict(smoothing), "videos": per_video}
        for name, s in per_video.items():
            table.append([key, name, f"{s['jitter_px']:.2f}", f"{s['jitter_mm']:.1f}",
                          "-" if s["error_pct_of_height"] is None
                          else f"{s['error_pct_of_height']:.2f}",
                          f"{s['found']}/{s['labelled']}", str(s["track_ids"]),
                          "-" if s["subject_id_switches"] is None
                          else str(s["subject_id_switches"])])
    info = machine_info()
    print(describe_machine(info))
    print(markdown_table(["smoothing (min_cutoff/beta)", "video", "jitter px", "jitter mm",
                          "error % height", "teacher people found", "track ids",
                          "subject id switches"], table, text_columns=2))
    payload = {"machine": info, "command": args.command,
               "frames_per_second_core": {n: 1 / s for n, (_, _, s) in answered.items()},
               "results": out}
    if args.json:
        write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
