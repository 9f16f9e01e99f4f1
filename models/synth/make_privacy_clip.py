#!/usr/bin/env python3
"""Renders orstream's privacy demo clip: a scripted SYNTHETIC laparoscopy video with out-of-body
stretches (the scope in the operating room), and its ground truth.

    .venv/bin/python models/synth/make_privacy_clip.py   # (models/build_all.py --gate runs this for you)

Writes
  models/demo/privacy.mp4            640x360, 12 fps, 54 s, H.264 (High, yuv420p) in MP4, encoded
                                     exactly as make_clip.py encodes the demo clip;
  models/demo/privacy.timeline.json  the ground-truth timeline in clip.timeline.json's format (tools
                                     and organs visible per VISIBLE_FRACTION, from the in-body label
                                     maps; nothing is visible in out-of-body frames), plus
                                     `out_of_body` (maximal stretches of out-of-body frames) and
                                     `out_of_body_frames`;
  models/demo/privacy.tracks.json    ground-truth tool tracks, in clip.tracks.json's format;
  models/.cache/privacy-labels.npy   per-frame label maps (not committed).

The story (times in PHASES): the scope starts in the room before insertion (a monitor with names,
staff faces, a surgical lamp), turns down to the port on the patient's drapes and goes through the
trocar into the abdomen; the body of the demo clip (same world) with a grasper and a hook, cautery
smoke; a withdrawal for lens cleaning: back through the trocar, a few seconds in the room (faces, a
screen, gauze wiping the lens held by a gloved hand), back in through the port; a clip applier and
scissors; a final withdrawal, ending in the room.

Ground truth: a frame is out of body from the frame in which the cannula's wall shows in the field
(outside.is_out_of_body: the lens has left the tissue) until it is back among tissue; every room
frame is out of body.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clip_tracks import build_tracks, write_tracks  # noqa: E402
from make_clip import (  # noqa: E402
    CACHE,
    FIELD,
    FPS,
    LAYOUT,
    OUT,
    PPU,
    SEED,
    VISIBLE_FRACTION,
    Appearance,
    ease,
    encoder_cmd,
    intervals,
    timeline_text,
    tool_at,
)
from outside import (  # noqa: E402
    CloseUp,
    Passage,
    RoomFx,
    View,
    is_out_of_body,
    make_room,
    render_room,
    transition,
)
from scene import CATEGORY, NAMES, NUM_CLASSES, Camera, Effects, Palette, make_world, render, to_uint8  # noqa: E402

WIDTH, HEIGHT = 640, 360
DURATION_S = 54.0
FRAMES = int(round(FPS * DURATION_S))
ROOM_SEED = 5
ROOM_PPU = 200.0

# (start s, end s, what): "room" (the scope in the operating room), "insert" / "withdraw" (through
# the trocar; outside.transition's progress runs 1 -> 0 / 0 -> 1 linearly), "body"
PHASES = [
    (0.0, 5.0, "room"),
    (5.0, 8.0, "insert"),
    (8.0, 22.0, "body"),
    (22.0, 25.0, "withdraw"),
    (25.0, 32.0, "room"),
    (32.0, 35.0, "insert"),
    (35.0, 47.0, "body"),
    (47.0, 50.0, "withdraw"),
    (50.0, 54.0, "room"),
]

# In-body camera keyframes over make_clip's world: (time s, x, y, zoom, rotation), eased between.
BODY_KEYS = [
    (8.0, 0.3, -0.1, 0.8, 0.0),
    (10.0, 0.2, 0.05, 0.75, 0.03),
    (16.0, 0.1, 0.2, 0.72, 0.05),
    (19.5, 0.0, 0.7, 0.78, 0.0),  # down to the fat
    (22.0, -0.1, 0.72, 0.8, 0.0),
    (35.0, 0.2, 0.35, 0.7, 0.0),
    (40.0, 0.1, 0.38, 0.68, 0.02),
    (44.5, 0.6, -0.95, 0.8, -0.05),  # up to the abdominal wall
    (47.0, 0.7, -1.0, 0.82, -0.05),
]

# Tools: screen targets only (make_clip.tool_at then does not depend on make_clip's camera).
SCRIPT = [
    Appearance("grasper", 9.0, 20.0, 150, ("screen", -0.35, 0.2), seed=11),
    Appearance("hook", 11.5, 19.5, 15, ("screen", 0.3, 0.1), width=0.14, wiggle=0.04, seed=12),
    Appearance("clip_applier", 36.0, 42.5, -20, ("screen", 0.3, 0.15), width=0.17, loaded=True, jaw_hz=0.2, seed=13),
    Appearance("scissors", 40.5, 46.0, 200, ("screen", -0.2, 0.05), width=0.15, jaw_hz=0.5, seed=14),
]
SMOKE = [((13.0, 16.5, 21.5), 0.4)]

# The room's optics: the same circular field as in the body, a little out of focus (the scope
# focuses near), auto-exposure.
ROOM_FX = RoomFx(gain=1.0, auto=0.42, ambient=0.95, screen=1.1, lamp=2.6, tint=(0.97, 1.0, 1.03), scope_light=0.5,
                 glare=0.9, vignette=0.45, defocus=0.8, noise=0.006, field=FIELD)
GAUZE = (27.0, 27.6, 29.6, 30.2)  # in, wiping, out (s)
GLOVE = (26.6, 30.5)


def phase_at(t: float) -> tuple[float, float, str]:
    for p in PHASES:
        if p[0] <= t < p[1]:
            return p
    return PHASES[-1]


def body_camera(t: float) -> Camera:
    keys = BODY_KEYS
    for (t0, *a), (t1, *b) in zip(keys, keys[1:]):
        if t0 <= t <= t1:
            e = ease((t - t0) / (t1 - t0))
            x, y, z, r = (av + (bv - av) * e for av, bv in zip(a, b))
            break
    else:
        _, x, y, z, r = keys[0] if t < keys[0][0] else keys[-1]
    return Camera(x=x, y=y, zoom=z, rot=r, breathe=2 * math.pi * t / 4.2, breathe_amp=0.01)


def body_effects(t: float) -> Effects:
    smoke = 0.0
    for (t0, tp, t1), peak in SMOKE:
        if t0 <= t <= tp:
            smoke = max(smoke, peak * ease((t - t0) / (tp - t0)))
        elif tp < t <= t1:
            smoke = max(smoke, peak * (1 - ease((t - tp) / (t1 - tp))))
    gain = 1.0 + 0.08 * math.sin(2 * math.pi * t / 17.0)
    gain *= 1.0 + 0.15 * math.exp(-(((t - 45.5) / 1.5) ** 2))  # close to the wall: too bright
    return Effects(gain=gain, tint=(1.0, 1.0, 1.0), vignette=0.45,
                   light=(0.05 * math.sin(t / 7.0), 0.04 * math.cos(t / 5.0)), smoke=smoke,
                   smoke_shift=(0.025 * t, -0.018 * t), haze=0.25 * smoke, noise=0.006, defocus=0.0,
                   spec_threshold=0.25, spec_s0=-0.3 + 0.2 * math.sin(t / 3.0))


def room_keys(room) -> list[tuple[float, View]]:
    """Room views over time, aimed at what this room has (largest face / monitor / lamp first)."""
    faces = sorted(room.faces, key=lambda f: -f[2])
    f0 = faces[0]
    f1 = faces[1] if len(faces) > 1 else (f0[0] + 0.4, f0[1], f0[2])
    mx, my, mw, mh = max(room.monitors, key=lambda m: m[2])
    lx, ly, lr = max(room.lamps, key=lambda lamp: lamp[2])
    tx, ty, tw, th = room.tables[0]

    def face(f, k, rot=0.0, dx=0.0):
        return View(x=f[0] + dx * f[2], y=f[1] + 0.3 * f[2], zoom=k * f[2], rot=rot)

    mon = View(x=mx, y=my, zoom=1.9 * mh, rot=0.04)
    return [
        (0.0, mon),
        (1.6, replace(mon, x=mx + 0.2 * mw, zoom=1.7 * mh)),
        (2.8, face(f0, 3.2, 0.05)),
        (3.9, face(f1, 3.0, -0.1)),
        (5.0, View(x=lx, y=ly + 0.3 * lr, zoom=3.0 * lr, rot=-0.1)),
        # after the first withdrawal: the lens is cleaned
        (25.0, face(f1, 2.6, 0.1)),
        (26.0, face(f0, 2.8, 0.0, -0.3)),
        (27.0, replace(mon, zoom=2.1 * mh)),
        (30.0, replace(mon, x=mx - 0.3 * mw, zoom=2.3 * mh, rot=0.2)),
        (31.0, face(f0, 3.4)),
        (32.0, View(x=tx, y=ty, zoom=1.4 * tw, rot=0.3)),
        # after the last withdrawal
        (50.0, face(f0, 2.8, -0.05)),
        (51.5, face(f1, 3.2, 0.05)),
        (52.8, View(x=lx, y=ly + 0.3 * lr, zoom=3.2 * lr)),
        (54.0, View(x=0.0, y=-0.3, zoom=1.2)),
    ]


def room_view(keys, t: float) -> View:
    for (t0, a), (t1, b) in zip(keys, keys[1:]):
        if t0 <= t <= t1:
            if t1 - t0 >= 5:  # across a body phase: no panning
                return replace(b if t >= t1 else a)
            e = ease((t - t0) / (t1 - t0))
            return View(x=a.x + (b.x - a.x) * e, y=a.y + (b.y - a.y) * e, zoom=a.zoom * (b.zoom / a.zoom) ** e,
                        rot=a.rot + (b.rot - a.rot) * e)
    return replace(keys[-1][1] if t > keys[-1][0] else keys[0][1])


def closeups_at(t: float, room) -> list[CloseUp]:
    out = []
    g0, g1, g2, g3 = GAUZE
    if g0 <= t <= g3:
        if t < g1:
            cover = 0.95 * ease((t - g0) / (g1 - g0))
        elif t < g2:
            cover = 0.9 + 0.08 * math.sin(2 * math.pi * (t - g1) / 0.9)
        else:
            cover = 0.95 * (1 - ease((t - g2) / (g3 - g2)))
        out.append(CloseUp("gauze", cover=cover, angle=0.6 + 1.8 * (t - g0), scale=1.2, colour=(0.95, 0.95, 0.93),
                           seed=101, stain=0.3))
    if GLOVE[0] <= t <= GLOVE[1]:
        s = (t - GLOVE[0]) / (GLOVE[1] - GLOVE[0])
        x = 1.2 - 0.5 * math.sin(math.pi * s)
        out.append(CloseUp("glove", x=x, y=0.75 - 0.2 * math.sin(2 * math.pi * s), angle=-0.9 + 0.3 * s, scale=1.5,
                           colour=room.glove, seed=102))
    return out


def main() -> None:
    torch.set_num_threads(1)  # also keeps the rendering bit-for-bit repeatable
    t_start = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    world = make_world(LAYOUT, Palette(), seed=SEED, ppu=PPU)
    room = make_room(ROOM_SEED, ppu=ROOM_PPU)
    keys = room_keys(room)
    gen = torch.Generator().manual_seed(SEED + 1000)

    passages = {}
    for k, (t0, t1, what) in enumerate(PHASES):
        if what not in ("insert", "withdraw"):
            continue
        t_body, t_room = (t1, t0) if what == "insert" else (t0, t1)
        cam = body_camera(t_body)
        passages[k] = Passage(
            cam_start=cam, cam_port=replace(cam, zoom=cam.zoom * 1.7, y=cam.y + 0.1), tools=[],
            fx_in=body_effects(t_body), fov=FIELD, room_view=room_view(keys, t_room), room_fx=ROOM_FX,
            port_zoom=(0.07, 0.5), port_rot=0.4 * k)

    mp4 = OUT / "privacy.mp4"
    tmp = mp4.with_suffix(".tmp.mp4")
    enc = subprocess.Popen(encoder_cmd(tmp, WIDTH, HEIGHT, FPS), stdin=subprocess.PIPE)
    labels = np.lib.format.open_memmap(CACHE / "privacy-labels.tmp.npy", mode="w+", dtype=np.uint8,
                                       shape=(FRAMES, HEIGHT, WIDTH))
    areas = np.zeros((FRAMES, NUM_CLASSES), np.int64)
    out_of_body = np.zeros(FRAMES, bool)
    shutter = 0.5 / FPS
    for i in range(FRAMES):
        t = i / FPS
        k = next(j for j, p in enumerate(PHASES) if p[0] <= t < p[1] or j == len(PHASES) - 1)
        t0, t1, what = PHASES[k]
        lab = None
        if what == "room":
            v = room_view(keys, t)
            v.closeups = closeups_at(t, room)
            prev = room_view(keys, max(t0, t - shutter))
            moving = abs(v.x - prev.x) + abs(v.y - prev.y) > 0.004 * v.zoom
            rgb = render_room(room, v, ROOM_FX, WIDTH, HEIGHT, gen, prev if moving else None)
            out = True
        elif what == "body":
            cam, cam_prev = body_camera(t), body_camera(max(t0, t - shutter))
            moving_cam = abs(cam.x - cam_prev.x) + abs(cam.y - cam_prev.y) > 0.004
            tools, prevs = [], []
            for a in SCRIPT:
                tool = tool_at(a, t)
                if tool is None:
                    continue
                pv = tool_at(a, max(a.enter, t - shutter))
                moved = pv is not None and math.dist(pv.tip, tool.tip) > 0.01
                tools.append(tool)
                prevs.append(pv if moved else None)
            rgb, lab = render(world, cam, FIELD, tools, body_effects(t), WIDTH, HEIGHT, gen,
                              cam_prev if moving_cam else None, prevs if any(p is not None for p in prevs) else None)
            out = False
        else:
            u = (t - t0) / (t1 - t0)
            u_prev = max(0.0, (t - shutter - t0) / (t1 - t0))
            prog, prog_prev = (1 - u, 1 - u_prev) if what == "insert" else (u, u_prev)
            rgb, out, lab = transition(prog, passages[k], world, room, WIDTH, HEIGHT, gen, labels=True,
                                       progress_prev=prog_prev)
            assert out == is_out_of_body(prog)
        enc.stdin.write(to_uint8(rgb).numpy().tobytes())
        if lab is None:
            lab_np = np.zeros((HEIGHT, WIDTH), np.uint8)  # out of body: nothing is visible
        else:
            lab_np = lab.numpy().astype(np.uint8)
        labels[i] = lab_np
        areas[i] = np.bincount(lab_np.ravel(), minlength=NUM_CLASSES)
        out_of_body[i] = out
        if (i + 1) % 120 == 0:
            print(f"  frame {i + 1}/{FRAMES} ({time.time() - t_start:.0f} s)", flush=True)
    enc.stdin.close()
    if enc.wait() != 0:
        raise SystemExit("ffmpeg failed")
    tmp.rename(mp4)
    labels.flush()
    del labels
    (CACHE / "privacy-labels.tmp.npy").rename(CACHE / "privacy-labels.npy")

    stretches = []
    f = 0
    while f < FRAMES:
        if out_of_body[f]:
            g = f
            while g + 1 < FRAMES and out_of_body[g + 1]:
                g += 1
            stretches.append({"start_frame": f, "end_frame": g, "start_s": round(f / FPS, 4),
                              "end_s": round((g + 1) / FPS, 4)})
            f = g + 1
        else:
            f += 1
    threshold = VISIBLE_FRACTION * WIDTH * HEIGHT
    visible = areas > threshold
    timeline = {
        "synthetic": True,
        "note": "Synthetic laparoscopy with out-of-body stretches (the scope in a synthetic operating room), "
                "rendered by models/synth/make_privacy_clip.py; not real surgery, no real room or person.",
        "video": mp4.name,
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "frame_count": FRAMES,
        "duration_s": DURATION_S,
        "visibility": {
            "rule": "a class is visible in a frame when its ground-truth pixel count in the "
                    f"{WIDTH}x{HEIGHT} label map exceeds visible_fraction of the frame's pixels; "
                    "nothing is visible in out-of-body frames",
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
        "out_of_body": stretches,
        "out_of_body_frames": int(out_of_body.sum()),
    }
    path = OUT / "privacy.timeline.json"
    path.write_text(timeline_text(timeline))
    for r in timeline["intervals"]:
        print(f"  {r['label']:15s} {r['start_s']:6.2f} - {r['end_s']:6.2f} s")
    for s in stretches:
        print(f"  out of body     {s['start_s']:6.2f} - {s['end_s']:6.2f} s (frames {s['start_frame']}-{s['end_frame']})")
    print(f"wrote {mp4} ({mp4.stat().st_size} bytes, {FRAMES} frames, {int(out_of_body.sum())} out of body) and "
          f"{path.name} in {time.time() - t_start:.0f} s", flush=True)

    labels = np.load(CACHE / "privacy-labels.npy", mmap_mode="r")
    doc = build_tracks(labels, SCRIPT, FPS, WIDTH, HEIGHT, mp4.name,
                       "Ground-truth tool tracks of the synthetic privacy clip, one per scripted tool appearance, "
                       "from the label maps rendered by models/synth/make_privacy_clip.py; not real surgery.")
    write_tracks(doc, OUT / "privacy.tracks.json")


if __name__ == "__main__":
    main()
