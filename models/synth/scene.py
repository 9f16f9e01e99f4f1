"""Synthetic laparoscopic scenes with per-pixel class labels (orstream's demo data).

SYNTHETIC DATA, NOT SURGICAL DATA. Everything here is procedural: no real video, no real anatomy.
It exists so that orstream can ship a demo model, a demo clip and an honest ground truth without
downloading anything.

The picture is made in two layers:

* A *world*: a large 2-D canvas of tissue (abdominal wall, liver, gallbladder, fat/omentum and
  unlabelled "other tissue" = background) with procedural texture, colour variation, vessels,
  edge shading and a gloss map, generated once per scene from a seed (`make_world`).
* *Frames*: a virtual endoscope looks at the world through a circular field (`Camera`, `Field`):
  pan / zoom / rotation, breathing motion, instruments drawn in screen space as long shafts with
  distinct tips entering from beyond the field edge (`Tool`), tool shadows, specular highlights,
  motion blur (camera and tools), tissue flaps occluding tools, surgical smoke / haze, lighting
  and colour changes, vignetting, defocus and sensor noise (`Effects`), then `render`.

`render` returns the RGB picture and a label map of the same size (class ids of `CLASSES`);
pixels outside the circular field are background.

Screen coordinates: y runs from -1 (top) to +1 (bottom) over the frame height, x from -16/9 to
+16/9 over the width, whatever the pixel size: a frame rendered at 320x192 is the 16:9 picture
stretched to that size, exactly what an engine that resizes ("stretch") 640x360 video to 320x192
feeds a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# id, name, category -- the model card's class list.
CLASSES: tuple[tuple[int, str, str], ...] = (
    (0, "background", "background"),
    (1, "abdominal_wall", "organ"),
    (2, "liver", "organ"),
    (3, "gallbladder", "organ"),
    (4, "fat", "organ"),
    (5, "grasper", "tool"),
    (6, "hook", "tool"),
    (7, "clip_applier", "tool"),
    (8, "scissors", "tool"),
    (9, "irrigator", "tool"),
)
NAMES = tuple(c[1] for c in CLASSES)
CATEGORY = {c[1]: c[2] for c in CLASSES}
ID = {c[1]: c[0] for c in CLASSES}
TOOLS = ("grasper", "hook", "clip_applier", "scissors", "irrigator")
ORGANS = ("abdominal_wall", "liver", "gallbladder", "fat")
NUM_CLASSES = len(CLASSES)

ASPECT = 16.0 / 9.0  # the nominal picture's width / height (screen x spans +-ASPECT)
WORLD_X = 4.2  # the world spans x in [-WORLD_X, WORLD_X], y in [-WORLD_Y, WORLD_Y] (world units)
WORLD_Y = 2.8


# --------------------------------------------------------------------------------------------
# Procedural noise
# --------------------------------------------------------------------------------------------


def _lattice(gen: torch.Generator, h: int, w: int, cy: int, cx: int) -> torch.Tensor:
    """Value noise: a cy x cx random lattice, bicubically upsampled to h x w."""
    cy, cx = max(cy, 2), max(cx, 2)
    g = torch.rand(1, 1, cy, cx, generator=gen)
    # bicubic to at most 8 samples per cell, then (cheaper) bilinear to full size
    mid = (min(h, cy * 8), min(w, cx * 8))
    g = F.interpolate(g, size=mid, mode="bicubic", align_corners=True)
    if mid != (h, w):
        g = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=True)
    return g[0, 0]


def noise(
    gen: torch.Generator,
    shape: tuple[int, int],
    extent: tuple[float, float],
    freq: float,
    octaves: int = 3,
    aniso: tuple[float, float] = (1.0, 1.0),
    persistence: float = 0.5,
) -> torch.Tensor:
    """Fractal value noise over a raster covering `extent` (height, width) world units,
    `freq` lattice cells per unit at the first octave; standardised to mean 0, std 1."""
    h, w = shape
    total = torch.zeros(h, w)
    amp = 1.0
    for octave in range(octaves):
        f = freq * (2**octave)
        cy = int(extent[0] * f * aniso[0]) + 2
        cx = int(extent[1] * f * aniso[1]) + 2
        total += amp * _lattice(gen, h, w, min(cy, h), min(cx, w))
        amp *= persistence
    return (total - total.mean()) / (total.std() + 1e-6)


def smoothstep(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --------------------------------------------------------------------------------------------
# The world: tissue canvas
# --------------------------------------------------------------------------------------------


@dataclass
class Blob:
    """An irregular closed region: an ellipse whose radius is modulated by harmonics."""

    cx: float
    cy: float
    rx: float
    ry: float
    rot: float = 0.0
    harmonics: Sequence[tuple[int, float, float]] = ()  # (k, amplitude, phase)

    def sd(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Approximate signed distance in world units, positive inside."""
        c, s = math.cos(self.rot), math.sin(self.rot)
        lx = ((x - self.cx) * c + (y - self.cy) * s) / self.rx
        ly = (-(x - self.cx) * s + (y - self.cy) * c) / self.ry
        rho = torch.sqrt(lx * lx + ly * ly)
        phi = torch.atan2(ly, lx)
        r = torch.ones_like(rho)
        for k, a, p in self.harmonics:
            r = r + a * torch.cos(k * phi + p)
        return (r - rho) * min(self.rx, self.ry)


@dataclass
class Band:
    """The region above (top=True) or below a wavy horizontal boundary y = y0 + sum(a sin(f x + p))."""

    y0: float
    top: bool
    waves: Sequence[tuple[float, float, float]] = ()  # (frequency, amplitude, phase)

    def sd(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = torch.full_like(x, self.y0)
        for f, a, p in self.waves:
            b = b + a * torch.sin(f * x + p)
        return (b - y) if self.top else (y - b)


@dataclass
class Layout:
    """Where the tissues lie in the world. Painted in order: wall, fat band, liver, gallbladder,
    fat blobs; `flaps` are fat blobs that lie above instruments that pass under tissue."""

    wall: Band
    fat: Band
    liver: Sequence[Blob]
    gallbladder: Blob
    fat_blobs: Sequence[Blob] = ()
    flaps: Sequence[Blob] = ()
    wall_side: Blob | None = None


@dataclass
class Palette:
    """Base colours (sRGB 0..1) of each tissue; randomised per scene for training."""

    bowel: tuple[float, float, float] = (0.58, 0.36, 0.40)
    crevice: tuple[float, float, float] = (0.10, 0.03, 0.03)
    wall: tuple[float, float, float] = (0.84, 0.62, 0.58)
    wall2: tuple[float, float, float] = (0.72, 0.36, 0.34)
    liver: tuple[float, float, float] = (0.50, 0.14, 0.11)
    liver2: tuple[float, float, float] = (0.62, 0.26, 0.20)
    gallbladder: tuple[float, float, float] = (0.52, 0.62, 0.42)
    gallbladder2: tuple[float, float, float] = (0.74, 0.76, 0.64)
    fat: tuple[float, float, float] = (0.92, 0.76, 0.36)
    fat2: tuple[float, float, float] = (0.86, 0.56, 0.28)
    vessel: tuple[float, float, float] = (0.55, 0.12, 0.12)


@dataclass
class World:
    """The rasterised tissue canvas: rgb (3), gloss (1), flap (1), label (1) channels."""

    tex: torch.Tensor  # [1, 5, H, W] float: r, g, b, gloss, flap
    label: torch.Tensor  # [1, 1, H, W] float class ids (sampled with nearest)
    smoke: torch.Tensor  # [1, 1, 128, 128] smoke density texture (screen space, tiled)
    ppu: float


def _tint(c: tuple[float, float, float], s: torch.Tensor | float = 1.0) -> torch.Tensor:
    return torch.tensor(c).view(3, 1, 1) * s


def _mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a * (1 - t) + b * t


def make_world(layout: Layout, palette: Palette, seed: int, ppu: float = 160.0) -> World:
    """Rasterises `layout` with procedural textures at `ppu` pixels per world unit."""
    gen = torch.Generator().manual_seed(seed)
    h = int(round(2 * WORLD_Y * ppu))
    w = int(round(2 * WORLD_X * ppu))
    ext = (2 * WORLD_Y, 2 * WORLD_X)
    ys = torch.linspace(-WORLD_Y, WORLD_Y, h).view(h, 1).expand(h, w)
    xs = torch.linspace(-WORLD_X, WORLD_X, w).view(1, w).expand(h, w)
    # Domain warp: organic, non-analytic boundaries.
    wx = xs + 0.07 * noise(gen, (h, w), ext, 1.2, 3)
    wy = ys + 0.07 * noise(gen, (h, w), ext, 1.2, 3)

    def N(freq: float, octaves: int = 3, aniso=(1.0, 1.0), persistence: float = 0.5) -> torch.Tensor:
        return noise(gen, (h, w), ext, freq, octaves, aniso, persistence)

    def vessels(freq: float, width: float) -> torch.Tensor:
        """Thin branching lines: where a mid-frequency noise crosses zero."""
        n = N(freq, 3, persistence=0.45)
        return torch.exp(-((n / width) ** 2))

    label = torch.zeros(h, w)
    sd_top = torch.full((h, w), 0.25)  # signed distance to the edge of the tissue on top
    one = torch.ones(h, w)

    # Other tissue (bowel loops), labelled background: folds from ridged noise.
    folds = N(1.6, 3).abs()
    rgb = _tint(palette.bowel, 0.75 + 0.25 * smoothstep(0.0, 0.8, folds)) * (0.9 + 0.1 * N(6, 2))
    rgb = _mix(rgb, _tint(palette.crevice), smoothstep(0.25, 0.0, folds).unsqueeze(0) * 0.8)
    gloss = 0.45 * one
    flap = torch.zeros(h, w)

    def paint(sd: torch.Tensor, cls: int, colour: torch.Tensor, g: float, edge: float = 0.06) -> None:
        nonlocal rgb, gloss, sd_top
        inside = sd > 0
        label[inside] = cls
        m = inside.unsqueeze(0).expand(3, h, w)
        rgb = torch.where(m, colour, rgb)
        gloss = torch.where(inside, torch.full_like(gloss, g), gloss)
        sd_top = torch.where(inside, sd / edge, sd_top)

    # Abdominal wall: pink-white peritoneum with muscle striations and vessels.
    stri = N(2.0, 3, aniso=(3.5, 0.35))
    wall_c = _mix(_tint(palette.wall), _tint(palette.wall2), smoothstep(-0.5, 1.8, N(0.9, 3)).unsqueeze(0))
    wall_c = wall_c * (0.88 + 0.08 * stri + 0.04 * N(12, 2))
    wall_c = _mix(wall_c, _tint(palette.vessel), 0.7 * vessels(1.4, 0.06).unsqueeze(0))
    wall_sd = layout.wall.sd(wx, wy)
    if layout.wall_side is not None:
        wall_sd = torch.maximum(wall_sd, layout.wall_side.sd(wx, wy))
    paint(wall_sd, ID["abdominal_wall"], wall_c, 0.55, 0.10)

    # Fat / omentum: yellow lobules with vessels.
    lob = N(7.0, 2, persistence=0.35)
    fat_c = _mix(_tint(palette.fat), _tint(palette.fat2), smoothstep(-0.8, 1.6, N(1.1, 3)).unsqueeze(0))
    fat_c = fat_c * (0.80 + 0.12 * smoothstep(-1.2, 1.2, lob) + 0.06 * N(18, 1))
    fat_c = _mix(fat_c, _tint(palette.vessel), 0.75 * vessels(1.8, 0.05).unsqueeze(0))
    paint(layout.fat.sd(wx, wy), ID["fat"], fat_c, 0.7, 0.08)

    # Liver: dark red-brown, mottled, finely lobular, glossy.
    liver_c = _mix(_tint(palette.liver), _tint(palette.liver2), smoothstep(-0.6, 2.0, N(1.3, 4)).unsqueeze(0))
    liver_c = liver_c * (0.86 + 0.08 * N(9, 2) + 0.06 * N(30, 1))
    liver_sd = torch.stack([b.sd(wx, wy) for b in layout.liver]).amax(0)
    paint(liver_sd, ID["liver"], liver_c, 0.9, 0.05)

    # Gallbladder: greenish / whitish wall with vessels, very glossy.
    gb = layout.gallbladder
    gb_c = _mix(_tint(palette.gallbladder), _tint(palette.gallbladder2), smoothstep(-1.0, 1.5, N(2.2, 3)).unsqueeze(0))
    gb_c = gb_c * (0.9 + 0.05 * N(14, 2))
    gb_c = _mix(gb_c, _tint(palette.vessel), 0.65 * vessels(3.0, 0.05).unsqueeze(0))
    paint(gb.sd(wx, wy), ID["gallbladder"], gb_c, 1.0, 0.08)

    for b in layout.fat_blobs:
        paint(b.sd(wx, wy), ID["fat"], fat_c, 0.7, 0.06)
    for b in layout.flaps:
        sd = b.sd(wx, wy)
        paint(sd, ID["fat"], fat_c, 0.7, 0.04)
        flap = torch.where(sd > 0, one, flap)

    # Edge shading: tissue darkens where it curves away towards its boundary (crevices),
    # plus low-frequency bumps shaded as if lit from the camera.
    bump = N(3.0, 3)
    gy, gx = torch.gradient(bump, spacing=(1.0 / ppu, 1.0 / ppu))
    nz = 1.0 / torch.sqrt(1.0 + 0.004 * (gx * gx + gy * gy))
    shade = (0.45 + 0.55 * smoothstep(0.0, 1.0, sd_top)) * (0.8 + 0.2 * nz)
    rgb = rgb * shade.unsqueeze(0)
    # Gloss map: wet bumps that catch the light.
    glint = smoothstep(1.2, 3.0, N(8.0, 2, persistence=0.6))
    gloss_map = gloss * glint

    tex = torch.cat([rgb.clamp(0, 1), gloss_map.unsqueeze(0), flap.unsqueeze(0)]).unsqueeze(0).contiguous()
    smoke = noise(gen, (128, 128), (1.0, 1.0), 3.0, 3)
    smoke = smoothstep(-1.5, 2.0, smoke).view(1, 1, 128, 128)
    return World(tex=tex, label=label.view(1, 1, h, w).contiguous(), smoke=smoke, ppu=ppu)


def random_layout(rng: np.random.Generator) -> Layout:
    """A plausible random arrangement: wall on top, fat below, liver with the gallbladder under
    its edge, fat lobules around; everything jittered."""

    def harm(n: int, amp: float) -> list[tuple[int, float, float]]:
        return [(k, float(rng.uniform(0, amp / k)), float(rng.uniform(0, 2 * math.pi))) for k in range(2, 2 + n)]

    def waves(n: int, amp: float) -> list[tuple[float, float, float]]:
        return [(float(rng.uniform(0.5, 3.0)), float(rng.uniform(0, amp)), float(rng.uniform(0, 2 * math.pi))) for _ in range(n)]

    wall = Band(y0=float(rng.uniform(-1.9, -0.9)), top=True, waves=waves(3, 0.25))
    fat = Band(y0=float(rng.uniform(0.6, 1.6)), top=False, waves=waves(3, 0.3))
    lx, ly = float(rng.uniform(-1.2, 1.6)), float(rng.uniform(-0.8, 0.1))
    liver = [
        Blob(lx, ly, float(rng.uniform(1.2, 2.2)), float(rng.uniform(0.6, 1.0)), float(rng.uniform(-0.4, 0.4)), harm(4, 0.22))
    ]
    if rng.random() < 0.6:
        liver.append(
            Blob(lx + float(rng.uniform(-1.6, 1.6)), ly + float(rng.uniform(-0.3, 0.3)), float(rng.uniform(0.6, 1.1)),
                 float(rng.uniform(0.4, 0.7)), float(rng.uniform(-0.6, 0.6)), harm(3, 0.2))
        )
    gx = lx + float(rng.uniform(-1.0, 1.0))
    gy = ly + liver[0].ry * float(rng.uniform(0.5, 1.0))
    gb = Blob(gx, gy, float(rng.uniform(0.38, 0.7)), float(rng.uniform(0.2, 0.34)), float(rng.uniform(-0.9, 0.9)),
              [(1, float(rng.uniform(0.05, 0.2)), float(rng.uniform(0, 2 * math.pi)))] + harm(2, 0.08))
    fat_blobs = []
    for _ in range(int(rng.integers(1, 6))):
        fat_blobs.append(
            Blob(float(rng.uniform(-3.5, 3.5)), float(rng.uniform(-1.0, 1.6)), float(rng.uniform(0.15, 0.5)),
                 float(rng.uniform(0.1, 0.35)), float(rng.uniform(0, math.pi)), harm(3, 0.25))
        )
    flaps = []
    for _ in range(int(rng.integers(0, 4))):
        flaps.append(
            Blob(float(rng.uniform(-3.0, 3.0)), float(rng.uniform(-0.8, 1.4)), float(rng.uniform(0.2, 0.45)),
                 float(rng.uniform(0.12, 0.3)), float(rng.uniform(0, math.pi)), harm(3, 0.2))
        )
    wall_side = None
    if rng.random() < 0.4:
        side = float(rng.choice([-1.0, 1.0]))
        wall_side = Blob(side * float(rng.uniform(3.3, 4.2)), float(rng.uniform(-1.5, 1.0)), float(rng.uniform(0.6, 1.2)),
                         float(rng.uniform(1.0, 2.0)), 0.0, harm(3, 0.15))
    return Layout(wall=wall, fat=fat, liver=liver, gallbladder=gb, fat_blobs=fat_blobs, flaps=flaps, wall_side=wall_side)


def random_palette(rng: np.random.Generator) -> Palette:
    """The default palette with each colour jittered in brightness and hue."""
    base = Palette()
    out = {}
    for name, c in vars(base).items():
        gain = rng.uniform(0.85, 1.12)
        jitter = rng.uniform(-0.05, 0.05, 3)
        out[name] = tuple(float(np.clip(v * gain + j, 0.02, 1.0)) for v, j in zip(c, jitter))
    return Palette(**out)


# --------------------------------------------------------------------------------------------
# Frames: camera, field, instruments, effects
# --------------------------------------------------------------------------------------------


@dataclass
class Camera:
    """Which part of the world is seen: world = (x, y) + zoom * R(rot) * screen."""

    x: float = 0.0
    y: float = 0.0
    zoom: float = 0.8
    rot: float = 0.0
    breathe: float = 0.0  # breathing phase (radians)
    breathe_amp: float = 0.012  # world units


@dataclass
class Field:
    """The endoscope's circular field of view, in screen units (frame height = 2)."""

    cx: float = 0.0
    cy: float = 0.0
    r: float = 1.12


@dataclass
class Tool:
    """One instrument. The shaft runs from the tip back through the fulcrum (trocar, outside
    the field) and beyond; so a tool enters and leaves across the field's edge."""

    kind: str
    tip: tuple[float, float]
    fulcrum: tuple[float, float]
    width: float = 0.13  # shaft diameter in screen units, before the kind's own factor
    opening: float = 0.0  # jaws 0 (closed) .. 1 (open)
    side: float = 1.0  # which way the hook / scissor blades bend (+1 / -1)
    loaded: bool = False  # clip applier holding a clip
    behind: bool = False  # passes under tissue flaps
    gloss: float = 1.0
    brightness: float = 1.0


@dataclass
class Effects:
    gain: float = 1.0  # overall light
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignette: float = 0.45
    light: tuple[float, float] = (0.0, 0.0)  # light centre offset (screen units)
    smoke: float = 0.0  # 0 .. 0.7 smoke density
    smoke_shift: tuple[float, float] = (0.0, 0.0)
    haze: float = 0.0
    noise: float = 0.01
    defocus: float = 0.0  # gaussian sigma in pixels
    spec_threshold: float = 0.25
    spec_s0: float = -0.3  # where the highlight stripe runs across a shaft (-1..1)


TOOL_WIDTH = {"grasper": 1.0, "hook": 0.9, "clip_applier": 1.2, "scissors": 1.0, "irrigator": 0.75}

# Materials: (colour, metal?)
_BLACK = ((0.11, 0.11, 0.12), False)
_STEEL = ((0.72, 0.72, 0.74), True)
_SHAFTS = {
    "grasper": _BLACK,
    "hook": ((0.17, 0.22, 0.38), False),
    "clip_applier": ((0.60, 0.62, 0.66), True),
    "scissors": ((0.08, 0.26, 0.22), False),
    "irrigator": ((0.80, 0.86, 0.93), False),
}


def _shade(base: Sequence[float], metal: bool, nv: torch.Tensor, s0: float, gloss: float, bright: float) -> torch.Tensor:
    """Cylinder shading across a part: nv is the cross-section coordinate (-1..1)."""
    nv = nv.clamp(-1.0, 1.0)
    diffuse = 0.35 + 0.65 * torch.sqrt((1.0 - nv * nv).clamp(min=0.0))
    spec = torch.exp(-(((nv - s0) / 0.22) ** 2))
    c = torch.tensor(base).view(3, 1, 1) * bright
    if metal:
        env = torch.tensor((1.0, 0.82, 0.78)).view(3, 1, 1)  # reflects the reddish surroundings
        return c * env * (0.25 + 0.75 * diffuse) + 0.85 * gloss * spec
    return c * diffuse + 0.45 * gloss * spec


def _cov(sd: torch.Tensor, px: float) -> torch.Tensor:
    """Anti-aliased coverage of a signed distance (screen units, positive inside)."""
    return (sd / px + 0.5).clamp(0.0, 1.0)


def _tool_layer(tool: Tool, xs: torch.Tensor, ys: torch.Tensor, px: float, s0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [3,H,W] (premultiplied) and coverage [H,W] of one instrument.

    xs, ys come from _screen_grid. The shaft is drawn over the whole frame, the tip's parts only
    in a window around the tip (they lie within 2.7 shaft widths of it)."""
    height, width = xs.shape
    colour = torch.zeros(3, height, width)
    alpha = torch.zeros(height, width)
    tx, ty = tool.tip
    fx, fy = tool.fulcrum
    dx, dy = tx - fx, ty - fy
    norm = math.hypot(dx, dy)
    if norm < 1e-6:  # the tip is still at the fulcrum, outside the field: nothing to draw
        return colour, alpha
    dx, dy = dx / norm, dy / norm  # unit vector fulcrum -> tip
    nx, ny = -dy, dx
    w0 = tool.width * TOOL_WIDTH[tool.kind]
    g, b = tool.gloss, tool.brightness

    class Region:
        """Screen coordinates and shaft coordinates of a rectangle of pixels."""

        def __init__(self, rows: slice, cols: slice) -> None:
            self.rows, self.cols = rows, cols
            self.x, self.y = xs[rows, cols], ys[rows, cols]
            rx, ry = self.x - tx, self.y - ty
            self.u = -(rx * dx + ry * dy)  # distance back along the shaft from the tip
            self.v = rx * nx + ry * ny  # across the shaft
            # perspective: the shaft widens towards the trocar
            self.wu = w0 * (1.0 + 0.18 * self.u.clamp(min=0.0, max=4.0))

        def over(self, c: torch.Tensor, a: torch.Tensor) -> None:
            cs = colour[:, self.rows, self.cols]
            as_ = alpha[self.rows, self.cols]
            colour[:, self.rows, self.cols] = c * a + cs * (1 - a)
            alpha[self.rows, self.cols] = a + as_ * (1 - a)

        def shaft(self, start: float, mat=None, halfw: float | None = None, end: float | None = None) -> None:
            base, metal = mat or _SHAFTS[tool.kind]
            hw = self.wu / 2 if halfw is None else torch.full_like(self.u, halfw)
            sd = torch.minimum(self.u - start, hw - self.v.abs())
            if end is not None:
                sd = torch.minimum(sd, end - self.u)
            self.over(_shade(base, metal, self.v / hw, s0, g, b), _cov(sd, px))

        def jaw_frame(self, j: float, phi: float, pivot_u: float) -> tuple[torch.Tensor, torch.Tensor]:
            """Coordinates in the frame of a jaw hinged at u = pivot_u, opened by phi to side j:
            a along the jaw towards its tip, bj across it, positive on the jaw's outer side."""
            px_, py_ = tx - dx * pivot_u, ty - dy * pivot_u
            c, s = math.cos(phi), math.sin(phi)
            ex, ey = c * dx + j * s * nx, c * dy + j * s * ny
            fxj, fyj = -ey * j, ex * j
            qx, qy = self.x - px_, self.y - py_
            return qx * ex + qy * ey, qx * fxj + qy * fyj

    whole = Region(slice(None), slice(None))
    # The window around the tip, in pixel indices (inverse of _screen_grid).
    rad = 2.7 * w0 + 3 * px
    c0 = int(math.floor(((tx - rad) / ASPECT + 1) / 2 * width - 0.5))
    c1 = int(math.ceil(((tx + rad) / ASPECT + 1) / 2 * width - 0.5)) + 1
    r0 = int(math.floor((ty - rad + 1) / 2 * height - 0.5))
    r1 = int(math.ceil((ty + rad + 1) / 2 * height - 0.5)) + 1
    c0, c1 = max(c0, 0), min(c1, width)
    r0, r1 = max(r0, 0), min(r1, height)
    tip = Region(slice(r0, r1), slice(c0, c1)) if (c1 > c0 and r1 > r0) else None

    kind = tool.kind
    if kind == "grasper":
        lj, lc = 1.05 * w0, 0.45 * w0
        whole.shaft(lj + lc)
        if tip is not None:
            tip.shaft(lj - 0.05 * w0, _STEEL, 0.42 * w0, lj + lc + 0.02 * w0)  # clevis
            for j in (1.0, -1.0):
                a, bj = tip.jaw_frame(j, 0.38 * tool.opening, lj)
                hw = 0.4 * w0 * (1.0 - 0.45 * (a / lj).clamp(0, 1))
                sd = torch.minimum(torch.minimum(a + 0.05 * w0, lj - a), torch.minimum(bj + 0.02 * w0, hw - bj))
                serr = 0.82 + 0.18 * torch.sin(a * (2 * math.pi / (0.09 * w0)))
                c = _shade(_STEEL[0], True, (bj / hw) * 2 - 1, s0, g, b) * serr
                tip.over(c, _cov(sd, px))
    elif kind == "hook":
        lt = 0.95 * w0
        whole.shaft(lt)
        if tip is not None:
            u, v = tip.u, tip.v
            cone_hw = (0.09 * w0 + 0.36 * w0 * ((u - 0.55 * w0) / (0.4 * w0)).clamp(0, 1))
            sd = torch.minimum(torch.minimum(u - 0.55 * w0, lt + 0.02 * w0 - u), cone_hw - v.abs())
            tip.over(_shade((0.82, 0.80, 0.74), False, v / cone_hw, s0, g, b), _cov(sd, px))
            wire = 0.06 * w0
            sd = torch.minimum(torch.minimum(u + 0.0, 0.6 * w0 - u), wire - v.abs())
            tip.over(_shade(_STEEL[0], True, v / wire, s0, g, b), _cov(sd, px))
            sv = v * tool.side
            sd = torch.minimum(torch.minimum(u + 0.02 * w0, 0.13 * w0 - u), torch.minimum(sv + wire, 0.34 * w0 - sv))
            tip.over(_shade(_STEEL[0], True, (u / (0.07 * w0)) - 1, s0, g, b), _cov(sd, px))
    elif kind == "clip_applier":
        lj = 1.35 * w0
        whole.shaft(lj)
        if tip is not None:
            gap = 0.02 * w0 + 0.08 * w0 * tool.opening  # half the space between the jaws
            for j in (1.0, -1.0):
                a, bj = tip.jaw_frame(j, 0.06 * tool.opening, lj)
                # each jaw: a flat bar from bj = gap to gap + 0.42 w0 on its own side
                sd = torch.minimum(torch.minimum(a + 0.03 * w0, lj - a), torch.minimum(bj - gap, gap + 0.42 * w0 - bj))
                tip.over(_shade(_STEEL[0], True, (bj - gap) / (0.21 * w0) - 1, s0, g, b * 0.95), _cov(sd, px))
            if tool.loaded:
                u, v = tip.u, tip.v
                sd = torch.minimum(torch.minimum(u - 0.08 * w0, 0.75 * w0 - u), gap * 0.9 - v.abs())
                tip.over(_shade((0.86, 0.70, 0.32), True, v / (gap + 1e-6), s0, g, b), _cov(sd, px))
    elif kind == "scissors":
        lj = 1.25 * w0
        whole.shaft(lj + 0.3 * w0)
        if tip is not None:
            tip.shaft(lj - 0.1 * w0, ((0.30, 0.30, 0.32), True), 0.4 * w0, lj + 0.32 * w0)
            for j in (1.0, -1.0):
                a, bj = tip.jaw_frame(j, 0.3 * tool.opening, lj)
                an = (a / lj).clamp(0, 1)
                bc = bj - j * tool.side * 0.35 * w0 * an * an  # curved blades
                hw = 0.36 * w0 * (1.0 - an) ** 0.6 + 0.02 * w0
                sd = torch.minimum(torch.minimum(a + 0.02 * w0, lj - a), torch.minimum(bc + 0.02 * w0, hw - bc))
                tip.over(_shade((0.80, 0.70, 0.48), True, (bc / hw) * 2 - 1, s0, g, b), _cov(sd, px))
    elif kind == "irrigator":
        u, v, wu = whole.u, whole.v, whole.wu
        r_end = w0 / 2
        # capsule: straight part behind u = r_end, a round end in front
        cap = torch.sqrt((u - r_end) ** 2 + v * v)
        sd = torch.where(u > r_end, torch.minimum(wu / 2 - v.abs(), u + 1.0), r_end - cap)
        c = _shade(_SHAFTS["irrigator"][0], False, v / (wu / 2), s0, g, b)
        # two dark rings near the tip, then graduation marks all along the tube
        ring = ((u > 1.1 * w0) & (u < 1.3 * w0)) | ((u > 1.6 * w0) & (u < 1.7 * w0))
        ring = ring | ((u > 2.0 * w0) & (torch.remainder(u - 2.0 * w0, 1.1 * w0) < 0.12 * w0))
        c = torch.where(ring.unsqueeze(0), c * 0.35, c)
        hole = ((u - 0.55 * w0) / (0.1 * w0)) ** 2 + ((v.abs() - 0.14 * w0) / (0.07 * w0)) ** 2 < 1.0
        c = torch.where(hole.unsqueeze(0), c * 0.15, c)
        whole.over(c, _cov(sd, px))
    else:
        raise ValueError(f"unknown tool {kind}")
    return colour, alpha


def _lerp_tool(a: Tool, b: Tool, t: float) -> Tool:
    return Tool(
        kind=b.kind,
        tip=(a.tip[0] + (b.tip[0] - a.tip[0]) * t, a.tip[1] + (b.tip[1] - a.tip[1]) * t),
        fulcrum=(a.fulcrum[0] + (b.fulcrum[0] - a.fulcrum[0]) * t, a.fulcrum[1] + (b.fulcrum[1] - a.fulcrum[1]) * t),
        width=a.width + (b.width - a.width) * t,
        opening=a.opening + (b.opening - a.opening) * t,
        side=b.side,
        loaded=b.loaded,
        behind=b.behind,
        gloss=b.gloss,
        brightness=b.brightness,
    )


def _screen_grid(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    xs = ((torch.arange(width) + 0.5) / width * 2 - 1) * ASPECT
    ys = (torch.arange(height) + 0.5) / height * 2 - 1
    px = 0.5 * (2 * ASPECT / width + 2.0 / height)
    return xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width), px


def _sample_world(world: World, cam: Camera, xs: torch.Tensor, ys: torch.Tensor, labels: bool):
    c, s = math.cos(cam.rot), math.sin(cam.rot)
    wx = cam.x + cam.zoom * (c * xs - s * ys)
    wy = cam.y + cam.zoom * (s * xs + c * ys)
    if cam.breathe_amp:
        wx = wx + cam.breathe_amp * torch.sin(torch.tensor(cam.breathe) + 1.3 * wy)
        wy = wy + cam.breathe_amp * 0.7 * torch.sin(torch.tensor(cam.breathe) * 1.0 + 0.9 * wx + 1.0)
    grid = torch.stack([wx / WORLD_X, wy / WORLD_Y], dim=-1).unsqueeze(0)
    tex = F.grid_sample(world.tex, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    lab = None
    if labels:
        lab = F.grid_sample(world.label, grid, mode="nearest", padding_mode="border", align_corners=True)[0, 0]
    return tex, lab


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of [C,H,W]."""
    if sigma <= 0.05:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-((torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2) / 2)
    k = k / k.sum()
    c = img.shape[0]
    x = img.unsqueeze(0)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def render(
    world: World,
    cam: Camera,
    fov: Field,
    tools: Sequence[Tool],
    fx: Effects,
    width: int,
    height: int,
    gen: torch.Generator,
    cam_prev: Camera | None = None,
    tools_prev: Sequence[Tool | None] | None = None,
    motion_steps: int = 3,
    instances: bool = False,
):
    """One frame: RGB float [3, H, W] in 0..1 and labels long [H, W].

    `cam_prev` / `tools_prev` are the poses one frame earlier: when given, the frame is averaged
    over `motion_steps` poses in between (motion blur). A tool's label is where its averaged
    coverage exceeds one half.

    With `instances=True` it returns (rgb, labels, instances): instances long [H, W] holds, for
    every pixel labelled as a tool, 1 + the index in `tools` of the instrument that gave it its
    label (the topmost one whose coverage exceeds one half), 0 elsewhere; it does not change the
    picture or the labels.
    """
    xs, ys, px = _screen_grid(width, height)

    # Tissue, motion-blurred along the camera path.
    steps = motion_steps if cam_prev is not None else 1
    tissue = None
    for k in range(steps):
        t = 1.0 if steps == 1 else k / (steps - 1)
        c = cam if cam_prev is None else Camera(
            x=cam_prev.x + (cam.x - cam_prev.x) * t,
            y=cam_prev.y + (cam.y - cam_prev.y) * t,
            zoom=cam_prev.zoom + (cam.zoom - cam_prev.zoom) * t,
            rot=cam_prev.rot + (cam.rot - cam_prev.rot) * t,
            breathe=cam_prev.breathe + (cam.breathe - cam_prev.breathe) * t,
            breathe_amp=cam.breathe_amp,
        )
        tex, lab = _sample_world(world, c, xs, ys, labels=(k == steps - 1))
        tissue = tex if tissue is None else tissue + tex
        if lab is not None:
            label = lab.round().long()
    tissue = tissue / steps
    rgb, gloss, flap = tissue[:3], tissue[3], tissue[4]

    # Light: co-located with the lens, falling off from the light centre.
    r_light = torch.sqrt((xs - fov.cx - fx.light[0]) ** 2 + (ys - fov.cy - fx.light[1]) ** 2) / fov.r
    spec = smoothstep(fx.spec_threshold, 1.0, gloss) * torch.exp(-1.6 * r_light * r_light)
    rgb = rgb + 0.9 * spec.unsqueeze(0)

    # Instruments, in order (later ones on top), each motion-blurred along its own path.
    all_alpha = torch.zeros(height, width)
    layers = []
    for i, tool in enumerate(tools):
        prev = tools_prev[i] if tools_prev is not None and i < len(tools_prev) else None
        n = motion_steps if prev is not None else 1
        col = torch.zeros(3, height, width)
        a = torch.zeros(height, width)
        for k in range(n):
            pose = tool if n == 1 else _lerp_tool(prev, tool, k / (n - 1))
            c_k, a_k = _tool_layer(pose, xs, ys, px, fx.spec_s0)
            col += c_k
            a += a_k
        col, a = col / n, a / n
        if tool.behind:  # a tissue flap lies over this instrument
            col = col * (1.0 - flap).unsqueeze(0)
            a = a * (1.0 - flap)
        layers.append((tool, col, a))
        all_alpha = torch.maximum(all_alpha, a)

    # Soft shadows of the instruments on the tissue (light slightly off-axis).
    if layers:
        sh = F.avg_pool2d(all_alpha.view(1, 1, height, width), 9, stride=1, padding=4, count_include_pad=False)[0, 0]
        shift = max(1, int(round(0.02 / px)))
        sh = torch.roll(sh, shifts=(shift, shift), dims=(0, 1))
        rgb = rgb * (1.0 - 0.45 * sh).unsqueeze(0)

    inst = torch.zeros_like(label) if instances else None
    for i, (tool, col, a) in enumerate(layers):
        rgb = col + rgb * (1 - a).unsqueeze(0)
        label = torch.where(a > 0.5, torch.full_like(label, ID[tool.kind]), label)
        if inst is not None:
            inst = torch.where(a > 0.5, torch.full_like(inst, i + 1), inst)

    # Exposure, colour, vignetting.
    r_field = torch.sqrt((xs - fov.cx) ** 2 + (ys - fov.cy) ** 2)
    vig = (1.0 - fx.vignette * (r_field / fov.r).clamp(0, 1.2) ** 2.5).clamp(min=0.05)
    rgb = rgb * fx.gain * torch.tensor(fx.tint).view(3, 1, 1) * vig.unsqueeze(0)

    # Smoke and haze.
    if fx.smoke > 0:
        sgrid = torch.stack(
            [(xs / ASPECT * 0.8 + fx.smoke_shift[0]), (ys * 0.8 + fx.smoke_shift[1])], dim=-1
        ).unsqueeze(0)
        dens = F.grid_sample(world.smoke, sgrid, mode="bilinear", padding_mode="reflection", align_corners=False)[0, 0]
        a = (fx.smoke * (0.25 + 1.1 * dens)).clamp(0, 0.75)
        smoke_c = torch.tensor((0.86, 0.84, 0.82)).view(3, 1, 1) * min(1.0, fx.gain)
        rgb = rgb * (1 - a).unsqueeze(0) + smoke_c * a.unsqueeze(0)
    if fx.haze > 0:
        rgb = rgb * (1 - fx.haze) + fx.haze * rgb.mean(dim=(1, 2), keepdim=True) + 0.05 * fx.haze

    rgb = _blur(rgb, fx.defocus)

    # The circular field: black outside, soft edge.
    edge = ((fov.r - r_field) / (1.5 * px) + 0.5).clamp(0, 1)
    rgb = rgb * edge.unsqueeze(0)
    label = torch.where(r_field > fov.r, torch.zeros_like(label), label)
    if inst is not None:
        inst = torch.where(r_field > fov.r, torch.zeros_like(inst), inst)

    if fx.noise > 0:
        rgb = rgb + fx.noise * torch.randn(3, height, width, generator=gen)
    if inst is not None:
        return rgb.clamp(0, 1), label, inst
    return rgb.clamp(0, 1), label


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """[3,H,W] float 0..1 -> [H,W,3] uint8."""
    return (rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
