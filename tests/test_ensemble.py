"""The ensemble's combination rule and the TTA rotations, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from icezoo.core.errors import IcezooError
from icezoo.engine.ensemble import combine, rotate_geometry, rotation_z, tta_angles, unrotate


def test_kappa_weighted_mean_by_hand():
    # kappa 3 along x and kappa 1 along y: sum (3, 1, 0), |sum| = sqrt(10), over 2 members
    d, k = combine([np.array([[1.0, 0, 0]]), np.array([[0, 2.0, 0]])], [np.array([3.0]), np.array([1.0])])
    np.testing.assert_allclose(d, [[3 / np.sqrt(10), 1 / np.sqrt(10), 0]])
    np.testing.assert_allclose(k, [np.sqrt(10) / 2])


def test_plain_mean_without_kappa():
    d, k = combine([np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]])])
    np.testing.assert_allclose(d, [[1 / np.sqrt(2), 1 / np.sqrt(2), 0]])
    assert np.isnan(k).all()


def test_an_event_missing_a_kappa_gets_the_plain_mean_the_others_keep_their_weights():
    a = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    b = np.array([[0, 1.0, 0], [0, 1.0, 0]])
    d, k = combine([a, b], [np.array([3.0, 3.0]), np.array([1.0, np.nan])])
    np.testing.assert_allclose(d[0], [3 / np.sqrt(10), 1 / np.sqrt(10), 0])
    np.testing.assert_allclose(d[1], [1 / np.sqrt(2), 1 / np.sqrt(2), 0])
    assert k[0] == pytest.approx(np.sqrt(10) / 2) and np.isnan(k[1])


def test_one_member_is_itself_and_agreeing_members_keep_their_kappa():
    v = np.array([[0.0, 0.6, 0.8]])
    d, k = combine([v], [np.array([5.0])])
    np.testing.assert_allclose(d, v)
    np.testing.assert_allclose(k, [5.0])
    d, k = combine([v, v, v], [np.array([5.0])] * 3)
    np.testing.assert_allclose(d, v)
    np.testing.assert_allclose(k, [5.0])


def test_scaling_every_kappa_keeps_the_direction_and_opposed_members_keep_the_first():
    rng = np.random.default_rng(0)
    dirs = [rng.normal(size=(50, 3)) for _ in range(3)]
    kap = [rng.uniform(0.1, 20, 50) for _ in range(3)]
    d1, _ = combine(dirs, kap)
    d2, _ = combine(dirs, [10 * x for x in kap])
    np.testing.assert_allclose(d1, d2, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(d1, axis=1), 1.0)
    d, _ = combine([np.array([[0, 0, 1.0]]), np.array([[0, 0, -1.0]])], [np.array([2.0]), np.array([2.0])])
    np.testing.assert_allclose(d, [[0, 0, 1.0]])


def test_combine_checks_shapes():
    with pytest.raises(IcezooError, match="at least one member"):
        combine([])
    with pytest.raises(IcezooError, match="kappas"):
        combine([np.ones((2, 3))], [np.ones(3)])


def test_rotations_about_the_vertical_axis():
    np.testing.assert_allclose(rotation_z(np.pi / 2) @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-12)
    assert tta_angles(4) == pytest.approx([0, np.pi / 2, np.pi, 3 * np.pi / 2])
    geo = np.array([[100.0, 0, -300], [np.nan, np.nan, np.nan]])
    turned = rotate_geometry(geo, np.pi / 2)
    np.testing.assert_allclose(turned[0], [0, 100.0, -300], atol=1e-9)
    assert np.isnan(turned[1]).all()
    v = np.array([[0.6, 0.0, 0.8]])
    # a direction seen in the turned detector, turned back, is the original one
    np.testing.assert_allclose(unrotate(v @ rotation_z(0.7).T, 0.7), v, atol=1e-12)
    with pytest.raises(IcezooError, match="--tta 0"):
        tta_angles(0)
