#!/usr/bin/env python3
"""Trains orstream's demo segmentation model on synthetic scenes and exports it.

SYNTHETIC DATA, NOT FOR CLINICAL USE: the model has only ever seen procedurally rendered
pictures (models/synth/scene.py) and says nothing about real surgery.

    .venv/bin/python models/train.py            # (models/build_all.py runs this for you)

Steps: render the train / held-out sets (cached under models/.cache, keyed by the generator's
source), train a small U-Net on CPU, measure per-class IoU on the held-out scenes, fold the batch
norms into the convolutions, export TorchScript (models/demo/seg.pt), write its model card
(models/demo/seg.toml) and models/demo/metrics.json (accuracy, size, CPU time per frame).

The exported module takes float [B, 3, 192, 320], RGB scaled to 0..1 then normalised with the
card's mean/std, and returns logits [B, 10, 192, 320] (one channel per class id).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "synth"))

from dataset import TEST_SEED_BASE, TRAIN_SEED_BASE, SetSpec, build_set  # noqa: E402
from scene import CLASSES, NUM_CLASSES  # noqa: E402

NAME = "orstream-demo-seg"
VERSION = "1.0.0"
WIDTH, HEIGHT = 320, 192
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# The network: a small U-Net (about 0.8 M parameters, 3 MB in fp32)
# --------------------------------------------------------------------------------------------


def cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallUNet(nn.Module):
    """Encoder at 1/2 .. 1/32, decoder back to 1/2 with skips, logits upsampled to the input."""

    def __init__(self, classes: int = NUM_CLASSES, ch=(16, 32, 64, 96, 128), dec=(96, 64, 32, 16)) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = ch
        d3, d2, d1, d0 = dec
        self.e0 = nn.Sequential(cbr(3, c0, 2), cbr(c0, c0))
        self.e1 = nn.Sequential(cbr(c0, c1, 2), cbr(c1, c1))
        self.e2 = nn.Sequential(cbr(c1, c2, 2), cbr(c2, c2))
        self.e3 = nn.Sequential(cbr(c2, c3, 2), cbr(c3, c3))
        self.e4 = nn.Sequential(cbr(c3, c4, 2), cbr(c4, c4, dilation=2))
        self.d3 = cbr(c4 + c3, d3)
        self.d2 = cbr(d3 + c2, d2)
        self.d1 = cbr(d2 + c1, d1)
        self.d0 = cbr(d1 + c0, d0)
        self.head = nn.Conv2d(d0, classes, 1)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=[like.shape[2], like.shape[3]], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.e0(x)
        f1 = self.e1(f0)
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        f4 = self.e4(f3)
        y = self.d3(torch.cat([self._up(f4, f3), f3], 1))
        y = self.d2(torch.cat([self._up(y, f2), f2], 1))
        y = self.d1(torch.cat([self._up(y, f1), f1], 1))
        y = self.d0(torch.cat([self._up(y, f0), f0], 1))
        return self._up(self.head(y), x)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Folds every Conv2d + BatchNorm2d pair (eval mode) into one Conv2d."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for name, child in model.named_children():
        if isinstance(child, nn.Sequential) and len(child) >= 2 and isinstance(child[0], nn.Conv2d) and isinstance(child[1], nn.BatchNorm2d):
            fused = fuse_conv_bn_eval(child[0], child[1])
            setattr(model, name, nn.Sequential(fused, *list(child)[2:]))
        else:
            fuse_batchnorm(child)
    return model


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def source_digest() -> str:
    h = hashlib.sha256()
    for f in ("synth/scene.py", "synth/dataset.py"):
        h.update((HERE / f).read_bytes())
    return h.hexdigest()[:12]


def load_or_build(spec: SetSpec, cache: Path, workers: int, tag: str) -> tuple[np.ndarray, np.ndarray]:
    key = f"{tag}-{spec.scenes}x{spec.frames_per_scene}-{spec.seed_base}-{spec.width}x{spec.height}-{source_digest()}"
    path = cache / f"{key}.npz"
    if path.exists():
        d = np.load(path)
        print(f"{tag}: cached {path.name} ({len(d['images'])} frames)", flush=True)
        return d["images"], d["labels"]
    print(f"{tag}: rendering {spec.scenes} scenes x {spec.frames_per_scene} frames", flush=True)
    t = time.time()
    images, labels = build_set(spec, workers=workers, log=lambda m: print(m, flush=True))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    tmp.rename(path)
    print(f"{tag}: {len(images)} frames in {time.time() - t:.0f} s", flush=True)
    return images, labels


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float normalised like the engine does."""
    x = images_u8.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips and a mild photometric jitter (x is [B,3,H,W] in 0..1 before normalisation)."""
    b = x.shape[0]
    flip_h = torch.rand(b, generator=gen) < 0.5
    flip_v = torch.rand(b, generator=gen) < 0.3
    x = torch.where(flip_h.view(b, 1, 1, 1), x.flip(3), x)
    y = torch.where(flip_h.view(b, 1, 1), y.flip(2), y)
    x = torch.where(flip_v.view(b, 1, 1, 1), x.flip(2), x)
    y = torch.where(flip_v.view(b, 1, 1), y.flip(1), y)
    gain = 0.85 + 0.3 * torch.rand(b, 1, 1, 1, generator=gen)
    tint = 0.94 + 0.12 * torch.rand(b, 3, 1, 1, generator=gen)
    grey = x.mean(1, keepdim=True)
    sat = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen)
    x = ((grey + (x - grey) * sat) * gain * tint).clamp(0, 1)
    return x, y


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def confusion(pred: torch.Tensor, target: torch.Tensor, n: int = NUM_CLASSES) -> torch.Tensor:
    idx = target.reshape(-1).long() * n + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=n * n).view(n, n)


def iou_from_confusion(cm: torch.Tensor) -> list[float]:
    cm = cm.double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    return [float(i / u) if u > 0 else float("nan") for i, u in zip(inter, union)]


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 16) -> torch.Tensor:
    model.eval()
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for i in range(0, len(images), batch):
        x = normalise(torch.from_numpy(images[i : i + batch]))
        pred = model(x).argmax(1)
        cm += confusion(pred, torch.from_numpy(labels[i : i + batch]))
    return cm


def summarise(cm: torch.Tensor) -> dict:
    ious = iou_from_confusion(cm)
    per_class = {name: round(v, 4) for (_, name, _), v in zip(CLASSES, ious)}
    tools = [v for (_, _, cat), v in zip(CLASSES, ious) if cat == "tool"]
    organs = [v for (_, _, cat), v in zip(CLASSES, ious) if cat == "organ"]
    return {
        "per_class_iou": per_class,
        "miou": round(float(np.nanmean(ious)), 4),
        "tool_miou": round(float(np.nanmean(tools)), 4),
        "organ_miou": round(float(np.nanmean(organs)), 4),
        "min_tool_iou": round(float(np.nanmin(tools)), 4),
        "pixel_accuracy": round(float(cm.diag().sum() / cm.sum()), 4),
    }


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def save_reproducibly(module: torch.jit.ScriptModule, path: Path) -> None:
    """torch.jit.save without the *.debug_pkl source maps (they hold this machine's paths), so
    the file's bytes depend only on the model."""
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / path.name
        torch.jit.save(module, str(full))
        reader = torch._C.PyTorchFileReader(str(full))
        writer = torch._C.PyTorchFileWriter(str(path))
        for record in reader.get_all_records():
            if record.endswith(".debug_pkl") or record == ".data/serialization_id":
                continue
            data = reader.get_record(record)
            writer.write_record(record, data, len(data))
        writer.write_end_of_file()


def card_toml(digest: str, size: int) -> str:
    def floats(values) -> str:
        return "[" + ", ".join(repr(float(v)) for v in values) + "]"

    description = (
        "SYNTHETIC-DATA DEMO, NOT FOR CLINICAL USE. Small U-Net trained only on procedurally "
        "rendered laparoscopic scenes (models/synth). Input: float [B, 3, 192, 320], RGB scaled "
        "to 0..1 then (x - mean) / std; output: logits [B, 10, 192, 320], channel = class id."
    )
    lines = [
        "# Model card for seg.pt; written by models/train.py, do not edit by hand.",
        f"# file: seg.pt, {size} bytes, sha256 {digest}",
        f'name = "{NAME}"',
        f'version = "{VERSION}"',
        f'description = "{description}"',
        'output = "semantic"',
        f"input_width = {WIDTH}",
        f"input_height = {HEIGHT}",
        "# 16:9 video is stretched to 320x192, as in training.",
        'resize = "stretch"',
        f"mean = {floats(MEAN)}",
        f"std = {floats(STD)}",
    ]
    for class_id, name, category in CLASSES:
        lines += ["", "[[classes]]", f"id = {class_id}", f'name = "{name}"', f'category = "{category}"']
    return "\n".join(lines) + "\n"


def cpu_ms_per_frame(module, batch: int, runs: int = 20) -> float:
    x = torch.randn(batch, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        for _ in range(3):
            module(x)
        best = []
        for _ in range(3):  # best of 3 rounds: the machine is shared
            t = time.perf_counter()
            for _ in range(runs):
                module(x)
            best.append((time.perf_counter() - t) / runs / batch * 1000)
    return round(min(best), 2)


# --------------------------------------------------------------------------------------------


def main() -> None:
    # TorchScript writes constants in set order, which follows the per-process string hash seed.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=150, help="training scenes (worlds)")
    ap.add_argument("--frames-per-scene", type=int, default=40)
    ap.add_argument("--test-scenes", type=int, default=20)
    ap.add_argument("--test-frames-per-scene", type=int, default=30)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--crop", type=int, nargs=2, default=(160, 256), metavar=("H", "W"),
                    help="random training crop of the 192x320 frames")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for training (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--workers", type=int, default=2, help="processes rendering the data sets")
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--out", type=Path, default=HERE / "demo")
    ap.add_argument("--fp32", action="store_true", help="train in fp32 even where bf16 is fast")
    args = ap.parse_args()

    t_start = time.time()
    torch.manual_seed(0)
    train_spec = SetSpec(args.scenes, args.frames_per_scene, TRAIN_SEED_BASE, WIDTH, HEIGHT)
    test_spec = SetSpec(args.test_scenes, args.test_frames_per_scene, TEST_SEED_BASE, WIDTH, HEIGHT)
    tr_x, tr_y = load_or_build(train_spec, args.cache, args.workers, "train")
    te_x, te_y = load_or_build(test_spec, args.cache, args.workers, "heldout")
    t_data = time.time() - t_start

    torch.set_num_threads(args.threads)
    freq = np.bincount(tr_y[:: 4].ravel(), minlength=NUM_CLASSES).astype(np.float64)
    freq = freq / freq.sum()
    weights = np.clip(np.sqrt(np.median(freq) / np.maximum(freq, 1e-6)), 0.5, 4.0)
    print("class frequencies:", " ".join(f"{n}={f:.4f}" for (_, n, _), f in zip(CLASSES, freq)), flush=True)
    print("class weights:", " ".join(f"{w:.2f}" for w in weights), flush=True)
    weights_t = torch.tensor(weights, dtype=torch.float32)

    model = SmallUNet().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    use_bf16 = (not args.fp32) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"training {args.steps} steps x {args.batch} on {args.threads} threads, bf16 autocast: {use_bf16}", flush=True)
    gen = torch.Generator().manual_seed(1)
    images_t = torch.from_numpy(tr_x)
    labels_t = torch.from_numpy(tr_y)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    t_train = time.time()
    model.train()
    running = 0.0
    ch, cw = args.crop
    for step in range(args.steps):
        idx = torch.randint(0, len(images_t), (args.batch,), generator=gen)
        oy = torch.randint(0, HEIGHT - ch + 1, (args.batch,), generator=gen).tolist()
        ox = torch.randint(0, WIDTH - cw + 1, (args.batch,), generator=gen).tolist()
        x = torch.stack([images_t[i, a : a + ch, b : b + cw] for i, a, b in zip(idx.tolist(), oy, ox)])
        y = torch.stack([labels_t[i, a : a + ch, b : b + cw] for i, a, b in zip(idx.tolist(), oy, ox)]).long()
        x = x.permute(0, 3, 1, 2).float() / 255.0
        x, y = augment(x, y, gen)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        logits = logits.float()
        ce = F.cross_entropy(logits, y, weight=weights_t)
        # soft Dice over the classes present in the batch
        prob = logits.softmax(1)
        flat_y = y.reshape(-1)
        p_true = prob.gather(1, y.unsqueeze(1)).reshape(-1)
        inter = torch.zeros(NUM_CLASSES).index_add_(0, flat_y, p_true)
        count = torch.bincount(flat_y, minlength=NUM_CLASSES).float()
        denom = prob.sum((0, 2, 3)) + count
        present = count > 0
        dice = 1 - ((2 * inter + 1) / (denom + 1))[present].mean()
        loss = ce + 0.5 * dice
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        running = 0.98 * running + 0.02 * loss_value if step else loss_value
        if (step + 1) % 50 == 0 or step == 0:
            el = time.time() - t_train
            print(f"step {step + 1}/{args.steps} loss {running:.4f} lr {sched.get_last_lr()[0]:.5f} "
                  f"{el:.0f}s (eta {el / (step + 1) * (args.steps - step - 1):.0f}s)", flush=True)
    t_train = time.time() - t_train

    model.eval()
    fused = fuse_batchnorm(model).to(memory_format=torch.contiguous_format)
    cm = evaluate(fused, te_x, te_y)
    held = summarise(cm)
    print(json.dumps(held, indent=1), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(fused)
    model_path = args.out / "seg.pt"
    save_reproducibly(scripted, model_path)
    loaded = torch.jit.load(str(model_path), map_location="cpu").eval()
    with torch.no_grad():
        probe = normalise(torch.from_numpy(te_x[:2]))
        a, b = loaded(probe), fused(probe)
        assert a.shape == (2, NUM_CLASSES, HEIGHT, WIDTH), a.shape
        assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    size = model_path.stat().st_size
    (args.out / "seg.toml").write_text(card_toml(digest, size))

    torch.set_num_threads(1)
    ms1 = cpu_ms_per_frame(loaded, 1)
    ms8 = cpu_ms_per_frame(loaded, 8, runs=5)
    metrics_path = args.out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics.update({
        "model": {
            "file": "seg.pt",
            "bytes": size,
            "sha256": digest,
            "parameters": sum(p.numel() for p in fused.parameters()),
            "architecture": "small U-Net (5-stage conv encoder, 4-stage decoder with skips), batch norm folded",
            "input": [1, 3, HEIGHT, WIDTH],
        },
        "heldout": {
            "frames": int(len(te_x)),
            "scenes": args.test_scenes,
            "scene_seeds": [TEST_SEED_BASE, TEST_SEED_BASE + args.test_scenes - 1],
            **held,
        },
        "cpu_ms_per_frame": {
            "threads": 1,
            "batch_1": ms1,
            "batch_8": ms8,
            "cpu": cpu_name(),
            "note": "TorchScript, fp32, torch 2.11.0; best of 3 rounds on a shared machine",
        },
        "training": {
            "frames": int(len(tr_x)),
            "scenes": args.scenes,
            "steps": args.steps,
            "batch": args.batch,
            "threads": args.threads,
            "bf16_autocast": bool(use_bf16),
            "data_seconds": round(t_data),
            "train_seconds": round(t_train),
            "generator_digest": source_digest(),
        },
    })
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {model_path} ({size} bytes), seg.toml, metrics.json; "
          f"cpu {ms1} ms/frame at batch 1, {ms8} ms/frame at batch 8", flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
