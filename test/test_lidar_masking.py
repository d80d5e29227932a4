"""Masked LiDAR modelling: what the input sweep loses at train time is random but reproducible, and
each kind of drop does what it says."""

from __future__ import annotations

import numpy as np

from mv4d_core.training.lidar_masking import LidarMaskingConfig, keep_mask, pseudo_rings

ORIGIN = np.array([0.0, 0.0, 1.8])


def _sweep(n_rings=32, per_ring=360):
    el = np.deg2rad(np.linspace(-30, 10, n_rings))
    az = np.deg2rad(np.arange(per_ring))
    e, a = np.meshgrid(el, az, indexing="ij")
    d = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    return ORIGIN + 10.0 * d, np.repeat(np.arange(n_rings), per_ring)


def test_the_same_generator_state_gives_the_same_mask():
    xyz, ring = _sweep()
    cfg = LidarMaskingConfig()
    a = keep_mask(xyz, ring, ORIGIN, cfg, np.random.default_rng(5))
    b = keep_mask(xyz, ring, ORIGIN, cfg, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_each_drop_kind():
    xyz, ring = _sweep()
    none = LidarMaskingConfig(point_drop=0, beam_drop=0, every_other_ring=0, sectors=0, sweep_drop=0)
    assert keep_mask(xyz, ring, ORIGIN, none, np.random.default_rng(0)).all()
    gone = LidarMaskingConfig(sweep_drop=1.0)
    assert not keep_mask(xyz, ring, ORIGIN, gone, np.random.default_rng(0)).any()
    half = LidarMaskingConfig(point_drop=0, beam_drop=0, every_other_ring=1.0, sectors=0, sweep_drop=0)
    kept = keep_mask(xyz, ring, ORIGIN, half, np.random.default_rng(1))
    assert len(np.unique(ring[kept] % 2)) == 1 and kept.mean() == 0.5
    sector = LidarMaskingConfig(point_drop=0, beam_drop=0, every_other_ring=0, sectors=3, sector_deg=(90, 90),
                                sweep_drop=0)
    kept = [keep_mask(xyz, ring, ORIGIN, sector, np.random.default_rng(s)).mean() for s in range(20)]
    assert min(kept) < 0.8 and max(kept) == 1.0          # 0 to 3 sectors of a quarter turn each
    beams = LidarMaskingConfig(point_drop=0, beam_drop=0.5, every_other_ring=0, sectors=0, sweep_drop=0)
    for s in range(10):
        k = keep_mask(xyz, ring, ORIGIN, beams, np.random.default_rng(s))
        per_ring = [k[ring == r].mean() for r in range(32)]
        assert set(np.unique(per_ring)) <= {0.0, 1.0}   # whole rings go


def test_pseudo_rings_follow_the_elevation():
    xyz, ring = _sweep()
    est = pseudo_rings(xyz, ORIGIN)
    assert (np.diff([np.median(est[ring == r]) for r in range(32)]) >= 0).all()
