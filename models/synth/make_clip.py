#!/usr/bin/env python3
"""Renders orstream's demo clip: a scripted SYNTHETIC laparoscopic video with its ground truth.

    .venv/bin/python models/synth/make_clip.py     # (models/build_all.py runs this for you)

Writes
  models/demo/clip.mp4            640x360, 12 fps, 72 s, H.264 (libx264 from imageio-ffmpeg's
                                  bundled ffmpeg), yuv420p, MP4 with the index up front;
  models/demo/clip.timeline.json  the ground-truth timeline: for each tool and organ, the
                                  intervals in which it is visible (see VISIBLE_FRACTION), plus
                                  the script the clip was made from;
  models/.cache/clip-labels.npy   per-frame label maps (not committed; used by the evaluation).

The scene: one fixed world (liver with the gallbladder under its edge, fat below, the abdominal
wall above, other tissue around) seen through a circular field; the camera holds, pans down to
the fat, up to the abdominal wall, left over other tissue and back to the gallbladder; five
kinds of instrument enter and leave through the field's edge, at times two together, one passing
under a fat flap; cautery smoke while the hook works, exposure and colour drift, a defocus.

Ground truth follows what is visible, not the script: a class counts as visible in a frame when
its pixels in the 640x360 label map exceed VISIBLE_FRACTION of the frame (0.5 %, 1152 pixels).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scene import (  # noqa: E402
    CATEGORY,
    ID,
    NAMES,
    NUM_CLASSES,
    Band,
    Blob,
    Camera,
    Effects,
    Field,
    Layout,
    Palette,
    Tool,
    make_world,
    render,
    to_uint8,
)

WIDTH, HEIGHT = 640, 360
FPS = 12
DURATION_S = 72.0
FRAMES = int(round(FPS * DURATION_S))
VISIBLE_FRACTION = 0.005
SEED = 7
PPU = 240.0
CRF = 23
OUT = HERE.parent / "demo"
CACHE = HERE.parent / ".cache"

LAYOUT = Layout(
    wall=Band(-1.5, True, [(1.3, 0.12, 0.4), (2.7, 0.06, 1.9)]),
    fat=Band(1.35, False, [(1.1, 0.15, 2.0), (2.3, 0.07, 0.3)]),
    liver=[
        Blob(0.6, -0.45, 2.0, 0.85, 0.12, [(2, 0.06, 0.5), (3, 0.05, 1.2), (5, 0.02, 0.3)]),
        Blob(1.9, -0.2, 0.9, 0.55, -0.3, [(3, 0.08, 0.7)]),
    ],
    gallbladder=Blob(0.05, 0.42, 0.62, 0.3, -0.3, [(1, 0.12, math.pi), (2, 0.04, 1.0)]),
    fat_blobs=[
        Blob(1.6, 0.8, 0.35, 0.22, 0.4, [(3, 0.08, 0.2)]),
        Blob(-2.2, 0.85, 0.32, 0.2, 1.0, [(3, 0.1, 0.1)]),
    ],
    flaps=[Blob(-0.38, 0.6, 0.32, 0.18, 0.3, [(3, 0.08, 1.0)])],
)
FIELD = Field(0.0, 0.0, 1.12)

# Camera keyframes: (time s, x, y, zoom, rotation); eased in between, so equal neighbours hold.
CAMERA_KEYS = [
    (0.0, 0.25, -0.05, 0.75, 0.0),
    (12.0, 0.15, 0.05, 0.75, 0.03),
    (16.0, 0.0, 0.78, 0.78, 0.05),  # pan down: the fat comes into view
    (27.0, 0.1, 0.82, 0.78, 0.0),
    (33.0, 0.5, -1.1, 0.8, -0.05),  # pan up to the abdominal wall: gallbladder and fat leave
    (43.0, 0.8, -1.15, 0.85, -0.1),
    (45.5, -1.2, -1.0, 0.82, -0.05),  # along the wall to the left,
    (48.5, -2.45, 0.4, 0.8, 0.0),  # then down over other tissue: liver and wall leave
    (57.0, -2.5, 0.5, 0.8, 0.05),
    (62.0, 0.15, 0.4, 0.68, 0.0),  # back to the gallbladder, closer
    (72.0, 0.2, 0.36, 0.68, 0.0),
]


@dataclass
class Appearance:
    """One scripted tool appearance. The tip travels from the fulcrum (outside the field) to
    its target in `insert_s`, works there (wiggling, jaws moving), and leaves the same way in
    `retract_s` before `leave`. A target is ("world", x, y): fixed on the tissue, following the
    camera, or ("screen", x, y)."""

    kind: str
    enter: float
    leave: float
    fulcrum_deg: float
    target: tuple[str, float, float]
    width: float = 0.16
    wiggle: float = 0.05
    jaw_hz: float = 0.35
    side: float = 1.0
    loaded: bool = False
    behind: bool = False
    insert_s: float = 1.2
    retract_s: float = 1.0
    seed: int = 0


SCRIPT = [
    Appearance("grasper", 3.0, 21.0, 145, ("world", 0.0, 0.3), seed=1),
    Appearance("hook", 7.0, 19.0, 12, ("world", 0.35, 0.35), width=0.14, wiggle=0.04, seed=2),
    Appearance("clip_applier", 23.0, 31.5, -18, ("screen", 0.35, 0.12), width=0.17, loaded=True, jaw_hz=0.2, seed=3),
    Appearance("grasper", 25.5, 40.0, 155, ("screen", -0.35, 0.25), seed=4),
    Appearance("scissors", 35.5, 46.0, -52, ("screen", 0.18, -0.18), width=0.15, jaw_hz=0.5, seed=5),
    Appearance("irrigator", 49.5, 59.0, 188, ("screen", -0.12, 0.1), width=0.17, wiggle=0.12, seed=6),
    Appearance("hook", 54.0, 66.5, 22, ("screen", 0.32, 0.22), width=0.14, side=-1.0, wiggle=0.04, seed=7),
    Appearance("grasper", 61.5, 69.5, 160, ("world", 0.42, 0.47), behind=True, wiggle=0.04, seed=8),
]

# Cautery smoke while the hook works: (start, peak, end) in seconds, peak density.
SMOKE = [((9.0, 14.0, 23.0), 0.4), ((59.0, 63.5, 70.0), 0.32)]


def ease(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * (3 - 2 * s)


def camera_at(t: float) -> Camera:
    keys = CAMERA_KEYS
    for (t0, *a), (t1, *b) in zip(keys, keys[1:]):
        if t0 <= t <= t1:
            e = ease((t - t0) / (t1 - t0))
            x, y, z, r = (av + (bv - av) * e for av, bv in zip(a, b))
            break
    else:
        _, x, y, z, r = keys[-1]
    return Camera(x=x, y=y, zoom=z, rot=r, breathe=2 * math.pi * t / 4.2, breathe_amp=0.01)


def world_to_screen(cam: Camera, wx: float, wy: float) -> tuple[float, float]:
    dx, dy = (wx - cam.x) / cam.zoom, (wy - cam.y) / cam.zoom
    c, s = math.cos(cam.rot), math.sin(cam.rot)
    return (c * dx + s * dy, -s * dx + c * dy)


def tool_at(a: Appearance, t: float) -> Tool | None:
    if not (a.enter <= t <= a.leave):
        return None
    ang = math.radians(a.fulcrum_deg)
    fulcrum = (FIELD.cx + 1.95 * math.cos(ang), FIELD.cy + 1.95 * math.sin(ang))
    kind, x, y = a.target
    target = world_to_screen(camera_at(t), x, y) if kind == "world" else (x, y)
    rng = np.random.default_rng(a.seed)
    p = rng.uniform(0, 2 * math.pi, 4)
    f = rng.uniform(0.15, 0.45, 2)
    target = (
        target[0] + a.wiggle * math.sin(2 * math.pi * f[0] * t + p[0]),
        target[1] + a.wiggle * math.sin(2 * math.pi * f[1] * t + p[1]),
    )
    depth = min(ease((t - a.enter) / a.insert_s), ease((a.leave - t) / a.retract_s))
    if depth <= 1e-3:
        return None  # still at the fulcrum, outside the field
    tip = (fulcrum[0] + (target[0] - fulcrum[0]) * depth, fulcrum[1] + (target[1] - fulcrum[1]) * depth)
    opening = 0.5 + 0.5 * math.sin(2 * math.pi * a.jaw_hz * t + p[2])
    return Tool(kind=a.kind, tip=tip, fulcrum=fulcrum, width=a.width, opening=opening, side=a.side,
                loaded=a.loaded, behind=a.behind, gloss=1.0, brightness=1.0)


def effects_at(t: float) -> Effects:
    smoke = 0.0
    for (t0, tp, t1), peak in SMOKE:
        if t0 <= t <= tp:
            smoke = max(smoke, peak * ease((t - t0) / (tp - t0)))
        elif tp < t <= t1:
            smoke = max(smoke, peak * (1 - ease((t - tp) / (t1 - tp))))
    gain = 1.0 + 0.1 * math.sin(2 * math.pi * t / 19.0)
    gain *= 1.0 + 0.18 * math.exp(-(((t - 34.0) / 3.0) ** 2))  # close to the wall: too bright
    gain *= 1.0 - 0.25 * math.exp(-(((t - 47.5) / 1.2) ** 2))  # a dip while the camera turns
    warm = 0.04 * math.sin(2 * math.pi * t / 50.0)
    defocus = 1.8 * math.exp(-(((t - 51.0) / 0.8) ** 2))
    return Effects(
        gain=gain,
        tint=(1.0 + warm, 1.0, 1.0 - warm),
        vignette=0.45,
        light=(0.05 * math.sin(t / 7.0), 0.04 * math.cos(t / 5.0)),
        smoke=smoke,
        smoke_shift=(0.025 * t, -0.018 * t),
        haze=0.25 * smoke,
        noise=0.006,
        defocus=defocus if defocus > 0.1 else 0.0,
        spec_threshold=0.25,
        spec_s0=-0.3 + 0.2 * math.sin(t / 3.0),
    )


def intervals(visible: np.ndarray) -> list[dict]:
    out = []
    for cid, name in enumerate(NAMES):
        if CATEGORY[name] == "background":
            continue
        v = visible[:, cid]
        f = 0
        while f < len(v):
            if v[f]:
                g = f
                while g + 1 < len(v) and v[g + 1]:
                    g += 1
                out.append({
                    "label": name,
                    "category": CATEGORY[name],
                    "start_s": round(f / FPS, 4),
                    "end_s": round((g + 1) / FPS, 4),
                    "start_frame": f,
                    "end_frame": g,
                })
                f = g + 1
            else:
                f += 1
    out.sort(key=lambda r: (r["start_s"], r["label"]))
    return out


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encoder_cmd(path: Path, width: int = WIDTH, height: int = HEIGHT, fps: int = FPS) -> list[str]:
    """ffmpeg reading raw RGB frames on stdin and writing H.264 (High, yuv420p) in MP4, index up
    front, bit-exact (the same bytes on the same machine)."""
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "-",
        "-c:v", "libx264", "-preset", "slow", "-crf", str(CRF), "-pix_fmt", "yuv420p", "-profile:v", "high",
        "-g", str(2 * fps), "-threads", "1", "-x264-params", "threads=1",
        "-movflags", "+faststart", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-f", "mp4", str(path),
    ]


def decode_frames(path: Path, width: int, height: int):
    """Every frame of a video, decoded by the same ffmpeg, as uint8 RGB arrays [height, width, 3]."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    size = width * height * 3
    while True:
        buf = proc.stdout.read(size)
        if len(buf) < size:
            break
        yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    proc.wait()


def timeline_text(timeline: dict) -> str:
    """The timeline as JSON, the per-frame area lists on one line each."""
    import re

    text = json.dumps(timeline, indent=1)
    text = re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: "[" + ",".join(s.strip() for s in m.group(1).split(",")) + "]", text)
    return text + "\n"


def main() -> None:
    torch.set_num_threads(1)  # also keeps the rendering bit-for-bit repeatable
    t_start = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    world = make_world(LAYOUT, Palette(), seed=SEED, ppu=PPU)
    gen = torch.Generator().manual_seed(SEED)
    mp4 = OUT / "clip.mp4"
    tmp = mp4.with_suffix(".tmp.mp4")
    enc = subprocess.Popen(encoder_cmd(tmp), stdin=subprocess.PIPE)
    labels = np.lib.format.open_memmap(CACHE / "clip-labels.tmp.npy", mode="w+", dtype=np.uint8,
                                       shape=(FRAMES, HEIGHT, WIDTH))
    areas = np.zeros((FRAMES, NUM_CLASSES), np.int64)
    shutter = 0.5 / FPS
    for i in range(FRAMES):
        t = i / FPS
        cam, cam_prev = camera_at(t), camera_at(max(0.0, t - shutter))
        moving_cam = abs(cam.x - cam_prev.x) + abs(cam.y - cam_prev.y) > 0.004
        tools, prevs = [], []
        for a in SCRIPT:
            tool = tool_at(a, t)
            if tool is None:
                continue
            prev = tool_at(a, max(a.enter, t - shutter))
            moved = prev is not None and math.dist(prev.tip, tool.tip) > 0.01
            tools.append(tool)
            prevs.append(prev if moved else None)
        rgb, lab = render(world, cam, FIELD, tools, effects_at(t), WIDTH, HEIGHT, gen,
                          cam_prev if moving_cam else None, prevs if any(p is not None for p in prevs) else None)
        enc.stdin.write(to_uint8(rgb).numpy().tobytes())
        lab_np = lab.numpy().astype(np.uint8)
        labels[i] = lab_np
        areas[i] = np.bincount(lab_np.ravel(), minlength=NUM_CLASSES)
        if (i + 1) % 120 == 0:
            print(f"  frame {i + 1}/{FRAMES} ({time.time() - t_start:.0f} s)", flush=True)
    enc.stdin.close()
    if enc.wait() != 0:
        raise SystemExit("ffmpeg failed")
    tmp.rename(mp4)
    labels.flush()
    del labels
    (CACHE / "clip-labels.tmp.npy").rename(CACHE / "clip-labels.npy")

    threshold = VISIBLE_FRACTION * WIDTH * HEIGHT
    visible = areas > threshold
    timeline = {
        "synthetic": True,
        "note": "Synthetic laparoscopic scene rendered by models/synth/make_clip.py; not real surgery.",
        "video": mp4.name,
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "frame_count": FRAMES,
        "duration_s": DURATION_S,
        "visibility": {
            "rule": "a class is visible in a frame when its ground-truth pixel count in the "
                    f"{WIDTH}x{HEIGHT} label map exceeds visible_fraction of the frame's pixels",
            "visible_fraction": VISIBLE_FRACTION,
            "min_pixels": int(threshold) + 1,
            "interval": "a maximal run of visible frames; start_s = start_frame / fps, "
                        "end_s = (end_frame + 1) / fps (end_frame inclusive)",
        },
        "intervals": intervals(visible),
        "script": [
            {"label": a.kind, "category": "tool", "enter_s": a.enter, "leave_s": a.leave, "under_tissue": a.behind}
            for a in SCRIPT
        ],
        "frame_area_fraction": {
            name: [round(float(v), 4) for v in areas[:, cid] / (WIDTH * HEIGHT)]
            for cid, name in enumerate(NAMES)
            if CATEGORY[name] != "background"
        },
    }
    path = OUT / "clip.timeline.json"
    path.write_text(timeline_text(timeline))
    short = [r for r in timeline["intervals"] if r["end_s"] - r["start_s"] < 1.0]
    for r in timeline["intervals"]:
        print(f"  {r['label']:15s} {r['start_s']:6.2f} - {r['end_s']:6.2f} s")
    if short:
        print(f"WARNING: {len(short)} intervals shorter than 1 s: {short}", flush=True)
    print(f"wrote {mp4} ({mp4.stat().st_size} bytes, {FRAMES} frames) and {path.name} "
          f"in {time.time() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
