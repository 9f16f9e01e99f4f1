#!/usr/bin/env python3
"""Renders orstream's evaluation sets: SYNTHETIC laparoscopic clips with ground truth, each drawn
at random from a world seed and a script seed, with the hard cases of event derivation and tool
tracking guaranteed in every clip.

    .venv/bin/python models/synth/eval_set.py --set heldout      # 6 clips x 105 s, never for tuning
    .venv/bin/python models/synth/eval_set.py --set validation   # 3 clips x 95 s, for tuning
    options: --clips N (the first N clips), --seconds S (another duration), --only NAME (one clip),
             --out DIR (somewhere else than models/eval/<set>, for trials)

Writes into models/eval/<set>/, per clip NAME (heldout-01.., validation-01..):
  NAME.mp4            640x360, 12 fps, H.264 (High, yuv420p) in MP4, encoded as make_clip.py
                      encodes the demo clip;
  NAME.timeline.json  the ground-truth timeline, in demo/clip.timeline.json's format;
  NAME.tracks.json    the ground-truth tool tracks, in demo/clip.tracks.json's format, from
                      per-instance masks (two tools of one kind at once get two tracks);
and set.json: the set's purpose, its seeds, and per clip its world and script seeds, duration,
frame count, the script seeds refused before it and why, and the hard cases it contains with
their times (measured on the ground truth where they show in it). The clips' label and instance
maps go to models/.cache/eval/<set>/NAME-labels.npz (not committed).

A clip: a world as dataset.py makes them (scene.random_layout / random_palette from the world
seed) plus a fat flap over the gallbladder's edge; a camera that holds and pans between views
found in that world (the gallbladder and the flap, the abdominal wall, fat, other tissue), so
organs enter and leave; instruments from four or five trocars. Every clip has: two instruments of
one kind in view together for several seconds, from trocars on opposite sides, apart; a short
appearance (visible 10-14 frames); a re-entry (a tool leaves and one of its kind comes back after
0.5-1.5 s); an instrument whose tip passes under the flap; an instrument held with only its tip
part in the field at the edge for a few seconds; fast instrument sweeps (motion blur), camera pans
(motion blur), cautery smoke, defocus, exposure and colour drift; filler appearances of other
kinds in between.

Ground truth: as the demo clip's (scene labels; a class is visible in a frame when its pixels in
the 640x360 label map exceed 0.5 % of the frame; one interval per maximal run per class).
Unambiguous by construction: tools enter and leave moving, appearances are designed with at least
10 visible frames and gaps between appearances of one kind of at least 6 frames (short ones and
re-entry gaps are calibrated on the tool's own coverage before rendering), and after rendering
every clip is checked: a run of visible frames or a gap between runs of one class (or of one
track) shorter than MIN_RUN frames, an appearance shorter than MIN_APPEARANCE frames, a class
visible with none of its instruments visible on their own, or a hard case that did not come out
as designed refuses the script; the script is then drawn again from the next script seed (each
refused seed is recorded in set.json with its reason). A cheaper pass at 320x180 screens scripts
before the full render.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clip_tracks import frame_entry, tracks_document, write_tracks  # noqa: E402
from make_clip import FPS, VISIBLE_FRACTION, encoder_cmd, ease, intervals, timeline_text  # noqa: E402
from scene import (  # noqa: E402
    ASPECT,
    CATEGORY,
    ID,
    NAMES,
    NUM_CLASSES,
    ORGANS,
    TOOLS,
    WORLD_X,
    WORLD_Y,
    Blob,
    Camera,
    Effects,
    Field,
    Tool,
    _sample_world,
    _screen_grid,
    _tool_layer,
    make_world,
    random_layout,
    random_palette,
    render,
    to_uint8,
)

WIDTH, HEIGHT = 640, 360
PPU = 240.0  # world raster, pixels per world unit (as the demo clip)
MIN_RUN = 6  # frames: the shortest run of visible frames, or gap between runs, a clip may have
MIN_APPEARANCE = 10  # frames: the fewest visible frames of one tool appearance
SCREEN_MARGIN = 2  # frames added to both in the 320x180 screening pass
SHORT_FRAMES = (10, 14)  # a short appearance's visible frames
REENTRY_GAP_FRAMES = (6, 18)  # 0.5 .. 1.5 s between a tool leaving and its kind re-entering
SCRIPT_ATTEMPTS = 40  # script seeds tried per clip before giving up
MODELS = HERE.parent
CACHE = MODELS / ".cache" / "eval"

# ---------------------------------------------------------------------------------------------
# Seeds. A world seed makes the world as dataset.render_scene does (random_layout and
# random_palette from np.random.default_rng(seed), make_world(seed=seed)) plus the flap; a script
# seed draws the clip's camera, tools and effects; clip k (0-based) of a set has world seed
# WORLD_SEED_BASE + k and script seeds SCRIPT_SEED_BASE + 100 k + attempt.
#
# Seeds used elsewhere in models/, all disjoint from these:
#   demo clip (make_clip.py): world 7 (hand-made layout), noise generator 7, tool seeds 1-8;
#   privacy clip (make_privacy_clip.py): world 7, room 5, noise generator 1007, tool seeds 11-14,
#     close-ups 101-102;
#   segmentation training worlds (dataset.py TRAIN_SEED_BASE): 10_000 .. 10_000 + scenes - 1
#     (150 by default); its held-out worlds (TEST_SEED_BASE): 900_000 .. 900_019;
#   gate units (gate_dataset.py): training 20_000 .. 20_095, held-out 920_000 .. 920_019, their
#     rooms at + 1_000_000 (1_020_000 .., 1_920_000 ..).
# The evaluation sets use 3_100_000 .. 3_299_999 (world seeds and script seeds), above every
# range there (the training ranges would need over 890_000 scenes to reach 900_000), and the
# held-out and validation sets use different blocks of it.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetDef:
    clips: int
    seconds: float
    world_seed_base: int
    script_seed_base: int
    prefix: str
    purpose: str


SETS = {
    "heldout": SetDef(
        clips=6, seconds=105.0, world_seed_base=3_100_000, script_seed_base=3_150_000, prefix="heldout",
        purpose="held-out evaluation of event derivation and tool tracking: report on it, never tune on it "
                "(worlds and scripts unseen by training, the held-out model set, the gate, the demo and privacy clips)"),
    "validation": SetDef(
        clips=3, seconds=95.0, world_seed_base=3_200_000, script_seed_base=3_250_000, prefix="validation",
        purpose="validation for tuning thresholds, hysteresis and tracker parameters (disjoint from the held-out set "
                "and from everything else)"),
}

# Trocars: sectors of the fulcrum's direction from the field's centre (degrees; screen y points
# down, 0 = right, 90 = down). "top" brings instruments in across the frame's top edge.
TROCARS = {"left_low": (140, 170), "left_high": (190, 222), "right_high": (-40, -12), "right_low": (12, 40),
           "top": (-108, -72)}
LEFT, RIGHT = ("left_low", "left_high"), ("right_high", "right_low")
FULCRUM_R = 1.95  # distance of a fulcrum from the field's centre, screen units (as make_clip)


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------


@dataclass
class Appearance:
    """One tool appearance. The tip travels from the fulcrum (outside the field) to the path's
    point in `insert_s`, follows the path (keyframes (t, x, y, wiggle), eased between; screen or
    world coordinates), and goes back to the fulcrum in `retract_s` before `leave`."""

    kind: str
    enter: float
    leave: float
    trocar: str
    fulcrum: tuple[float, float]
    frame: str  # "screen" or "world"
    path: list[tuple[float, float, float, float]]
    width: float
    jaw_hz: float
    side: float
    loaded: bool
    behind: bool
    insert_s: float
    retract_s: float
    gloss: float
    brightness: float
    wig_f: tuple[float, float]
    wig_p: tuple[float, float, float]
    case: str = "filler"  # pair | short | reentry | edge | flap | sweep | filler
    group: int = -1  # the hard case's number (pairs and re-entries share one)
    notes: dict = field(default_factory=dict)  # design times of the hard case


@dataclass
class Script:
    name: str
    world_seed: int
    script_seed: int
    duration: float
    frames: int
    fov: Field
    cam_keys: list[tuple[float, float, float, float, float]]
    breathe_period: float
    breathe_amp: float
    apps: list[Appearance]
    smoke: list[tuple[float, float, float, float]]  # (start, peak, end, density)
    defocus: list[tuple[float, float, float]]  # (centre, width, sigma px)
    dips: list[tuple[float, float, float]]  # exposure dips / bumps: (centre, width, amount)
    light: dict
    pans: list[dict]
    views: dict
    trocars: dict = field(default_factory=dict)  # trocar -> fulcrum direction (degrees)


def path_at(a: Appearance, t: float) -> tuple[float, float, float]:
    keys = a.path
    if t <= keys[0][0]:
        return keys[0][1:]
    for k0, k1 in zip(keys, keys[1:]):
        if k0[0] <= t <= k1[0]:
            e = ease((t - k0[0]) / max(k1[0] - k0[0], 1e-6))
            return tuple(u + (v - u) * e for u, v in zip(k0[1:], k1[1:]))
    return keys[-1][1:]


def camera_at(s: Script, t: float) -> Camera:
    keys = s.cam_keys
    if t <= keys[0][0]:
        _, x, y, z, r = keys[0]
    else:
        for (t0, *a), (t1, *b) in zip(keys, keys[1:]):
            if t0 <= t <= t1:
                e = ease((t - t0) / max(t1 - t0, 1e-6))
                x, y, z, r = (av + (bv - av) * e for av, bv in zip(a, b))
                break
        else:
            _, x, y, z, r = keys[-1]
    return Camera(x=x, y=y, zoom=z, rot=r, breathe=2 * math.pi * t / s.breathe_period, breathe_amp=s.breathe_amp)


def world_to_screen(cam: Camera, wx: float, wy: float) -> tuple[float, float]:
    dx, dy = (wx - cam.x) / cam.zoom, (wy - cam.y) / cam.zoom
    c, s = math.cos(cam.rot), math.sin(cam.rot)
    return (c * dx + s * dy, -s * dx + c * dy)


def screen_to_world(cam: Camera, sx: float, sy: float) -> tuple[float, float]:
    c, s = math.cos(cam.rot), math.sin(cam.rot)
    return (cam.x + cam.zoom * (c * sx - s * sy), cam.y + cam.zoom * (s * sx + c * sy))


def tool_at(s: Script, a: Appearance, t: float) -> Tool | None:
    if not (a.enter <= t <= a.leave):
        return None
    x, y, wig = path_at(a, t)
    if a.frame == "world":
        x, y = world_to_screen(camera_at(s, t), x, y)
    x += wig * math.sin(2 * math.pi * a.wig_f[0] * t + a.wig_p[0])
    y += wig * math.sin(2 * math.pi * a.wig_f[1] * t + a.wig_p[1])
    depth = min(ease((t - a.enter) / a.insert_s), ease((a.leave - t) / a.retract_s))
    if depth <= 1e-3:
        return None  # still at the fulcrum, outside the field
    fx, fy = a.fulcrum
    tip = (fx + (x - fx) * depth, fy + (y - fy) * depth)
    opening = 0.5 + 0.5 * math.sin(2 * math.pi * a.jaw_hz * t + a.wig_p[2])
    return Tool(kind=a.kind, tip=tip, fulcrum=a.fulcrum, width=a.width, opening=opening, side=a.side,
                loaded=a.loaded, behind=a.behind, gloss=a.gloss, brightness=a.brightness)


def effects_at(s: Script, t: float) -> Effects:
    smoke = 0.0
    for t0, tp, t1, peak in s.smoke:
        if t0 <= t <= tp:
            smoke = max(smoke, peak * ease((t - t0) / (tp - t0)))
        elif tp < t <= t1:
            smoke = max(smoke, peak * (1 - ease((t - tp) / (t1 - tp))))
    L = s.light
    gain = L["gain"] * (1.0 + L["drift"] * math.sin(2 * math.pi * t / L["drift_period"] + L["drift_phase"]))
    for tc, w, amount in s.dips:
        gain *= 1.0 + amount * math.exp(-(((t - tc) / w) ** 2))
    warm = L["warm"] * math.sin(2 * math.pi * t / L["warm_period"] + L["warm_phase"])
    defocus = 0.0
    for tc, w, sigma in s.defocus:
        defocus = max(defocus, sigma * math.exp(-(((t - tc) / w) ** 2)))
    return Effects(
        gain=gain,
        tint=(1.0 + warm, 1.0 + L["green"], 1.0 - warm),
        vignette=L["vignette"],
        light=(L["light_x"] + 0.05 * math.sin(t / 7.0), L["light_y"] + 0.04 * math.cos(t / 5.0)),
        smoke=smoke,
        smoke_shift=(0.025 * t, -0.018 * t),
        haze=0.25 * smoke,
        noise=L["noise"],
        defocus=defocus if defocus > 0.1 else 0.0,
        spec_threshold=L["spec_threshold"],
        spec_s0=-0.3 + 0.2 * math.sin(t / 3.0),
    )


# ---------------------------------------------------------------------------------------------
# The world and its views
# ---------------------------------------------------------------------------------------------


@dataclass
class WorldCtx:
    seed: int
    layout: object
    world: object
    flap: Blob
    flap_on: list[str]


def build_world(seed: int) -> WorldCtx:
    """dataset.py's world for this seed, plus a fat flap over the gallbladder's edge."""
    rng = np.random.default_rng(seed)
    layout = random_layout(rng)
    palette = random_palette(rng)
    gb = layout.gallbladder
    ang = float(rng.uniform(0, 2 * math.pi))
    off = float(rng.uniform(0.5, 0.85))
    lx, ly = off * gb.rx * math.cos(ang), off * gb.ry * math.sin(ang)
    c, s = math.cos(gb.rot), math.sin(gb.rot)
    fx, fy = gb.cx + c * lx - s * ly, gb.cy + s * lx + c * ly
    flap = Blob(fx, fy, float(rng.uniform(0.24, 0.34)), float(rng.uniform(0.14, 0.2)), float(rng.uniform(0, math.pi)),
                [(3, float(rng.uniform(0.0, 0.08)), float(rng.uniform(0, 2 * math.pi)))])
    layout.flaps = [*layout.flaps, flap]
    world = make_world(layout, palette, seed=seed, ppu=PPU)
    # what the flap lies over (tested at its centre and around it, on the layout without it)
    on = []
    pts = torch.tensor([[fx, fy]] + [[fx + 0.8 * flap.rx * math.cos(k), fy + 0.8 * flap.ry * math.sin(k)]
                                     for k in np.linspace(0, 2 * math.pi, 8, endpoint=False)])
    X, Y = pts[:, 0], pts[:, 1]
    if (gb.sd(X, Y) > 0).any():
        on.append("gallbladder")
    if torch.stack([b.sd(X, Y) for b in layout.liver]).amax(0).gt(0).any():
        on.append("liver")
    return WorldCtx(seed, layout, world, flap, on)


_GRID = {}


def view_stats(w: WorldCtx, cam: Camera, fov: Field, width: int = 160, height: int = 90) -> tuple[np.ndarray, float]:
    """Fractions of the frame per class (tissue only, inside the field) and of the flap."""
    key = (width, height)
    if key not in _GRID:
        xs, ys, _ = _screen_grid(width, height)
        _GRID[key] = (xs, ys)
    xs, ys = _GRID[key]
    tex, lab = _sample_world(w.world, cam, xs, ys, labels=True)
    inside = torch.sqrt((xs - fov.cx) ** 2 + (ys - fov.cy) ** 2) <= fov.r
    lab = torch.where(inside, lab.round().long(), torch.zeros_like(lab, dtype=torch.long))
    fr = torch.bincount(lab.flatten(), minlength=NUM_CLASSES).double() / (width * height)
    flap = float(((tex[4] > 0.5) & inside).double().mean())
    return fr.numpy(), flap


def _field_share(fov: Field, width: int = 160, height: int = 90) -> float:
    """The share of the frame inside the circular field."""
    xs, ys, _ = _screen_grid(width, height)
    return float((torch.sqrt((xs - fov.cx) ** 2 + (ys - fov.cy) ** 2) <= fov.r).double().mean())


def _clear(fr: np.ndarray) -> bool:
    """No organ near the visibility threshold (absent, or at least 1.4 % of the frame)."""
    return all(fr[ID[o]] <= 0.0 or fr[ID[o]] >= 0.014 for o in ORGANS)


def find_views(w: WorldCtx, fov: Field, rng: np.random.Generator) -> dict:
    """Camera holds: 'work' (the gallbladder with the flap in view) and, where the world has them,
    'wall', 'fat', 'other' (other tissue), 'liver'. Each is (x, y, zoom, rot, dx, dy): the hold
    starts at (x, y) and drifts by (dx, dy); no organ is near the threshold at either end."""
    views = {}
    fl = w.flap
    for _ in range(400):
        z = float(rng.uniform(0.6, 0.8))
        rot = float(rng.uniform(-0.12, 0.12))
        o = (float(rng.uniform(-0.45, 0.45)), float(rng.uniform(-0.3, 0.3)))
        cam = Camera(fl.cx - z * o[0], fl.cy - z * o[1], z, rot, 0.0, 0.0)
        d = rng.normal(0, 0.04, 2)
        cam2 = Camera(cam.x + d[0], cam.y + d[1], z, rot, 0.0, 0.0)
        f1, flap1 = view_stats(w, cam, fov)
        f2, flap2 = view_stats(w, cam2, fov)
        fs = [world_to_screen(c, fl.cx, fl.cy) for c in (cam, cam2)]
        if not (_clear(f1) and _clear(f2) and min(flap1, flap2) > 0.006 and max(math.hypot(*p) for p in fs) < 0.5 * fov.r):
            continue
        if min(f1[ID["gallbladder"]], f2[ID["gallbladder"]]) < 0.02 or min(f1[ID["liver"]], f2[ID["liver"]]) < 0.04:
            continue
        views["work"] = (cam.x, cam.y, z, rot, float(d[0]), float(d[1]))
        break
    if "work" not in views:
        raise RuntimeError(f"world {w.seed}: no view of the gallbladder with the flap")
    wx, wy = views["work"][:2]
    best: dict[str, tuple[float, tuple]] = {}
    for _ in range(500):
        x, y = float(rng.uniform(-2.7, 2.7)), float(rng.uniform(-1.5, 1.5))
        if math.hypot(x - wx, y - wy) < 0.9:
            continue
        z, rot = float(rng.uniform(0.65, 0.95)), float(rng.uniform(-0.15, 0.15))
        d = rng.normal(0, 0.05, 2)
        f1, _ = view_stats(w, Camera(x, y, z, rot, 0.0, 0.0), fov)
        if not _clear(f1):
            continue
        field_px = _field_share(fov)
        share = {"wall": f1[ID["abdominal_wall"]], "fat": f1[ID["fat"]], "liver": f1[ID["liver"]],
                 "other": f1[0] - (1 - field_px)}
        share = {k: v / field_px for k, v in share.items()}
        for kind, v in share.items():
            need = 0.45 if kind == "other" else 0.4
            if v >= need and v > best.get(kind, (0.0,))[0]:
                f2, _ = view_stats(w, Camera(x + d[0], y + d[1], z, rot, 0.0, 0.0), fov)
                if _clear(f2):
                    best[kind] = (float(v), (x, y, z, rot, float(d[0]), float(d[1])))
    for k, (_, v) in best.items():
        views[k] = v
    return views


# ---------------------------------------------------------------------------------------------
# Calibration on one tool's own coverage (no occlusion by others), at 320x180
# ---------------------------------------------------------------------------------------------

CAL_W, CAL_H = 320, 180


def tool_area(s: Script, w: WorldCtx, a: Appearance, t: float) -> float:
    tool = tool_at(s, a, t)
    if tool is None:
        return 0.0
    if ("cal", CAL_W, CAL_H) not in _GRID:
        _GRID[("cal", CAL_W, CAL_H)] = _screen_grid(CAL_W, CAL_H)
    xs, ys, px = _GRID[("cal", CAL_W, CAL_H)]
    _, alpha = _tool_layer(tool, xs, ys, px, 0.0)
    if a.behind:
        tex, _ = _sample_world(w.world, camera_at(s, t), xs, ys, labels=False)
        alpha = alpha * (1.0 - tex[4])
    inside = torch.sqrt((xs - s.fov.cx) ** 2 + (ys - s.fov.cy) ** 2) <= s.fov.r
    return float(((alpha > 0.5) & inside).double().mean())


def visible_frames(s: Script, w: WorldCtx, a: Appearance) -> list[int]:
    thr = VISIBLE_FRACTION
    f0, f1 = math.ceil(a.enter * FPS), math.floor(a.leave * FPS)
    return [f for f in range(f0, f1 + 1) if tool_area(s, w, a, f / FPS) > thr]


# ---------------------------------------------------------------------------------------------
# Drawing a script
# ---------------------------------------------------------------------------------------------


def exit_distance(fov: Field, ang: float) -> float:
    """Distance from the field's centre along direction ang to the edge of what is seen (the
    circular field cut by the frame)."""
    c, s = math.cos(ang), math.sin(ang)
    d = fov.r
    if abs(c) > 1e-9:
        d = min(d, ((ASPECT if c > 0 else -ASPECT) - fov.cx) / c)
    if abs(s) > 1e-9:
        d = min(d, ((1.0 if s > 0 else -1.0) - fov.cy) / s)
    return d


class Drafter:
    """Draws one clip's script from its script seed (see the module's docstring)."""

    def __init__(self, name: str, w: WorldCtx, world_seed: int, script_seed: int, duration: float):
        self.rng = np.random.default_rng(script_seed)
        self.w = w
        rng = self.rng
        fov = Field(float(rng.normal(0, 0.02)), float(rng.normal(0, 0.015)), float(rng.uniform(1.06, 1.2)))
        self.fov = fov
        self.trocar_deg = {k: float(rng.uniform(*v)) for k, v in TROCARS.items()}
        light = dict(
            gain=float(rng.uniform(0.85, 1.12)), drift=float(rng.uniform(0.05, 0.14)),
            drift_period=float(rng.uniform(14, 30)), drift_phase=float(rng.uniform(0, 2 * math.pi)),
            warm=float(rng.uniform(0.02, 0.06)), warm_period=float(rng.uniform(30, 70)),
            warm_phase=float(rng.uniform(0, 2 * math.pi)), green=float(rng.uniform(-0.03, 0.03)),
            vignette=float(rng.uniform(0.3, 0.55)), light_x=float(rng.normal(0, 0.06)), light_y=float(rng.normal(0, 0.06)),
            noise=float(rng.uniform(0.004, 0.011)), spec_threshold=float(rng.uniform(0.2, 0.32)),
        )
        self.s = Script(name=name, world_seed=world_seed, script_seed=script_seed, duration=duration,
                        frames=int(round(duration * FPS)), fov=fov, cam_keys=[(0.0, 0.0, 0.0, 0.8, 0.0)],
                        breathe_period=float(rng.uniform(3.6, 5.0)), breathe_amp=float(rng.uniform(0.006, 0.012)),
                        apps=[], smoke=[], defocus=[], dips=[], light=light, pans=[], views={},
                        trocars={k: round(v, 1) for k, v in self.trocar_deg.items()})
        self.seq = 0

    # -- tools ---------------------------------------------------------------------------------

    def fulcrum(self, trocar: str) -> tuple[float, float]:
        a = math.radians(self.trocar_deg[trocar])
        return (self.fov.cx + FULCRUM_R * math.cos(a), self.fov.cy + FULCRUM_R * math.sin(a))

    def work_point(self, trocar: str, lo: float = 0.2, hi: float = 0.55) -> tuple[float, float]:
        rng = self.rng
        phi = math.radians(self.trocar_deg[trocar] + rng.normal(0, 22))
        rho = float(rng.uniform(lo, hi)) * self.fov.r
        x, y = self.fov.cx + rho * math.cos(phi), self.fov.cy + rho * math.sin(phi)
        return (x, float(np.clip(y, -0.72, 0.72)))

    def app(self, kind: str, enter: float, leave: float, trocar: str, path, case: str = "filler", frame: str = "screen",
            behind: bool = False, insert_s: float | None = None, retract_s: float | None = None) -> Appearance:
        rng = self.rng
        widths = {"grasper": (0.14, 0.17), "hook": (0.13, 0.15), "clip_applier": (0.15, 0.18), "scissors": (0.14, 0.16),
                  "irrigator": (0.15, 0.18)}
        a = Appearance(
            kind=kind, enter=round(enter, 3), leave=round(leave, 3), trocar=trocar, fulcrum=self.fulcrum(trocar),
            frame=frame, path=path, width=float(rng.uniform(*widths[kind])),
            jaw_hz=float(rng.uniform(0.2, 0.5)), side=float(rng.choice([-1.0, 1.0])), loaded=bool(rng.random() < 0.7),
            behind=behind, insert_s=insert_s if insert_s is not None else float(rng.uniform(0.9, 1.4)),
            retract_s=retract_s if retract_s is not None else float(rng.uniform(0.8, 1.2)),
            gloss=float(rng.uniform(0.8, 1.15)), brightness=float(rng.uniform(0.85, 1.12)),
            wig_f=(float(rng.uniform(0.15, 0.45)), float(rng.uniform(0.15, 0.45))),
            wig_p=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
            case=case,
        )
        return a

    def simple_path(self, trocar: str, enter: float, leave: float, wig: float | None = None, sweep: bool = False):
        """Work at a point, drifting to another; with `sweep`, one fast move (motion blur)."""
        rng = self.rng
        wig = float(rng.uniform(0.03, 0.08)) if wig is None else wig
        p0, p1 = self.work_point(trocar), self.work_point(trocar)
        path = [(enter, *p0, wig)]
        notes = {}
        if sweep and leave - enter > 4.0:
            ts = float(rng.uniform(enter + 1.8, leave - 1.8))
            dur = float(rng.uniform(0.35, 0.5))
            path += [(ts, *p0, wig), (ts + dur, *p1, wig * 0.5)]
            notes["sweep"] = (ts, ts + dur)
        path.append((leave, *p1, wig))
        return path, notes

    def free_trocar(self, t0: float, t1: float, avoid=(), prefer=None) -> str:
        busy = {a.trocar for a in self.s.apps if a.enter < t1 + 1.0 and t0 - 1.0 < a.leave} | set(avoid)
        choices = [k for k in (prefer or TROCARS) if k not in busy]
        if not choices:
            choices = [k for k in TROCARS if k not in busy]
        if not choices:
            raise RuntimeError(f"no free trocar at {t0:.1f}-{t1:.1f} s")
        return str(self.rng.choice(choices))

    def free_kinds(self, t0: float, t1: float, gap: float = 1.5) -> list[str]:
        busy = {a.kind for a in self.s.apps if a.enter < t1 + gap and t0 - gap < a.leave}
        return [k for k in TOOLS if k not in busy]

    def add(self, a: Appearance) -> Appearance:
        self.s.apps.append(a)
        return a

    # -- the hard cases --------------------------------------------------------------------------

    def ep_pair(self, t: float) -> float:
        rng = self.rng
        kinds = self.free_kinds(t, t + 15)
        kind = "grasper" if "grasper" in kinds and rng.random() < 0.6 else str(rng.choice(kinds))
        dA = float(rng.uniform(10, 14))
        ta = self.free_trocar(t, t + dA, prefer=LEFT)
        tb = self.free_trocar(t, t + dA, avoid=(ta,), prefer=RIGHT)
        if rng.random() < 0.5:
            ta, tb = tb, ta
        b_in = t + float(rng.uniform(2.0, 3.5))
        b_out = t + dA - float(rng.uniform(2.0, 3.0)) if rng.random() < 0.5 else t + dA + float(rng.uniform(2.0, 3.0))
        g = self.seq = self.seq + 1
        pa, na = self.simple_path(ta, t, t + dA)
        pb, nb = self.simple_path(tb, b_in, b_out)
        A = self.add(self.app(kind, t, t + dA, ta, pa, "pair"))
        B = self.add(self.app(kind, b_in, b_out, tb, pb, "pair"))
        for x, n in ((A, na), (B, nb)):
            x.group = g
            x.notes.update(n)
        return max(A.leave, B.leave)

    def ep_short(self, t: float) -> float:
        rng = self.rng
        kind = str(rng.choice(self.free_kinds(t, t + 2, gap=2.0)))
        tr = self.free_trocar(t, t + 2)
        p = self.work_point(tr, 0.3, 0.55)
        a = self.app(kind, t, t + 1.5, tr, [(t, *p, 0.02)], "short", insert_s=0.45, retract_s=0.45)
        # calibrate the duration to 12 visible frames (of the tool alone)
        target = int(rng.integers(11, 14))
        for d in np.arange(0.9, 2.6, 1.0 / (2 * FPS)):
            a.leave = round(t + float(d), 4)
            a.path = [(t, *p, 0.02)]
            if len(visible_frames(self.s, self.w, a)) >= target:
                break
        a.group = self.seq = self.seq + 1
        self.add(a)
        return a.leave

    def ep_reentry(self, t: float) -> float:
        rng = self.rng
        d1, d2 = float(rng.uniform(5, 8)), float(rng.uniform(4, 7))
        kind = str(rng.choice(self.free_kinds(t, t + d1 + d2 + 1.5)))
        tr1 = self.free_trocar(t, t + d1)
        same = rng.random() < 0.5
        p1, n1 = self.simple_path(tr1, t, t + d1)
        A = self.add(self.app(kind, t, t + d1, tr1, p1, "reentry", retract_s=float(rng.uniform(0.45, 0.6))))
        A.notes.update(n1)
        tr2 = tr1 if same else self.free_trocar(t + d1, t + d1 + d2, avoid=(tr1,))
        lastA = visible_frames(self.s, self.w, A)[-1]
        target = int(rng.integers(8, 15))  # frames without the kind: 0.67 .. 1.17 s
        B = None
        for g in np.arange(0.0, 1.6, 1.0 / (2 * FPS)):
            e2 = A.leave + float(g)
            if B is None:
                p2, n2 = self.simple_path(tr2, e2, e2 + d2)
                B = self.app(kind, e2, e2 + d2, tr2, p2, "reentry", insert_s=float(rng.uniform(0.5, 0.65)))
                B.notes.update(n2)
            shift = e2 - B.enter
            B.enter, B.leave = round(B.enter + shift, 4), round(B.leave + shift, 4)
            B.path = [(k[0] + shift, *k[1:]) for k in B.path]
            B.notes = {k: (v[0] + shift, v[1] + shift) for k, v in B.notes.items()}
            f0 = math.ceil(B.enter * FPS)
            first = next(f for f in range(f0, f0 + 3 * FPS) if tool_area(self.s, self.w, B, f / FPS) > VISIBLE_FRACTION)
            if first - lastA - 1 >= target:
                break
        self.add(B)
        A.group = B.group = self.seq = self.seq + 1
        A.notes["same_trocar"] = B.notes["same_trocar"] = bool(tr2 == tr1)
        return B.leave

    def ep_edge(self, t: float) -> float:
        rng = self.rng
        w1, move, hold = float(rng.uniform(2.5, 4.0)), float(rng.uniform(0.8, 1.2)), float(rng.uniform(3.0, 5.0))
        back = rng.random() < 0.5
        total = w1 + move + hold + (float(rng.uniform(2.5, 3.5)) if back else 0.0) + 0.9
        kind = str(rng.choice(self.free_kinds(t, t + total)))
        tr = self.free_trocar(t, t + total, prefer=("top", "top", *TROCARS))
        ang = math.radians(self.trocar_deg[tr])
        d_exit = exit_distance(self.fov, ang)
        p0 = self.work_point(tr, 0.2, 0.45)
        t1, t2, t3 = t + w1, t + w1 + move, t + w1 + move + hold
        leave = t + total
        a = self.app(kind, t, leave, tr, [], "edge", retract_s=0.9)
        # the edge point: the smallest depth inside the edge at which the tool alone keeps at
        # least 1.5x the visibility threshold through the hold
        for e in np.arange(0.18, 0.9, 0.02):
            pe = (self.fov.cx + (d_exit - e) * math.cos(ang), self.fov.cy + (d_exit - e) * math.sin(ang))
            path = [(t, *p0, 0.04), (t1, *p0, 0.04), (t2, *pe, 0.012), (t3, *pe, 0.012)]
            if back:
                path += [(t3 + 1.0, *p0, 0.04), (leave, *p0, 0.04)]
            a.path = path
            areas = [tool_area(self.s, self.w, a, f / FPS) for f in range(math.ceil(t2 * FPS), math.floor(t3 * FPS) + 1, 3)]
            if min(areas) >= 1.5 * VISIBLE_FRACTION:
                break
        a.notes.update(edge=(t2, t3), back=bool(back))
        a.group = self.seq = self.seq + 1
        self.add(a)
        return leave

    def ep_flap(self, t: float) -> float:
        """An instrument whose tip passes under the flap and back (world coordinates)."""
        rng = self.rng
        a1, cross, rest = 1.5, float(rng.uniform(2.2, 3.0)), float(rng.uniform(0.8, 1.5))
        total = a1 + 2 * cross + rest + float(rng.uniform(1.0, 2.0)) + 1.0
        kind = str(rng.choice(self.free_kinds(t, t + total)))
        tr = self.free_trocar(t, t + total)
        fl = self.w.flap
        # across the flap, perpendicular to the shaft (roughly: the work view's centre to the fulcrum)
        fs = self.fulcrum(tr)
        sh = math.atan2(fs[1], fs[0]) + math.pi / 2
        r = 1.25 * max(fl.rx, fl.ry)
        pa = (fl.cx + r * math.cos(sh), fl.cy + r * math.sin(sh))
        pb = (fl.cx - r * math.cos(sh), fl.cy - r * math.sin(sh))
        t1, t2, t3, t4 = t + a1, t + a1 + cross, t + a1 + cross + rest, t + a1 + 2 * cross + rest
        path = [(t, *pa, 0.0), (t1, *pa, 0.0), (t2, *pb, 0.0), (t3, *pb, 0.0), (t4, *pa, 0.0), (t + total, *pa, 0.0)]
        a = self.app(kind, t, t + total, tr, path, "flap", frame="world", behind=True)
        a.notes.update(cross=(t1, t4))
        a.group = self.seq = self.seq + 1
        self.add(a)
        return a.leave

    def ep_plain(self, t: float) -> float:
        rng = self.rng
        d = float(rng.uniform(5, 10))
        kind = str(rng.choice(self.free_kinds(t, t + d)))
        tr = self.free_trocar(t, t + d)
        p, n = self.simple_path(tr, t, t + d, sweep=True)
        a = self.add(self.app(kind, t, t + d, tr, p, "sweep" if n else "filler"))
        a.notes.update(n)
        return a.leave

    # -- the whole clip ----------------------------------------------------------------------------

    def draw(self) -> Script:
        rng, s = self.rng, self.s
        T = s.duration
        base = ["pair", "short", "reentry", "edge", "flap"]
        rng.shuffle(base)
        order = [(e, True) for e in base]
        for extra in rng.permutation(["short", "reentry", "plain", "plain"]):
            order.insert(int(rng.integers(1, len(order) + 1)), (str(extra), False))
        # the primary lane: the episodes one after another; extras only where they still fit
        longest = {"pair": 17.5, "short": 2.6, "reentry": 17.0, "edge": 15.0, "flap": 12.5, "plain": 10.5}
        need = sum(longest[e] + 1.3 for e, must in order if must)
        t = float(rng.uniform(1.5, 3.0))
        ep = {"pair": self.ep_pair, "short": self.ep_short, "reentry": self.ep_reentry, "edge": self.ep_edge,
              "flap": self.ep_flap, "plain": self.ep_plain}
        flap_span = None
        for name, must in order:
            if not must and t + longest[name] + need > T - 2.0:
                continue
            end = ep[name](t)
            if must:
                need -= longest[name] + 1.3
            if name == "flap":
                flap_span = (t, end)
            spare = max(0.0, T - 2.0 - end - need)
            t = end + 1.3 + float(rng.uniform(0.0, min(3.0, 0.5 * spare)))
        if t - 1.3 > T - 1.5:
            raise RuntimeError(f"the episodes take {t - 1.3:.1f} s, more than the clip's {T} s")
        self.camera(flap_span)
        self.fillers()
        self.effects()
        s.apps.sort(key=lambda a: a.enter)
        return s

    def fillers(self) -> None:
        """A second lane of ordinary appearances, of kinds not then in view, from free trocars."""
        rng, s = self.rng, self.s
        t = float(rng.uniform(3.0, 8.0))
        while t < s.duration - 6.0:
            d = float(rng.uniform(4.0, 11.0))
            t1 = min(t + d, s.duration - 1.5)
            n_busy = max(sum(1 for a in s.apps if a.enter < u < a.leave) for u in np.arange(t, t1, 0.25))
            kinds = self.free_kinds(t, t1, gap=1.6)
            try:
                tr = self.free_trocar(t, t1)
            except RuntimeError:
                tr = ""
            flap = [a for a in s.apps if a.case == "flap"][0]
            room = n_busy <= 1 or (n_busy == 2 and rng.random() < 0.25)
            if room and kinds and tr and t1 - t > 3.5 and not (t < flap.leave + 1 and flap.enter - 1 < t1):
                p, n = self.simple_path(tr, t, t1, sweep=rng.random() < 0.5)
                a = self.add(self.app(str(rng.choice(kinds)), t, t1, tr, p, "sweep" if n else "filler"))
                a.notes.update(n)
                t = t1 + float(rng.uniform(2.0, 7.0))
            else:
                t += 1.0

    def camera(self, flap_span: tuple[float, float]) -> None:
        """Holds at views and pans between them; the work view (with the flap) holds while the
        flap episode runs. Each hold drifts a little; each pan is eased (motion blur)."""
        rng, s = self.rng, self.s
        views = find_views(self.w, self.fov, rng)
        s.views = {k: [round(float(x), 4) for x in v] for k, v in views.items()}
        others = [k for k in ("wall", "fat", "other", "liver") if k in views]
        rng.shuffle(others)
        T = s.duration
        fa, fb = max(0.0, flap_span[0] - 0.6), min(T, flap_span[1] + 0.6)
        PAN, HOLD = (2.2, 3.6), 3.0
        cap_before = max(0, int((fa - PAN[1] - 2 * HOLD) // (PAN[1] * 2 + HOLD)))  # work, stops, back to work
        cap_after = max(0, int((T - fb) // (PAN[1] + HOLD)))
        before = others[:cap_before]
        after = others[cap_before:][:cap_after]
        if len(after) < cap_after and after:
            after.append("work")
        if not before and not after:
            raise RuntimeError("no time for a camera pan")
        seq: list[list] = []  # holds: [view, start, end]

        def lay(views_: list[str], t0: float, t1: float, lead_pan: bool) -> None:
            pans = [float(rng.uniform(*PAN)) for _ in range(len(views_) - (0 if lead_pan else 1))]
            avail = (t1 - t0) - sum(pans) - HOLD * len(views_)
            if avail < 0:
                raise RuntimeError("camera tour does not fit")
            share = HOLD + rng.dirichlet(np.full(len(views_), 4.0)) * avail
            t, k = t0, 0
            for i, v in enumerate(views_):
                if lead_pan or i > 0:
                    t += pans[k]
                    k += 1
                seq.append([v, t, t + float(share[i])])
                t += float(share[i])

        if before:
            lay(["work", *before, "work"], 0.0, fa, lead_pan=False)
            seq[-1][2] = fb  # the last work hold runs on through the flap episode
        else:
            seq.append(["work", 0.0, fb])
        if after:
            lay(after, fb, T, lead_pan=True)
        else:
            seq[-1][2] = T
        keys = []
        for v, t0, t1 in seq:
            x, y, z, r, dx, dy = views[v]  # the drift (dx, dy) was checked with find_views
            keys.append((t0, x, y, z, r))
            keys.append((t1, x + dx, y + dy, z, r))
        for (v0, _, e0), (v1, s1, _) in zip(seq, seq[1:]):
            s.pans.append({"start_s": round(e0, 3), "end_s": round(s1, 3), "from": v0, "to": v1})
        s.cam_keys = [tuple(round(float(u), 4) for u in k) for k in keys]

    def effects(self) -> None:
        rng, s = self.rng, self.s
        energy = [a for a in s.apps if a.kind in ("hook", "scissors") and a.leave - a.enter > 4.0]
        for a in energy:
            if rng.random() < 0.7 or not s.smoke:
                t0 = a.enter + float(rng.uniform(1.0, 2.0))
                tp = t0 + float(rng.uniform(2.0, 4.0))
                t1 = tp + float(rng.uniform(4.0, 8.0))
                s.smoke.append((round(t0, 3), round(tp, 3), round(min(t1, s.duration), 3), round(float(rng.uniform(0.3, 0.55)), 3)))
        if not s.smoke:
            t0 = float(rng.uniform(5, s.duration - 15))
            s.smoke.append((round(t0, 3), round(t0 + 3.0, 3), round(t0 + 9.0, 3), round(float(rng.uniform(0.35, 0.55)), 3)))
        for _ in range(int(rng.integers(1, 3))):
            s.defocus.append((round(float(rng.uniform(4, s.duration - 4)), 3), round(float(rng.uniform(0.6, 1.0)), 3),
                              round(float(rng.uniform(1.5, 2.6)), 3)))
        s.dips.append((round(float(rng.uniform(5, s.duration - 5)), 3), round(float(rng.uniform(1.0, 2.0)), 3),
                       round(float(rng.uniform(-0.3, -0.18)), 3)))
        s.dips.append((round(float(rng.uniform(5, s.duration - 5)), 3), round(float(rng.uniform(2.0, 4.0)), 3),
                       round(float(rng.uniform(0.12, 0.2)), 3)))
        s.smoke.sort()
        s.defocus.sort()
        s.dips.sort()


# ---------------------------------------------------------------------------------------------
# Rendering and checking
# ---------------------------------------------------------------------------------------------


def runs(v: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as (first, last) frame, inclusive."""
    out, f, n = [], 0, len(v)
    while f < n:
        if v[f]:
            g = f
            while g + 1 < n and v[g + 1]:
                g += 1
            out.append((f, g))
            f = g + 1
        else:
            f += 1
    return out


def short_runs(rs: list[tuple[int, int]], min_run: int, what: str) -> list[str]:
    """The runs of `rs` (from `runs`) and the gaps between them shorter than `min_run` frames,
    each as a problem naming `what`."""
    problems = []
    for f0, f1 in rs:
        if f1 - f0 + 1 < min_run:
            problems.append(f"{what} visible for only {f1 - f0 + 1} frames at {f0}")
    for (_, e0), (s1, _) in zip(rs, rs[1:]):
        if s1 - e0 - 1 < min_run:
            problems.append(f"{what} gone for only {s1 - e0 - 1} frames at {e0 + 1}")
    return problems


@dataclass
class Rendered:
    areas: np.ndarray  # [frames, classes] pixel counts
    inst: np.ndarray  # [frames, appearances] pixel counts of each appearance's own pixels
    entries: list  # per appearance: frame_entry rows (visible frames)
    tip_under: np.ndarray  # [frames, appearances] bool: the tip lies under the flap
    flap_px: np.ndarray  # [frames] the flap's share of the frame (screen, in the field)
    width: int
    height: int
    seconds: float


def render_clip(s: Script, w: WorldCtx, width: int, height: int, mp4: Path | None = None,
                maps: Path | None = None, log=print) -> Rendered:
    torch.set_num_threads(1)
    t_start = time.time()
    gen = torch.Generator().manual_seed(s.script_seed)
    enc = subprocess.Popen(encoder_cmd(mp4, width, height, FPS), stdin=subprocess.PIPE) if mp4 else None
    n, k = s.frames, len(s.apps)
    areas = np.zeros((n, NUM_CLASSES), np.int64)
    inst = np.zeros((n, k), np.int64)
    tip_under = np.zeros((n, k), bool)
    flap_px = np.zeros(n)
    entries: list[list] = [[] for _ in s.apps]
    thr = VISIBLE_FRACTION * width * height
    lab_mm = ins_mm = None
    if maps is not None:
        lab_mm = np.zeros((n, height, width), np.uint8)
        ins_mm = np.zeros((n, height, width), np.uint8)
    shutter = 0.5 / FPS
    flap_tex = w.world.tex[0, 4]
    fh, fw = flap_tex.shape
    for i in range(n):
        t = i / FPS
        cam, cam_prev = camera_at(s, t), camera_at(s, max(0.0, t - shutter))
        moving_cam = abs(cam.x - cam_prev.x) + abs(cam.y - cam_prev.y) > 0.004
        tools, prevs, owner = [], [], []
        for j, a in enumerate(s.apps):
            tool = tool_at(s, a, t)
            if tool is None:
                continue
            prev = tool_at(s, a, max(a.enter, t - shutter))
            moved = prev is not None and math.dist(prev.tip, tool.tip) > 0.01
            tools.append(tool)
            prevs.append(prev if moved else None)
            owner.append(j)
            if a.behind:
                wx, wy = screen_to_world(cam, *tool.tip)
                px_ = int(round((wx / WORLD_X + 1) / 2 * (fw - 1)))
                py_ = int(round((wy / WORLD_Y + 1) / 2 * (fh - 1)))
                if 0 <= px_ < fw and 0 <= py_ < fh:
                    tip_under[i, j] = bool(flap_tex[py_, px_] > 0.5)
        rgb, lab, ins = render(w.world, cam, s.fov, tools, effects_at(s, t), width, height, gen,
                               cam_prev if moving_cam else None, prevs if any(p is not None for p in prevs) else None,
                               instances=True)
        lab_np = lab.numpy().astype(np.uint8)
        lut = np.zeros(len(tools) + 1, np.uint8)
        lut[1:] = np.array(owner, np.uint8) + 1
        ins_np = lut[ins.numpy()]
        areas[i] = np.bincount(lab_np.ravel(), minlength=NUM_CLASSES)
        counts = np.bincount(ins_np.ravel(), minlength=k + 1)
        inst[i] = counts[1:]
        for j in np.nonzero(counts[1:] > thr)[0]:
            rows, cols = np.nonzero(ins_np == j + 1)
            entries[j].append(frame_entry(i, rows, cols, width, height))
        _, fl = view_stats(w, cam, s.fov)
        flap_px[i] = fl
        if enc is not None:
            enc.stdin.write(to_uint8(rgb).numpy().tobytes())
        if lab_mm is not None:
            lab_mm[i] = lab_np
            ins_mm[i] = ins_np
        if (i + 1) % 240 == 0:
            log(f"    frame {i + 1}/{n} ({time.time() - t_start:.0f} s)")
    if enc is not None:
        enc.stdin.close()
        if enc.wait() != 0:
            raise SystemExit("ffmpeg failed")
    if maps is not None:
        np.savez_compressed(maps, labels=lab_mm, instances=ins_mm)
    return Rendered(areas, inst, entries, tip_under, flap_px, width, height, time.time() - t_start)


def check(s: Script, r: Rendered, min_run: int) -> list[str]:
    """Everything that would make the clip's truth ambiguous or a hard case not as designed."""
    problems = []
    thr = VISIBLE_FRACTION * r.width * r.height
    vis = r.areas > thr
    for cid, name in enumerate(NAMES):
        if CATEGORY[name] == "background":
            continue
        problems += short_runs(runs(vis[:, cid]), min_run, name)
    ivis = r.inst > thr
    for j, a in enumerate(s.apps):
        rs = runs(ivis[:, j])
        total = int(ivis[:, j].sum())
        if total < MIN_APPEARANCE:
            problems.append(f"appearance {j + 1} ({a.kind}, {a.case}) visible in {total} frames")
        problems += short_runs(rs, min_run, f"appearance {j + 1} ({a.kind})")
    for kind in TOOLS:
        js = [j for j, a in enumerate(s.apps) if a.kind == kind]
        own = ivis[:, js].any(axis=1) if js else np.zeros(len(vis), bool)
        bad = np.nonzero(vis[:, ID[kind]] & ~own)[0]
        if len(bad):
            problems.append(f"{kind} visible with none of its instruments visible alone in {len(bad)} frames (first {bad[0]})")
    # the hard cases as designed
    margin = 0 if min_run == MIN_RUN else 1
    for j, a in enumerate(s.apps):
        n = int(ivis[:, j].sum())
        if a.case == "short":
            rs = runs(ivis[:, j])
            lo, hi = SHORT_FRAMES
            if len(rs) != 1 or not (lo + margin <= n <= hi - margin):
                problems.append(f"short appearance {j + 1} ({a.kind}) visible {n} frames in {len(rs)} runs")
        if a.case == "edge":
            e0, e1 = a.notes["edge"]
            fr = range(math.ceil(e0 * FPS), math.floor(e1 * FPS) + 1)
            if not all(ivis[f, j] for f in fr) or min(r.inst[f, j] for f in fr) < 1.3 * thr:
                problems.append(f"edge appearance {j + 1} ({a.kind}) not clearly visible through its edge hold")
        if a.case == "flap":
            under = r.tip_under[:, j] & ivis[:, j]
            if under.sum() < 6:
                problems.append(f"flap appearance {j + 1} ({a.kind}): tip under the flap in {int(under.sum())} visible frames")
    for g in {a.group for a in s.apps if a.case == "reentry"}:
        A, B = [j for j, a in enumerate(s.apps) if a.case == "reentry" and a.group == g]
        ra, rb = np.nonzero(ivis[:, A])[0], np.nonzero(ivis[:, B])[0]
        if len(ra) == 0 or len(rb) == 0:
            continue
        gap = int(rb[0] - ra[-1] - 1)
        lo, hi = REENTRY_GAP_FRAMES
        cls = vis[ra[-1] + 1: rb[0], ID[s.apps[A].kind]]
        if not (lo + margin <= gap <= hi - margin) or cls.any():
            problems.append(f"re-entry {A + 1}->{B + 1} ({s.apps[A].kind}): gap {gap} frames"
                            + (", the class stays visible" if cls.any() else ""))
    for g in {a.group for a in s.apps if a.case == "pair"}:
        A, B = [j for j, a in enumerate(s.apps) if a.case == "pair" and a.group == g]
        both = int((ivis[:, A] & ivis[:, B]).sum())
        if both < 3 * FPS:
            problems.append(f"pair {A + 1}+{B + 1} ({s.apps[A].kind}) both visible in only {both} frames")
    organ_events = 0
    for o in ORGANS:
        for f0, f1 in runs(vis[:, ID[o]]):
            organ_events += (f0 > 0) + (f1 < len(vis) - 1)
    if organ_events < 2:
        problems.append(f"only {organ_events} organ entries / exits")
    return problems


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def spans(mask: np.ndarray) -> list[list[float]]:
    return [[round(f0 / FPS, 3), round((f1 + 1) / FPS, 3)] for f0, f1 in runs(mask)]


def cases_record(s: Script, w: WorldCtx, r: Rendered, tracks: dict) -> dict:
    """The hard cases of the clip, with their times (from the ground truth where they show)."""
    thr = VISIBLE_FRACTION * r.width * r.height
    ivis = r.inst > thr
    vis = r.areas > thr
    tid = {j: j + 1 for j in range(len(s.apps))}
    out: dict = {"same_class_together": [], "short_appearances": [], "reentries": [], "under_tissue": [],
                 "frame_edge": [], "tool_sweeps": []}
    for g in sorted({a.group for a in s.apps if a.case == "pair"}):
        A, B = [j for j, a in enumerate(s.apps) if a.case == "pair" and a.group == g]
        both = ivis[:, A] & ivis[:, B]
        ca = {e[0]: e[1:3] for e in r.entries[A]}
        cb = {e[0]: e[1:3] for e in r.entries[B]}
        dist = [math.dist(ca[f], cb[f]) for f in np.nonzero(both)[0]]
        out["same_class_together"].append({
            "label": s.apps[A].kind, "tracks": [tid[A], tid[B]], "trocars": [s.apps[A].trocar, s.apps[B].trocar],
            "both_visible_s": spans(both), "both_visible_frames": int(both.sum()),
            "centroid_distance_min": round(min(dist), 3), "centroid_distance_mean": round(float(np.mean(dist)), 3)})
    for j, a in enumerate(s.apps):
        fr = np.nonzero(ivis[:, j])[0]
        if a.case == "short":
            out["short_appearances"].append({"label": a.kind, "track": tid[j], "start_s": round(fr[0] / FPS, 3),
                                             "end_s": round((fr[-1] + 1) / FPS, 3), "visible_frames": int(len(fr))})
        if a.case == "flap":
            under = r.tip_under[:, j] & ivis[:, j]
            out["under_tissue"].append({"label": a.kind, "track": tid[j], "visible_s": spans(ivis[:, j]),
                                        "tip_under_flap_s": spans(under), "tip_under_flap_frames": int(under.sum()),
                                        "flap_over": w.flap_on})
        if a.case == "edge":
            e0, e1 = a.notes["edge"]
            f0, f1 = math.ceil(e0 * FPS), math.floor(e1 * FPS)
            ar = r.inst[f0:f1 + 1, j] / (r.width * r.height)
            out["frame_edge"].append({"label": a.kind, "track": tid[j], "trocar": a.trocar,
                                      "start_s": round(f0 / FPS, 3), "end_s": round((f1 + 1) / FPS, 3),
                                      "area_min": round(float(ar.min()), 4), "area_max": round(float(ar.max()), 4),
                                      "then": "back into the field" if a.notes["back"] else "leaves from the edge"})
        if "sweep" in a.notes:
            t0, t1 = a.notes["sweep"]
            out["tool_sweeps"].append({"label": a.kind, "track": tid[j], "start_s": round(t0, 3), "end_s": round(t1, 3)})
    for g in sorted({a.group for a in s.apps if a.case == "reentry"}):
        A, B = [j for j, a in enumerate(s.apps) if a.case == "reentry" and a.group == g]
        ra, rb = np.nonzero(ivis[:, A])[0], np.nonzero(ivis[:, B])[0]
        out["reentries"].append({"label": s.apps[A].kind, "tracks": [tid[A], tid[B]],
                                 "left_s": round((ra[-1] + 1) / FPS, 3), "reentered_s": round(rb[0] / FPS, 3),
                                 "gap_frames": int(rb[0] - ra[-1] - 1), "gap_s": round((rb[0] - ra[-1] - 1) / FPS, 3),
                                 "same_trocar": bool(s.apps[A].notes.get("same_trocar"))})
    out["smoke"] = [{"start_s": a, "peak_s": b, "end_s": c, "peak_density": d} for a, b, c, d in s.smoke]
    out["defocus"] = [{"start_s": round(tc - 1.2 * wd, 3), "end_s": round(tc + 1.2 * wd, 3), "peak_sigma_px": sg}
                      for tc, wd, sg in s.defocus]
    out["camera_pans"] = s.pans
    out["exposure"] = [{"at_s": tc, "width_s": wd, "gain_change": amt} for tc, wd, amt in s.dips]
    events = []
    for o in ORGANS:
        for f0, f1 in runs(vis[:, ID[o]]):
            if f0 > 0:
                events.append({"label": o, "event": "enters", "time_s": round(f0 / FPS, 3), "frame": int(f0)})
            if f1 < len(vis) - 1:
                events.append({"label": o, "event": "leaves", "time_s": round((f1 + 1) / FPS, 3), "frame": int(f1 + 1)})
    out["organ_entries_exits"] = sorted(events, key=lambda e: e["frame"])
    out["organs_partly_covered"] = {"flap_over": w.flap_on, "flap_in_view_s": spans(r.flap_px > 0.004),
                                    "note": "instruments lie over organs wherever they work"}
    busy = (ivis.sum(axis=1))
    out["tools_in_view"] = {"none_s": round(float((busy == 0).sum()) / FPS, 2),
                            "one_s": round(float((busy == 1).sum()) / FPS, 2),
                            "two_s": round(float((busy == 2).sum()) / FPS, 2),
                            "three_or_more_s": round(float((busy >= 3).sum()) / FPS, 2)}
    return out


def timeline_doc(s: Script, r: Rendered) -> dict:
    thr = VISIBLE_FRACTION * WIDTH * HEIGHT
    return {
        "synthetic": True,
        "note": "Synthetic laparoscopic scene rendered by models/synth/eval_set.py (an evaluation clip); not real surgery.",
        "video": f"{s.name}.mp4",
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "frame_count": s.frames,
        "duration_s": s.duration,
        "visibility": {
            "rule": "a class is visible in a frame when its ground-truth pixel count in the "
                    f"{WIDTH}x{HEIGHT} label map exceeds visible_fraction of the frame's pixels",
            "visible_fraction": VISIBLE_FRACTION,
            "min_pixels": int(thr) + 1,
            "interval": "a maximal run of visible frames; start_s = start_frame / fps, "
                        "end_s = (end_frame + 1) / fps (end_frame inclusive)",
        },
        "intervals": intervals(r.areas > thr),
        "script": [
            {"label": a.kind, "category": "tool", "enter_s": a.enter, "leave_s": a.leave, "under_tissue": a.behind}
            for a in s.apps
        ],
        "frame_area_fraction": {
            name: [round(float(v), 4) for v in r.areas[:, cid] / (WIDTH * HEIGHT)]
            for cid, name in enumerate(NAMES)
            if CATEGORY[name] != "background"
        },
    }


def describe(s: Script) -> str:
    lines = [f"  script seed {s.script_seed}: {len(s.apps)} appearances, camera keys {len(s.cam_keys)}, "
             f"pans {len(s.pans)} ({', '.join(p['from'] + '->' + p['to'] for p in s.pans)})"]
    for j, a in enumerate(s.apps):
        lines.append(f"    {j + 1:2d} {a.kind:13s} {a.enter:6.2f}-{a.leave:6.2f} {a.trocar:10s} {a.case}")
    return "\n".join(lines)


def make_clip_(set_name: str, k: int, d: SetDef, seconds: float, out: Path, log=print) -> dict:
    name = f"{d.prefix}-{k + 1:02d}"
    world_seed = d.world_seed_base + k
    t0 = time.time()
    w = build_world(world_seed)
    log(f"{name}: world {world_seed} built in {time.time() - t0:.0f} s (flap over {', '.join(w.flap_on) or 'other tissue'})")
    refused = []
    for attempt in range(SCRIPT_ATTEMPTS):
        script_seed = d.script_seed_base + 100 * k + attempt
        try:
            s = Drafter(name, w, world_seed, script_seed, seconds).draw()
        except (RuntimeError, ValueError, StopIteration) as e:
            refused.append({"script_seed": script_seed, "stage": "draw", "reasons": [str(e) or type(e).__name__]})
            log(f"  script seed {script_seed} refused while drawing: {e}")
            continue
        log(describe(s))
        ts = time.time()
        pre = render_clip(s, w, 320, 180)
        problems = check(s, pre, MIN_RUN + SCREEN_MARGIN)
        log(f"  screened at 320x180 in {time.time() - ts:.0f} s: " + ("ok" if not problems else "; ".join(problems[:6])))
        if problems:
            refused.append({"script_seed": script_seed, "stage": "screen 320x180", "reasons": problems})
            continue
        out.mkdir(parents=True, exist_ok=True)
        cache = CACHE / set_name
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"{name}.tmp.mp4"  # not in out: every *.mp4 there is read as a clip
        r = render_clip(s, w, WIDTH, HEIGHT, tmp, cache / f"{name}-labels.tmp.npz", log)
        problems = check(s, r, MIN_RUN)
        if problems:
            log("  REFUSED after rendering: " + "; ".join(problems))
            refused.append({"script_seed": script_seed, "stage": "render 640x360", "reasons": problems})
            tmp.unlink()
            (cache / f"{name}-labels.tmp.npz").unlink()
            continue
        shutil.move(str(tmp), str(out / f"{name}.mp4"))
        (cache / f"{name}-labels.tmp.npz").rename(cache / f"{name}-labels.npz")
        tl = timeline_doc(s, r)
        (out / f"{name}.timeline.json").write_text(timeline_text(tl))
        doc = tracks_document(s.apps, r.entries, FPS, WIDTH, HEIGHT, f"{name}.mp4",
                              "Ground-truth tool tracks of a synthetic evaluation clip, one per scripted tool appearance, "
                              "from per-instance masks rendered by models/synth/eval_set.py; not real surgery.")
        write_tracks(doc, out / f"{name}.tracks.json")
        total = time.time() - t0
        log(f"{name}: done in {total:.0f} s (render {r.seconds:.0f} s), {(out / f'{name}.mp4').stat().st_size} bytes")
        return {
            "name": name,
            "video": f"{name}.mp4",
            "world_seed": world_seed,
            "script_seed": script_seed,
            "refused_script_seeds": refused,
            "duration_s": s.duration,
            "frame_count": s.frames,
            "fps": FPS,
            "bytes": (out / f"{name}.mp4").stat().st_size,
            "render_seconds": round(r.seconds, 1),
            "total_seconds": round(total, 1),
            "appearances": len(s.apps),
            "intervals": len(tl["intervals"]),
            "field": {"cx": round(s.fov.cx, 4), "cy": round(s.fov.cy, 4), "r": round(s.fov.r, 4)},
            "trocars_deg": s.trocars,
            "lighting": {k: round(v, 4) for k, v in s.light.items()},
            "camera_views": s.views,
            "cases": cases_record(s, w, r, doc),
        }
    raise SystemExit(f"{name}: no acceptable script in {SCRIPT_ATTEMPTS} script seeds "
                     f"({d.script_seed_base + 100 * k}..{d.script_seed_base + 100 * k + SCRIPT_ATTEMPTS - 1}); "
                     f"last reasons: {refused[-1]['reasons'][:5] if refused else '-'}")


def set_doc(set_name: str, d: SetDef, clips: list[dict]) -> dict:
    return {
        "synthetic": True,
        "set": set_name,
        "purpose": d.purpose,
        "generator": "models/synth/eval_set.py (worlds: scene.random_layout / random_palette as in dataset.py, "
                     "plus a flap; scripts drawn from the script seed)",
        "world_seeds": f"{d.world_seed_base} + clip index (0-based)",
        "script_seeds": f"{d.script_seed_base} + 100 x clip index + attempt (a refused script is redrawn from the next seed)",
        "seeds_used_elsewhere": {
            "demo_clip": "world 7 (hand-made layout), tool seeds 1-8",
            "privacy_clip": "world 7, room 5, tool seeds 11-14",
            "segmentation_training_worlds": "10000 .. 10000 + scenes - 1 (150 by default)",
            "segmentation_heldout_worlds": "900000 .. 900019",
            "gate_units": "20000 .. 20095 (training), 920000 .. 920019 (held-out); rooms at + 1000000",
            "evaluation_sets": "heldout: worlds 3100000.., scripts 3150000..; validation: worlds 3200000.., scripts 3250000..",
        },
        "truth": {
            "visibility": "a class is visible in a frame when its pixels in the 640x360 label map exceed 0.5 % of the "
                          "frame; one interval per maximal run per class (two tools of one kind together give one "
                          "interval for their union)",
            "tracks": "one per tool appearance (a re-entry is a new appearance), from per-instance masks: the pixels "
                      "an instrument drew on top; a frame is listed when they exceed 0.5 % of the frame",
            "checked": f"every run of visible frames and every gap between runs of one class or of one track is at "
                       f"least {MIN_RUN} frames; every appearance has at least {MIN_APPEARANCE} visible frames; a tool "
                       f"class is never visible without one of its instruments visible on its own",
        },
        "total_duration_s": round(sum(c["duration_s"] for c in clips), 2),
        "total_frames": int(sum(c["frame_count"] for c in clips)),
        "clips": clips,
    }


def set_text(doc: dict) -> str:
    """set.json's text: indented, each innermost list (of numbers or strings) on one line."""
    import re

    return re.sub(r"\[\n\s+([^\[\]{}]+?)\n\s*\]",
                  lambda m: "[" + ", ".join(re.split(r",\n\s*", m.group(1))) + "]", json.dumps(doc, indent=1)) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, choices=sorted(SETS))
    ap.add_argument("--clips", type=int, default=None, help="render the first N clips of the set")
    ap.add_argument("--seconds", type=float, default=None, help="clip duration (default: the set's)")
    ap.add_argument("--only", default=None, help="render only this clip (e.g. heldout-03)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default models/eval/<set>)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = SETS[args.set]
    out = args.out or MODELS / "eval" / args.set
    seconds = args.seconds or d.seconds
    n = args.clips or d.clips
    todo = list(range(n))
    if args.only:
        names = [f"{d.prefix}-{k + 1:02d}" for k in range(d.clips)]
        if args.only not in names:
            raise SystemExit(f"--only {args.only}: the set's clips are {', '.join(names)}")
        todo = [names.index(args.only)]
    path = out / "set.json"
    clips = {c["name"]: c for c in json.loads(path.read_text())["clips"]} if path.exists() else {}
    t0 = time.time()
    for k in todo:
        c = make_clip_(args.set, k, d, seconds, out)
        clips[c["name"]] = c
        doc = set_doc(args.set, d, [clips[x] for x in sorted(clips)])
        path.write_text(set_text(doc))
    print(f"set {args.set}: {len(todo)} clip(s) in {time.time() - t0:.0f} s -> {out}", flush=True)


if __name__ == "__main__":
    main()
