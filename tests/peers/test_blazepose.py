"""BlazePose through the runner and client on the committed real photos.

Needs the MediaPipe venv (`bash peers/install_blazepose.sh`): without it these tests skip, and
fail instead when MARGIPOSE_REQUIRE_BLAZEPOSE=1 (CI). The boundary tests run everywhere.
"""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peers.blazepose_client import (
    BlazePoseClient,
    BlazePoseError,
    BlazePosePrediction,
    BlazePoseUnavailable,
    find_venv,
    predict_images,
)
from posecontract.skeleton import JOINT_NAMES, NUM_JOINTS, ROOT

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "data" / "photos"
J = {name: i for i, name in enumerate(JOINT_NAMES)}
LEFT_HIP, RIGHT_HIP = 23, 24  # BlazePose landmark indices

# The woman walking in frame 75 of the Sports2D demo, whole body, every joint visible.
WALKER = (PHOTOS / "sports2d_frame075.jpg", (1018, 478, 1518, 978))
FRONTAL = [PHOTOS / "astronaut.jpg", PHOTOS / "grace_hopper.jpg"]

# (bone, low, high) in mm: wide adult ranges (thigh and shin ~ 0.24 and 0.25 of stature).
BONE_RANGES = [
    (("left_hip", "left_knee"), 300, 600), (("right_hip", "right_knee"), 300, 600),
    (("left_knee", "left_ankle"), 300, 600), (("right_knee", "right_ankle"), 300, 600),
    (("left_shoulder", "left_elbow"), 180, 400), (("right_shoulder", "right_elbow"), 180, 400),
    (("left_elbow", "left_wrist"), 150, 400), (("right_elbow", "right_wrist"), 150, 400),
    (("left_shoulder", "right_shoulder"), 200, 500), (("pelvis", "neck"), 350, 650),
]


@pytest.fixture(scope="module", params=[0, 1, 2], ids=["lite", "full", "heavy"])
def blazepose(request, blazepose_venv) -> Iterator[BlazePoseClient]:
    """A runner per complexity, shared by the module's tests."""
    with BlazePoseClient(request.param, blazepose_venv) as client:
        yield client


@pytest.fixture(scope="module")
def walker(blazepose: BlazePoseClient) -> BlazePosePrediction:
    return blazepose.predict(WALKER[0], WALKER[1])


def test_finds_the_walker_with_every_joint_inside_the_crop(walker):
    assert walker.found
    assert walker.mask.all()
    x0, y0, x1, y1 = WALKER[1]
    inside = ((walker.joints2d >= (x0, y0)) & (walker.joints2d <= (x1, y1))).all(axis=1)
    assert inside.all(), [JOINT_NAMES[j] for j in np.flatnonzero(~inside)]
    # The head is above the pelvis, which is above the ankles (image y grows downward).
    y = walker.joints2d[:, 1]
    assert y[J["head_top"]] < y[J["head"]] < y[J["neck"]] < y[J["pelvis"]]
    assert y[J["pelvis"]] < min(y[J["left_ankle"]], y[J["right_ankle"]])


def test_pelvis_is_exactly_mid_hips(walker):
    hips = 0.5 * (walker.landmarks2d[LEFT_HIP] + walker.landmarks2d[RIGHT_HIP])
    np.testing.assert_array_equal(walker.joints2d[ROOT], hips)
    np.testing.assert_array_equal(walker.joints3d[ROOT], np.zeros(3))
    # Root-relative = BlazePose's hip-centred world landmarks less their mid-hips.
    world_hips = 0.5 * (walker.world_mm[LEFT_HIP] + walker.world_mm[RIGHT_HIP])
    np.testing.assert_allclose(walker.joints3d[J["left_hip"]],
                               walker.world_mm[LEFT_HIP] - world_hips, atol=1e-9)


@pytest.mark.parametrize(("bone", "low", "high"), BONE_RANGES,
                         ids=["-".join(b) for b, _, _ in BONE_RANGES])
def test_bone_lengths_are_human(walker, bone, low, high):
    length = np.linalg.norm(walker.joints3d[J[bone[0]]] - walker.joints3d[J[bone[1]]])
    assert low <= length <= high, f"{bone}: {length:.0f} mm"


@pytest.mark.parametrize("photo", FRONTAL, ids=lambda p: p.name)
def test_frontal_person_left_shoulder_is_on_image_right(blazepose, photo):
    pred = blazepose.predict(photo)
    assert pred.found and pred.mask[[J["left_shoulder"], J["right_shoulder"], J["neck"]]].all()
    with Image.open(photo) as image:
        width, height = image.size
    visible = pred.joints2d[pred.mask]
    assert ((visible >= 0) & (visible <= (width, height))).all()
    # Facing the camera, the person's left is the image's right.
    assert pred.joints2d[J["left_shoulder"], 0] > pred.joints2d[J["right_shoulder"], 0] + 50
    assert pred.joints3d[J["left_shoulder"], 0] > pred.joints3d[J["right_shoulder"], 0]


def test_box_gives_full_image_coordinates(blazepose, walker, tmp_path):
    # The same pixels saved as their own image: coordinates differ by the box corner only.
    x0, y0, x1, y1 = WALKER[1]
    crop = tmp_path / "walker.png"
    with Image.open(WALKER[0]) as image:
        image.convert("RGB").crop((x0, y0, x1, y1)).save(crop)
    alone = blazepose.predict(crop)
    np.testing.assert_allclose(alone.joints2d + (x0, y0), walker.joints2d, atol=1e-6)
    np.testing.assert_allclose(alone.joints3d, walker.joints3d, atol=1e-6)
    np.testing.assert_array_equal(alone.mask, walker.mask)


def test_no_person_gives_a_masked_record(blazepose, tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(grey)
    pred = blazepose.predict(grey)
    assert not pred.found
    assert not pred.mask.any()
    assert np.isnan(pred.joints2d).all() and np.isnan(pred.joints3d).all()


def test_errors_name_the_bad_input(blazepose, tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(BlazePoseError, match="missing.jpg"):
        blazepose.predict(missing)
    with pytest.raises(BlazePoseError, match="x1 > x0"):
        blazepose.predict(WALKER[0], (100, 100, 50, 200))
    # The runner survives bad requests.
    assert blazepose.predict(WALKER[0], WALKER[1]).found


def test_predict_images_stacks_in_order(walker, blazepose, blazepose_venv):
    joints2d, joints3d, mask = predict_images([FRONTAL[0], WALKER[0]], blazepose.complexity,
                                              boxes=[None, WALKER[1]], venv=blazepose_venv)
    assert joints2d.shape == (2, NUM_JOINTS, 2) and joints3d.shape == (2, NUM_JOINTS, 3)
    assert mask.shape == (2, NUM_JOINTS) and mask.dtype == bool
    np.testing.assert_allclose(joints2d[1], walker.joints2d, atol=1e-6)
    np.testing.assert_array_equal(mask[1], walker.mask)


def test_cli_require_person_fails_on_an_empty_image(blazepose_venv, tmp_path):
    python = blazepose_venv / "bin" / "python"
    grey = tmp_path / "grey.png"
    Image.new("RGB", (128, 128), (128, 128, 128)).save(grey)
    run = subprocess.run([str(python), "-m", "peers.blazepose", "--complexity", "0",
                          "--require-person", str(grey)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert '"found": false' in run.stdout


def test_missing_venv_names_the_install_script(tmp_path):
    with pytest.raises(BlazePoseUnavailable, match="install_blazepose.sh"):
        find_venv(tmp_path / "nowhere")
    (tmp_path / "half" / "bin").mkdir(parents=True)
    (tmp_path / "half" / "bin" / "python").touch()
    with pytest.raises(BlazePoseUnavailable, match="incomplete"):
        find_venv(environ={"MARGIPOSE_MEDIAPIPE_VENV": str(tmp_path / "half")})


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the modules a source file imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", ["blazepose.py", "blazepose_mapping.py", "bench_blazepose.py"])
def test_runner_side_is_standalone(name):
    # These run in the MediaPipe venv: numpy 1, no torch, none of our packages but the runner's
    # own and the benchmarks' machine description (stdlib only, checked below).
    allowed = {"numpy", "PIL", "mediapipe", "peers", "bench"}
    for module in imported_modules(REPO / "peers" / name):
        top = module.split(".")[0]
        assert top in sys.stdlib_module_names or top in allowed, f"{name} imports {module}"
        if top in ("peers", "bench"):
            assert module in {"peers.blazepose", "peers.blazepose_mapping", "bench.report"}, \
                module


def test_the_benchmarks_machine_description_needs_no_torch():
    tree = ast.parse((REPO / "bench" / "report.py").read_text())
    top_level = {alias.name for node in tree.body if isinstance(node, ast.Import)
                 for alias in node.names}
    top_level |= {node.module for node in tree.body
                  if isinstance(node, ast.ImportFrom) and node.module}
    assert top_level and all(m.split(".")[0] in sys.stdlib_module_names
                             for m in top_level - {"__future__"}), top_level
    # `import bench.report` runs the package's __init__ first.
    assert {m.split(".")[0] for m in imported_modules(REPO / "bench" / "__init__.py")} <= \
        set(sys.stdlib_module_names)


def test_client_never_imports_mediapipe():
    assert not {m for m in imported_modules(REPO / "peers" / "blazepose_client.py")
                if m.split(".")[0] in {"mediapipe", "cv2", "torch"}}
