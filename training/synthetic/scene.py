"""One synthetic photo: a posed, dressed body seen by a random camera over a background.

Steps (each draw from one numpy Generator, so a scene is a pure function of its seed):

1. pose the body (`poses`, `skinning`), take its 17 joints (`joints`), stand it on z = 0;
2. camera (`sample_view`): an image size from `IMAGE_SIZES`, a diagonal field of view of
   35-75 degrees, a random azimuth around the person, an elevation mostly near eye level
   (N(8, 15) degrees, clipped to [-25, 70]), a distance that makes the person fill 35-95% of
   the image height, a small roll, and an aim off the person's centre (person off-centre,
   sometimes slightly cut by the frame); square pixels, principal point at the image centre;
3. rasterise (`raster`), dress and light (`appearance`), anti-alias the silhouette and put it
   over a background (`backgrounds`) with a soft contact shadow on floors;
4. occluders: with probability 0.35, one to three flat shapes (plain, noise or photo-textured)
   in front of the person; the joints stay labelled, `Scene.occluded` says which of them lie
   under a shape (the pixel the joint projects to is covered) and `occlusion` records the hidden
   fraction of body pixels;
5. self-occlusion: `Scene.self_occluded` marks the limb joints that lie behind the person's own
   body (a far arm in a side view, a hand behind the back): the rendered surface at the joint's
   pixel is nearer than the joint by more than the joint can lie under its own limb
   (`SELF_OCCLUSION_DEPTH_MM`);
6. degradations: defocus or motion blur, sensor noise, a colour cast, JPEG re-encoding.

Camera space is OpenCV's (x right, y down, z forward) in millimetres, like every `Sample`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from posecontract.geometry import Intrinsics
from training.synthetic import appearance, backgrounds, joints, poses, raster, skinning
from training.synthetic.body import BodyAsset
from training.synthetic.rotations import between

IMAGE_SIZES: tuple[tuple[int, int], ...] = ((480, 360), (360, 480), (448, 448), (512, 384),
                                            (384, 512))
UP = np.array([0.0, 0.0, 1.0])
OCCLUDER_PROB = 0.3
# How deep a joint can lie under its own limb's surface, mm: a limb joint whose pixel shows a
# surface nearer than this is behind some other part of the body. Measured on 200 training
# renders (depth of the joint minus the rendered depth at its pixel): wrists, elbows, knees and
# ankles have medians of 27-66 mm, shoulders 66-73 mm, hips 103-110 mm, and each a second mode
# at 250-450 mm (the far side of the body). The trunk's centre line (pelvis, spine, neck, head)
# lies 80-150 mm inside the body from every side: "behind the body" means nothing for it, so it
# is never marked (None).
SELF_OCCLUSION_DEPTH_MM: tuple[float | None, ...] = (
    120.0,  # head_top
    None, 150.0, 120.0, 120.0,  # neck, right shoulder, elbow, wrist
    150.0, 120.0, 120.0,  # left shoulder, elbow, wrist
    200.0, 120.0, 120.0,  # right hip, knee, ankle
    200.0, 120.0, 120.0,  # left hip, knee, ankle
    None, None, None,  # pelvis, spine, head
)


@dataclass(frozen=True, eq=False)
class View:
    """A camera looking at the scene: world (metres, z up) -> camera (mm, OpenCV)."""

    camera: Intrinsics
    width: int
    height: int
    rotation: np.ndarray  # (3, 3) world -> camera axes
    centre: np.ndarray  # (3,) camera position, world metres
    azimuth: float  # degrees, 0 = in front of the person's rest facing (-y)
    elevation: float  # degrees above the horizontal, looking down when positive

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) in metres -> camera space (..., 3) in mm."""
        return 1000.0 * (np.asarray(points) - self.centre) @ self.rotation.T

    def rays(self) -> np.ndarray:
        """World direction (H, W, 3) through each pixel centre (unnormalised)."""
        cam = self.camera
        v, u = np.mgrid[:self.height, :self.width].astype(np.float32) + 0.5
        d = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=-1)
        return d @ self.rotation.astype(np.float32)


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered synthetic photo with its exact labels."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    camera: Intrinsics
    joints: np.ndarray  # (17, 3) camera space, mm
    body_mask: np.ndarray  # (H, W) bool: body pixels before occluders
    meta: dict[str, Any]
    occluded: np.ndarray | None = None  # (17,) bool: joint's pixel under an occluder
    self_occluded: np.ndarray | None = None  # (17,) bool: joint behind the body itself


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation of a camera at `centre` aimed at `target`, z up, no roll."""
    forward = target - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, UP)
    if np.linalg.norm(right) < 1e-6:  # looking straight up or down
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def sample_view(rng: np.random.Generator, vertices: np.ndarray) -> View:
    """Draw a camera that frames the posed body `vertices` (V, 3), world metres."""
    width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    fov = rng.uniform(35, 75)
    camera = Intrinsics.from_fov(width, height, fov)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    target = 0.5 * (low + high)
    extent = float(np.linalg.norm(high - low))  # bounding-box diagonal, metres
    azimuth = rng.uniform(-180, 180)
    elevation = float(np.clip(rng.normal(8, 15), -25, 70))
    fill = rng.uniform(0.35, 0.95)
    # Distance at which the bounding box's diagonal spans `fill` of the image height.
    distance = max(camera.fy * extent / (fill * height) * 0.85, extent)
    az, el = math.radians(azimuth), math.radians(elevation)
    offset = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    centre = target + distance * offset
    rotation = _look_at(centre, target)
    # Roll about the optical axis, then aim so the person lands off-centre.
    roll = rng.normal(0, 3) if rng.random() < 0.9 else rng.normal(0, 15)
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ rotation
    span = fill * height / 2
    dx = rng.uniform(-1, 1) * max(width / 2 - 0.4 * span, 0) * 0.9
    dy = rng.uniform(-1, 1) * max(height / 2 - span, 0) * 0.9 + rng.normal(0, 0.05 * height)
    aim = np.array([dx / camera.fx, dy / camera.fy, 1.0])
    rotation = between(np.array([0.0, 0.0, 1.0]), aim) @ rotation
    return View(camera, width, height, rotation, centre, float(azimuth), elevation)


def _soft_alpha(mask: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (H, W) float32: the mask, its edge pixels partly transparent."""
    blurred = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.BoxBlur(1))
    alpha = np.asarray(blurred, dtype=np.float32) / 255
    return np.where(mask, np.clip(alpha * 1.6 - 0.1, 0.35, 1.0), 0.0).astype(np.float32)


def _occluders(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, split: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Paint 1-3 shapes over the person's area; return the image and the covered pixels."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    covered = np.zeros_like(mask)
    if len(xs) == 0:
        return image, covered
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    yy, xx = np.mgrid[:height, :width]
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(x0, x1 + 1), rng.uniform(y0, y1 + 1)
        rx = rng.uniform(0.08, 0.45) * (x1 - x0 + 20)
        ry = rng.uniform(0.05, 0.35) * (y1 - y0 + 20)
        shape = rng.integers(3)
        if shape == 0:
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        elif shape == 1:
            inside = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
        else:  # a bar (pole, railing, table edge) at a random angle
            angle = rng.uniform(0, np.pi)
            dist = (xx - cx) * math.sin(angle) - (yy - cy) * math.cos(angle)
            inside = np.abs(dist) < rng.uniform(4, 0.25 * max(rx, ry) + 5)
        if rng.random() < 0.4:
            fill = backgrounds.photo(rng, width, height, split)
        else:
            fill = backgrounds.procedural(rng, width, height)
        image = np.where(inside[..., None], fill, image)
        covered |= inside
    return image, covered


def _degrade(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Blur, noise, colour cast and JPEG artefacts; float sRGB in, uint8 out."""
    info: dict[str, Any] = {}
    out = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    r = rng.random()
    if r < 0.15:
        radius = float(rng.uniform(0.5, 1.8))
        out = out.filter(ImageFilter.GaussianBlur(radius))
        info["blur"] = f"defocus {radius:.1f}"
    elif r < 0.27:
        length = int(rng.integers(3, 10))
        angle = rng.uniform(0, np.pi)
        kernel = np.zeros((length, length), dtype=np.float32)
        mid = (length - 1) / 2
        for t in np.linspace(-mid, mid, 4 * length):
            kernel[int(round(mid + t * math.sin(angle))), int(round(mid + t * math.cos(angle)))] = 1
        out = Image.fromarray(_convolve(np.asarray(out), kernel / kernel.sum()))
        info["blur"] = f"motion {length}"
    pixels = np.asarray(out, dtype=np.float32)
    cast = 1 + rng.normal(0, 0.04, 3)
    pixels = pixels * cast * rng.uniform(0.85, 1.15)
    if rng.random() < 0.6:
        sigma = np.float32(rng.uniform(1, 7))
        pixels = pixels + sigma * rng.standard_normal(pixels.shape, dtype=np.float32)
    out = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    if rng.random() < 0.7:
        quality = int(rng.integers(35, 96))
        buffer = io.BytesIO()
        out.save(buffer, format="JPEG", quality=quality)
        out = Image.open(buffer).convert("RGB")
        info["jpeg"] = quality
    return np.asarray(out), info


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel of a uint8 image (H, W, 3) with a small kernel (edges clamped)."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(image.astype(np.float32), ((pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)),
                    mode="edge")
    out = np.zeros(image.shape, dtype=np.float32)
    h, w = image.shape[:2]
    for i, j in zip(*np.nonzero(kernel), strict=True):
        out += kernel[i, j] * padded[i:i + h, j:j + w]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_scene(asset: BodyAsset, body: int, pose: poses.Pose, rng: np.random.Generator,
                 split: str) -> Scene:
    """Render body `body` in `pose` with random camera, looks, background and degradations."""
    rest = asset.rest_vertices(body)
    rotations = poses.bone_rotations(asset, poses.retarget(asset, body), pose)
    transforms = skinning.bone_transforms(asset.bone_heads[body], asset.bone_parents, rotations)
    vertices = skinning.skin(rest, asset.skin_bones, asset.skin_weights, transforms)
    world_joints = joints.posed_joints(joints.joint_rig(asset, body, rest), transforms, vertices)
    lift = np.array([0.0, 0.0, -vertices[:, 2].min()])  # stand on the floor z = 0
    vertices, world_joints = vertices + lift, world_joints + lift

    view = sample_view(rng, vertices)
    cam_vertices = view.to_camera(vertices)
    cam = view.camera
    screen = np.stack([cam.fx * cam_vertices[:, 0] / cam_vertices[:, 2] + cam.cx,
                       cam.fy * cam_vertices[:, 1] / cam_vertices[:, 2] + cam.cy,
                       cam_vertices[:, 2]], axis=1)
    frags = raster.rasterise(screen, asset.faces, view.width, view.height)
    mask = frags.mask

    # Per-pixel attributes in one interpolation: camera-space normal, rest position, coordinate.
    normals = skinning.vertex_normals(vertices, asset.faces) @ view.rotation.T
    stacked = np.concatenate([normals, rest, asset.vertex_coord[:, None]], axis=1)
    attrs = raster.interpolate(frags, asset.faces, stacked)[mask]
    corner = np.argmax(frags.bary[mask], axis=1)
    part = asset.vertex_part[asset.faces[frags.face[mask], corner]]
    n = attrs[:, :3] / np.maximum(np.linalg.norm(attrs[:, :3], axis=1, keepdims=True), 1e-6)
    v, u = np.nonzero(mask)
    view_dir = -np.stack([(u + 0.5 - cam.cx) / cam.fx, (v + 0.5 - cam.cy) / cam.fy,
                          np.ones(len(u))], axis=1)
    view_dir /= np.linalg.norm(view_dir, axis=1, keepdims=True)
    outfit = appearance.sample_outfit(rng)
    light = appearance.sample_lighting(rng, view.rotation @ UP)
    colour, shine = appearance.albedo(outfit, part, attrs[:, 6], attrs[:, 3:6],
                                      float(rng.uniform(0, 10)))
    lit = appearance.shade(colour, shine, n, view_dir, light)
    body_rgb = np.zeros((view.height, view.width, 3), dtype=np.float32)
    body_rgb[mask] = np.clip(lit, 0, 1) ** (1 / 2.2)

    rays = view.rays()
    background, kind = backgrounds.sample_background(
        rng, view.width, view.height, split, rays, float(view.centre[2]))
    if kind == "floor":
        background = _contact_shadow(background, view, rays, vertices, rng)
    alpha = _soft_alpha(mask)[..., None]
    image = background * (1 - alpha) + body_rgb * alpha

    occlusion = 0.0
    cam_joints = view.to_camera(world_joints)
    occluded = np.zeros(len(cam_joints), dtype=bool)
    if rng.random() < OCCLUDER_PROB:
        image, covered = _occluders(rng, image, mask, split)
        occlusion = float((covered & mask).sum() / max(mask.sum(), 1))
        occluded = joints_covered(covered, cam, cam_joints)
    pixels, info = _degrade(rng, image)
    meta = {"background": kind, "occlusion": occlusion, "azimuth": view.azimuth,
            "elevation": view.elevation, **info}
    self_occluded = joints_behind_surface(frags.depth, cam, cam_joints)
    return Scene(pixels, cam, cam_joints, mask, meta, occluded, self_occluded)


def _joint_pixels(cam: Intrinsics, cam_joints: np.ndarray, shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer pixel (v, u) of each joint (camera space) and whether it is in front of the
    camera and inside an image of `shape` (H, W); (v, u) are 0 where it is not."""
    z = cam_joints[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = np.floor(cam.project(cam_joints)).T
    height, width = shape[:2]
    inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return np.where(inside, v, 0).astype(int), np.where(inside, u, 0).astype(int), inside


def joints_covered(covered: np.ndarray, cam: Intrinsics, cam_joints: np.ndarray) -> np.ndarray:
    """(17,) bool: the joints (camera space, mm) whose projected pixel is `covered` (H, W);
    joints outside the image or behind the camera are not covered (they are out of view by
    other rules)."""
    v, u, inside = _joint_pixels(cam, cam_joints, covered.shape)
    return inside & covered[v, u]


def joints_behind_surface(depth: np.ndarray, cam: Intrinsics, cam_joints: np.ndarray,
                          limits: tuple[float | None, ...] = SELF_OCCLUSION_DEPTH_MM
                          ) -> np.ndarray:
    """(17,) bool: the joints (camera space, mm) whose projected pixel shows a surface of depth
    `depth` (H, W; inf where nothing was drawn) nearer than the joint by more than its limit.
    Joints without a limit, outside the image or behind the camera are not marked."""
    v, u, inside = _joint_pixels(cam, cam_joints, depth.shape)
    limit = np.array([np.inf if d is None else d for d in limits])
    return inside & (depth[v, u] < cam_joints[:, 2] - limit)


def _contact_shadow(background: np.ndarray, view: View, rays: np.ndarray,
                    vertices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken the floor under the body: a soft blob around its footprint (z = 0 plane)."""
    low = vertices[vertices[:, 2] < 0.15]
    if len(low) == 0:
        return background
    centre, spread = low[:, :2].mean(axis=0), low[:, :2].std(axis=0) + 0.12
    down = rays[..., 2] < -1e-6
    t = np.where(down, -view.centre[2] / np.where(down, rays[..., 2], -1.0), 0.0)
    x = view.centre[0] + t * rays[..., 0]
    y = view.centre[1] + t * rays[..., 1]
    d2 = ((x - centre[0]) / spread[0]) ** 2 + ((y - centre[1]) / spread[1]) ** 2
    shadow = np.where(down, np.exp(-d2) * rng.uniform(0.3, 0.7), 0.0)[..., None]
    return (background * (1 - shadow)).astype(np.float32)
