"""Pinhole cameras, person crops and the perspective "NDC" normalisation of MargiPose.

Conventions (shared by training and serving; pure numpy, float64):

- Continuous image coordinates: pixel i covers [i, i+1), its centre is i + 0.5. A pinhole camera
  maps camera-space (X, Y, Z) in mm to u = fx X / Z + cx, v = fy Y / Z + cy.
- A crop is built by a chain of small steps (`CropChain`), each applied consistently to the
  camera, the image (a 3x3 homogeneous pixel map, original pixel -> current pixel) and 3D points
  (a 3x3 linear map, original camera space -> current camera space), so that projecting the
  mapped points with the current camera always equals mapping the projected pixels:
    pan          translate the image so a chosen point lands on the principal point; points are
                 sheared X += (dx / fx) Z, Y += (dy / fy) Z, depth Z unchanged;
    rotate       turn the image about the principal point; points turn about the optical axis,
                 conjugated by the focal lengths (pixel-aspect correction);
    zoom         scale the image about the principal point; the focal lengths scale with it;
    flip         mirror the image about the principal point's column; X -> -X (the left/right
                 joint permutation is the caller's, see `training.skeleton`);
    square_crop  cut a square window centred on the principal point;
    resize       change the resolution; camera and pixels scale with it.
  No step translates points, so the point map is linear and exactly invertible; predictions go
  back to the original camera with `uncrop_points`.
- `make_crop` composes these into the standard person crop: a square of `side` source pixels
  centred on `centre`, turned and optionally mirrored, resampled to `size` x `size`. Its crop
  camera has its principal point at the crop centre (size/2, size/2) and focal lengths scaled by
  size/side. (The reference cropped about the source image centre instead, leaving the principal
  point at (cx 256/W, cy 256/H); we centre the window on the principal point by construction.)
- Normalised coordinates (the model's output space) follow MargiPose's normaliser: for a camera
  (fx, fy, cx, cy) with image size (W, H) and root depth z_ref,
  x = (fx / cx) X / Z, y = (fy / cy) Y / Z, z = (1 - z_ref / Z) / k with
  s = z_ref max(W / fx, H / fy), a = sqrt(z_ref^2 + s^2), k = s / (a + z_ref).
  The root maps to z = 0 and farther points get positive z. Because our crop camera always has
  its principal point at the crop centre, x = (u - size/2) / (size/2): -1 and +1 are the crop's
  edges, the same as the heatmap grid (the reference divided by an off-centre principal point,
  a quirk we avoid by construction; the normaliser itself is the reference's).
- Everything here scales linearly with z_ref, so the root depth that gives a skeleton of a known
  size follows in closed form (`root_depth_from_scale`).
"""


from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from posecontract.skeleton import FLIP_PERMUTATION, JOINT_NAMES

_L_HIP, _L_KNEE = JOINT_NAMES.index("left_hip"), JOINT_NAMES.index("left_knee")
_PELVIS, _SPINE, _NECK = (JOINT_NAMES.index(n) for n in ("pelvis", "spine", "neck"))

# Knee-neck length prior of MargiPose (left thigh + pelvis-spine + spine-neck), mm.
KNEE_NECK_MM = 920.0


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (no distortion)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"Intrinsics.{name} must be finite, got {value}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"Focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_fov(cls, width: int, height: int, fov_degrees: float) -> Intrinsics:
        """Square-pixel camera with the given *diagonal* field of view, centred principal point."""
        if not 1.0 <= fov_degrees <= 179.0:
            raise ValueError(f"Field of view must be in [1, 179] degrees, got {fov_degrees}")
        diagonal = math.hypot(width, height)
        f = 0.5 * diagonal / math.tan(math.radians(fov_degrees) / 2)
        return cls(f, f, width / 2, height / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project camera-space points (..., 3) in mm to pixels (..., 2)."""
        points = np.asarray(points, dtype=np.float64)
        z = points[..., 2]
        return np.stack(
            [self.fx * points[..., 0] / z + self.cx, self.fy * points[..., 1] / z + self.cy],
            axis=-1,
        )


@dataclass(frozen=True)
class Crop:
    """A square person crop: the crop camera and the maps into it from the original image.

    `pixel_matrix` (3x3, homogeneous) maps original pixel coordinates to crop pixel
    coordinates; `point_matrix` (3x3) maps original camera-space points to crop camera space.
    Both are read-only. `flipped` says the crop is mirrored: its points have X -> -X, and
    skeletons in it are kept in left/right-swapped joint order (the caller's permutation).
    """

    camera: Intrinsics
    size: int
    pixel_matrix: np.ndarray
    point_matrix: np.ndarray
    flipped: bool


def _translation(du: float, dv: float) -> np.ndarray:
    """Homogeneous 3x3 pixel translation by (du, dv)."""
    return np.array([[1.0, 0.0, du], [0.0, 1.0, dv], [0.0, 0.0, 1.0]])


def _about(linear: np.ndarray, cu: float, cv: float) -> np.ndarray:
    """Homogeneous 3x3 pixel map applying the 2x2 `linear` about the point (cu, cv)."""
    step = np.eye(3)
    step[:2, :2] = linear
    return _translation(cu, cv) @ step @ _translation(-cu, -cv)


def _frozen(matrix: np.ndarray) -> np.ndarray:
    """Return `matrix` marked read-only, so chains and crops can share it safely."""
    matrix.setflags(write=False)
    return matrix


@dataclass(frozen=True, eq=False)
class CropChain:
    """A camera and its image part-way through the crop steps, with the maps that got it there.

    Every step returns a new chain. `pixel_matrix` (3x3, homogeneous) maps original pixel
    coordinates to current ones; `point_matrix` (3x3, linear) maps original camera-space points
    to current ones; `image_size` is (W, H) in pixels, or None while unknown (only
    `square_crop` and `resize` need or set it); `flipped` is the parity of the flips so far.
    """

    camera: Intrinsics
    image_size: tuple[float, float] | None
    pixel_matrix: np.ndarray
    point_matrix: np.ndarray
    flipped: bool = False

    @classmethod
    def start(
        cls, intrinsics: Intrinsics, image_size: tuple[float, float] | None = None
    ) -> CropChain:
        """The untouched source image: identity maps."""
        return cls(intrinsics, image_size, _frozen(np.eye(3)), _frozen(np.eye(3)))

    def _then(
        self,
        pixel_step: np.ndarray,
        camera: Intrinsics,
        point_step: np.ndarray | None = None,
        image_size: tuple[float, float] | None = None,
        flip: bool = False,
    ) -> CropChain:
        """Append one step: a pixel map, the camera after it, and the matching point map."""
        points = self.point_matrix
        if point_step is not None:
            points = _frozen(point_step @ points)
        return CropChain(
            camera,
            self.image_size if image_size is None else image_size,
            _frozen(pixel_step @ self.pixel_matrix),
            points,
            self.flipped != flip,
        )

    def pan(self, centre: tuple[float, float]) -> CropChain:
        """Translate the image so the pixel `centre` lands on the principal point."""
        cam = self.camera
        du, dv = cam.cx - float(centre[0]), cam.cy - float(centre[1])
        # u = fx X / Z + cx moves by du exactly when X moves by (du / fx) Z.
        shear = np.array([[1.0, 0.0, du / cam.fx], [0.0, 1.0, dv / cam.fy], [0.0, 0.0, 1.0]])
        return self._then(_translation(du, dv), cam, shear)

    def rotate(self, angle: float) -> CropChain:
        """Turn the image content counter-clockwise on screen by `angle` radians about the
        principal point; points turn about the optical axis to match."""
        cam = self.camera
        c, s = math.cos(angle), math.sin(angle)
        # Rows grow downwards, so a counter-clockwise turn on screen is R(-angle) in (u, v).
        turn = np.array([[c, s], [-s, c]])
        # In camera space the same turn acts on (fx X / Z, fy Y / Z): conjugate by the focals.
        focal = np.diag([cam.fx, cam.fy])
        point_step = np.eye(3)
        point_step[:2, :2] = np.linalg.inv(focal) @ turn @ focal
        return self._then(_about(turn, cam.cx, cam.cy), cam, point_step)

    def zoom(self, factor: float) -> CropChain:
        """Magnify the image by `factor` about the principal point (focal lengths scale)."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"Zoom factor must be a positive finite number, got {factor}")
        cam = self.camera
        zoomed = Intrinsics(cam.fx * factor, cam.fy * factor, cam.cx, cam.cy)
        return self._then(_about(factor * np.eye(2), cam.cx, cam.cy), zoomed)

    def flip(self) -> CropChain:
        """Mirror the image about the principal point's column; points get X -> -X."""
        cam = self.camera
        mirror = np.diag([-1.0, 1.0])
        return self._then(
            _about(mirror, cam.cx, cam.cy), cam, np.diag([-1.0, 1.0, 1.0]), flip=True
        )

    def square_crop(self, side: float) -> CropChain:
        """Cut the `side` x `side` window centred on the principal point."""
        if not (side > 0 and math.isfinite(side)):
            raise ValueError(f"Crop side must be a positive number of pixels, got {side}")
        cam = self.camera
        half = side / 2
        centred = Intrinsics(cam.fx, cam.fy, half, half)
        return self._then(
            _translation(half - cam.cx, half - cam.cy), centred, image_size=(side, side)
        )

    def resize(self, width: float, height: float) -> CropChain:
        """Resample the current image to `width` x `height` pixels."""
        if self.image_size is None:
            raise ValueError("resize needs a known image size: start the chain with "
                             "image_size or call square_crop first")
        if not (width > 0 and height > 0):
            raise ValueError(f"Image size must be positive, got {width} x {height}")
        # Continuous coordinates scale edge to edge: [0, W) -> [0, width), no half-pixel shift.
        sx, sy = width / self.image_size[0], height / self.image_size[1]
        cam = self.camera
        scaled = Intrinsics(cam.fx * sx, cam.fy * sy, cam.cx * sx, cam.cy * sy)
        return self._then(np.diag([sx, sy, 1.0]), scaled, image_size=(width, height))

    def to_crop(self) -> Crop:
        """Freeze a chain that ends in a square, whole-pixel image centred on its principal
        point into a `Crop`."""
        if self.image_size is None:
            raise ValueError("The chain has no image size yet: end it with square_crop")
        width, height = self.image_size
        size = round(width)
        if width != height or abs(width - size) > 1e-9 or size < 1:
            raise ValueError(
                f"A crop must be a square of whole pixels, got {width} x {height}"
            )
        cam = self.camera
        if abs(cam.cx - width / 2) > 1e-9 * width or abs(cam.cy - height / 2) > 1e-9 * height:
            raise ValueError(
                f"A crop's principal point must be its centre {width / 2}, "
                f"got ({cam.cx}, {cam.cy})"
            )
        return Crop(cam, size, self.pixel_matrix, self.point_matrix, self.flipped)


def make_crop(
    intrinsics: Intrinsics,
    centre: tuple[float, float],
    side: float,
    size: int = 256,
    rotation: float = 0.0,
    flip: bool = False,
) -> Crop:
    """Build the crop of `side` source pixels centred on `centre` and resampled to `size`.

    In the crop the image content appears turned counter-clockwise on screen by `rotation`
    radians about the crop centre (the crop window is turned clockwise in the source), then
    mirrored left-right if `flip`. The crop camera has focal lengths scaled by size / side and
    its principal point at (size/2, size/2).
    """
    if not (side > 0 and math.isfinite(side)):
        raise ValueError(f"Crop side must be a positive number of pixels, got {side}")
    chain = CropChain.start(intrinsics).pan(centre).rotate(rotation).zoom(size / side)
    if flip:
        chain = chain.flip()
    return chain.square_crop(size).to_crop()


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 linear map to points (..., 3)."""
    return np.asarray(points, dtype=np.float64) @ matrix.T


def crop_points(crop: Crop, points: np.ndarray) -> np.ndarray:
    """Map original camera-space points (..., 3) into the crop camera's space."""
    return _apply(crop.point_matrix, points)


def uncrop_points(crop: Crop, points: np.ndarray) -> np.ndarray:
    """Map crop camera-space points (..., 3) back to the original camera's space."""
    return _apply(np.linalg.inv(crop.point_matrix), points)


def uncrop_pixels(crop: Crop, uv: np.ndarray) -> np.ndarray:
    """Map crop pixel coordinates (..., 2) back to the original image."""
    inv = np.linalg.inv(crop.pixel_matrix)
    uv = np.asarray(uv, dtype=np.float64)
    return uv @ inv[:2, :2].T + inv[:2, 2]


def _depth_constants(camera: Intrinsics, width: float, height: float) -> float:
    """Return c with s = c * z_ref, the crop's field-of-view width per mm of root depth."""
    return max(width / camera.fx, height / camera.fy)


def normalise(
    points: np.ndarray, camera: Intrinsics, z_ref: float, width: float, height: float
) -> np.ndarray:
    """Camera-space mm (..., 3) -> normalised (x, y, z) for `camera` with image size (W, H)."""
    points = np.asarray(points, dtype=np.float64)
    X, Y, Z = points[..., 0], points[..., 1], points[..., 2]
    s = z_ref * _depth_constants(camera, width, height)
    k = s / (math.hypot(z_ref, s) + z_ref)
    x = camera.fx / camera.cx * X / Z
    y = camera.fy / camera.cy * Y / Z
    z = (1.0 - z_ref / Z) / k
    return np.stack([x, y, z], axis=-1)


def denormalise(
    ndc: np.ndarray, camera: Intrinsics, z_ref: float, width: float, height: float
) -> np.ndarray:
    """Normalised (..., 3) -> camera-space mm, the exact inverse of `normalise`."""
    ndc = np.asarray(ndc, dtype=np.float64)
    c = _depth_constants(camera, width, height)
    k = c / (math.hypot(1.0, c) + 1.0)  # s / (a + z_ref), independent of z_ref
    Z = z_ref / (1.0 - k * ndc[..., 2])
    X = ndc[..., 0] * Z * camera.cx / camera.fx
    Y = ndc[..., 1] * Z * camera.cy / camera.fy
    return np.stack([X, Y, Z], axis=-1)


def knee_neck_length(joints: np.ndarray) -> np.ndarray:
    """Left thigh + pelvis-spine + spine-neck length of canonical skeletons (..., 17, 3)."""
    joints = np.asarray(joints, dtype=np.float64)

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(joints[..., a, :] - joints[..., b, :], axis=-1)

    return dist(_L_KNEE, _L_HIP) + dist(_SPINE, _PELVIS) + dist(_NECK, _SPINE)


def root_depth_from_scale(
    ndc: np.ndarray,
    crop: Crop,
    measure: Callable[[np.ndarray], np.ndarray] = knee_neck_length,
    target: float = KNEE_NECK_MM,
) -> np.ndarray:
    """Root depth z_ref (mm) at which the skeleton `ndc` (..., 17, 3), denormalised in `crop`'s
    camera and mapped back to the original camera, has `measure(...) == target`.

    Denormalisation scales the skeleton linearly with z_ref, so this is closed form: measure
    at z_ref = 1 and rescale. (The reference searched numerically for the same number.) The
    joints of a flipped crop are in mirrored order, so they are put back in canonical order
    before measuring: the knee-neck path and the bone pairing are not left/right symmetric.
    """
    ndc = np.asarray(ndc, dtype=np.float64)
    if crop.flipped:
        ndc = ndc[..., FLIP_PERMUTATION, :]
    unit = uncrop_points(crop, denormalise(ndc, crop.camera, 1.0, crop.size, crop.size))
    measured = measure(unit)
    if np.any(~np.isfinite(measured)) or np.any(measured <= 0):
        raise ValueError("Cannot infer depth: the skeleton has zero or undefined size")
    return target / measured
