"""The bundled ``stamps`` data: synthetic 64x64, 3-band lens-like images, made with numpy.

:func:`make_stamps` is a pure function of ``(n_samples, seed, shortcut)``; ``data.py``
builds the dataset around it (faults, splits, loaders). Its two random streams (the
systems, their observations) are its own, so a fault or a split never changes a stamp::

    >>> x, y, groups, hidden = make_stamps(8, seed=0)
    >>> x.shape, y.tolist(), groups.tolist()
    ((8, 3, 64, 64), [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1])
"""

from __future__ import annotations

import math

import numpy as np

STAMPS_CLASSES = ["nonlens", "lens"]
STAMP_SIZE = 64
STAMP_BANDS = 3
OBSERVATIONS_PER_SYSTEM = 4

# The shortcut fault's bright core disc, and core_dropout's default radius (data.py).
SHORTCUT_RADIUS = 5.0
# Sky level left after background subtraction varies per exposure; it also keeps the
# median of an image (what core_dropout fills the core with) from betraying faint arcs.
SKY_PEDESTAL_SIGMA = 0.5
# Lens systems whose arc is buried in the noise: they cap honest accuracy/AUROC below 1.
FAINT_ARC_FRACTION = 0.1

# data.py's streams (faults, splits, core dropout) are numbered 11 and up.
_STREAM_OBJECTS, _STREAM_OBSERVATIONS = 1, 2


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(seed)), stream])


def make_stamps(
    n_samples: int, seed: int, *, shortcut: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Synthetic 64x64, 3-band lens-like stamps: (x, y, groups, hidden truths).

    Each *system* (group) is observed ``OBSERVATIONS_PER_SYSTEM`` times with its own
    noise, PSF width and a sub-pixel shift. A ``lens`` system has a red central galaxy
    and a blue partial Einstein ring at radius 11-19 px; a ``nonlens`` system has the
    same kind of galaxy, often with a companion, sometimes a blue tangential streak
    that looks like a short arc. Central-galaxy brightness does not depend on the class,
    so the core alone carries no signal — unless ``shortcut`` adds a bright core disc to
    every lens. Faint arcs keep an honest classifier below perfect.

    ``hidden["clarity"]`` scores how unambiguous each sample is (used by leaked_groups).
    """
    size, bands, per = STAMP_SIZE, STAMP_BANDS, OBSERVATIONS_PER_SYSTEM
    n_sys = math.ceil(n_samples / per)
    rng = _rng(seed, _STREAM_OBJECTS)

    # ---- systems: one set of physical parameters per group
    sys_class = rng.permutation(np.arange(n_sys) % 2)
    gal_amp = rng.uniform(4.0, 14.0, n_sys)
    gal_sigma = rng.uniform(1.8, 3.2, n_sys)
    gal_q = rng.uniform(0.6, 1.0, n_sys)
    gal_pa = rng.uniform(0.0, np.pi, n_sys)
    gal_color = np.array([0.55, 0.85, 1.0]) * rng.uniform(0.85, 1.15, (n_sys, bands))

    arc_radius = rng.uniform(11.0, 19.0, n_sys)
    arc_angle = rng.uniform(0.0, 2 * np.pi, n_sys)
    arc_extent = rng.uniform(0.5, 2.0, n_sys)  # half-width of the angular window, radians
    arc_width = rng.uniform(0.7, 1.3, n_sys)
    # most arcs are plain to see; a few are too faint to find (no classifier is perfect)
    faint = rng.random(n_sys) < FAINT_ARC_FRACTION
    arc_amp = np.where(faint, rng.uniform(0.05, 0.25, n_sys), rng.uniform(1.0, 3.0, n_sys)) * (sys_class == 1)
    arc_color = np.array([1.0, 0.8, 0.45]) * rng.uniform(0.85, 1.15, (n_sys, bands))

    has_comp = rng.random(n_sys) < np.where(sys_class == 1, 0.35, 0.6)
    comp_dist = rng.uniform(10.0, 22.0, n_sys)
    comp_angle = rng.uniform(0.0, 2 * np.pi, n_sys)
    comp_amp = rng.uniform(1.0, 5.0, n_sys) * has_comp
    comp_sigma = rng.uniform(1.0, 2.0, n_sys)

    # confuser: a short blue tangential streak in nonlens systems (a spiral arm, a tidal tail)
    has_streak = (rng.random(n_sys) < 0.35) & (sys_class == 0)
    streak_amp = rng.uniform(0.3, 0.9, n_sys) * has_streak
    streak_extent = rng.uniform(0.25, 0.6, n_sys)
    core_boost = rng.uniform(2.5, 4.0, n_sys) if shortcut else np.zeros(n_sys)
    if shortcut:
        core_boost = core_boost * (sys_class == 1)

    # ---- observations: each system seen `per` times
    obs = _rng(seed, _STREAM_OBSERVATIONS)
    group = np.repeat(np.arange(n_sys), per)[:n_samples]
    n = len(group)
    shift = obs.uniform(-1.0, 1.0, (n, 2))
    psf = obs.uniform(1.0, 1.6, n)
    noise = obs.uniform(0.8, 1.2, n)
    sky = obs.normal(0.0, SKY_PEDESTAL_SIGMA, (n, bands))

    f32 = np.float32
    coords = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    yy = coords[None, :, None] - shift[:, 0, None, None].astype(np.float32)
    xx = coords[None, None, :] - shift[:, 1, None, None].astype(np.float32)
    r = np.sqrt(yy**2 + xx**2).astype(f32)
    theta = np.arctan2(yy, xx)

    g = group
    f32 = np.float32

    def per_obs(values: np.ndarray) -> np.ndarray:
        """A per-system parameter, broadcast to (n, 1, 1) per observation, float32."""
        return values[g].astype(f32)[:, None, None]

    psf2 = (psf.astype(f32) ** 2)[:, None, None]

    # central galaxy: elliptical Gaussian, PSF-broadened
    cos, sin = np.cos(per_obs(gal_pa)), np.sin(per_obs(gal_pa))
    u = xx * cos + yy * sin
    v = (yy * cos - xx * sin) / per_obs(gal_q)
    galaxy = per_obs(gal_amp) * np.exp(-(u**2 + v**2) / (2 * (per_obs(gal_sigma) ** 2 + psf2)))
    del u, v

    # arc (lens) and streak (nonlens confuser): segments of the same ring family
    radial = np.exp(-((r - per_obs(arc_radius)) ** 2) / (2 * (per_obs(arc_width) ** 2 + psf2)))
    dth = np.mod(theta - per_obs(arc_angle) + np.pi, 2 * np.pi) - np.pi
    dth2 = dth**2
    del dth
    ring = radial * (per_obs(arc_amp) * np.exp(-dth2 / (2 * per_obs(arc_extent) ** 2))
                     + per_obs(streak_amp) * np.exp(-dth2 / (2 * per_obs(streak_extent) ** 2)))
    del radial, dth2

    cy, cx = per_obs(comp_dist * np.sin(comp_angle)), per_obs(comp_dist * np.cos(comp_angle))
    companion = per_obs(comp_amp) * np.exp(
        -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (per_obs(comp_sigma) ** 2 + psf2))
    )
    light = galaxy + companion  # both have the galaxy's colour
    if shortcut:
        disc = 1.0 / (1.0 + np.exp((r - f32(SHORTCUT_RADIUS)) / f32(0.5)))  # soft-edged disc
        light = light + per_obs(core_boost) * disc

    x = np.empty((n, bands, size, size), dtype=f32)
    for b in range(bands):
        x[:, b] = light * per_obs(gal_color[:, b]) + ring * per_obs(arc_color[:, b])
    # sky: a per-exposure pedestal (imperfect background subtraction) plus pixel noise
    x += sky[:, :, None, None].astype(f32)
    x += obs.standard_normal(x.shape, dtype=f32) * noise[:, None, None, None].astype(f32)

    y = sys_class[g].astype(np.int64)
    clarity = np.where(y == 1, arc_amp[g] * arc_extent[g], -(streak_amp[g] + comp_amp[g] / 5.0))
    return x, y, group.astype(np.int64), {"clarity": clarity.astype(np.float64)}
