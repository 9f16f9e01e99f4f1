"""Synthetic operating-room views from an endoscope held OUTSIDE the body, and the passage through
the trocar (orstream's privacy-gate data).

SYNTHETIC DATA, NOT SURGICAL DATA. Everything here is procedural: no real video, no real room, no
real person. The faces are a few ellipses and capsules; they resemble no one. It exists so that
orstream can ship a demo in-body / out-of-body classifier and a demo clip with out-of-body
stretches, with an honest ground truth, without downloading anything.

The picture is made like scene.py's, in two layers:

* A *room*: a large 2-D canvas (a panorama: up = ceiling, middle = walls and staff, down = the
  patient under drapes) painted once per seed (`make_room`): ceiling panels and surgical lamps
  (bright discs with LED clusters), walls in operating-room colours (greens, blues, greys, white
  tiles), doors, cabinets, X-ray viewers, clocks, equipment towers, monitors whose screens show
  bright panes, vital-sign traces and rows of text-like glyphs (names), people in scrubs and
  gowns with caps, masks (some without) and faces (varied skin tones, eyes, eyebrows, glasses,
  face shields), the patient under blue / green drapes with an exposed skin patch and ports,
  instrument tables with steel items, floor. The canvas holds colour, an *emissive* channel
  (screens and viewers keep their light when the room is dimmed) and a *lamp* channel (HDR
  lamp light, which also makes glare).
* *Frames*: the endoscope looks at the room (`View`: pan, zoom, any roll), with close-ups drawn
  in screen space (gauze during lens cleaning, gloved hands, drapes at the lens), lamp glare
  (halo, streaks, ghosts, veiling), dimmed or bright rooms, auto-exposure, the scope's own light
  on near objects, white balance, fog, motion blur, defocus, vignetting, the optics' circular
  field (or none: some scopes / crops fill the frame) and sensor noise (`RoomFx`, `render_room`).

`transition` renders the lens travelling between tissue and room through the port, for a
progress 0 (among tissue, rendered by scene.py) .. 1 (in the room):

  0 .. P_IN     in the abdomen, backing out towards the port: the tissue recedes and darkens;
  P_IN .. P_HOUSING   inside the cannula (the tube): its wall appears at the field's edge, bright
                where it is near the lens (the scope's light), dark further on, with seams, and
                the inner opening, with the lit tissue beyond it, shrinks to the centre;
  .. P_EXIT     inside the valve housing: a wider dark plastic well whose seal (translucent
                flaps with slits) closes over the cannula;
  .. P_TURN     above the port, looking down at it: the housing's ring and its dark well shrink,
                the drapes and the skin patch around it come into view;
  .. 1          the scope turns up to the room (a fast pan, motion blur).

Insertion is the same sequence backwards. Ground truth: a frame is OUT OF BODY from the first
frame in which the cannula's wall shows in the field (the lens has left the tissue and is in the
port) until the last such frame on the way back; the frames of the first stage are in-body.

Screen coordinates as in scene.py: y from -1 (top) to +1 (bottom) over the frame height, x from
-16/9 to +16/9 over the width, whatever the pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scene import (
    ASPECT,
    Camera,
    Effects,
    Field,
    Tool,
    World,
    _blur,
    _screen_grid,
    noise,
    render,
    smoothstep,
)

ROOM_X = 4.2  # the room canvas spans x in [-ROOM_X, ROOM_X], y in [-ROOM_Y, ROOM_Y]
ROOM_Y = 2.8

# --------------------------------------------------------------------------------------------
# Colours (sRGB 0..1); each is jittered per room / object
# --------------------------------------------------------------------------------------------

WALLS = (  # colour, tiled?
    ((0.62, 0.74, 0.66), False),  # pale green
    ((0.50, 0.66, 0.62), False),  # sea green
    ((0.60, 0.69, 0.79), False),  # pale blue
    ((0.82, 0.85, 0.86), True),  # white tiles
    ((0.70, 0.73, 0.76), False),  # steel-grey panels
    ((0.86, 0.86, 0.82), True),  # cream tiles
    ((0.42, 0.60, 0.64), True),  # teal tiles
    ((0.56, 0.64, 0.58), True),  # green tiles
)
FLOORS = ((0.45, 0.48, 0.47), (0.36, 0.48, 0.44), (0.40, 0.45, 0.55), (0.56, 0.56, 0.52), (0.30, 0.38, 0.35))
CEILINGS = ((0.88, 0.88, 0.86), (0.80, 0.82, 0.83), (0.92, 0.92, 0.90), (0.74, 0.78, 0.80))
GOWNS = ((0.42, 0.58, 0.76), (0.30, 0.45, 0.68), (0.16, 0.24, 0.42), (0.34, 0.58, 0.50), (0.26, 0.50, 0.52),
         (0.55, 0.70, 0.78), (0.45, 0.62, 0.48), (0.62, 0.66, 0.70), (0.45, 0.22, 0.30), (0.20, 0.36, 0.30))
DRAPES = ((0.20, 0.42, 0.66), (0.22, 0.50, 0.58), (0.28, 0.52, 0.42), (0.30, 0.58, 0.72), (0.16, 0.34, 0.50),
          (0.34, 0.48, 0.40))
SKINS = ((0.96, 0.82, 0.72), (0.90, 0.72, 0.60), (0.80, 0.60, 0.46), (0.66, 0.46, 0.33), (0.50, 0.33, 0.22),
         (0.36, 0.23, 0.16), (0.92, 0.76, 0.62), (0.74, 0.54, 0.38), (0.28, 0.18, 0.13))
HAIRS = ((0.08, 0.06, 0.05), (0.22, 0.14, 0.08), (0.45, 0.32, 0.18), (0.72, 0.58, 0.36), (0.58, 0.57, 0.55),
         (0.35, 0.16, 0.08))
IRISES = ((0.25, 0.15, 0.08), (0.12, 0.08, 0.05), (0.30, 0.45, 0.60), (0.35, 0.45, 0.30), (0.40, 0.30, 0.18))
GLOVES = ((0.36, 0.46, 0.82), (0.48, 0.38, 0.78), (0.90, 0.82, 0.66), (0.80, 0.70, 0.52), (0.46, 0.66, 0.50),
          (0.94, 0.92, 0.88), (0.30, 0.36, 0.62))
MASKS = ((0.62, 0.78, 0.90), (0.55, 0.75, 0.66), (0.92, 0.93, 0.94), (0.45, 0.62, 0.85), (0.80, 0.86, 0.92))
CAP_PRINTS = ((0.90, 0.30, 0.35), (0.95, 0.80, 0.20), (0.30, 0.70, 0.35), (0.95, 0.95, 0.95), (0.60, 0.30, 0.70),
              (0.20, 0.30, 0.80))
STEEL = (0.70, 0.72, 0.75)
PLASTICS = ((0.10, 0.10, 0.11), (0.20, 0.21, 0.23), (0.35, 0.45, 0.62), (0.80, 0.80, 0.78), (0.55, 0.58, 0.60))


def _jit(rng: np.random.Generator, c: Sequence[float], amount: float = 0.05, gain: tuple[float, float] = (0.9, 1.08)):
    g = rng.uniform(*gain)
    return tuple(float(np.clip(v * g + rng.uniform(-amount, amount), 0.0, 1.0)) for v in c)


def _pick(rng: np.random.Generator, options: Sequence, amount: float = 0.05):
    return _jit(rng, options[int(rng.integers(len(options)))], amount)


def _col(c) -> torch.Tensor:
    return torch.tensor(c, dtype=torch.float32).view(3, 1, 1)


# --------------------------------------------------------------------------------------------
# Signed distances (positive inside), in whatever units the coordinates are in
# --------------------------------------------------------------------------------------------


def sd_ellipse(x, y, cx, cy, rx, ry, rot=0.0):
    c, s = math.cos(rot), math.sin(rot)
    lx = ((x - cx) * c + (y - cy) * s) / rx
    ly = (-(x - cx) * s + (y - cy) * c) / ry
    return (1.0 - torch.sqrt(lx * lx + ly * ly)) * min(rx, ry)


def sd_box(x, y, cx, cy, hw, hh, r=0.0, rot=0.0):
    c, s = math.cos(rot), math.sin(rot)
    lx = ((x - cx) * c + (y - cy) * s).abs() - (hw - r)
    ly = (-(x - cx) * s + (y - cy) * c).abs() - (hh - r)
    outside = torch.sqrt(lx.clamp(min=0) ** 2 + ly.clamp(min=0) ** 2)
    inside = torch.maximum(lx, ly).clamp(max=0)
    return -(outside + inside - r)


def sd_capsule(x, y, ax, ay, bx, by, r):
    bax, bay = bx - ax, by - ay
    den = max(bax * bax + bay * bay, 1e-12)
    h = (((x - ax) * bax + (y - ay) * bay) / den).clamp(0, 1)
    return r - torch.sqrt((x - ax - bax * h) ** 2 + (y - ay - bay * h) ** 2)


def fabric(height: torch.Tensor, spacing: float, depth: float) -> torch.Tensor:
    """Shading of cloth folds: a noise height field lit from the upper left (about 0.5..1.1)."""
    gy, gx = torch.gradient(height, spacing=(spacing, spacing))
    lit = (-0.6 * gx - 0.8 * gy) * depth
    return (0.82 + lit / torch.sqrt(1 + lit * lit) * 0.3 - 0.04 * height.abs()).clamp(0.4, 1.2)


def cov(sd: torch.Tensor, px: float) -> torch.Tensor:
    """Anti-aliased coverage of a signed distance (as scene.py's)."""
    return (sd / px + 0.5).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# The room canvas
# --------------------------------------------------------------------------------------------


@dataclass
class Win:
    """A rectangle of canvas pixels and the world coordinates of their centres."""

    rows: slice
    cols: slice
    x: torch.Tensor
    y: torch.Tensor


class Canvas:
    def __init__(self, ppu: float, gen: torch.Generator) -> None:
        self.w = int(round(2 * ROOM_X * ppu))
        self.h = int(round(2 * ROOM_Y * ppu))
        self.sx = 2 * ROOM_X / self.w
        self.sy = 2 * ROOM_Y / self.h
        self.px = max(self.sx, self.sy)
        self.rgb = torch.zeros(3, self.h, self.w)
        self.emit = torch.zeros(self.h, self.w)
        self.lamp = torch.zeros(self.h, self.w)
        self.gen = gen

    def window(self, x0: float, y0: float, x1: float, y1: float) -> Win | None:
        c0 = max(0, int(math.floor((x0 + ROOM_X) / self.sx)) - 1)
        c1 = min(self.w, int(math.ceil((x1 + ROOM_X) / self.sx)) + 1)
        r0 = max(0, int(math.floor((y0 + ROOM_Y) / self.sy)) - 1)
        r1 = min(self.h, int(math.ceil((y1 + ROOM_Y) / self.sy)) + 1)
        if c1 <= c0 or r1 <= r0:
            return None
        xs = -ROOM_X + (torch.arange(c0, c1, dtype=torch.float32) + 0.5) * self.sx
        ys = -ROOM_Y + (torch.arange(r0, r1, dtype=torch.float32) + 0.5) * self.sy
        return Win(slice(r0, r1), slice(c0, c1), xs.view(1, -1).expand(r1 - r0, c1 - c0),
                   ys.view(-1, 1).expand(r1 - r0, c1 - c0))

    def whole(self) -> Win:
        return self.window(-ROOM_X, -ROOM_Y, ROOM_X, ROOM_Y)

    def put(self, win: Win, colour, alpha: torch.Tensor, emit=0.0, lamp=0.0) -> None:
        a = alpha.clamp(0, 1)
        col = colour if isinstance(colour, torch.Tensor) else _col(colour)
        r, c = win.rows, win.cols
        self.rgb[:, r, c] = col * a + self.rgb[:, r, c] * (1 - a)
        self.emit[r, c] = emit * a + self.emit[r, c] * (1 - a)
        self.lamp[r, c] = lamp * a + self.lamp[r, c] * (1 - a)

    def noise(self, win: Win, freq: float, octaves: int = 3, aniso=(1.0, 1.0), persistence: float = 0.5) -> torch.Tensor:
        h, w = win.x.shape
        return noise(self.gen, (h, w), (h * self.sy, w * self.sx), freq, octaves, aniso, persistence)


@dataclass
class Room:
    """The painted room: tex [1, 5, H, W] = r, g, b, emissive, lamp; plus where things are (world
    units) for aiming views and for glare."""

    tex: torch.Tensor
    ppu: float
    lamps: list  # (x, y, r)
    faces: list  # (x, y, s)
    monitors: list  # (x, y, half width, half height)
    tables: list  # (x, y, half width, half height)
    port: tuple  # (x, y): where the scope's port enters the patient
    skin: tuple  # (x, y, half width, half height) of the exposed skin patch
    drape: tuple  # colour of the patient's drapes
    glove: tuple  # colour of the team's gloves
    trocar: "Trocar"


# Glyphs: 5x7 bitmaps made of strokes, so that rows of them look like text.
def _glyph_atlas(rng: np.random.Generator, n: int = 40) -> torch.Tensor:
    atlas = np.zeros((n, 7, 5), bool)
    for g in range(n):
        m = atlas[g]
        for _ in range(int(rng.integers(2, 5))):
            kind = rng.integers(4)
            if kind == 0:  # vertical stroke
                c = int(rng.integers(5))
                a, b = sorted(rng.integers(0, 7, 2))
                m[a:b + 1, c] = True
            elif kind == 1:  # horizontal stroke
                r = int(rng.choice([0, 3, 6]))
                a, b = sorted(rng.integers(0, 5, 2))
                m[r, a:b + 1] = True
            elif kind == 2:  # diagonal
                r0, c0 = int(rng.integers(0, 3)), int(rng.integers(0, 2))
                for k in range(int(rng.integers(3, 6))):
                    if r0 + k < 7 and c0 + k < 5:
                        m[r0 + k, c0 + k] = True
            else:  # bowl
                m[1:6, 0] = m[1:6, 4] = True
                m[0, 1:4] = m[6, 1:4] = True
        if m.sum() < 5:
            m[:, 2] = True
    return torch.from_numpy(atlas)


def _text(x: torch.Tensor, y: torch.Tensor, x0: float, y0: float, height: float, chars: torch.Tensor,
          atlas: torch.Tensor) -> torch.Tensor:
    """Coverage of a row of glyphs (`chars`: glyph ids, -1 = space) whose top-left is (x0, y0)."""
    unit = height / 8.0  # a glyph is 5x7 units in a 6x8 cell
    fu = (x - x0) / unit
    fv = (y - y0) / unit
    cell = torch.floor(fu / 6.0)
    n = len(chars)
    ok = (cell >= 0) & (cell < n) & (fv >= 0) & (fv < 7)
    u = (fu - cell * 6.0)
    ok &= u < 5
    idx = chars[cell.clamp(0, n - 1).long()]
    ok &= idx >= 0
    bit = atlas[idx.clamp(min=0), fv.long().clamp(0, 6), u.long().clamp(0, 4)]
    return (ok & bit).float()


def _random_chars(rng: np.random.Generator, n: int, glyphs: int) -> torch.Tensor:
    """Words of 2..9 glyphs separated by spaces (a name, a date, an id)."""
    out = []
    while len(out) < n:
        out += list(rng.integers(0, glyphs, int(rng.integers(2, 10))))
        out.append(-1)
    return torch.tensor(out[:n], dtype=torch.long)


# ---- painters --------------------------------------------------------------------------------


def _paint_background(cv: Canvas, rng: np.random.Generator) -> tuple[float, float]:
    win = cv.whole()
    x, y = win.x, win.y
    y_ceil = float(rng.uniform(-1.9, -1.1))
    y_floor = float(rng.uniform(0.3, 1.0))
    slope_c, slope_f = float(rng.normal(0, 0.06)), float(rng.normal(0, 0.06))
    wall_c, tiles = WALLS[int(rng.integers(len(WALLS)))]
    wall_c = _jit(rng, wall_c, 0.04)
    ceil_c = _pick(rng, CEILINGS, 0.03)
    floor_c = _pick(rng, FLOORS, 0.04)
    n1 = cv.noise(win, 0.8, 3)
    # wall
    rgb = _col(wall_c) * (0.93 + 0.05 * n1 + 0.02 * cv.noise(win, 12, 1))
    if tiles:
        t = float(rng.uniform(0.10, 0.22))
        gx = torch.remainder(x + 0.013, t) / t
        gy = torch.remainder(y + 0.007, t) / t
        grout = torch.maximum(smoothstep(0.06, 0.0, torch.minimum(gx, 1 - gx)),
                              smoothstep(0.06, 0.0, torch.minimum(gy, 1 - gy)))
        rgb = rgb * (1 - 0.25 * grout) + 0.04 * smoothstep(0.3, 0.0, (gx - 0.3).abs() + (gy - 0.3).abs())
    else:  # panels with seams
        t = float(rng.uniform(0.6, 1.2))
        gx = torch.remainder(x, t) / t
        rgb = rgb * (1 - 0.3 * smoothstep(0.015, 0.0, torch.minimum(gx, 1 - gx)))
    # ceiling: panels in a grid
    ceil = _col(ceil_c) * (0.95 + 0.04 * n1)
    p = float(rng.uniform(0.5, 0.9))
    gx = torch.remainder(x, p) / p
    gy = torch.remainder(y, p) / p
    seam = torch.maximum(smoothstep(0.025, 0.0, torch.minimum(gx, 1 - gx)), smoothstep(0.025, 0.0, torch.minimum(gy, 1 - gy)))
    ceil = ceil * (1 - 0.3 * seam)
    top = (y_ceil + slope_c * x - y)  # > 0 above the ceiling line
    rgb = torch.where((top > 0).unsqueeze(0), ceil * (0.8 + 0.2 * smoothstep(0.0, 1.0, top)).unsqueeze(0), rgb)
    # floor: speckled vinyl, darker far away, a skirting band
    fl = _col(floor_c) * (0.9 + 0.06 * cv.noise(win, 3, 2) + 0.05 * cv.noise(win, 40, 1))
    below = y - (y_floor + slope_f * x)
    fl = fl * (0.75 + 0.3 * smoothstep(0.0, 1.5, below)).unsqueeze(0)
    rgb = torch.where((below > 0).unsqueeze(0), fl, rgb)
    skirt = ((below > -0.06) & (below <= 0)).unsqueeze(0)
    rgb = torch.where(skirt, rgb * 0.7, rgb)
    cv.put(win, rgb, torch.ones_like(x))
    # flat ceiling lights / laminar flow panel
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = float(rng.uniform(-3.8, 3.8)), float(rng.uniform(-2.7, y_ceil - 0.2))
        hw, hh = float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.08, 0.3))
        w = cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
        if w is None:
            continue
        sd = sd_box(w.x, w.y, cx, cy, hw, hh, 0.02)
        grid = 0.85 + 0.15 * torch.cos(w.x * 60) * torch.cos(w.y * 60)
        cv.put(w, _col((0.95, 0.96, 0.97)) * grid, cov(sd, cv.px), emit=1.0, lamp=0.25)
    return y_ceil, y_floor


def _paint_wall_things(cv: Canvas, rng: np.random.Generator, y_ceil: float, y_floor: float) -> None:
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(5))
        cx = float(rng.uniform(-3.9, 3.9))
        if kind == 0:  # door with a window
            hw, hh = float(rng.uniform(0.35, 0.6)), float(rng.uniform(0.8, 1.2))
            cy = y_floor - hh
            w = cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
            if w is None:
                continue
            c = _pick(rng, ((0.70, 0.72, 0.74), (0.55, 0.62, 0.70), (0.75, 0.70, 0.62)))
            cv.put(w, _col(c) * (0.92 + 0.05 * cv.noise(w, 4, 2)), cov(sd_box(w.x, w.y, cx, cy, hw, hh, 0.02), cv.px))
            wy = cy - hh * 0.45
            sd = sd_box(w.x, w.y, cx, wy, hw * 0.4, hh * 0.22, 0.03)
            cv.put(w, _col((0.55, 0.68, 0.72)) * (0.8 + 0.3 * smoothstep(-1, 1, cv.noise(w, 2, 2))), cov(sd, cv.px),
                   emit=0.3)
            sd = sd_box(w.x, w.y, cx + hw * 0.75, cy, 0.03, 0.12, 0.02)
            cv.put(w, STEEL, cov(sd, cv.px))
        elif kind == 1:  # cabinet with glass doors and shelves
            hw, hh = float(rng.uniform(0.4, 1.0)), float(rng.uniform(0.4, 0.8))
            cy = float(rng.uniform(y_ceil + hh, y_floor - hh))
            w = cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
            if w is None:
                continue
            cv.put(w, _pick(rng, ((0.72, 0.74, 0.76), (0.85, 0.86, 0.86))), cov(sd_box(w.x, w.y, cx, cy, hw, hh, 0.02), cv.px))
            n = int(rng.integers(2, 4))
            for k in range(n):
                gx = cx - hw + (k + 0.5) * 2 * hw / n
                sd = sd_box(w.x, w.y, gx, cy, hw / n - 0.04, hh - 0.05, 0.01)
                shelf = (torch.remainder(w.y - cy, hh / 2) < 0.02).float()
                boxes = 0.35 + 0.4 * smoothstep(-0.5, 1.0, cv.noise(w, 6, 1))
                glass = _col((0.45, 0.55, 0.58)) * (boxes * (1 - 0.5 * shelf)) + 0.15 * smoothstep(0.8, 1.5, cv.noise(w, 1.5, 1))
                cv.put(w, glass, cov(sd, cv.px))
        elif kind == 2:  # X-ray viewer: a bright panel with a grey picture
            hw, hh = float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.25, 0.45))
            cy = float(rng.uniform(y_ceil + hh + 0.1, y_floor - hh - 0.2))
            w = cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
            if w is None:
                continue
            cv.put(w, (0.2, 0.2, 0.21), cov(sd_box(w.x, w.y, cx, cy, hw, hh, 0.01), cv.px))
            film = 0.25 + 0.6 * smoothstep(-1.2, 1.5, cv.noise(w, 3, 3)) * smoothstep(0.0, 0.25, sd_ellipse(w.x, w.y, cx, cy, hw * 0.8, hh * 0.9))
            cv.put(w, _col((0.95, 0.97, 1.0)) * (0.3 + 0.7 * film), cov(sd_box(w.x, w.y, cx, cy, hw - 0.03, hh - 0.03), cv.px),
                   emit=1.0)
        elif kind == 3:  # wall clock
            r = float(rng.uniform(0.12, 0.22))
            cy = float(rng.uniform(y_ceil + r + 0.1, y_floor - 1.0))
            w = cv.window(cx - r, cy - r, cx + r, cy + r)
            if w is None:
                continue
            cv.put(w, (0.15, 0.15, 0.16), cov(sd_ellipse(w.x, w.y, cx, cy, r, r), cv.px))
            cv.put(w, (0.95, 0.95, 0.93), cov(sd_ellipse(w.x, w.y, cx, cy, r * 0.88, r * 0.88), cv.px), emit=0.2)
            for ang, ln in ((rng.uniform(0, 2 * math.pi), 0.75), (rng.uniform(0, 2 * math.pi), 0.5)):
                sd = sd_capsule(w.x, w.y, cx, cy, cx + ln * r * math.cos(ang), cy + ln * r * math.sin(ang), 0.05 * r)
                cv.put(w, (0.05, 0.05, 0.05), cov(sd, cv.px))
        else:  # medical gas outlets panel
            hw, hh = float(rng.uniform(0.2, 0.4)), float(rng.uniform(0.08, 0.14))
            cy = float(rng.uniform(y_ceil + 0.5, y_floor - 0.4))
            w = cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
            if w is None:
                continue
            cv.put(w, (0.82, 0.83, 0.84), cov(sd_box(w.x, w.y, cx, cy, hw, hh, 0.02), cv.px))
            n = int(rng.integers(3, 6))
            for k in range(n):
                gx = cx - hw + (k + 0.5) * 2 * hw / n
                c = ((0.2, 0.5, 0.2), (0.2, 0.3, 0.8), (0.9, 0.9, 0.9), (0.9, 0.8, 0.2), (0.1, 0.1, 0.1))[int(rng.integers(5))]
                cv.put(w, c, cov(sd_ellipse(w.x, w.y, gx, cy, hh * 0.5, hh * 0.5), cv.px))


def _screen_picture(cv: Canvas, w: Win, rng: np.random.Generator, x0, y0, x1, y1, atlas) -> torch.Tensor:
    """The colour of a screen's content over window w (a monitor, a tower display)."""
    x, y = w.x, w.y
    H, W = y1 - y0, x1 - x0
    dark = rng.random() < 0.6
    bg = _pick(rng, ((0.02, 0.03, 0.08), (0.0, 0.0, 0.0), (0.05, 0.10, 0.18))) if dark else _pick(rng, ((0.92, 0.93, 0.95), (0.80, 0.84, 0.88)))
    img = _col(bg).expand(3, *x.shape).clone()

    def box(bx0, by0, bx1, by1, colour) -> None:
        nonlocal img
        m = ((x >= bx0) & (x < bx1) & (y >= by0) & (y < by1)).unsqueeze(0)
        img = torch.where(m, colour if isinstance(colour, torch.Tensor) else _col(colour), img)

    fg = (0.95, 0.95, 0.95) if dark else (0.08, 0.08, 0.12)
    # header bar with a name
    if rng.random() < 0.7:
        hh = H * float(rng.uniform(0.08, 0.14))
        box(x0, y0, x1, y0 + hh, _pick(rng, ((0.15, 0.35, 0.70), (0.25, 0.25, 0.28), (0.10, 0.50, 0.55))))
        m = _text(x, y, x0 + 0.03 * W, y0 + 0.2 * hh, 0.6 * hh, _random_chars(rng, 24, len(atlas)), atlas)
        img = img * (1 - m) + m * _col((0.97, 0.97, 0.97))
        top = y0 + hh
    else:
        top = y0
    # panes: bright blocks, a laparoscopic picture, an X-ray
    for _ in range(int(rng.integers(0, 3))):
        bx0 = x0 + float(rng.uniform(0.02, 0.5)) * W
        by0 = top + float(rng.uniform(0.02, 0.4)) * H
        bx1 = min(x1 - 0.02 * W, bx0 + float(rng.uniform(0.2, 0.6)) * W)
        by1 = min(y1 - 0.02 * H, by0 + float(rng.uniform(0.2, 0.5)) * H)
        what = rng.random()
        if what < 0.4:
            c = _pick(rng, ((0.25, 0.55, 0.90), (0.85, 0.85, 0.88), (0.30, 0.75, 0.45), (0.95, 0.75, 0.25)))
            box(bx0, by0, bx1, by1, c)
        elif what < 0.6:  # the endoscope's picture as a small inset (a screen filled with it would
            # look like the body itself: the gate is not made for a scope filming that close)
            t = 0.3 + 0.5 * smoothstep(-1, 1.5, cv.noise(w, 8, 2))
            box(bx0, by0, min(bx1, bx0 + 0.25 * W), min(by1, by0 + 0.25 * H), _col((0.75, 0.35, 0.30)) * t)
        else:
            t = 0.15 + 0.7 * smoothstep(-1, 1.5, cv.noise(w, 4, 3))
            box(bx0, by0, bx1, by1, t.unsqueeze(0).expand(3, -1, -1))
    # rows of text (names, dates, ids), in columns
    th = H * float(rng.uniform(0.035, 0.07))
    cols = int(rng.integers(1, 3))
    for c in range(cols):
        cx0 = x0 + 0.03 * W + c * W / cols
        rows = int(rng.integers(3, 12))
        ty = top + float(rng.uniform(0.05, 0.4)) * H
        colour = _pick(rng, (fg, fg, (0.4, 0.9, 0.4), (0.95, 0.9, 0.3), (0.4, 0.85, 0.95), (0.95, 0.55, 0.2),
                             (0.95, 0.3, 0.3), (0.9, 0.4, 0.9)), 0.02)
        for r in range(rows):
            yy = ty + r * th * 1.5
            if yy + th > y1:
                break
            n = int((W / cols * 0.9) / (th * 6 / 8))
            m = _text(x, y, cx0, yy, th, _random_chars(rng, max(n, 1), len(atlas)), atlas)
            img = img * (1 - m) + m * _col(colour)
    # vital-sign traces and big numbers
    if rng.random() < 0.6:
        for k in range(int(rng.integers(1, 4))):
            yc = top + (0.25 + 0.22 * k) * H
            if yc > y1 - 0.05 * H:
                break
            f, a = float(rng.uniform(15, 40)) / W, 0.06 * H
            phase = float(rng.uniform(0, 6))
            wave = a * (torch.sin(x * f + phase) + 0.8 * torch.relu(torch.sin(x * f * 0.5 + phase)) ** 8)
            m = smoothstep(0.006 * H + cv.px, 0.0, (y - yc - wave).abs()) * (x < x1 - 0.25 * W).float()
            img = img * (1 - m) + m * _col(((0.3, 0.95, 0.3), (0.95, 0.9, 0.2), (0.3, 0.9, 0.95), (0.95, 0.3, 0.3))[k])
            m = _text(x, y, x1 - 0.22 * W, yc - 0.07 * H, 0.14 * H, _random_chars(rng, 3, len(atlas)), atlas)
            img = img * (1 - m) + m * _col(((0.3, 0.95, 0.3), (0.95, 0.9, 0.2), (0.3, 0.9, 0.95), (0.95, 0.3, 0.3))[k])
    return img


def _paint_monitor(cv: Canvas, rng: np.random.Generator, cx: float, cy: float, hw: float, hh: float, atlas,
                   arm_to: float | None) -> None:
    b = 0.04 + 0.04 * float(rng.random())
    if arm_to is not None:  # boom arm up to the ceiling
        w = cv.window(cx - 0.1, min(arm_to, cy) - 0.1, cx + 0.1, cy + 0.1)
        if w is not None:
            cv.put(w, _pick(rng, ((0.75, 0.76, 0.78), (0.55, 0.56, 0.58))), cov(sd_capsule(w.x, w.y, cx, cy, cx, arm_to, 0.045), cv.px))
    w = cv.window(cx - hw - b, cy - hh - b, cx + hw + b, cy + hh + b)
    if w is None:
        return
    bezel = _pick(rng, ((0.08, 0.08, 0.09), (0.18, 0.18, 0.2), (0.8, 0.8, 0.8)), 0.02)
    cv.put(w, bezel, cov(sd_box(w.x, w.y, cx, cy, hw + b, hh + b, 0.02), cv.px))
    pic = _screen_picture(cv, w, rng, cx - hw, cy - hh, cx + hw, cy + hh, atlas)
    cv.put(w, pic, cov(sd_box(w.x, w.y, cx, cy, hw, hh), cv.px), emit=1.0)


def _paint_equipment(cv: Canvas, rng: np.random.Generator, y_floor: float, atlas) -> None:
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(3))
        cx = float(rng.uniform(-3.8, 3.8))
        if kind == 0:  # laparoscopy tower: a stack of units with small displays and LEDs
            hw = float(rng.uniform(0.3, 0.5))
            n = int(rng.integers(3, 6))
            uh = float(rng.uniform(0.15, 0.3))
            bottom = y_floor + 0.3
            for k in range(n):
                cy = bottom - (k + 0.5) * uh
                w = cv.window(cx - hw, cy - uh / 2, cx + hw, cy + uh / 2)
                if w is None:
                    continue
                c = _pick(rng, ((0.10, 0.10, 0.11), (0.25, 0.26, 0.28), (0.85, 0.85, 0.85)), 0.02)
                cv.put(w, c, cov(sd_box(w.x, w.y, cx, cy, hw, uh / 2 - 0.01, 0.01), cv.px))
                dx = cx - hw * 0.5
                sd = sd_box(w.x, w.y, dx, cy, hw * 0.3, uh * 0.25)
                pic = _col(_pick(rng, ((0.2, 0.5, 0.9), (0.3, 0.9, 0.5), (0.9, 0.6, 0.2)))) * (0.4 + 0.6 * _text(
                    w.x, w.y, dx - hw * 0.28, cy - uh * 0.18, uh * 0.36, _random_chars(rng, 6, len(atlas)), atlas))
                cv.put(w, pic, cov(sd, cv.px), emit=1.0)
                for j in range(int(rng.integers(1, 4))):
                    lx = cx + hw * (0.2 + 0.2 * j)
                    cv.put(w, _pick(rng, ((0.2, 0.95, 0.3), (0.95, 0.3, 0.2), (0.3, 0.5, 0.95))),
                           cov(sd_ellipse(w.x, w.y, lx, cy, 0.02, 0.02), cv.px), emit=1.0)
        elif kind == 1:  # anaesthesia machine: a big box with a screen and knobs
            hw, hh = float(rng.uniform(0.4, 0.7)), float(rng.uniform(0.6, 0.9))
            cy = y_floor + 0.3 - hh
            w = cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
            if w is None:
                continue
            c = _pick(rng, ((0.85, 0.86, 0.85), (0.70, 0.74, 0.78), (0.45, 0.5, 0.55)))
            cv.put(w, _col(c) * (0.9 + 0.06 * cv.noise(w, 3, 2)), cov(sd_box(w.x, w.y, cx, cy, hw, hh, 0.05), cv.px))
            sx0, sy0 = cx - hw * 0.7, cy - hh * 0.8
            sd = sd_box(w.x, w.y, cx, cy - hh * 0.55, hw * 0.7, hh * 0.25)
            cv.put(w, _screen_picture(cv, w, rng, sx0, sy0, cx + hw * 0.7, cy - hh * 0.3, atlas), cov(sd, cv.px), emit=1.0)
            for j in range(int(rng.integers(2, 6))):
                kx = cx - hw * 0.6 + j * hw * 0.3
                cv.put(w, _pick(rng, ((0.2, 0.2, 0.2), (0.1, 0.4, 0.8), (0.9, 0.9, 0.2), (0.2, 0.6, 0.2))),
                       cov(sd_ellipse(w.x, w.y, kx, cy + hh * 0.1, 0.05, 0.05), cv.px))
        else:  # IV pole with bags
            top = float(rng.uniform(-1.8, -0.8))
            w = cv.window(cx - 0.4, top - 0.1, cx + 0.4, y_floor + 0.5)
            if w is None:
                continue
            cv.put(w, STEEL, cov(sd_capsule(w.x, w.y, cx, top, cx, y_floor + 0.4, 0.018), cv.px))
            cv.put(w, STEEL, cov(sd_capsule(w.x, w.y, cx - 0.3, top, cx + 0.3, top, 0.015), cv.px))
            for j in range(int(rng.integers(1, 3))):
                bx = cx + (-0.22 if j == 0 else 0.22)
                sd = sd_box(w.x, w.y, bx, top + 0.25, 0.09, 0.16, 0.04)
                c = _col((0.85, 0.9, 0.92)) * (0.8 + 0.2 * smoothstep(0.0, 0.05, sd))
                cv.put(w, c, 0.6 * cov(sd, cv.px))
                cv.put(w, (0.8, 0.85, 0.9), 0.7 * cov(sd_capsule(w.x, w.y, bx, top + 0.41, bx + 0.1, y_floor, 0.007), cv.px))


def _paint_lamp(cv: Canvas, rng: np.random.Generator, cx: float, cy: float, r: float) -> None:
    w = cv.window(cx - r * 1.2, -ROOM_Y, cx + r * 1.2, cy + r * 1.2)
    if w is None:
        return
    arm = _pick(rng, ((0.85, 0.86, 0.87), (0.6, 0.62, 0.65)))
    cv.put(w, arm, cov(sd_capsule(w.x, w.y, cx + r * 0.3, cy, cx + r * 0.8, -ROOM_Y, 0.06), cv.px))
    housing = _pick(rng, ((0.9, 0.9, 0.9), (0.75, 0.77, 0.8), (0.55, 0.57, 0.6)), 0.03)
    hexa = rng.random() < 0.3
    if hexa:
        sd = sd_box(w.x, w.y, cx, cy, r, r * 0.8, r * 0.3)
    else:
        sd = sd_ellipse(w.x, w.y, cx, cy, r, r * float(rng.uniform(0.75, 1.0)))
    cv.put(w, housing, cov(sd, cv.px))
    inner = sd_ellipse(w.x, w.y, cx, cy, r * 0.82, r * 0.82)
    # the LEDs / reflector: small bright discs in a hexagonal pattern, or one big reflector
    if rng.random() < 0.6:
        p = r * float(rng.uniform(0.12, 0.22))
        u = w.x - cx
        v = (w.y - cy) / (math.sqrt(3) / 2)
        row = torch.round(v / p)
        uu = u - p * 0.5 * torch.remainder(row, 2)
        du = uu - p * torch.round(uu / p)
        dv = (v - p * row) * (math.sqrt(3) / 2)
        led = smoothstep(0.42 * p, 0.3 * p, torch.sqrt(du * du + dv * dv))
        light = 0.35 + 0.65 * led
    else:
        light = 0.6 + 0.4 * smoothstep(0.0, r * 0.5, inner)
    cv.put(w, _col((1.0, 0.99, 0.95)) * (0.8 + 0.2 * light), cov(inner, cv.px), emit=1.0, lamp=light)
    cv.put(w, housing, cov(sd_ellipse(w.x, w.y, cx, cy, r * 0.16, r * 0.16), cv.px))  # sterile handle


def _paint_person(cv: Canvas, rng: np.random.Generator, x: float, yh: float, s: float, glove_c) -> tuple | None:
    """A member of staff: head centre (x, yh), head half-height s. Returns the face (x, y, s) when
    the face is seen."""
    gown = _pick(rng, GOWNS, 0.04)
    skin = _pick(rng, SKINS, 0.03)
    hair = _pick(rng, HAIRS, 0.03)
    back = rng.random() < 0.12
    masked = rng.random() < 0.72
    turn = float(rng.uniform(-0.35, 0.35))
    tilt = float(rng.normal(0, 0.12))
    rx = 0.76 * s
    sh_w = float(rng.uniform(1.9, 2.7)) * s
    top = yh + 1.2 * s
    win = cv.window(x - sh_w - 3 * s, yh - 1.5 * s, x + sh_w + 3 * s, ROOM_Y)
    if win is None:
        return None
    X, Y = win.x, win.y
    px = cv.px
    folds = cv.noise(win, 1.2 / max(s, 0.05), 2)
    # arms (behind the torso's edge), hands gloved or bare
    for side in (-1.0, 1.0):
        ax, ay = x + side * (sh_w - 0.35 * s), top + 0.45 * s
        bx, by = x + side * float(rng.uniform(0.4, 2.8)) * s, top + float(rng.uniform(1.8, 3.6)) * s
        sd = sd_capsule(X, Y, ax, ay, bx, by, 0.4 * s)
        cv.put(win, _col(gown) * (0.78 + 0.08 * folds).unsqueeze(0), cov(sd, px))
        hand = glove_c if rng.random() < 0.8 else skin
        cv.put(win, _col(hand) * (0.85 + 0.15 * smoothstep(0, 0.3 * s, sd_ellipse(X, Y, bx, by, 0.34 * s, 0.3 * s))),
               cov(sd_ellipse(X, Y, bx, by + 0.1 * s, 0.34 * s, 0.32 * s), px))
    # torso
    sd = sd_box(X, Y, x, top + 4 * s, sh_w, 4 * s, 0.7 * s)
    shade = 0.82 + 0.1 * folds + 0.08 * smoothstep(0.0, 0.5 * s, sd)
    cv.put(win, _col(gown) * shade.unsqueeze(0), cov(sd, px))
    # neck, neckline
    cv.put(win, _col(skin) * 0.8, cov(sd_box(X, Y, x, yh + 0.95 * s, 0.34 * s, 0.4 * s, 0.1 * s), px))
    if rng.random() < 0.6:  # V-neck of scrubs
        v = (Y - top) - 1.2 * (X - x).abs()
        sd = torch.minimum(0.55 * s - (Y - top), v + 0.05 * s)
        cv.put(win, _col(skin) * 0.78, cov(torch.minimum(sd, 0.9 * s - (X - x).abs()), px))
    # head
    c, sn = math.cos(tilt), math.sin(tilt)
    hx = (X - x) * c + (Y - yh) * sn  # head-local coordinates
    hy = -(X - x) * sn + (Y - yh) * c
    head = sd_ellipse(hx, hy, 0.0, 0.0, rx, s)
    rho = torch.sqrt((hx / rx) ** 2 + (hy / s) ** 2).clamp(max=1.0)
    face_shade = (0.72 + 0.28 * torch.sqrt(1 - rho * rho)) * (1 + 0.12 * (-hx / rx * 0.5 + 0.3))
    for side in (-1.0, 1.0):  # ears
        ex = side * rx * (0.98 - 0.3 * turn * side)
        cv.put(win, _col(skin) * 0.85, cov(sd_ellipse(hx, hy, ex, 0.08 * s, 0.14 * s, 0.24 * s), px))
    cv.put(win, _col(skin) * face_shade.unsqueeze(0), cov(head, px))
    face = None
    if back:
        sd = torch.minimum(head + 0.02 * s, hy + 0.3 * s)
        cv.put(win, _col(hair) * (0.8 + 0.2 * cv.noise(win, 40 / max(s, 0.05), 1)).unsqueeze(0), cov(sd, px))
    else:
        face = (x, yh, s)
        off = turn * 0.35 * rx
        ey = -0.08 * s
        iris_c = _pick(rng, IRISES, 0.03)
        gaze = (float(rng.normal(0, 0.02)) * s, float(rng.normal(0, 0.01)) * s)
        for side in (-1.0, 1.0):
            ex = off + side * 0.36 * rx * (1 - 0.25 * turn * side)
            eye = sd_ellipse(hx, hy, ex, ey, 0.17 * s, 0.072 * s)
            cv.put(win, (0.93, 0.90, 0.86), cov(eye, px))
            iris = torch.minimum(sd_ellipse(hx, hy, ex + gaze[0], ey + gaze[1], 0.068 * s, 0.068 * s), eye)
            cv.put(win, iris_c, cov(iris, px))
            pupil = torch.minimum(sd_ellipse(hx, hy, ex + gaze[0], ey + gaze[1], 0.03 * s, 0.03 * s), eye)
            cv.put(win, (0.02, 0.02, 0.02), cov(pupil, px))
            cv.put(win, (1.0, 1.0, 1.0), cov(sd_ellipse(hx, hy, ex + gaze[0] + 0.02 * s, ey - 0.02 * s, 0.014 * s, 0.014 * s), px))
            lid = sd_capsule(hx, hy, ex - 0.17 * s, ey, ex + 0.17 * s, ey - 0.03 * s, 0.018 * s)
            lid = torch.minimum(lid, -(hy - ey) + 0.012 * s)  # only the upper rim
            cv.put(win, _col(skin) * 0.35, cov(torch.minimum(lid, 0.2 * s - (hx - ex).abs()), px))
            brow_h = float(rng.uniform(0.2, 0.28)) * s
            brow = sd_capsule(hx, hy, ex - side * 0.16 * s, ey - brow_h + 0.03 * s, ex + side * 0.2 * s,
                              ey - brow_h + 0.015 * s, float(rng.uniform(0.025, 0.045)) * s)
            cv.put(win, hair, cov(brow, px))
        if masked:
            mask_c = _pick(rng, MASKS, 0.03)
            sd = sd_box(hx, hy, off * 0.5, 0.44 * s, 0.86 * rx, 0.44 * s, 0.25 * s)
            pleat = 1 - 0.12 * smoothstep(0.02 * s, 0.0, (torch.remainder(hy - 0.25 * s, 0.2 * s) - 0.1 * s).abs())
            cv.put(win, _col(mask_c) * (pleat * face_shade.clamp(0.85, 1.0)).unsqueeze(0), cov(sd, px))
            for side in (-1.0, 1.0):
                loop = sd_capsule(hx, hy, off * 0.5 + side * 0.86 * rx, 0.2 * s, side * rx, 0.05 * s, 0.012 * s)
                cv.put(win, _col(mask_c) * 0.9, cov(loop, px))
        else:
            nose = sd_capsule(hx, hy, off * 1.2 + 0.04 * s, 0.0, off * 1.2 + 0.06 * s, 0.3 * s, 0.035 * s)
            cv.put(win, _col(skin) * 0.7, 0.5 * cov(nose, px))
            for side in (-1.0, 1.0):
                cv.put(win, _col(skin) * 0.4, cov(sd_ellipse(hx, hy, off * 1.2 + side * 0.07 * s, 0.34 * s, 0.04 * s, 0.022 * s), px))
            lips = _col(tuple(0.75 * v for v in skin)) * 0.85 + _col((0.12, 0.0, 0.0))
            cv.put(win, lips, cov(sd_ellipse(hx, hy, off, 0.58 * s, 0.22 * s, 0.05 * s), px))
            cv.put(win, _col(skin) * 0.3, cov(sd_capsule(hx, hy, off - 0.2 * s, 0.58 * s, off + 0.2 * s, 0.58 * s, 0.008 * s + px / 2), px))
        if rng.random() < 0.25:  # glasses
            frame_c = _pick(rng, ((0.05, 0.05, 0.05), (0.5, 0.5, 0.55), (0.35, 0.2, 0.1)))
            for side in (-1.0, 1.0):
                ex = off + side * 0.36 * rx
                ring = sd_ellipse(hx, hy, ex, ey, 0.24 * s, 0.16 * s)
                cv.put(win, frame_c, cov(0.018 * s - ring.abs(), px))
                cv.put(win, (0.9, 0.95, 1.0), 0.15 * cov(ring, px))
        if rng.random() < 0.08:  # face shield
            sd = sd_box(hx, hy, 0.0, 0.25 * s, 1.1 * rx, 0.95 * s, 0.3 * s)
            glare = smoothstep(0.1 * s, 0.0, (hx - hy * 0.5 - 0.3 * rx).abs())
            cv.put(win, _col((0.8, 0.9, 1.0)) * (0.6 + 0.4 * glare).unsqueeze(0), (0.12 + 0.4 * glare) * cov(sd, px))
    # cap (bouffant or tie-back), patterned sometimes; some hair below it
    if rng.random() < 0.2:
        hs = torch.minimum(head + 0.06 * s, -(hy + 0.12 * s))
        hs = torch.minimum(hs, (hx.abs() - 0.6 * rx))
        cv.put(win, hair, cov(hs, px))
    cap_c = _pick(rng, GOWNS + MASKS, 0.04)
    capsd = torch.minimum(sd_ellipse(hx, hy, 0.0, -0.38 * s, 1.08 * rx, 0.75 * s), -(hy + 0.3 * s) + 0.04 * s * torch.sin(hx / s * 9))
    cap = _col(cap_c) * (0.85 + 0.1 * folds).unsqueeze(0)
    if rng.random() < 0.3:
        pc = _col(_pick(rng, CAP_PRINTS))
        f = float(rng.uniform(12, 25)) / s
        dots = smoothstep(0.45, 0.75, torch.sin(hx * f) * torch.sin(hy * f + 1.3))
        cap = cap * (1 - dots) + pc * dots
    cv.put(win, cap, cov(capsd, px))
    return face


def _paint_ring(cv: Canvas, win: Win, cx: float, cy: float, r: float, housing, rng: np.random.Generator) -> None:
    """A port seen from above: housing ring, seal and dark well."""
    X, Y = win.x, win.y
    cv.put(win, _col(housing) * 0.6, cov(sd_ellipse(X, Y, cx + 0.15 * r, cy + 0.2 * r, r * 1.05, r), cv.px))  # shadow
    rho = torch.sqrt((X - cx) ** 2 + (Y - cy) ** 2) / r
    shade = 0.75 + 0.35 * smoothstep(1.0, 0.6, rho) * smoothstep(0.3, 0.55, rho)
    cv.put(win, _col(housing) * shade.unsqueeze(0), cov(sd_ellipse(X, Y, cx, cy, r, r), cv.px))
    cv.put(win, (0.04, 0.04, 0.045), cov(sd_ellipse(X, Y, cx, cy, 0.42 * r, 0.42 * r), cv.px))
    luer = rng.uniform(0, 2 * math.pi)
    lx, ly = cx + 1.15 * r * math.cos(luer), cy + 1.15 * r * math.sin(luer)
    cv.put(win, _pick(rng, ((0.2, 0.4, 0.9), (0.9, 0.9, 0.9), (0.9, 0.3, 0.2))), cov(sd_ellipse(X, Y, lx, ly, 0.28 * r, 0.28 * r), cv.px))


def _paint_patient(cv: Canvas, rng: np.random.Generator, y_floor: float, glove_c) -> tuple:
    drape_c = _pick(rng, DRAPES, 0.04)
    yt = float(rng.uniform(0.55, 1.2))
    xa, xb = float(rng.uniform(-4.2, -1.8)), float(rng.uniform(1.8, 4.2))
    win = cv.window(xa - 0.2, yt - 0.2, xb + 0.2, ROOM_Y)
    X, Y = win.x, win.y
    folds = fabric(cv.noise(win, 1.6, 3, aniso=(rng.uniform(0.4, 2.5), 1.0)), cv.sx, 0.12)
    edge = yt + 0.08 * torch.sin(X * 2.1 + float(rng.uniform(0, 6)))
    sd = torch.minimum(Y - edge, torch.minimum(X - xa, xb - X))
    shade = folds * (0.85 + 0.15 * smoothstep(0.0, 1.5, Y - yt))
    cv.put(win, _col(drape_c) * shade.unsqueeze(0) * (0.97 + 0.03 * cv.noise(win, 60, 1)).unsqueeze(0), cov(sd, cv.px))
    if rng.random() < 0.5:  # anaesthesia screen: a taller drape at the head end
        side = xa if rng.random() < 0.5 else xb
        hx0, hx1 = (side - 0.1, side + 0.6) if side == xa else (side - 0.6, side + 0.1)
        w = cv.window(hx0, yt - 1.2, hx1, yt + 0.2)
        if w is not None:
            cv.put(w, _col(drape_c) * (0.75 + 0.1 * cv.noise(w, 3, 2)).unsqueeze(0),
                   cov(sd_box(w.x, w.y, (hx0 + hx1) / 2, yt - 0.5, (hx1 - hx0) / 2, 0.65, 0.05), cv.px))
    # the exposed skin (prepped with iodine sometimes, under a glossy incise film)
    skin = _pick(rng, SKINS, 0.03)
    if rng.random() < 0.5:
        skin = tuple(0.6 * a + 0.4 * b for a, b in zip(skin, (0.62, 0.35, 0.12)))
    sx = float(rng.uniform(max(xa + 0.8, -2.0), min(xb - 0.8, 2.0)))
    sy = float(rng.uniform(max(yt + 0.7, 1.3), 2.1))
    shw, shh = float(rng.uniform(0.45, 0.9)), float(rng.uniform(0.3, 0.55))
    w = cv.window(sx - shw, sy - shh, sx + shw, sy + shh)
    X, Y = w.x, w.y
    base = _col(skin) * (0.9 + 0.06 * cv.noise(w, 10, 2) + 0.03 * cv.noise(w, 80, 1)).unsqueeze(0)
    if rng.random() < 0.6:  # iodine (or chlorhexidine) prep, uneven, with streaks of the swab
        prep = _col(_pick(rng, ((0.55, 0.28, 0.08), (0.62, 0.42, 0.20), (0.78, 0.55, 0.55))))
        m = smoothstep(-0.8, 0.6, cv.noise(w, 2.5, 3) + 0.5 * torch.sin(X * 25 + 3 * cv.noise(w, 1.5, 1)))
        base = base * (1 - 0.7 * m).unsqueeze(0) + prep * (0.7 * m).unsqueeze(0)
    sd_patch = sd_box(X, Y, sx, sy, shw, shh, 0.08)
    cv.put(w, base, cov(sd_patch, cv.px))
    # the umbilicus, surgical marker lines, the incise film's glossy wrinkles
    ux, uy = sx + float(rng.uniform(-0.3, 0.3)) * shw, sy + float(rng.uniform(-0.3, 0.3)) * shh
    cv.put(w, _col(skin) * 0.45, cov(sd_ellipse(X, Y, ux, uy, 0.035, 0.05), cv.px))
    cv.put(w, _col(skin) * 0.25, cov(sd_ellipse(X, Y, ux + 0.008, uy + 0.01, 0.02, 0.032), cv.px))
    ink = _pick(rng, ((0.35, 0.15, 0.55), (0.15, 0.2, 0.5), (0.1, 0.1, 0.1)), 0.03)
    for _ in range(int(rng.integers(1, 4))):
        ax, ay = sx + float(rng.uniform(-0.8, 0.8)) * shw, sy + float(rng.uniform(-0.8, 0.8)) * shh
        ang = float(rng.uniform(0, math.pi))
        ln = float(rng.uniform(0.1, 0.35))
        for k in range(int(rng.integers(1, 5))):  # a line, or dashes
            bx, by = ax + ln * math.cos(ang), ay + ln * math.sin(ang)
            cv.put(w, ink, 0.85 * cov(torch.minimum(sd_capsule(X, Y, ax, ay, bx, by, 0.006), sd_patch), cv.px))
            ax, ay = bx + 0.04 * math.cos(ang), by + 0.04 * math.sin(ang)
            ang += float(rng.normal(0, 0.3))
    wrinkle = torch.exp(-(cv.noise(w, 4, 2) / 0.06) ** 2) * smoothstep(0.0, 1.5, cv.noise(w, 1.5, 1))
    cv.put(w, (1.0, 1.0, 1.0), 0.6 * wrinkle * cov(sd_patch, cv.px))
    # ports in the skin; the first is the scope's
    housing = _pick(rng, PLASTICS, 0.03)
    ports = [(sx + float(rng.uniform(-0.2, 0.2)) * shw, sy + float(rng.uniform(-0.2, 0.2)) * shh)]
    for _ in range(int(rng.integers(1, 4))):
        ports.append((sx + float(rng.uniform(-0.8, 0.8)) * shw, sy + float(rng.uniform(-0.7, 0.7)) * shh))
    for k, (px_, py_) in enumerate(ports):
        r = float(rng.uniform(0.05, 0.08)) if k == 0 else float(rng.uniform(0.03, 0.06))
        w = cv.window(px_ - 2.5 * r, py_ - 2.5 * r, px_ + 2.5 * r, py_ + 2.5 * r)
        if w is not None:
            _paint_ring(cv, w, px_, py_, r, housing, rng)
        if k > 0 and rng.random() < 0.5:  # an instrument in this port: its shaft and handle, from above
            ang = float(rng.uniform(0, 2 * math.pi))
            ln = float(rng.uniform(0.4, 1.0))
            ex, ey = px_ + ln * math.cos(ang), py_ + ln * math.sin(ang)
            w = cv.window(min(px_, ex) - 0.1, min(py_, ey) - 0.1, max(px_, ex) + 0.1, max(py_, ey) + 0.1)
            if w is not None:
                sd = sd_capsule(w.x, w.y, px_, py_, ex, ey, 0.018)
                shaft = _pick(rng, ((0.12, 0.12, 0.13), (0.6, 0.62, 0.66), (0.17, 0.22, 0.38)))
                cv.put(w, _col(shaft) * (0.7 + 0.6 * (sd / 0.018).clamp(0, 1)).unsqueeze(0), cov(sd, cv.px))
                hx, hy = ex + 0.08 * math.cos(ang), ey + 0.08 * math.sin(ang)
                cv.put(w, _pick(rng, ((0.15, 0.15, 0.16), (0.2, 0.35, 0.7))),
                       cov(sd_ellipse(w.x, w.y, hx, hy, 0.09, 0.05, ang), cv.px))
    # tubing and cables over the drapes
    for _ in range(int(rng.integers(1, 4))):
        c = _pick(rng, ((0.85, 0.88, 0.9), (0.3, 0.5, 0.85), (0.95, 0.95, 0.95), (0.2, 0.2, 0.2)))
        x0, y0 = float(rng.uniform(xa, xb)), float(rng.uniform(yt + 0.2, 2.7))
        ang = float(rng.uniform(0, 2 * math.pi))
        pts = [(x0, y0)]
        for _k in range(6):
            ang += float(rng.normal(0, 0.5))
            pts.append((pts[-1][0] + 0.35 * math.cos(ang), pts[-1][1] + 0.35 * math.sin(ang)))
        r = float(rng.uniform(0.015, 0.035))
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            w = cv.window(min(ax, bx) - 2 * r, min(ay, by) - 2 * r, max(ax, bx) + 2 * r, max(ay, by) + 2 * r)
            if w is None:
                continue
            sd = sd_capsule(w.x, w.y, ax, ay, bx, by, r)
            cv.put(w, _col(c) * (0.7 + 0.5 * (sd / r).clamp(0, 1)).unsqueeze(0), cov(sd, cv.px))
    # a gloved hand resting on the drapes
    if rng.random() < 0.4:
        hx, hy = float(rng.uniform(xa + 0.5, xb - 0.5)), float(rng.uniform(yt + 0.3, 2.5))
        w = cv.window(hx - 0.4, hy - 0.4, hx + 0.4, hy + 0.4)
        sd = sd_ellipse(w.x, w.y, hx, hy, 0.22, 0.14, float(rng.uniform(0, 3)))
        for k in range(4):
            a = float(rng.uniform(-0.6, 0.6)) - 1.57
            sd = torch.maximum(sd, sd_capsule(w.x, w.y, hx + (k - 1.5) * 0.06, hy - 0.05, hx + (k - 1.5) * 0.07 + 0.3 * math.cos(a),
                                              hy - 0.05 + 0.3 * math.sin(a), 0.035))
        cv.put(w, _col(glove_c) * (0.8 + 0.2 * smoothstep(0, 0.04, sd)).unsqueeze(0), cov(sd, cv.px))
    return ports[0], (sx, sy, shw, shh), drape_c, housing


def _paint_instrument_table(cv: Canvas, rng: np.random.Generator, cx: float, cy: float, hw: float, hh: float) -> None:
    w = cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
    if w is None:
        return
    X, Y = w.x, w.y
    cover = _pick(rng, DRAPES + (STEEL,), 0.04)
    cv.put(w, _col(cover) * (0.78 + 0.1 * cv.noise(w, 3, 2) + 0.04 * cv.noise(w, 50, 1)).unsqueeze(0),
           cov(sd_box(X, Y, cx, cy, hw, hh, 0.03), cv.px))
    for _ in range(int(rng.integers(4, 14))):
        ix, iy = float(rng.uniform(cx - hw * 0.85, cx + hw * 0.85)), float(rng.uniform(cy - hh * 0.8, cy + hh * 0.8))
        ang = float(rng.uniform(0, math.pi))
        ca, sa = math.cos(ang), math.sin(ang)
        steel = _col(_jit(rng, STEEL, 0.05)) * (0.75 + 0.45 * smoothstep(0.5, 1.8, cv.noise(w, 8, 2))).unsqueeze(0)
        kind = int(rng.integers(6))
        L = float(rng.uniform(0.15, 0.35))
        if kind <= 1:  # clamp / scissors: two finger rings and two shafts to a tip
            tipx, tipy = ix + L * ca, iy + L * sa
            for side in (-1.0, 1.0):
                rx_, ry_ = ix - 0.04 * sa * side, iy + 0.04 * ca * side
                ring = sd_ellipse(X, Y, rx_, ry_, 0.03, 0.03)
                cv.put(w, steel, cov(0.008 - (ring.abs()), cv.px))
                cv.put(w, steel, cov(sd_capsule(X, Y, rx_, ry_, tipx, tipy, 0.008), cv.px))
        elif kind == 2:  # scalpel
            cv.put(w, steel, cov(sd_capsule(X, Y, ix, iy, ix + L * ca, iy + L * sa, 0.012), cv.px))
            cv.put(w, (0.85, 0.86, 0.88), cov(sd_ellipse(X, Y, ix + (L + 0.03) * ca, iy + (L + 0.03) * sa, 0.035, 0.012, ang), cv.px))
        elif kind == 3:  # bowl
            r = float(rng.uniform(0.06, 0.14))
            sd = sd_ellipse(X, Y, ix, iy, r, r)
            rho = torch.sqrt((X - ix) ** 2 + (Y - iy) ** 2) / r
            c = steel * (0.6 + 0.8 * smoothstep(0.25, 0.0, (rho - 0.8).abs())).unsqueeze(0)
            cv.put(w, c, cov(sd, cv.px))
        elif kind == 4:  # tray
            sd = sd_box(X, Y, ix, iy, L * 0.7, L * 0.4, 0.02, ang)
            c = steel * (0.8 + 0.5 * smoothstep(0.01, 0.0, (sd - 0.01).abs())).unsqueeze(0)
            cv.put(w, c, cov(sd, cv.px))
        else:  # gauze pile or a syringe
            if rng.random() < 0.5:
                sd = sd_box(X, Y, ix, iy, 0.1, 0.07, 0.01, ang)
                weave = 0.85 + 0.15 * torch.cos(X * 300) * torch.cos(Y * 300)
                cv.put(w, _col((0.95, 0.95, 0.93)) * weave.unsqueeze(0), cov(sd, cv.px))
            else:
                cv.put(w, (0.9, 0.92, 0.95), 0.7 * cov(sd_capsule(X, Y, ix, iy, ix + L * ca, iy + L * sa, 0.02), cv.px))
                cv.put(w, _pick(rng, ((0.2, 0.4, 0.9), (0.9, 0.3, 0.3), (0.3, 0.7, 0.3))),
                       cov(sd_capsule(X, Y, ix + L * ca, iy + L * sa, ix + (L + 0.06) * ca, iy + (L + 0.06) * sa, 0.015), cv.px))


def make_room(seed: int, ppu: float = 80.0) -> Room:
    """Paints a random operating room (a panorama) at `ppu` pixels per world unit."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    cv = Canvas(ppu, gen)
    atlas = _glyph_atlas(rng)
    glove_c = _pick(rng, GLOVES, 0.03)
    y_ceil, y_floor = _paint_background(cv, rng)
    _paint_wall_things(cv, rng, y_ceil, y_floor)
    lamps = []
    for _ in range(int(rng.integers(1, 4))):
        r = float(rng.uniform(0.25, 0.6))
        lx, ly = float(rng.uniform(-3.6, 3.6)), float(rng.uniform(-2.5, y_ceil + 0.4))
        _paint_lamp(cv, rng, lx, ly, r)
        lamps.append((lx, ly, r))
    monitors = []
    for _ in range(int(rng.integers(1, 4))):
        hw = float(rng.uniform(0.35, 0.8))
        hh = hw * float(rng.uniform(0.55, 0.68))
        mx, my = float(rng.uniform(-3.6, 3.6)), float(rng.uniform(y_ceil + hh, y_floor - hh - 0.1))
        _paint_monitor(cv, rng, mx, my, hw, hh, atlas, -ROOM_Y if rng.random() < 0.5 else None)
        monitors.append((mx, my, hw, hh))
    _paint_equipment(cv, rng, y_floor, atlas)
    # people: far ones first
    people = []
    for _ in range(int(rng.integers(3, 8))):
        s = float(rng.uniform(0.09, 0.3))
        people.append((float(rng.uniform(-3.8, 3.8)), float(rng.uniform(-1.0, 0.3)) - 0.5 * (s - 0.15), s))
    people.sort(key=lambda p: p[2])
    faces = []
    near = [p for p in people if p[2] > 0.24]
    for x, yh, s in people:
        if s <= 0.24:
            f = _paint_person(cv, rng, x, yh, s, glove_c)
            if f:
                faces.append(f)
    # the patient, then the instrument table(s), then the nearest people
    port, skin, drape_c, housing = _paint_patient(cv, rng, y_floor, glove_c)
    tables = []
    for _ in range(int(rng.integers(1, 3))):
        hw, hh = float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.25, 0.5))
        tx, ty = float(rng.uniform(-3.6, 3.6)), float(rng.uniform(0.6, 2.4))
        _paint_instrument_table(cv, rng, tx, ty, hw, hh)
        tables.append((tx, ty, hw, hh))
    for x, yh, s in near:
        f = _paint_person(cv, rng, x, yh, s, glove_c)
        if f:
            faces.append(f)
    tex = torch.cat([cv.rgb.clamp(0, 1.2), cv.emit.unsqueeze(0), cv.lamp.unsqueeze(0)]).unsqueeze(0).contiguous()
    return Room(tex=tex, ppu=ppu, lamps=lamps, faces=faces, monitors=monitors, tables=tables, port=port, skin=skin,
                drape=drape_c, glove=glove_c, trocar=random_trocar(rng, housing))


# --------------------------------------------------------------------------------------------
# Frames of the room
# --------------------------------------------------------------------------------------------


@dataclass
class CloseUp:
    """Something right in front of the lens, drawn in screen space: kind "gauze", "glove" or
    "drape"; `cover` is how much of the frame it covers (0..1), the rest its geometry."""

    kind: str
    cover: float = 0.8
    angle: float = 0.0
    x: float = 0.0
    y: float = 0.0
    scale: float = 1.0
    colour: tuple = (0.95, 0.95, 0.93)
    seed: int = 0
    stain: float = 0.0  # gauze: blood / iodine stains (0..1)


@dataclass
class View:
    """Where the scope looks in the room (the camera on the canvas, as scene.py's Camera on the
    world) and what is in front of the lens."""

    x: float = 0.0
    y: float = 0.0
    zoom: float = 0.8
    rot: float = 0.0
    closeups: list = field(default_factory=list)
    port: float = 0.0  # > 0: looking down at the scope's port from this close (its ring's radius, screen units)
    kind: str = "room"


@dataclass
class RoomFx:
    gain: float = 1.0  # exposure (on top of the auto-exposure)
    auto: float = 0.4  # auto-exposure's target mean brightness (0: off)
    ambient: float = 1.0  # room lights (dimmed during laparoscopy: 0.1 .. 0.5)
    screen: float = 1.0  # brightness of emissive things (monitors, viewers)
    lamp: float = 2.0  # surgical lamps (HDR: >1 saturates)
    tint: tuple = (1.0, 1.0, 1.0)  # white balance (the scope's is set for tissue)
    scope_light: float = 0.6  # the scope's own light on things close to the lens
    glare: float = 1.0
    vignette: float = 0.45
    defocus: float = 0.0  # gaussian sigma, in pixels of a 320-pixel-wide frame
    motion: tuple = (0.0, 0.0)  # motion blur: the picture's shift during the exposure (screen units)
    fog: float = 0.0  # lens fog: a milky veil
    noise: float = 0.01
    field: Field | None = None  # the optics' circular field; None: the picture fills the frame


def _room_sample(room: Room, v: View, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    c, s = math.cos(v.rot), math.sin(v.rot)
    wx = v.x + v.zoom * (c * xs - s * ys)
    wy = v.y + v.zoom * (s * xs + c * ys)
    grid = torch.stack([wx / ROOM_X, wy / ROOM_Y], dim=-1).unsqueeze(0)
    return F.grid_sample(room.tex, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def to_screen(v: View, wx: float, wy: float) -> tuple[float, float]:
    dx, dy = (wx - v.x) / v.zoom, (wy - v.y) / v.zoom
    c, s = math.cos(v.rot), math.sin(v.rot)
    return (c * dx + s * dy, -s * dx + c * dy)


def _glare(room: Room, v: View, fx: RoomFx, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Halo, star streaks, ghosts and veiling glare of the surgical lamps in or near the view."""
    out = torch.zeros(3, *xs.shape)
    for lx, ly, lr in room.lamps:
        sx, sy = to_screen(v, lx, ly)
        r = lr / v.zoom
        d_out = max(0.0, max(abs(sx) - ASPECT, abs(sy) - 1.0) - r)  # how far outside the frame
        power = fx.lamp * fx.glare * min(1.0, r) * math.exp(-2.0 * d_out)
        if power < 0.01:
            continue
        d = torch.sqrt((xs - sx) ** 2 + (ys - sy) ** 2)
        halo = torch.exp(-d / (0.9 * r + 0.1)) * 0.6 + torch.exp(-d / (2.5 * r + 0.3)) * 0.25
        ang = torch.atan2(ys - sy, xs - sx)
        streak = torch.exp(-((torch.cos(3 * ang) ** 2) * 40)) * torch.exp(-d / (3 * r + 0.4)) * 0.35
        g = (halo + streak) * power
        # ghosts: discs on the line through the centre
        for k, (a, rad, col) in enumerate(((-0.6, 0.12, (0.4, 0.9, 0.5)), (-1.1, 0.2, (0.8, 0.5, 0.9)), (0.4, 0.07, (0.9, 0.8, 0.4)))):
            gx, gy = a * sx, a * sy
            gd = torch.sqrt((xs - gx) ** 2 + (ys - gy) ** 2)
            out += _col(col) * (smoothstep(rad, rad * 0.6, gd) * 0.08 * power).unsqueeze(0)
        out += _col((1.0, 0.98, 0.92)) * g.unsqueeze(0) + 0.06 * power
    return out


def _closeup(cu: CloseUp, xs: torch.Tensor, ys: torch.Tensor, px: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [3,H,W] (lit, not premultiplied) and coverage [H,W] of one close-up."""
    gen = torch.Generator().manual_seed(cu.seed)
    H, W = xs.shape
    ext = (2.0, 2 * ASPECT)
    ca, sa = math.cos(cu.angle), math.sin(cu.angle)
    u = xs * ca + ys * sa
    v = -xs * sa + ys * ca
    if cu.kind in ("gauze", "drape"):
        # what it covers: the side of a wavy line; `cover` moves the line across the frame
        edge = (1 - 2 * cu.cover) * ASPECT * 1.1
        warp = 0.25 * noise(gen, (H, W), ext, 0.8, 2)
        sd = u - edge + warp
        alpha = smoothstep(-0.02, 0.06, sd)
        folds = noise(gen, (H, W), ext, 1.0 * cu.scale, 3, aniso=(1.0, 2.5))
        if cu.kind == "gauze":
            t = 0.035 * cu.scale
            wu = u + 0.02 * noise(gen, (H, W), ext, 3, 2)
            wv = v + 0.02 * noise(gen, (H, W), ext, 3, 2)
            threads = torch.maximum(torch.cos(2 * math.pi * wu / t).abs() ** 3, torch.cos(2 * math.pi * wv / t).abs() ** 3)
            layer2 = torch.maximum(torch.cos(2 * math.pi * (wu * 0.8 + wv * 0.6) / (t * 1.3)).abs() ** 3,
                                   torch.cos(2 * math.pi * (wv * 0.8 - wu * 0.6) / (t * 1.3)).abs() ** 3)
            weave = 0.5 + 0.5 * torch.maximum(threads, 0.8 * layer2)
            shade = (0.8 + 0.25 * folds) * weave
            col = _col(cu.colour) * shade.unsqueeze(0)
            if cu.stain > 0:
                st = smoothstep(1.8 - cu.stain, 2.6 - cu.stain, noise(gen, (H, W), ext, 1.5, 3))
                col = col * (1 - st * 0.7).unsqueeze(0) + _col((0.55, 0.08, 0.06)) * (st * 0.7).unsqueeze(0)
            alpha = alpha * (0.75 + 0.25 * weave)
        else:
            shade = fabric(folds, 2.0 / H, 0.08) * (0.95 + 0.05 * torch.cos(xs * 400) * torch.cos(ys * 400))
            col = _col(cu.colour) * shade.unsqueeze(0)
        return col, alpha
    if cu.kind == "glove":
        S = cu.scale
        lx = (xs - cu.x) * ca + (ys - cu.y) * sa  # hand-local: fingers point to -y
        ly = -(xs - cu.x) * sa + (ys - cu.y) * ca
        best = sd_ellipse(lx, ly, 0.0, 0.0, 0.42 * S, 0.5 * S)
        shade = (best / (0.42 * S)).clamp(0, 1)
        rng = np.random.default_rng(cu.seed)
        parts = []
        for k in range(4):
            bx = (-0.3 + 0.2 * k) * S
            ang = -math.pi / 2 + float(rng.normal(0, 0.12)) + (k - 1.5) * 0.1
            ln = float(rng.uniform(0.55, 0.8)) * S * (0.85 if k in (0, 3) else 1.0)
            parts.append((bx, -0.4 * S, bx + ln * math.cos(ang), -0.4 * S + ln * math.sin(ang), 0.095 * S))
        side = 1.0 if rng.random() < 0.5 else -1.0
        parts.append((side * 0.38 * S, 0.05 * S, side * 0.75 * S, -0.35 * S, 0.11 * S))  # thumb
        parts.append((0.0, 0.4 * S, 0.0, 2.5 * S, 0.36 * S))  # wrist / cuff
        for ax, ay, bx, by, r in parts:
            sd = sd_capsule(lx, ly, ax, ay, bx, by, r)
            shade = torch.where(sd > best, (sd / r).clamp(0, 1), shade)
            best = torch.maximum(best, sd)
        wrinkle = noise(gen, (H, W), ext, 4.0, 2)
        lit = 0.55 + 0.45 * torch.sqrt(shade) + 0.05 * wrinkle
        spec = 0.35 * smoothstep(0.75, 1.0, shade) * smoothstep(0.2, 1.5, wrinkle)
        col = _col(cu.colour) * lit.unsqueeze(0) + spec.unsqueeze(0)
        return col, cov(best, px)
    raise ValueError(cu.kind)


def _port_overlay(v: View, room: Room, xs, ys, px) -> tuple[torch.Tensor, torch.Tensor]:
    """The scope's port seen from above (its centre at the frame's centre): housing ring, seal
    with slits, dark well; radius v.port (screen units)."""
    tro = room.trocar
    r = v.port
    d = torch.sqrt(xs * xs + ys * ys)
    ang = torch.atan2(ys, xs)
    rho = d / r
    housing = _col(tro.housing) * (0.7 + 0.45 * smoothstep(1.0, 0.75, rho) * smoothstep(0.45, 0.7, rho)).unsqueeze(0)
    seal = _col(tro.seal) * (0.5 + 0.3 * torch.cos(ang * 3) ** 2).unsqueeze(0)
    slit = smoothstep(0.03, 0.0, torch.sin(3 * ang).abs() * rho) * smoothstep(0.45, 0.1, rho)
    seal = seal * (1 - 0.8 * slit).unsqueeze(0)
    well = (0.03 + 0.05 * smoothstep(0.1, 0.0, rho)).unsqueeze(0).expand(3, -1, -1)
    col = torch.where((rho < 0.5).unsqueeze(0), torch.where((rho < 0.12).unsqueeze(0), well, seal), housing)
    # a luer cap on the rim, a stopcock
    cap = sd_ellipse(xs, ys, 1.05 * r * math.cos(tro.luer), 1.05 * r * math.sin(tro.luer), 0.25 * r, 0.25 * r)
    col = torch.where((cap > 0).unsqueeze(0), _col(tro.cap).expand(3, *xs.shape), col)
    alpha = torch.maximum(cov(r - d, px), cov(cap, px))
    return col, alpha


def render_room(room: Room, view: View, fx: RoomFx, width: int, height: int, gen: torch.Generator,
                view_prev: View | None = None, motion_steps: int = 3) -> torch.Tensor:
    """One frame of the room: RGB float [3, H, W] in 0..1."""
    xs, ys, px = _screen_grid(width, height)
    steps = motion_steps if view_prev is not None else 1
    tex = None
    for k in range(steps):
        t = 1.0 if steps == 1 else k / (steps - 1)
        v = view if view_prev is None else View(
            x=view_prev.x + (view.x - view_prev.x) * t, y=view_prev.y + (view.y - view_prev.y) * t,
            zoom=view_prev.zoom + (view.zoom - view_prev.zoom) * t, rot=view_prev.rot + (view.rot - view_prev.rot) * t)
        s = _room_sample(room, v, xs, ys)
        tex = s if tex is None else tex + s
    tex = tex / steps
    rgb, emit, lamp = tex[:3], tex[3], tex[4]
    light = fx.ambient * (1 - emit) + fx.screen * emit
    rgb = rgb * light.unsqueeze(0) + (fx.lamp * lamp).unsqueeze(0)
    rgb = rgb + _glare(room, view, fx, xs, ys) * (0.5 + 0.5 * fx.ambient)
    if view.port > 0:
        col, a = _port_overlay(view, room, xs, ys, px)
        near = fx.ambient + fx.scope_light * 1.5
        rgb = rgb * (1 - a).unsqueeze(0) + col * near * a.unsqueeze(0)
    for cu in view.closeups:
        col, a = _closeup(cu, xs, ys, px)
        # close to the lens: lit by the scope's light (brightest in the middle) and out of focus
        r2 = xs * xs + ys * ys
        lit = fx.ambient * 0.8 + fx.scope_light * (1.6 * torch.exp(-0.5 * r2))
        sig = (3.0 + 5.0 * cu.cover) * width / 320 * (0.6 if cu.kind == "gauze" else 1.0)
        col = _blur(col * a.unsqueeze(0), sig)
        a = _blur(a.unsqueeze(0), sig)[0]
        rgb = rgb * (1 - a).unsqueeze(0) + col * lit.unsqueeze(0)
    rgb = rgb * (fx.gain * auto_exposure(rgb, xs, ys, fx)) * _col(fx.tint)
    return lens(rgb, xs, ys, px, fx, width, gen)


def auto_exposure(rgb: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, fx: RoomFx) -> float:
    """The camera's auto-exposure: the gain that brings the mean brightness in the field (centre
    weighted) to fx.auto, within the camera's range."""
    if fx.auto <= 0:
        return 1.0
    fov = fx.field or Field(0.0, 0.0, 1.6)
    wgt = torch.exp(-((xs - fov.cx) ** 2 + (ys - fov.cy) ** 2) / (fov.r * fov.r))
    mean = float((rgb.clamp(0, 1).mean(0) * wgt).sum() / wgt.sum())
    return min(max(fx.auto / max(mean, 1e-3), 0.35), 12.0)


def lens(rgb: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, px: float, fx: RoomFx, width: int,
         gen: torch.Generator) -> torch.Tensor:
    """The scope's optics and sensor: fog, motion blur, defocus, vignetting, circular field,
    noise (the same vignetting and field edge as scene.py's)."""
    if fx.fog > 0:
        veil = _blur(rgb, 6.0 * width / 320) * 0.6 + 0.35
        n = noise(gen, rgb.shape[1:], (2.0, 2 * ASPECT), 0.8, 2)
        a = (fx.fog * (0.8 + 0.3 * n)).clamp(0, 0.9)
        rgb = rgb * (1 - a).unsqueeze(0) + veil * a.unsqueeze(0)
    if fx.motion != (0.0, 0.0):
        rgb = motion_blur(rgb, fx.motion[0], fx.motion[1])
    rgb = _blur(rgb, fx.defocus * width / 320)
    fov = fx.field or Field(0.0, 0.0, 2.2)
    r_field = torch.sqrt((xs - fov.cx) ** 2 + (ys - fov.cy) ** 2)
    vig = (1.0 - fx.vignette * (r_field / fov.r).clamp(0, 1.2) ** 2.5).clamp(min=0.05)
    rgb = rgb * vig.unsqueeze(0)
    if fx.field is not None:
        edge = ((fov.r - r_field) / (1.5 * px) + 0.5).clamp(0, 1)
        rgb = rgb * edge.unsqueeze(0)
    if fx.noise > 0:
        rgb = rgb + fx.noise * torch.randn(rgb.shape, generator=gen)
    return rgb.clamp(0, 1)


def motion_blur(img: torch.Tensor, dx: float, dy: float, steps: int = 7) -> torch.Tensor:
    """Average of the picture shifted along (dx, dy) screen units (a linear blur)."""
    _, h, w = img.shape
    if math.hypot(dx * w / (2 * ASPECT), dy * h / 2) < 0.7:
        return img
    base_x = torch.linspace(-1 + 1 / w, 1 - 1 / w, w).view(1, w).expand(h, w)
    base_y = torch.linspace(-1 + 1 / h, 1 - 1 / h, h).view(h, 1).expand(h, w)
    out = torch.zeros_like(img)
    for k in range(steps):
        t = k / (steps - 1) - 0.5
        grid = torch.stack([base_x + t * dx / ASPECT, base_y + t * dy], -1).unsqueeze(0)
        out += F.grid_sample(img.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return out / steps


# ---- random views ----------------------------------------------------------------------------

VIEW_KINDS = ("room", "face", "monitor", "lamp", "patient", "table", "gauze", "glove", "drape", "dim")


def random_fx(rng: np.random.Generator, circle: bool | None = None) -> RoomFx:
    dim = rng.random() < 0.25
    if circle is None:
        circle = rng.random() < 0.6
    fld = Field(float(rng.normal(0, 0.04)), float(rng.normal(0, 0.03)), float(rng.uniform(0.95, 1.6))) if circle else None
    return RoomFx(
        gain=float(np.exp(rng.normal(0.0, 0.35))),
        auto=float(rng.uniform(0.25, 0.6)) if (dim or rng.random() < 0.85) else 0.0,
        ambient=float(rng.uniform(0.1, 0.45)) if dim else float(rng.uniform(0.7, 1.2)),
        screen=float(rng.uniform(0.7, 1.4)),
        lamp=float(rng.uniform(1.0, 3.5)) * (0.3 if dim and rng.random() < 0.5 else 1.0),
        tint=tuple(float(v) for v in rng.uniform(0.85, 1.15, 3)),
        scope_light=float(rng.uniform(0.3, 1.0)),
        glare=float(rng.uniform(0.3, 1.2)),
        vignette=float(rng.uniform(0.2, 0.7)),
        defocus=float(rng.uniform(0.5, 4.0)) if rng.random() < 0.45 else 0.0,
        motion=(float(rng.normal(0, 0.2)), float(rng.normal(0, 0.2))) if rng.random() < 0.3 else (0.0, 0.0),
        fog=float(rng.uniform(0.1, 0.5)) if rng.random() < 0.1 else 0.0,
        noise=float(rng.uniform(0.0, 0.04)),
        field=fld,
    )


def random_view(rng: np.random.Generator, room: Room, kind: str | None = None) -> View:
    """A random view of the room: what is aimed at, how close, the roll, close-ups."""
    if kind is None:
        kind = str(rng.choice(VIEW_KINDS, p=[0.17, 0.15, 0.16, 0.07, 0.13, 0.06, 0.09, 0.07, 0.04, 0.06]))
    rot = float(rng.normal(0, 0.35)) if rng.random() < 0.7 else float(rng.uniform(-math.pi, math.pi))
    v = View(rot=rot, kind=kind)

    def aim(x, y, zoom, jitter):
        v.x = float(np.clip(x + rng.normal(0, jitter), -3.4, 3.4))
        v.y = float(np.clip(y + rng.normal(0, jitter), -2.2, 2.2))
        v.zoom = zoom

    if kind == "face" and room.faces:
        fx_, fy_, s = room.faces[int(rng.integers(len(room.faces)))]
        aim(fx_, fy_, float(rng.uniform(1.0, 3.5)) * s, 0.4 * s)
    elif kind == "monitor" and room.monitors:
        mx, my, hw, hh = room.monitors[int(rng.integers(len(room.monitors)))]
        aim(mx, my, float(rng.uniform(0.25, 1.4)) * hh * 1.5, 0.35 * hw)
    elif kind == "lamp" and room.lamps:
        lx, ly, lr = room.lamps[int(rng.integers(len(room.lamps)))]
        aim(lx, ly, float(rng.uniform(0.6, 2.5)) * lr, 0.8 * lr)
    elif kind == "patient":
        sx, sy, shw, shh = room.skin
        aim(sx, sy, float(rng.uniform(0.12, 1.2)), 0.5)
    elif kind == "table" and room.tables:
        tx, ty, hw, hh = room.tables[int(rng.integers(len(room.tables)))]
        aim(tx, ty, float(rng.uniform(0.3, 0.9)) * hw, 0.3 * hw)
    else:
        aim(float(rng.uniform(-3.2, 3.2)), float(rng.uniform(-2.0, 2.0)), float(rng.uniform(0.5, 1.4)), 0.0)
    if kind == "gauze" or (kind == "room" and rng.random() < 0.05):
        v.closeups.append(CloseUp("gauze", cover=float(rng.uniform(0.45, 1.0)), angle=float(rng.uniform(0, 2 * math.pi)),
                                  scale=float(rng.uniform(0.6, 1.8)), colour=_jit(rng, (0.95, 0.95, 0.93), 0.03),
                                  seed=int(rng.integers(1 << 30)), stain=float(rng.uniform(0, 0.6)) if rng.random() < 0.3 else 0.0))
    if kind == "glove" or rng.random() < 0.06:
        ang = float(rng.uniform(0, 2 * math.pi))
        d = float(rng.uniform(0.3, 1.6))
        v.closeups.append(CloseUp("glove", x=d * math.cos(ang), y=0.6 * d * math.sin(ang), angle=float(rng.uniform(0, 2 * math.pi)),
                                  scale=float(rng.uniform(0.8, 2.2)), colour=_jit(rng, room.glove, 0.03),
                                  seed=int(rng.integers(1 << 30))))
    if kind == "drape":
        v.closeups.append(CloseUp("drape", cover=float(rng.uniform(0.5, 1.0)), angle=float(rng.uniform(0, 2 * math.pi)),
                                  scale=float(rng.uniform(0.7, 2.0)), colour=_jit(rng, room.drape, 0.04),
                                  seed=int(rng.integers(1 << 30))))
    return v


def random_room_frame(rng: np.random.Generator, room: Room, width: int, height: int, gen: torch.Generator,
                      kind: str | None = None) -> tuple[torch.Tensor, str]:
    v = random_view(rng, room, kind)
    fx = random_fx(rng)
    if v.kind == "dim":  # room lights dimmed (laparoscopy): screens and the scope's light remain
        fx.ambient = float(rng.uniform(0.1, 0.25))
        fx.auto = float(rng.uniform(0.18, 0.35))
    if v.kind == "gauze":
        fx.scope_light = float(rng.uniform(0.6, 1.4))
    prev = None
    if rng.random() < 0.15:
        prev = replace(v, x=v.x + float(rng.normal(0, 0.08)) * v.zoom, y=v.y + float(rng.normal(0, 0.08)) * v.zoom,
                       rot=v.rot + float(rng.normal(0, 0.05)), closeups=[])
    return render_room(room, v, fx, width, height, gen, prev), v.kind


# --------------------------------------------------------------------------------------------
# The trocar: the passage between tissue and room
# --------------------------------------------------------------------------------------------


@dataclass
class Trocar:
    """A port: the cannula (tube) of radius 1 and `length` radii, its wall's look, and the valve
    housing at its outer end."""

    wall: tuple = (0.55, 0.57, 0.6)
    metal: bool = True
    housing: tuple = (0.12, 0.12, 0.13)
    seal: tuple = (0.75, 0.72, 0.65)
    cap: tuple = (0.2, 0.4, 0.9)
    luer: float = 0.5
    length: float = 14.0
    seams: tuple = (0.35, 0.7)  # where rings on the wall are, as fractions of the length
    focal: float = 1.4  # the scope's focal length in field radii: the wall shows from z = focal


def random_trocar(rng: np.random.Generator, housing=None) -> Trocar:
    metal = rng.random() < 0.5
    wall = _jit(rng, STEEL, 0.04) if metal else _pick(rng, ((0.15, 0.15, 0.16), (0.45, 0.55, 0.65), (0.6, 0.62, 0.6)))
    return Trocar(
        wall=wall, metal=metal,
        housing=housing or _pick(rng, PLASTICS, 0.03),
        seal=_pick(rng, ((0.75, 0.72, 0.65), (0.6, 0.62, 0.66), (0.35, 0.35, 0.38))),
        cap=_pick(rng, ((0.2, 0.4, 0.9), (0.9, 0.9, 0.9), (0.9, 0.3, 0.2), (0.95, 0.8, 0.2))),
        luer=float(rng.uniform(0, 2 * math.pi)),
        length=float(rng.uniform(10, 18)),
        seams=tuple(sorted(float(v) for v in rng.uniform(0.15, 0.9, int(rng.integers(1, 4))))),
        focal=float(rng.uniform(1.2, 1.7)),
    )


PORT_R = 0.07  # the port housing's radius, room units
R_SEEN = 1.05  # the cannula's wall first shows at this screen radius when the field is wider

# progress at which each stage begins
P_IN, P_HOUSING, P_EXIT, P_TURN = 0.25, 0.5, 0.6, 0.75


@dataclass
class Passage:
    """One withdrawal / insertion: the tissue side (world camera when backing out starts and at
    the port), the room side (the view it turns to), the optics."""

    cam_start: Camera
    cam_port: Camera
    tools: list
    fx_in: Effects
    fov: Field
    room_view: View
    room_fx: RoomFx
    port_zoom: tuple = (0.08, 0.45)  # room zoom when leaving the housing and when the turn starts
    port_rot: float = 0.0


def random_passage(rng: np.random.Generator, layout, room: Room) -> Passage:
    from dataset import random_frame  # the in-body camera, tools and effects, as the seg data set

    p = random_frame(rng, layout)
    cam = p["cam"]
    cam_port = replace(cam, zoom=cam.zoom * float(rng.uniform(1.3, 2.0)), x=cam.x + float(rng.normal(0, 0.2)),
                       y=cam.y + float(rng.normal(0, 0.2)))
    tools = p["tools"] if rng.random() < 0.3 else []
    fx = p["fx"]
    fov = p["fov"]
    room_fx = random_fx(rng, circle=fov.r < 2.0)
    room_fx.field = fov if fov.r < 2.0 else None
    room_fx.vignette = fx.vignette
    room_fx.defocus = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.5, 2.5))
    room_fx.motion = (0.0, 0.0)
    return Passage(cam_start=cam, cam_port=cam_port, tools=tools, fx_in=fx, fov=fov,
                   room_view=random_view(rng, room, str(rng.choice(["room", "face", "monitor", "lamp", "patient", "table"]))),
                   room_fx=room_fx, port_zoom=(float(rng.uniform(0.05, 0.1)), float(rng.uniform(0.3, 0.7))),
                   port_rot=float(rng.uniform(-math.pi, math.pi)))


def is_out_of_body(progress: float) -> bool:
    """The ground truth: out of body from the frame the cannula's wall shows in the field."""
    return progress >= P_IN


def _ease(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * (3 - 2 * s)


def _tube(xs, ys, fov: Field, z_far: float, tro: Trocar, far: torch.Tensor, wall: tuple, metal: bool,
          seams: Sequence[float], gen: torch.Generator, rim: bool = True) -> torch.Tensor:
    """Looking down a tube of radius 1 from its axis: the wall from the field's edge in to the far
    opening at distance z_far, and `far` [3,H,W] (what lies beyond, the full-frame picture)
    squeezed into the opening. Screen radius rho of a wall ring at distance z: rho = focal * r / z."""
    # the wall first shows at the edge of what is seen: the field's edge, or the frame's top and
    # bottom edges when the field is wider than the frame
    r_seen = min(fov.r, R_SEEN)
    F_ = tro.focal * r_seen
    dx, dy = xs - fov.cx, ys - fov.cy
    rho = torch.sqrt(dx * dx + dy * dy) + 1e-6
    ang = torch.atan2(dy, dx)
    rho_open = F_ / z_far
    # beyond the opening: the far picture, squeezed (same directions, radius scaled)
    scale = min(fov.r, 0.98) / rho_open  # the opening shows the middle of the far picture
    gx = (fov.cx + dx * scale) / ASPECT
    gy = fov.cy + dy * scale
    inner = F.grid_sample(far.unsqueeze(0), torch.stack([gx, gy], -1).unsqueeze(0), mode="bilinear",
                          padding_mode="border", align_corners=False)[0]
    z = F_ / rho  # distance of the wall ring seen at rho
    z_near = tro.focal
    bright = (1.4 * (z_near / z) ** 2).clamp(0.0, 1.4)
    streaks = noise(gen, (64, 256), (1.0, 4.0), 4.0, 2)  # along the tube: polish / mould lines
    u = (ang.abs() / math.pi * 2 - 1).view(1, *ang.shape, 1)  # mirrored: no seam where the angle wraps
    v = (2 * (z / (tro.length + 1)) - 1).clamp(-1, 1).view(1, *ang.shape, 1)
    st = F.grid_sample(streaks.view(1, 1, 64, 256), torch.cat([u, v], -1), mode="bilinear", padding_mode="border",
                       align_corners=False)[0, 0]
    tex = 0.85 + 0.1 * st
    if metal:
        spec = torch.exp(-((torch.remainder(ang - 0.7, 2 * math.pi) - math.pi) / 0.35) ** 2) * 0.6
        tex = tex + spec * (z_near / z).clamp(max=1.0)
    col = _col(wall) * (bright * tex).unsqueeze(0)
    for sfrac in seams:  # dark rings where parts join
        zs = sfrac * tro.length
        ring = torch.exp(-((z - zs) / (0.12 * zs ** 0.5 + 0.05)) ** 2)
        col = col * (1 - 0.6 * ring).unsqueeze(0)
    if rim:  # the cut edge of the far end catches the light
        edge = torch.exp(-((rho - rho_open) / (0.02 + 0.04 * rho_open)) ** 2) * 0.5 * (z_near / z_far) ** 0.5
        col = col + edge.unsqueeze(0)
    return torch.where((rho < rho_open).unsqueeze(0), inner, col)


def transition(progress: float, passage: Passage, world: World, room: Room, width: int, height: int,
               gen: torch.Generator, labels: bool = False, progress_prev: float | None = None):
    """One frame of the passage between tissue (progress 0) and room (1). Returns
    (rgb [3,H,W], out_of_body, labels [H,W] long or None): labels only for in-body frames (from
    scene.py's render); out-of-body frames are all background."""
    p = min(max(progress, 0.0), 1.0)
    fov = passage.fov
    tro = room.trocar
    xs, ys, px = _screen_grid(width, height)

    def cam_at(u: float) -> Camera:
        a, b = passage.cam_start, passage.cam_port
        e = _ease(u)
        return replace(b, x=a.x + (b.x - a.x) * e, y=a.y + (b.y - a.y) * e, zoom=a.zoom + (b.zoom - a.zoom) * e)

    if p < P_IN:
        u = p / P_IN
        fx = replace(passage.fx_in, gain=passage.fx_in.gain * (1 - 0.45 * _ease(u)))  # the light falls off
        cam_prev = None
        if progress_prev is not None and progress_prev < P_IN:
            cam_prev = cam_at(progress_prev / P_IN)
        rgb, lab = render(world, cam_at(u), fov, passage.tools if u < 0.5 else [], fx, width, height, gen, cam_prev)
        return rgb, False, (lab if labels else None)

    # out of body: everything below is composed, then seen through the same optics
    rfx = passage.room_fx
    fx = replace(rfx, noise=passage.fx_in.noise, vignette=passage.fx_in.vignette)
    if p < P_EXIT:
        far_fx = replace(passage.fx_in, noise=0.0, vignette=0.0, gain=passage.fx_in.gain * 0.55)
        far, _ = render(world, passage.cam_port, Field(0.0, 0.0, 3.0), [], far_fx, width, height, gen)
        z_near = tro.focal
        if p < P_HOUSING:
            u = (p - P_IN) / (P_HOUSING - P_IN)
            z_far = z_near * 1.02 + u * (tro.length - z_near)
            far = far * min(1.0, (z_near / z_far) ** 0.8)
            rgb = _tube(xs, ys, fov, z_far, tro, far, tro.wall, tro.metal, [1 - sf for sf in tro.seams], gen)
        else:
            # in the housing (radius 2.5): the seal closes over the cannula's end below
            u = (p - P_HOUSING) / (P_EXIT - P_HOUSING)
            hr = 2.5
            z_seal = (z_near * 1.05 + u * 4.0) * hr  # distance of the seal, in cannula radii
            tube_far = _tube(xs, ys, fov, tro.length, tro, far * 0.3, tro.wall, tro.metal, [], gen)
            dx, dy = xs - fov.cx, ys - fov.cy
            rho = torch.sqrt(dx * dx + dy * dy)
            ang = torch.atan2(dy, dx)
            # the seal as a picture: slit flaps around an opening that closes as the lens rises
            r_iris = (1.0 - 1.3 * u) * 0.5
            seal = _col(tro.seal) * (0.35 + 0.25 * torch.cos(ang * 4) ** 2).unsqueeze(0)
            slit = smoothstep(0.02, 0.0, torch.sin(2 * ang).abs() * rho)
            seal = seal * (1 - 0.7 * slit).unsqueeze(0)
            seal_pic = torch.where((rho < max(r_iris, 0.0) * fov.r).unsqueeze(0), tube_far, seal)
            rgb = _tube(xs, ys, fov, z_seal / hr, replace(tro, length=6.0), seal_pic, tro.housing, False, [0.5], gen)
        ae = replace(fx, field=fov if fov.r < 2.0 else None, auto=max(fx.auto, 0.25))
        rgb = rgb * (fx.gain * auto_exposure(rgb, xs, ys, ae)) * _col(fx.tint)
        return lens(rgb, xs, ys, px, replace(fx, defocus=0.0, field=fov if fov.r < 2.0 else None), width, gen), True, None

    if p < P_TURN:  # above the port, looking down at it: the ring and well shrink, drapes appear
        u = _ease((p - P_EXIT) / (P_TURN - P_EXIT))
        z0, z1 = passage.port_zoom
        zoom = z0 * (z1 / z0) ** u
        v = View(x=room.port[0], y=room.port[1], zoom=zoom, rot=passage.port_rot, port=PORT_R / zoom)
        rfx_close = replace(fx, defocus=fx.defocus + 2.5 * (1 - u), scope_light=max(fx.scope_light, 0.6))
        rgb = render_room(room, v, rfx_close, width, height, gen)
        return rgb, True, None

    # the turn: from looking down at the port to the room view, a fast pan
    u = (p - P_TURN) / (1 - P_TURN)
    z1 = passage.port_zoom[1]
    a = View(x=room.port[0], y=room.port[1], zoom=z1, rot=passage.port_rot, port=PORT_R / z1)
    b = passage.room_view

    def view_at(s: float) -> View:
        e = _ease(s)
        return View(x=a.x + (b.x - a.x) * e, y=a.y + (b.y - a.y) * e, zoom=a.zoom * (b.zoom / a.zoom) ** e,
                    rot=a.rot + (b.rot - a.rot) * e, port=a.port * (1 - e) if e < 0.5 else 0.0,
                    closeups=b.closeups if e > 0.95 else [])

    v = view_at(u)
    speed = abs(_ease(min(1.0, u + 0.05)) - _ease(max(0.0, u - 0.05))) / 0.1  # 0 .. 1.5
    prev = view_at(max(0.0, u - 0.06)) if speed > 0.2 else None
    return render_room(room, v, fx, width, height, gen, prev, motion_steps=5 if prev else 3), True, None
