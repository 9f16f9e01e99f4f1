"""Random synthetic training / held-out frames (SYNTHETIC, see scene.py).

Each *scene* is one random world (layout, palette, textures) from which a number of frames are
drawn with random camera, field, instruments (0-3, distinct kinds), motion, smoke, lighting and
sensor effects. Train and held-out sets use disjoint scene seeds, so the held-out worlds are
never seen in training.

A quarter of the frames are rendered at the clip's 640x360 and resized to the model size like an
engine would (bilinear, with or without antialiasing); most are JPEG-compressed at a random
quality, as the engine carries frames as JPEG.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from scene import (
    ASPECT,
    TOOLS,
    Camera,
    Effects,
    Field,
    Tool,
    make_world,
    random_layout,
    random_palette,
    render,
    to_uint8,
)

TRAIN_SEED_BASE = 10_000
TEST_SEED_BASE = 900_000


@dataclass
class SetSpec:
    scenes: int
    frames_per_scene: int
    seed_base: int
    width: int = 320
    height: int = 192
    ppu: float = 150.0


def _random_tool(rng: np.random.Generator, kind: str, fov: Field) -> Tool:
    theta = rng.uniform(0, 2 * math.pi)
    fr = rng.uniform(1.6, 3.0) * fov.r
    fulcrum = (fov.cx + fr * math.cos(theta) * ASPECT / 1.4, fov.cy + fr * math.sin(theta))
    if rng.random() < 0.2:
        # entering / leaving: the tip near the field's edge on the fulcrum's side
        a = theta + rng.normal(0, 0.35)
        rr = rng.uniform(0.8, 1.05) * fov.r
    else:
        a = rng.uniform(0, 2 * math.pi)
        rr = math.sqrt(rng.uniform(0, 1)) * 0.8 * fov.r
    tip = (fov.cx + rr * math.cos(a), fov.cy + rr * math.sin(a))
    return Tool(
        kind=kind,
        tip=tip,
        fulcrum=fulcrum,
        width=float(rng.uniform(0.11, 0.24)),
        opening=float(0.0 if rng.random() < 0.35 else rng.uniform(0, 1)),
        side=float(rng.choice([-1.0, 1.0])),
        loaded=bool(rng.random() < 0.5),
        behind=bool(rng.random() < 0.35),
        gloss=float(rng.uniform(0.5, 1.2)),
        brightness=float(rng.uniform(0.75, 1.2)),
    )


def random_frame(rng: np.random.Generator, layout) -> dict:
    """Random camera, field, instruments and effects for one frame of a scene."""
    zoom = float(rng.uniform(0.5, 1.1))
    where = rng.random()
    if where < 0.5:  # around the gallbladder
        gb = layout.gallbladder
        cx = gb.cx + rng.normal(0, 0.7)
        cy = gb.cy + rng.normal(0, 0.5)
    elif where < 0.7:  # looking up at the abdominal wall
        cx, cy = rng.uniform(-2.6, 2.6), layout.wall.y0 + rng.normal(0.3, 0.4)
    else:
        cx, cy = rng.uniform(-2.6, 2.6), rng.uniform(-1.4, 1.4)
    cam = Camera(
        x=float(np.clip(cx, -2.6, 2.6)),
        y=float(np.clip(cy, -1.4, 1.4)),
        zoom=zoom,
        rot=float(rng.uniform(-0.7, 0.7)),
        breathe=float(rng.uniform(0, 2 * math.pi)),
        breathe_amp=float(rng.uniform(0, 0.02)),
    )
    cam_prev = None
    if rng.random() < 0.15:
        cam_prev = Camera(cam.x + rng.normal(0, 0.04) * zoom, cam.y + rng.normal(0, 0.04) * zoom, zoom, cam.rot,
                          cam.breathe, cam.breathe_amp)
    r = float(rng.uniform(0.95, 1.6)) if rng.random() < 0.9 else 2.2
    fov = Field(cx=float(rng.normal(0, 0.04)), cy=float(rng.normal(0, 0.03)), r=r)
    n = int(rng.choice([0, 1, 2, 3], p=[0.06, 0.27, 0.42, 0.25]))
    kinds = list(rng.choice(TOOLS, size=n, replace=False))
    tools = [_random_tool(rng, str(k), fov) for k in kinds]
    tools_prev = []
    for t in tools:
        if rng.random() < 0.3:
            s = rng.uniform(0.02, 0.12)
            tools_prev.append(Tool(**{**vars(t), "tip": (t.tip[0] + rng.normal(0, s), t.tip[1] + rng.normal(0, s))}))
        else:
            tools_prev.append(None)
    fx = Effects(
        gain=float(rng.uniform(0.65, 1.3)),
        tint=tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)),
        vignette=float(rng.uniform(0.2, 0.6)),
        light=(float(rng.normal(0, 0.15)), float(rng.normal(0, 0.15))),
        smoke=float(rng.uniform(0.05, 0.5)) if rng.random() < 0.25 else 0.0,
        smoke_shift=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
        haze=float(rng.uniform(0, 0.35)) if rng.random() < 0.15 else 0.0,
        noise=float(rng.uniform(0, 0.03)),
        defocus=float(rng.uniform(0.3, 1.5)) if rng.random() < 0.3 else 0.0,
        spec_threshold=float(rng.uniform(0.15, 0.4)),
        spec_s0=float(rng.uniform(-0.6, 0.6)),
    )
    return dict(cam=cam, cam_prev=cam_prev, fov=fov, tools=tools,
                tools_prev=tools_prev if any(p is not None for p in tools_prev) else None, fx=fx)


def render_scene(args: tuple[int, int, int, int, float]) -> tuple[np.ndarray, np.ndarray]:
    """All frames of one scene: uint8 images [N, H, W, 3] and labels [N, H, W]."""
    seed, frames, width, height, ppu = args
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    layout = random_layout(rng)
    world = make_world(layout, random_palette(rng), seed=seed, ppu=ppu)
    imgs = np.zeros((frames, height, width, 3), np.uint8)
    labs = np.zeros((frames, height, width), np.uint8)
    for i in range(frames):
        p = random_frame(rng, layout)
        mode = rng.random()
        if mode < 0.75:
            rgb, lab = render(world, p["cam"], p["fov"], p["tools"], p["fx"], width, height, gen,
                              p["cam_prev"], p["tools_prev"])
        else:
            p["fx"].defocus *= 2
            rgb, lab = render(world, p["cam"], p["fov"], p["tools"], p["fx"], 640, 360, gen,
                              p["cam_prev"], p["tools_prev"])
            rgb = (rgb * 255).round() / 255  # quantised like a decoded frame
            rgb = F.interpolate(rgb.unsqueeze(0), size=(height, width), mode="bilinear",
                                align_corners=False, antialias=bool(mode < 0.88))[0]
            lab = F.interpolate(lab.view(1, 1, 360, 640).float(), size=(height, width), mode="nearest")[0, 0].long()
        img = to_uint8(rgb)
        if rng.random() < 0.7:
            q = int(rng.integers(35, 96))
            img = decode_jpeg(encode_jpeg(img.permute(2, 0, 1).contiguous(), quality=q)).permute(1, 2, 0)
        imgs[i] = img.numpy()
        labs[i] = lab.numpy().astype(np.uint8)
    return imgs, labs


def build_set(spec: SetSpec, workers: int = 2, log=print) -> tuple[np.ndarray, np.ndarray]:
    jobs = [(spec.seed_base + s, spec.frames_per_scene, spec.width, spec.height, spec.ppu) for s in range(spec.scenes)]
    imgs, labs = [], []
    if workers <= 1:
        results = map(render_scene, jobs)
    else:
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap(render_scene, jobs)
    for k, (im, lb) in enumerate(results):
        imgs.append(im)
        labs.append(lb)
        if (k + 1) % 20 == 0 or k + 1 == len(jobs):
            log(f"  scenes {k + 1}/{len(jobs)}")
    if workers > 1:
        pool.close()
        pool.join()
    return np.concatenate(imgs), np.concatenate(labs)
