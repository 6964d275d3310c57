import numpy as np

from training.synthetic import rotations


def test_log_inverts_axis_angle():
    rng = np.random.default_rng(0)
    vec = rng.normal(0, 1, (50, 3))
    vec *= (rng.uniform(0, 3.1, 50) / np.linalg.norm(vec, axis=1))[:, None]
    np.testing.assert_allclose(rotations.log(rotations.axis_angle(vec)), vec, atol=1e-9)


def test_quaternion_round_trip_and_power():
    rng = np.random.default_rng(1)
    mats = rotations.axis_angle(rng.normal(0, 1, (20, 3)))
    back = rotations.from_quaternion(rotations.to_quaternion(mats))
    np.testing.assert_allclose(back, mats, atol=1e-9)
    half = rotations.power(mats, 0.5)
    np.testing.assert_allclose(half @ half, mats, atol=1e-9)


def test_between_turns_one_direction_onto_another():
    a, b = np.array([1.0, 2.0, -0.5]), np.array([-0.3, 0.1, 1.0])
    r = rotations.between(a, b)
    np.testing.assert_allclose(r @ (a / np.linalg.norm(a)), b / np.linalg.norm(b), atol=1e-12)
    flip = rotations.between(a, -a)
    np.testing.assert_allclose(flip @ a, -a, atol=1e-9)
