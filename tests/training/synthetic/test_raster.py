import numpy as np

from training.synthetic import raster

# Two screen-space triangles covering the same square, one nearer (Z = 1) than the other.
SQUARE = np.array([[2.0, 2.0], [8.0, 2.0], [2.0, 8.0]])


def _screen(z: float) -> np.ndarray:
    return np.concatenate([SQUARE, np.full((3, 1), z)], axis=1)


def test_covers_exactly_the_pixel_centres_inside():
    # Counter-clockwise seen from the camera means clockwise in (u, v): list it reversed.
    faces = np.array([[0, 2, 1]])
    frags = raster.rasterise(_screen(2.0), faces, 10, 10)
    v, u = np.mgrid[:10, :10] + 0.5
    inside = (u >= 2) & (v >= 2) & (u + v <= 10)
    np.testing.assert_array_equal(frags.mask, inside)
    np.testing.assert_allclose(frags.depth[inside], 2.0, rtol=1e-6)
    np.testing.assert_allclose(frags.bary[inside].sum(axis=1), 1.0, atol=1e-6)


def test_nearest_triangle_wins_and_backfaces_are_culled():
    screen = np.concatenate([_screen(5.0), _screen(1.0)])
    faces = np.array([[0, 2, 1], [3, 5, 4]])
    frags = raster.rasterise(screen, faces, 10, 10)
    assert set(np.unique(frags.face[frags.mask])) == {1}
    back = raster.rasterise(_screen(1.0), np.array([[0, 1, 2]]), 10, 10)
    assert not back.mask.any()
    both = raster.rasterise(_screen(1.0), np.array([[0, 1, 2]]), 10, 10, cull_backfaces=False)
    assert both.mask.sum() == 21


def test_interpolation_is_perspective_correct():
    # A vertex attribute equal to 1/Z interpolates to the exact 1/Z of the surface.
    screen = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 4.0], [0.0, 10.0, 2.0]])
    faces = np.array([[0, 2, 1]])
    frags = raster.rasterise(screen, faces, 10, 10)
    values = (1.0 / screen[:, 2])[:, None] * screen[:, 2:3]  # Z * (1/Z) = 1 everywhere
    out = raster.interpolate(frags, faces, values)
    np.testing.assert_allclose(out[frags.mask], 1.0, atol=1e-5)
    depth = raster.interpolate(frags, faces, screen[:, 2:3])[..., 0]
    np.testing.assert_allclose(depth[frags.mask], frags.depth[frags.mask], rtol=1e-5)
