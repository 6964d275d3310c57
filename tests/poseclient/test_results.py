"""Typed results: heatmap decoding (known values), arrays by field, errors naming the value."""

import base64

import numpy as np
import pytest

from poseapi import heatmaps as wire_heatmaps
from poseclient.results import Box, Joint, Person, decode_heatmaps
from posecontract.skeleton import JOINT_NAMES


def _marginals(seed: int = 0) -> np.ndarray:
    """(3, 17, 32, 32) distributions, each summing to one."""
    rng = np.random.default_rng(seed)
    maps = rng.random((3, 17, 32, 32)) ** 8
    return (maps / maps.sum(axis=(-1, -2), keepdims=True)).astype(np.float32)


def _sent(maps: np.ndarray, fmt: str) -> dict:
    """The heatmaps as REST's JSON carries them."""
    payload = wire_heatmaps.encode(maps, fmt)
    return {"format": payload.format, "shape": list(payload.shape), "dtype": payload.dtype,
            "data": base64.b64encode(payload.data).decode(), "scale": payload.scale}


def test_f16_heatmaps_decode_to_the_values_sent():
    maps = _marginals()
    decoded = decode_heatmaps(_sent(maps, "f16"))
    assert decoded.dtype == np.float32 and decoded.shape == (3, 17, 32, 32)
    assert np.array_equal(decoded, maps.astype(np.float16).astype(np.float32))


def test_png_heatmaps_decode_to_within_a_65535th_of_each_peak():
    maps = _marginals(1)
    decoded = decode_heatmaps(_sent(maps, "png"))
    peaks = maps.max(axis=(-1, -2), keepdims=True)
    assert np.all(np.abs(decoded - maps) <= peaks / 65535 * 0.51 + 1e-9)
    # The planes and joints are not mixed up: each tile's argmax is where it was.
    assert np.array_equal(decoded.reshape(51, -1).argmax(1), maps.reshape(51, -1).argmax(1))


def test_unknown_heatmap_format_is_named():
    with pytest.raises(ValueError, match="Unknown heatmap format 'jpeg'; expected f16 or png"):
        decode_heatmaps({"format": "jpeg", "shape": [1], "data": base64.b64encode(b"").decode()})


def _person(heatmaps=None) -> Person:
    joints = {name: Joint(name, (i, -i), (i, 2 * i, 3000 + i), (i, 2 * i, i), (0, 0, 0), (1, 2, 3))
              for i, name in enumerate(JOINT_NAMES)}
    return Person(Box(0, 0, 1, 1), "request", (0.5, 0.5), 1.5, 3000, "request", joints, heatmaps)


def test_as_array_by_field_in_skeleton_order():
    person = _person()
    assert person.as_array("pixel").tolist() == [[i, -i] for i in range(17)]
    assert person.as_array()[:, 2].tolist() == [3000 + i for i in range(17)]
    assert person.as_array("uncertainty_mm").tolist() == [[1, 2, 3]] * 17
    with pytest.raises(ValueError, match="Unknown joint field 'name'; fields are pixel"):
        person.as_array("name")


def test_heatmap_of_a_joint():
    maps = _marginals(2)
    person = _person(maps)
    assert np.array_equal(person.heatmap("head"), maps[:, 16])
    with pytest.raises(ValueError, match="Unknown joint 'nose'; joints are head_top, neck"):
        person.heatmap("nose")
    with pytest.raises(ValueError, match="No heatmaps in this result; ask for them"):
        _person().heatmap("head")
