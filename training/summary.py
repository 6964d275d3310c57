"""Print a summary of each model variant: parameters, GMAC at 256x256, outputs, TorchScript size.

    margipose-summary                      # every variant
    margipose-summary --variant margipose-lite
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from posecontract.layout import INPUT, INPUT_SIZE, OUTPUTS
from training.blazepose import ModelsMissing
from training.export import calibrate_batchnorm, export
from training.model import VARIANTS, build_model, count_macs, count_parameters, variant_config


def summarise(name: str) -> dict:
    """Measure one variant (randomly initialised; weights do not change these numbers)."""
    torch.manual_seed(0)
    model = build_model(variant_config(name), pretrained=False)
    calibrate_batchnorm(model)
    with tempfile.TemporaryDirectory() as tmp:
        result = export(model, tmp, name)
        scripted = torch.jit.load(str(result.model_path))
        with torch.inference_mode():
            outputs = scripted(torch.zeros(1, *INPUT.dims, dtype=torch.uint8))
    return {
        "variant": name,
        "config": model.cfg,
        "parameters": count_parameters(model),
        "gmac": count_macs(model, INPUT_SIZE) / 1e9,
        "outputs": {spec.key: tuple(t.shape) for spec, t in zip(OUTPUTS, outputs, strict=True)},
        "torchscript_mb": result.size_bytes / 1e6,
        "parity": result.max_abs_diff,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Summarise MargiPose model variants.")
    p.add_argument("--variant", choices=sorted(VARIANTS), action="append",
                   help="variant to summarise (repeatable; default: all)")
    args = p.parse_args(argv)
    for name in args.variant or list(VARIANTS):
        try:
            s = summarise(name)
        except ModelsMissing as exc:  # a BlazePose trunk whose .tflite file is not fetched
            print(f"== {name}\n  skipped: {exc}")
            continue
        c = s["config"]
        print(f"== {name}")
        print(f"  trunk {c.trunk}, {c.n_stages} stages x 3 columns, widths "
              f"{c.feat_channels}/{c.mid_channels}, axis permutation {c.axis_permutation}")
        print(f"  parameters      {s['parameters']:,}")
        print(f"  GMAC @ {INPUT_SIZE}x{INPUT_SIZE}  {s['gmac']:.2f}")
        print(f"  input           {INPUT.name} uint8 (N, {', '.join(map(str, INPUT.dims))})")
        for spec in OUTPUTS:
            print(f"  output          {spec.name} {spec.key:<11} {s['outputs'][spec.key]}")
        print(f"  TorchScript     {s['torchscript_mb']:.1f} MB on disk "
              f"(eager parity {s['parity']:.1e})")


if __name__ == "__main__":
    main()
