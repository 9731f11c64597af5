"""PGD-20 throughput (L∞, eps 8/255, step 2.5 * eps / 20, random start): Assay's ``pgd`` against
torchattacks' ``PGD`` on the same model and batch (128 images), measured in one run. Target >= 1.0x.

Two small CNNs, on 1x28x28 and 3x32x32 inputs, trained for a few epochs on the built-in digits
(upsampled; channels repeated for the 3-channel one) so that the attack faces a real decision
boundary; the batch is 128 clean-correct test images. Assay's PGD drops a sample from the batch once
an iterate fools the model (torchattacks keeps stepping every sample), so its advantage grows with the
attack's success rate; the robust accuracies of both are printed next to the times. A third line
times both on the 3x32x32 model at eps 0.5/255, where almost nothing is fooled: the per-step cost alone.

torchattacks is a test-only dependency: ``pip install --no-deps torchattacks`` (its pinned ``requests``
is not needed by the attacks).
"""

from __future__ import annotations

import statistics
import sys

import torch
import torch.nn.functional as F
from torch import nn

from _common import machine, timed
from assay import attacks
from assay.data.loader import load_data

BATCH, STEPS, EPS = 128, 20, 8 / 255


def _cnn(channels: int, size: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, 10))


def _digits(split: str, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_data(f"digits:{split}")
    x = F.interpolate(torch.from_numpy(ds.x), size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.repeat(1, channels, 1, 1), torch.from_numpy(ds.y)


def _trained(channels: int, size: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = _cnn(channels, size)
    x, y = _digits("train", channels, size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(4):
        for batch in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    model.eval()
    xt, yt = _digits("test", channels, size)
    with torch.no_grad():
        correct = model(xt).argmax(1) == yt
    return model, xt[correct][:BATCH].contiguous(), yt[correct][:BATCH].contiguous()


def _robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _compare(label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, torchattacks) -> float:
    alpha = 2.5 * eps / STEPS
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=STEPS, random_start=True)
    results = {}

    def ours() -> None:
        results["ours"] = attacks.pgd(model, x, y, eps=eps, steps=STEPS, step_size=alpha, seed=0)

    def reference() -> None:
        torch.manual_seed(0)
        results["theirs"] = theirs(x, y)

    ours(), reference()  # warm-up (allocator, oneDNN primitive caches)
    ref_runs, our_runs = [], []
    for _ in range(5):  # interleaved, so drifts of a shared machine hit both alike
        ref_runs += timed(reference, repeats=1)[1]
        our_runs += timed(ours, repeats=1)[1]
    t_ref, t_ours = statistics.median(ref_runs), statistics.median(our_runs)
    ratio = t_ref / t_ours
    print(f"## {label}, eps {eps * 255:.3g}/255: torchattacks {len(x) / t_ref:.0f} img/s "
          f"(robust acc {_robust(model, results['theirs'], y):.3f}), assay {len(x) / t_ours:.0f} img/s "
          f"(robust acc {_robust(model, results['ours'], y):.3f}); ratio {ratio:.2f}x  "
          f"target >= 1.0x: {'met' if ratio >= 1.0 else 'MISSED'}")
    print(f"   runs (s): torchattacks {', '.join(f'{r:.3f}' for r in ref_runs)}; "
          f"assay {', '.join(f'{r:.3f}' for r in our_runs)}")
    return ratio


def main() -> int:
    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed (pip install --no-deps torchattacks): no baseline, skipped")
        return 0
    print(f"# PGD-{STEPS} L∞ throughput, batch {BATCH}, {torch.get_num_threads()} threads — {machine()}")
    ratios = []
    for channels, size in ((1, 28), (3, 32)):
        model, x, y = _trained(channels, size)
        ratios.append(_compare(f"CNN {channels}x{size}x{size}", model, x, y, EPS, torchattacks))
    _compare(f"CNN {channels}x{size}x{size} (per-step cost: almost nothing fooled)", model, x, y, 0.5 / 255,
             torchattacks)
    print(f"minimum ratio at eps 8/255: {min(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
