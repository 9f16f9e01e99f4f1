#!/usr/bin/env python3
"""Trains orstream's demo privacy gate: a tiny in-body / out-of-body frame classifier, and exports it.

SYNTHETIC DATA, NOT FOR CLINICAL USE: the gate has only ever seen procedurally rendered pictures
(models/synth/scene.py inside the body, models/synth/outside.py outside it and through the
trocar) and says nothing about real operating-room video.

    .venv/bin/python models/train_gate.py        # (models/build_all.py --gate runs it for you)
    .venv/bin/python models/train_gate.py --eval-only   # re-measure the exported gate.pt

Steps: render the train / held-out sets (cached under models/.cache, keyed by the generators'
source), train a small CNN on CPU (one thread), pick the threshold on the held-out set (the
highest that still catches every out-of-body frame, times a safety factor), fold the batch norms,
export TorchScript (models/demo/gate.pt), write its card (models/demo/gate.toml) and
models/demo/gate_metrics.json: held-out ROC AUC, accuracy, out-of-body recall and in-body false
redactions at the threshold, the same on the privacy clip (models/demo/privacy.mp4, made by
synth/make_privacy_clip.py: run it first) and the false redactions on the all-in-body demo clip
(models/demo/clip.mp4), size, CPU time, data set sizes and times.

The engine's path, which training and every measurement here follow: each 640x360 frame is a JPEG;
it is decoded at 1/8 scale by libjpeg's DCT scaling (80x45, about each 8x8 block's mean),
stretched to 64x64 with bilinear interpolation (half-pixel centres, no antialiasing), RGB scaled
to 0..1 and normalised (x - mean) / std. The exported module takes float [B, 3, 64, 64] and
returns logits [B, 2]: index 0 in body, 1 out of body; softmax(logits)[:, 1] is the probability
of out of body, and a frame is redacted when it is at or above the card's threshold.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "synth"))
sys.path.insert(0, str(HERE))

from gate_dataset import (  # noqa: E402
    KINDS,
    TEST_SEED_BASE,
    TRAIN_SEED_BASE,
    GateSetSpec,
    build_gate_set,
    decode_eighth,
    jpeg,
)
from train import cbr, cpu_name, fuse_batchnorm, save_reproducibly  # noqa: E402
from make_clip import decode_frames  # noqa: E402

NAME = "orstream-demo-gate"
VERSION = "1"
SIZE = 64
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OUT_INDEX = 1
SAFETY = 0.5  # the threshold is this times the highest one that catches RECALL of the held-out out-of-body frames
# The share of held-out out-of-body frames the threshold is picked to catch, before SAFETY. Not 1: a
# handful of held-out frames (close-ups of a dark monitor inside the room) score near 0, and catching
# them frame by frame would withhold half of the in-body frames; the margins around every out-of-body
# frame the gate does catch are what covers such frames within a withdrawal.
RECALL = 0.995
CLIP_JPEG_QUALITY = 85  # the demo clips' frames are JPEG-compressed at this quality before the gate
EMA_DECAY = 0.998  # the exported weights: their moving average over training
DEMO = HERE / "demo"


# --------------------------------------------------------------------------------------------
# The network: 6 conv + BN + ReLU layers (16..64 channels, four with stride 2), global average
# and max pooling, a linear layer to 2 logits; about 86 k parameters
# --------------------------------------------------------------------------------------------


class GateNet(nn.Module):
    def __init__(self, ch=(16, 16, 32, 48, 64, 64), strides=(2, 1, 2, 2, 2, 1)) -> None:
        super().__init__()
        layers, c = [], 3
        for o, s in zip(ch, strides):
            layers.append(cbr(c, o, s))
            c = o
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def source_digest() -> str:
    h = hashlib.sha256()
    for f in ("synth/scene.py", "synth/dataset.py", "synth/outside.py", "synth/gate_dataset.py"):
        h.update((HERE / f).read_bytes())
    return h.hexdigest()[:12]


def load_or_build(spec: GateSetSpec, cache: Path, workers: int, tag: str, variants: bool) -> tuple[dict, float]:
    key = f"gate-{tag}-{spec.units}x{spec.inbody}-{spec.room}-{spec.passage}-{spec.seed_base}-{source_digest()}"
    path = cache / f"{key}.npz"
    if path.exists():
        d = dict(np.load(path))
        print(f"{tag}: cached {path.name} ({len(d['label'])} frames)", flush=True)
        return d, float(d["seconds"])
    print(f"{tag}: rendering {spec.units} units x ({spec.inbody} in-body, {spec.room} room, {spec.passage} passage) frames",
          flush=True)
    t = time.time()
    d = build_gate_set(spec, variants=variants, workers=workers, log=lambda m: print(m, flush=True))
    d["seconds"] = np.array(time.time() - t)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **d)
    tmp.rename(path)
    print(f"{tag}: {len(d['label'])} frames in {float(d['seconds']):.0f} s", flush=True)
    return d, float(d["seconds"])


def resize(small_u8: torch.Tensor, how: str = "bilinear") -> torch.Tensor:
    """[B, 45, 80, 3] uint8 (the 1/8-scale decode) -> [B, 3, 64, 64] float 0..1, as the engine."""
    x = small_u8.permute(0, 3, 1, 2).float() / 255.0
    if how == "bilinear":
        return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    if how == "bilinear_aa":
        return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    if how == "bicubic":
        return F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    raise ValueError(how)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips (the scope rolls freely) and a mild photometric jitter, on [B, 3, 64, 64] in 0..1."""
    b = x.shape[0]
    fh = torch.rand(b, generator=gen) < 0.5
    fv = torch.rand(b, generator=gen) < 0.5
    x = torch.where(fh.view(b, 1, 1, 1), x.flip(3), x)
    x = torch.where(fv.view(b, 1, 1, 1), x.flip(2), x)
    gain = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen)
    tint = 0.93 + 0.14 * torch.rand(b, 3, 1, 1, generator=gen)
    grey = x.mean(1, keepdim=True)
    sat = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen)
    x = (grey + (x - grey) * sat) * gain * tint
    x = x + 0.015 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def roc_auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allp = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allp))
    i = 0
    while i < len(allp):  # average ranks over ties
        j = i
        while j + 1 < len(allp) and allp[j + 1] == allp[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allp))
    r[order] = ranks
    u = r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def at_threshold(p: np.ndarray, y: np.ndarray, thr: float) -> dict:
    red = p >= thr
    n_in, n_out = int((y == 0).sum()), int((y == 1).sum())
    return {
        "frames": int(len(y)),
        "in_body_frames": n_in,
        "out_of_body_frames": n_out,
        "roc_auc": round(roc_auc(p, y), 5) if n_in and n_out else None,
        "accuracy": round(float((red == (y == 1)).mean()), 5),
        "out_of_body_recall": round(float(red[y == 1].mean()), 5) if n_out else None,
        "missed_out_of_body_frames": int((~red & (y == 1)).sum()),
        "in_body_false_redaction_rate": round(float(red[y == 0].mean()), 5) if n_in else None,
        "in_body_false_redactions": int((red & (y == 0)).sum()),
        "lowest_out_of_body_probability": round(float(p[y == 1].min()), 6) if n_out else None,
        "highest_in_body_probability": round(float(p[y == 0].max()), 6) if n_in else None,
    }


@torch.no_grad()
def predict(model, x01: torch.Tensor, batch: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(x01), batch):
        out.append(torch.softmax(model(normalise(x01[i:i + batch])), 1)[:, OUT_INDEX])
    return torch.cat(out).numpy().astype(np.float64)


def clip_inputs(path: Path, width: int, height: int, upscale: int = 1) -> torch.Tensor:
    """Every frame of an MP4 the engine's way: JPEG at CLIP_JPEG_QUALITY, 1/8-scale decode, 64x64.
    upscale > 1: as if the engine published the video that many times larger (bilinear), e.g.
    1280x720, whose 1/8-scale decode is 160x90."""
    smalls = []
    for f in decode_frames(path, width, height):
        if upscale > 1:
            x = torch.from_numpy(f.copy()).permute(2, 0, 1).float().unsqueeze(0)
            x = F.interpolate(x, scale_factor=upscale, mode="bilinear", align_corners=False)[0]
            f = x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        smalls.append(decode_eighth(jpeg(f, CLIP_JPEG_QUALITY, 2)))
    return resize(torch.from_numpy(np.stack(smalls)))


def clip_out_of_body(timeline: dict) -> np.ndarray:
    y = np.zeros(timeline["frame_count"], np.int64)
    for s in timeline["out_of_body"]:
        y[s["start_frame"]: s["end_frame"] + 1] = 1
    return y


def cpu_ms_per_frame(module, batch: int, runs: int = 200, rounds: int = 5) -> float:
    x = torch.randn(batch, 3, SIZE, SIZE)
    with torch.no_grad():
        for _ in range(20):
            module(x)
        best = []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(runs):
                module(x)
            best.append((time.perf_counter() - t) / runs / batch * 1000)
    return round(min(best), 3)


# --------------------------------------------------------------------------------------------
# Card
# --------------------------------------------------------------------------------------------


def card_toml(digest: str, size: int, threshold: float) -> str:
    description = (
        "SYNTHETIC-DATA DEMO, NOT FOR CLINICAL USE. Tiny CNN privacy gate trained only on procedurally "
        "rendered frames (models/synth: laparoscopic scenes in the body, an operating room and the trocar "
        "outside it); it says nothing about real operating-room video. Input: float [B, 3, 64, 64], RGB of "
        "the frame (JPEG decoded at 1/8 scale, stretched to 64x64, bilinear) scaled to 0..1 then "
        "(x - mean) / std; output: logits [B, 2], index 0 in body, 1 out of body; redact when "
        "softmax(logits)[1] >= threshold."
    )
    return "\n".join([
        f"# gate.pt: {size} bytes, sha256 {digest}",
        f'name = "{NAME}"',
        f'version = "{VERSION}"',
        f'description = "{description}"',
        'output = "out_of_body"',
        f"input_width = {SIZE}",
        f"input_height = {SIZE}",
        'resize = "stretch"',
        "mean = [" + ", ".join(repr(float(v)) for v in MEAN) + "]",
        "std = [" + ", ".join(repr(float(v)) for v in STD) + "]",
        f"out_of_body_index = {OUT_INDEX}",
        f"threshold = {threshold!r}",
    ]) + "\n"


def pick_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The highest threshold at which at least RECALL of the out-of-body frames are still
    redacted (p >= t), and SAFETY times it, rounded down to two significant digits."""
    out = np.sort(p[y == 1])
    t_max = float(out[int(math.floor((1.0 - RECALL) * len(out)))])
    t = t_max * SAFETY
    digits = max(2, 1 - int(math.floor(math.log10(t)))) if t > 0 else 6
    t = math.floor(t * 10**digits) / 10**digits
    return t_max, t


# --------------------------------------------------------------------------------------------


def evaluate(model, te: dict, thr: float) -> dict:
    """Held-out figures at thr: overall, per kind of frame, and for other ways of downscaling."""
    y = te["label"].astype(np.int64)
    small = torch.from_numpy(te["small"])
    p = predict(model, resize(small))
    held = at_threshold(p, y, thr)
    per_kind = {}
    for k, name in enumerate(KINDS):
        m = te["kind"] == k
        if m.any():
            per_kind[name] = {"frames": int(m.sum()), "redacted": int((p[m] >= thr).sum()),
                              "label": "out_of_body" if int(y[m][0]) == 1 else "in_body"}
            if name == "passage:tissue" or name.startswith("in:"):
                assert (y[m] == 0).all()
    held["per_kind"] = per_kind
    variants = {}
    for how in ("bilinear_aa", "bicubic"):
        variants[f"1/8 decode, {how.replace('_aa', ' antialiased')} to 64x64"] = at_threshold(predict(model, resize(small, how)), y, thr)
    if "area64" in te:
        x = torch.from_numpy(te["area64"]).permute(0, 3, 1, 2).float() / 255.0
        variants["full decode, area (box) resize to 64x64"] = at_threshold(predict(model, x), y, thr)
    for v in variants.values():
        for key in ("frames", "in_body_frames", "out_of_body_frames"):
            v.pop(key)
    held["other_downscaling"] = variants
    return held, p


def evaluate_clips(model, thr: float) -> dict:
    out = {}
    tl_path = DEMO / "privacy.timeline.json"
    if tl_path.exists() and (DEMO / "privacy.mp4").exists():
        tl = json.loads(tl_path.read_text())
        x = clip_inputs(DEMO / tl["video"], tl["width"], tl["height"])
        assert len(x) == tl["frame_count"], (len(x), tl["frame_count"])
        y = clip_out_of_body(tl)
        p = predict(model, x)
        r = at_threshold(p, y, thr)
        red = p >= thr
        r["stretches"] = [
            {**s, "redacted_frames": int(red[s["start_frame"]: s["end_frame"] + 1].sum()),
             "frames": s["end_frame"] - s["start_frame"] + 1}
            for s in tl["out_of_body"]
        ]
        # in-body frames redacted, as runs (start_frame, end_frame), for looking at
        runs, f = [], 0
        while f < len(y):
            if red[f] and y[f] == 0:
                g = f
                while g + 1 < len(y) and red[g + 1] and y[g + 1] == 0:
                    g += 1
                runs.append([f, g])
                f = g + 1
            else:
                f += 1
        r["false_redaction_runs"] = runs
        r["how"] = f"decoded MP4, each frame JPEG q{CLIP_JPEG_QUALITY} 4:2:0, decoded at 1/8 scale, 64x64 bilinear"
        x2 = clip_inputs(DEMO / tl["video"], tl["width"], tl["height"], upscale=2)
        r2 = at_threshold(predict(model, x2), y, thr)
        r2["how"] = ("the same frames upscaled to 1280x720 (bilinear) before the JPEG, so the 1/8-scale decode "
                     "is 160x90: a video size the gate was not trained on")
        r["as_1280x720"] = r2
        out["privacy_clip"] = r
        np.save(HERE / ".cache" / "privacy-gate-probabilities.npy", p)
    else:
        print("WARNING: models/demo/privacy.mp4 or its timeline is missing: run models/synth/make_privacy_clip.py "
              "first; the privacy clip is not measured", flush=True)
    clip = DEMO / "clip.mp4"
    if clip.exists():
        tl = json.loads((DEMO / "clip.timeline.json").read_text())
        x = clip_inputs(clip, tl["width"], tl["height"])
        p = predict(model, x)
        y = np.zeros(len(p), np.int64)
        r = at_threshold(p, y, thr)
        for key in ("roc_auc", "out_of_body_recall", "missed_out_of_body_frames", "lowest_out_of_body_probability",
                    "out_of_body_frames"):
            r.pop(key)
        r["how"] = f"all in body; decoded MP4, each frame JPEG q{CLIP_JPEG_QUALITY} 4:2:0, decoded at 1/8 scale, 64x64 bilinear"
        out["demo_clip"] = r
    return out


def main() -> None:
    # TorchScript writes constants in set order, which follows the per-process string hash seed.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=96, help="training units (a world + a room each)")
    ap.add_argument("--inbody", type=int, default=40, help="in-body frames per unit")
    ap.add_argument("--room", type=int, default=36, help="room frames per unit")
    ap.add_argument("--passage", type=int, default=20, help="passage frames per unit")
    ap.add_argument("--test-units", type=int, default=20)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out-weight", type=float, default=3.0,
                    help="loss weight of out-of-body frames relative to in-body ones (privacy first)")
    ap.add_argument("--workers", type=int, default=1, help="processes rendering the data sets")
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--out", type=Path, default=DEMO)
    ap.add_argument("--eval-only", action="store_true", help="re-measure the exported gate.pt with its card's threshold")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    t_start = time.time()
    test_spec = GateSetSpec(args.test_units, 30, 30, 20, TEST_SEED_BASE)
    te, render_test = load_or_build(test_spec, args.cache, args.workers, "gate-heldout", variants=True)
    metrics_path = args.out / "gate_metrics.json"
    if args.eval_only:
        model = torch.jit.load(str(args.out / "gate.pt"), map_location="cpu").eval()
        card = (args.out / "gate.toml").read_text()
        thr = float(next(line.split("=")[1] for line in card.splitlines() if line.startswith("threshold")))
        m = json.loads(metrics_path.read_text())
        m["heldout"], _ = evaluate(model, te, thr)
        m.update(evaluate_clips(model, thr))
        metrics_path.write_text(json.dumps(m, indent=2) + "\n")
        report(m)
        return

    train_spec = GateSetSpec(args.units, args.inbody, args.room, args.passage, TRAIN_SEED_BASE)
    tr, render_train = load_or_build(train_spec, args.cache, args.workers, "gate-train", variants=False)
    assert not set(np.unique(tr["unit"])) & set(np.unique(te["unit"])), "train and held-out units overlap"

    ytr = torch.from_numpy(tr["label"].astype(np.int64))
    small = torch.from_numpy(tr["small"])
    print(f"train: {len(ytr)} frames ({int((ytr == 0).sum())} in body, {int((ytr == 1).sum())} out of body)", flush=True)
    model = GateNet().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(1)
    class_w = torch.tensor([1.0, args.out_weight])
    # an exponential moving average of the weights (and batch-norm statistics) is what is exported:
    # smoother than the last step's weights on rare pictures
    ema = GateNet().to(memory_format=torch.channels_last)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    t_train = time.time()
    model.train()
    running = 0.0
    for step in range(args.steps):
        idx = torch.randint(0, len(ytr), (args.batch,), generator=gen)
        how = ("bilinear", "bilinear", "bilinear", "bilinear_aa", "bicubic")[int(torch.randint(0, 5, (1,), generator=gen))]
        x = augment(resize(small[idx], how), gen)
        x = normalise(x).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), ytr[idx], weight=class_w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(EMA_DECAY, (1 + step) / (10 + step))
            for e, q in zip(ema.state_dict().values(), model.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.mul_(decay).add_(q.detach(), alpha=1 - decay)
                else:
                    e.copy_(q)
        lv = loss.item()
        running = 0.98 * running + 0.02 * lv if step else lv
        if (step + 1) % 100 == 0 or step == 0:
            el = time.time() - t_train
            print(f"step {step + 1}/{args.steps} loss {running:.4f} lr {sched.get_last_lr()[0]:.5f} {el:.0f}s "
                  f"(eta {el / (step + 1) * (args.steps - step - 1):.0f}s)", flush=True)
    t_train = time.time() - t_train

    model = ema.eval()
    fused = fuse_batchnorm(model).to(memory_format=torch.contiguous_format)
    y = te["label"].astype(np.int64)
    p = predict(fused, resize(torch.from_numpy(te["small"])))
    t_max, thr = pick_threshold(p, y)
    print(f"held-out: highest threshold catching every out-of-body frame {t_max:.6f}; threshold {thr}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(fused)
    model_path = args.out / "gate.pt"
    save_reproducibly(scripted, model_path)
    loaded = torch.jit.load(str(model_path), map_location="cpu").eval()
    with torch.no_grad():
        for b in (1, 8):
            probe = normalise(resize(torch.from_numpy(te["small"][:b])))
            a, c = loaded(probe), fused(probe)
            assert a.shape == (b, 2), a.shape
            assert torch.allclose(a, c, atol=1e-4), float((a - c).abs().max())
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    size = model_path.stat().st_size
    (args.out / "gate.toml").write_text(card_toml(digest, size, thr))

    t_eval = time.time()
    held, _ = evaluate(loaded, te, thr)
    clips = evaluate_clips(loaded, thr)
    t_eval = time.time() - t_eval
    ms1 = cpu_ms_per_frame(loaded, 1)
    ms8 = cpu_ms_per_frame(loaded, 8, runs=50)

    def counts(d: dict) -> dict:
        lab = d["label"]
        kinds = np.array(KINDS)[d["kind"]]
        passage = np.char.startswith(kinds.astype(str), "passage:")
        return {"units": int(len(np.unique(d["unit"]))), "unit_seeds": [int(d["unit"].min()), int(d["unit"].max())],
                "frames": int(len(lab)), "in_body": int((lab == 0).sum()), "out_of_body": int((lab == 1).sum()),
                "passage_frames": int(passage.sum())}

    m = {
        "synthetic": True,
        "note": "Measured on SYNTHETIC frames only (models/synth); says nothing about real operating-room video.",
        "model": {
            "file": "gate.pt", "bytes": size, "sha256": digest,
            "parameters": sum(q.numel() for q in fused.parameters()),
            "architecture": "6 conv3x3 + ReLU layers (16-16-32-48-64-64 channels, stride 2 at layers 1, 3, 4, 5; "
                            "batch norm folded), global average + max pooling, linear to 2 logits",
            "input": [1, 3, SIZE, SIZE], "output": "logits [B, 2]; index 0 in body, 1 out of body",
        },
        "preprocessing": {
            "engine": "640x360 JPEG decoded at 1/8 scale (libjpeg DCT scaling) -> 80x45 RGB, stretched to 64x64 "
                      "with bilinear interpolation (half-pixel centres, align_corners=False, no antialiasing), "
                      "x / 255, then (x - mean) / std",
            "mean": list(MEAN), "std": list(STD),
        },
        "threshold": {
            "value": thr,
            "rule": f"redact when softmax(logits)[:, 1] >= threshold; threshold = {SAFETY} x the highest "
                    f"threshold at which at least {RECALL:.1%} of the held-out out-of-body frames are "
                    "redacted, rounded down",
            "highest_threshold_at_recall_heldout": round(t_max, 6),
            "recall": RECALL,
            "safety_factor": SAFETY,
        },
        "heldout": held,
        **clips,
        "cpu_ms_per_frame": {"threads": 1, "batch_1": ms1, "batch_8": ms8, "cpu": cpu_name(),
                             "note": "TorchScript fp32, torch " + torch.__version__.split("+")[0]
                                     + "; best of 5 rounds on a shared machine"},
        "data": {"train": counts(tr), "heldout": counts(te), "generator_digest": source_digest(),
                 "jpeg_quality": [60, 95], "render_size": "256x144 (15 % at 640x360), brought to 640x360"},
        "training": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "out_of_body_weight": args.out_weight,
                     "weights": f"exponential moving average, decay {EMA_DECAY}",
                     "threads": 1, "precision": "fp32",
                     "render_train_seconds": round(render_train), "render_heldout_seconds": round(render_test),
                     "train_seconds": round(t_train), "eval_seconds": round(t_eval),
                     "total_seconds": round(time.time() - t_start)},
    }
    metrics_path.write_text(json.dumps(m, indent=2) + "\n")
    report(m)


def report(m: dict) -> None:
    def line(name: str, r: dict) -> str:
        parts = [f"{r['frames']} frames"]
        if r.get("roc_auc") is not None:
            parts.append(f"AUC {r['roc_auc']:.4f}")
        parts.append(f"accuracy {r['accuracy']:.4f}")
        if r.get("out_of_body_recall") is not None:
            parts.append(f"out-of-body recall {r['out_of_body_recall']:.4f} ({r['missed_out_of_body_frames']} missed)")
        parts.append(f"in-body false redactions {r['in_body_false_redaction_rate']:.4f} ({r['in_body_false_redactions']})")
        return f"{name}: " + ", ".join(parts)

    print(f"threshold {m['threshold']['value']} (the highest catching {m['threshold']['recall']:.1%} of "
          f"held-out out-of-body frames: {m['threshold']['highest_threshold_at_recall_heldout']})")
    print(line("held-out", m["heldout"]))
    for k, v in m["heldout"]["per_kind"].items():
        print(f"    {k:22s} {v['label']:12s} {v['redacted']:4d} / {v['frames']:4d} redacted")
    for k, v in m["heldout"]["other_downscaling"].items():
        print(f"    {k}: AUC {v['roc_auc']}, recall {v['out_of_body_recall']}, false redactions {v['in_body_false_redaction_rate']}")
    for k in ("privacy_clip", "demo_clip"):
        if k in m:
            print(line(k, m[k]))
    if "privacy_clip" in m:
        v = m["privacy_clip"].get("as_1280x720")
        if v:
            print(f"    as 1280x720: AUC {v['roc_auc']}, recall {v['out_of_body_recall']}, "
                  f"false redactions {v['in_body_false_redaction_rate']}")
        for s in m["privacy_clip"]["stretches"]:
            print(f"    out of body {s['start_s']:.2f}-{s['end_s']:.2f} s: {s['redacted_frames']}/{s['frames']} redacted")
        print(f"    false redaction runs (frames): {m['privacy_clip']['false_redaction_runs']}")
    c = m["cpu_ms_per_frame"]
    print(f"cpu: {c['batch_1']} ms/frame at batch 1, {c['batch_8']} at batch 8 (1 thread); model {m['model']['bytes']} bytes, "
          f"{m['model']['parameters']} parameters")
    if "training" in m:
        t = m["training"]
        print(f"render {t['render_train_seconds']} + {t['render_heldout_seconds']} s, train {t['train_seconds']} s, "
              f"eval {t['eval_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
