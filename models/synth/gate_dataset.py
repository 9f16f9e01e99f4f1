"""Random in-body / out-of-body frames for the privacy gate (SYNTHETIC, see scene.py and outside.py).

Each *unit* is one seed: a tissue world (scene.py, as dataset.py makes them), an operating room
(outside.py) and the passages between them through the room's port. From a unit come

* in-body frames: random cameras, instruments and effects as dataset.py draws them, a good share
  of them made hard on purpose (the frames a gate must not redact): thick smoke, dark, over-bright
  with glare, out of focus or motion-blurred, tissue very close, lens fog, instruments filling the
  view, no circular field;
* out-of-body frames: random views of the room (staff and faces, monitors, lamps, the patient,
  instrument tables, gauze at the lens, gloves, drapes, a dimmed room);
* passage frames at random progress through the trocar (outside.transition), with its ground
  truth, more of them near the moment the lens enters the port.

Every frame goes the way the engine will see it: rendered at 256x144 (15 % at 640x360), brought
to 640x360 (bilinear), JPEG-compressed at a random quality in 60..95 (4:2:0 chroma mostly), decoded at 1/8
scale by libjpeg's DCT scaling (Pillow's draft mode: 640x360 -> 80x45, each 8x8 block's mean)
and kept at 80x45; training resizes that to 64x64 (bilinear, stretched) as the engine does.

Train and held-out sets use disjoint unit seeds, so held-out worlds and rooms are never seen in
training. Everything is seeded; frames are rendered with one torch thread.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dataset import random_frame
from outside import (
    P_IN,
    VIEW_KINDS,
    Field,
    RoomFx,
    is_out_of_body,
    lens,
    make_room,
    random_passage,
    random_room_frame,
    transition,
)
from scene import Tool, make_world, random_layout, random_palette, render, to_uint8, _screen_grid

TRAIN_SEED_BASE = 20_000
TEST_SEED_BASE = 920_000
ROOM_SEED_OFFSET = 1_000_000
ENGINE_W, ENGINE_H = 640, 360  # the video the engine ingests
SMALL_W, SMALL_H = ENGINE_W // 8, ENGINE_H // 8  # its JPEG decoded at 1/8 scale: 80x45
RENDER_W, RENDER_H = 256, 144  # most frames are rendered this size (cheaper), then brought to 640x360
FULL_SIZE_SHARE = 0.15  # the others at 640x360

IN_KINDS = ("normal", "smoke", "dark", "glare", "blur", "close", "fog", "tools", "wide")
IN_P = (0.36, 0.1, 0.1, 0.08, 0.09, 0.08, 0.06, 0.08, 0.05)
# every frame's kind, for the per-kind figures: in-body kinds, room views, passage stages
KINDS = tuple(f"in:{k}" for k in IN_KINDS) + tuple(f"out:{k}" for k in VIEW_KINDS) + (
    "passage:tissue", "passage:cannula", "passage:housing", "passage:above_port", "passage:turn")


@dataclass
class GateSetSpec:
    units: int
    inbody: int  # in-body frames per unit
    room: int  # room frames per unit
    passage: int  # passage frames per unit (two passages)
    seed_base: int
    world_ppu: float = 100.0
    room_ppu: float = 80.0


def engine_small(rgb: torch.Tensor, quality: int, subsampling: int) -> np.ndarray:
    """A rendered frame as the engine gets it: brought to 640x360, JPEG at `quality`, decoded at
    1/8 scale by libjpeg's DCT scaling. Returns uint8 [45, 80, 3]."""
    if rgb.shape[1:] != (ENGINE_H, ENGINE_W):
        rgb = F.interpolate(rgb.unsqueeze(0), size=(ENGINE_H, ENGINE_W), mode="bilinear", align_corners=False)[0]
    data = jpeg(to_uint8(rgb).numpy(), quality, subsampling)
    return decode_eighth(data)


def jpeg(img: np.ndarray, quality: int, subsampling: int = 2) -> bytes:
    """JPEG bytes of an RGB uint8 picture (subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=subsampling)
    return buf.getvalue()


def decode_eighth(data: bytes) -> np.ndarray:
    """Decodes a JPEG at 1/8 scale (libjpeg DCT scaling, as the engine does): uint8 [H/8, W/8, 3]."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    im.draft("RGB", ((w + 7) // 8, (h + 7) // 8))
    im = im.convert("RGB")
    assert im.size == ((w + 7) // 8, (h + 7) // 8), im.size
    return np.asarray(im)


def decode_full_area64(data: bytes) -> np.ndarray:
    """The other way an engine could do it: full decode, then an area (box) resize to 64x64."""
    im = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    x = torch.from_numpy(im.copy()).permute(2, 0, 1).float().unsqueeze(0)
    x = F.interpolate(x, size=(64, 64), mode="area")[0]
    return (x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)).numpy()


def _fog(rgb: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    xs, ys, px = _screen_grid(rgb.shape[2], rgb.shape[1])
    return lens(rgb, xs, ys, px, RoomFx(fog=amount, vignette=0.0, noise=0.0, field=None), rgb.shape[2], gen)


def hard_inbody(rng: np.random.Generator, layout, kind: str) -> dict:
    """dataset.random_frame, then made hard in the way `kind` says."""
    p = random_frame(rng, layout)
    fx, cam, fov = p["fx"], p["cam"], p["fov"]
    p["fog"] = 0.0
    if kind == "smoke":
        fx.smoke = float(rng.uniform(0.35, 0.75))
        fx.haze = float(rng.uniform(0.15, 0.6))
    elif kind == "dark":
        fx.gain = float(rng.uniform(0.12, 0.45))
        fx.noise = float(rng.uniform(0.0, 0.05))
    elif kind == "glare":
        fx.gain = float(rng.uniform(1.3, 2.2))
        fx.spec_threshold = float(rng.uniform(0.0, 0.12))
        fx.light = (float(rng.normal(0, 0.3)), float(rng.normal(0, 0.3)))
    elif kind == "blur":
        fx.defocus = float(rng.uniform(2.0, 7.0))
        if rng.random() < 0.5:
            p["cam_prev"] = replace(cam, x=cam.x + float(rng.normal(0, 0.25)) * cam.zoom,
                                    y=cam.y + float(rng.normal(0, 0.25)) * cam.zoom)
    elif kind == "close":
        cam.zoom = float(rng.uniform(0.1, 0.35))
        if rng.random() < 0.5:
            fx.defocus = float(rng.uniform(1.0, 4.0))
        fx.gain *= float(rng.uniform(0.9, 1.5))  # close tissue is lit strongly
    elif kind == "fog":
        p["fog"] = float(rng.uniform(0.2, 0.7))
    elif kind == "tools":
        tools = []
        for t in p["tools"] or [Tool(kind=str(rng.choice(["grasper", "hook", "clip_applier", "scissors", "irrigator"])),
                                      tip=(0.0, 0.0), fulcrum=(2.5, 1.5))]:
            tools.append(replace(t, width=float(rng.uniform(0.3, 0.6)),
                                 tip=(float(rng.normal(0, 0.4)), float(rng.normal(0, 0.3)))))
        p["tools"] = tools
        p["tools_prev"] = None
    elif kind == "wide":
        p["fov"] = Field(fov.cx, fov.cy, float(rng.uniform(1.9, 2.4)))
    return p


def _passage_progress(rng: np.random.Generator) -> float:
    r = rng.random()
    if r < 0.3:
        return float(rng.uniform(0.0, P_IN))
    if r < 0.4:  # about to enter the cannula
        return float(rng.uniform(P_IN - 0.03, P_IN))
    if r < 0.55:  # just in it: its wall a thin bright ring around the tissue
        return float(rng.uniform(P_IN, P_IN + 0.02))
    return float(rng.uniform(P_IN, 1.0))


def _passage_kind(progress: float) -> str:
    from outside import P_EXIT, P_HOUSING, P_TURN

    if progress < P_IN:
        return "passage:tissue"
    if progress < P_HOUSING:
        return "passage:cannula"
    if progress < P_EXIT:
        return "passage:housing"
    if progress < P_TURN:
        return "passage:above_port"
    return "passage:turn"


def render_unit(args: tuple) -> dict:
    """All frames of one unit: small [N, 45, 80, 3] uint8, label [N] (1 = out of body), kind [N],
    and for held-out sets also the full-decode variant area64 [N, 64, 64, 3]."""
    seed, spec, variants = args
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    layout = random_layout(rng)
    world = make_world(layout, random_palette(rng), seed=seed, ppu=spec.world_ppu)
    room = make_room(seed + ROOM_SEED_OFFSET, ppu=spec.room_ppu)
    frames: list[tuple[torch.Tensor, int, str]] = []

    def size() -> tuple[int, int]:
        return (ENGINE_W, ENGINE_H) if rng.random() < FULL_SIZE_SHARE else (RENDER_W, RENDER_H)

    for _ in range(spec.inbody):
        kind = str(rng.choice(IN_KINDS, p=IN_P))
        p = hard_inbody(rng, layout, kind)
        w, h = size()
        p["fx"].defocus *= w / 320  # dataset.py's blur is in pixels of a 320-wide frame
        rgb, _ = render(world, p["cam"], p["fov"], p["tools"], p["fx"], w, h, gen, p["cam_prev"], p["tools_prev"])
        if p["fog"] > 0:
            rgb = _fog(rgb, p["fog"], gen)
        frames.append((rgb, 0, f"in:{kind}"))
    for _ in range(spec.room):
        w, h = size()
        rgb, kind = random_room_frame(rng, room, w, h, gen)
        frames.append((rgb, 1, f"out:{kind}"))
    for k in range(2):
        passage = random_passage(rng, layout, room)
        for _ in range(spec.passage // 2):
            prog = _passage_progress(rng)
            w, h = size()
            prev = prog - float(rng.uniform(0.005, 0.03)) if rng.random() < 0.5 else None
            rgb, out, _ = transition(prog, passage, world, room, w, h, gen, progress_prev=prev)
            assert out == is_out_of_body(prog)
            frames.append((rgb, int(out), _passage_kind(prog)))

    n = len(frames)
    small = np.zeros((n, SMALL_H, SMALL_W, 3), np.uint8)
    area = np.zeros((n, 64, 64, 3), np.uint8) if variants else None
    label = np.zeros(n, np.uint8)
    kinds = np.zeros(n, np.uint8)
    for i, (rgb, lab, kind) in enumerate(frames):
        q = int(rng.integers(60, 96))
        sub = 2 if rng.random() < 0.8 else int(rng.choice([0, 1]))
        if rgb.shape[1:] != (ENGINE_H, ENGINE_W):
            rgb = F.interpolate(rgb.unsqueeze(0), size=(ENGINE_H, ENGINE_W), mode="bilinear", align_corners=False)[0]
        data = jpeg(to_uint8(rgb).numpy(), q, sub)
        small[i] = decode_eighth(data)
        if variants:
            area[i] = decode_full_area64(data)
        label[i] = lab
        kinds[i] = KINDS.index(kind)
    out = {"small": small, "label": label, "kind": kinds, "unit": np.full(n, seed, np.int64)}
    if variants:
        out["area64"] = area
    return out


def build_gate_set(spec: GateSetSpec, variants: bool = False, workers: int = 1, log=print) -> dict:
    jobs = [(spec.seed_base + u, spec, variants) for u in range(spec.units)]
    parts = []
    if workers <= 1:
        results = map(render_unit, jobs)
    else:
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap(render_unit, jobs)
    for k, r in enumerate(results):
        parts.append(r)
        if (k + 1) % 10 == 0 or k + 1 == len(jobs):
            log(f"  units {k + 1}/{len(jobs)}")
    if workers > 1:
        pool.close()
        pool.join()
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
