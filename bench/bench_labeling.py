"""What the labeling queue buys: fine-tuning on the queue's picks vs on as many samples drawn at random.

The setting of examples/feedback_loop.py, in process (no server): the demo CNN trained on digits:train (the
champion), traffic = digits:test shifted one pixel right, split at random into a pool (week 1, 340 digits) and a
held-out audit set (week 2, 200 digits). For each seed and label budget, a candidate is fine-tuned from the
champion on digits:train + the budget's labelled pool samples, picked either by ``select_for_labeling`` (with the
champion's reference: uncertainty + novelty of the embedding) or uniformly at random; the table gives the audit
accuracy of both (mean and per seed) and the share of the picks the champion got wrong. Also times
``select_for_labeling`` on a synthetic log of 300,000 rows (200,000 requests, half with a shadow row; 10 classes,
64-d embeddings, no reference: the 2,000-row pool sample).

    python bench/bench_labeling.py [--seeds 5] [--budgets 50,150]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))

from feedback_loop import _fine_tune  # the example's fine-tuning: both measure the same thing

from assay.data.loader import load_data
from assay.demo import shifted_digits, train_digits_cnn
from assay.monitor.labeling import select_for_labeling
from assay.reference import Reference


def _outputs(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and the penultimate embedding (the input of the last Linear, as `assay serve --log-features`)."""
    seen: list[torch.Tensor] = []
    hook = model.fc2.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    hook.remove()
    return logits, seen[0].numpy()


def _frame(logits: np.ndarray, features: np.ndarray) -> pd.DataFrame:
    n = len(logits)
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "row": 0, "time": np.arange(n, dtype=float),
                         "version": "m@1", "model_sha256": None, "role": "primary",
                         "input_sha256": [f"h{i}" for i in range(n)], "logits": list(logits.astype(np.float32)),
                         "top1": logits.argmax(1), "confidence": 0.0, "features": list(features.astype(np.float32)),
                         "label": pd.array([pd.NA] * n, dtype="Int64")})


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def quality(seeds: int, budgets: list[int], epochs: int, finetune_epochs: int) -> None:
    train, test = load_data("digits:train"), load_data("digits:test")
    shifted = shifted_digits(test)
    assert train.y is not None and test.y is not None and shifted.y is not None
    rows = []
    for seed in range(seeds):
        champion = train_digits_cnn(train.x, train.y, epochs=epochs, seed=seed, progress=False)
        ref_logits, ref_features = _outputs(champion, test.x)
        reference = Reference.from_arrays(ref_logits, test.y, ref_features, class_names=test.class_names, seed=seed)
        order = np.random.default_rng(seed).permutation(len(shifted.x))
        pool, audit = order[:340], order[340:]
        logits, features = _outputs(champion, shifted.x[pool])
        frame = _frame(logits, features)
        base = _accuracy(champion, shifted.x[audit], shifted.y[audit])
        for budget in budgets:
            queue = select_for_labeling(frame, budget, reference=reference, seed=seed)
            picks = {"queue": np.array([int(r[1:]) for r in queue["request_id"]]),
                     "random": np.random.default_rng(seed + 1).choice(len(pool), size=budget, replace=False)}
            for how, chosen in picks.items():
                xs, ys = shifted.x[pool[chosen]], shifted.y[pool[chosen]]
                model = _fine_tune(champion, np.concatenate([train.x, np.repeat(xs, 3, axis=0)]),
                                   np.concatenate([train.y, np.repeat(ys, 3)]), epochs=finetune_epochs, seed=seed)
                rows.append({"seed": seed, "budget": budget, "picks": how, "champion": base,
                             "candidate": _accuracy(model, shifted.x[audit], shifted.y[audit]),
                             "champion_wrong_on_picks": float((logits[chosen].argmax(1) != ys).mean())})
        print(f"seed {seed} done", flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["budget", "picks"]).agg(
        champion=("champion", "mean"), candidate=("candidate", "mean"), candidate_sd=("candidate", "std"),
        wrong_on_picks=("champion_wrong_on_picks", "mean")).round(3)
    print(summary.to_string())
    wide = table.pivot_table(index=["budget", "seed"], columns="picks", values="candidate")
    wide["queue - random"] = wide["queue"] - wide["random"]
    print(wide.round(3).to_string())


def speed(n_requests: int = 200_000) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(n_requests, 10)).astype(np.float32)
    features = rng.normal(size=(n_requests, 64)).astype(np.float32)
    frame = _frame(logits, features)
    shadow = frame.iloc[: n_requests // 2].assign(role="shadow")
    shadow["logits"] = list(rng.normal(0, 3, size=(len(shadow), 10)).astype(np.float32))
    frame = pd.concat([frame, shadow], ignore_index=True)
    for _ in range(2):
        start = time.perf_counter()
        select_for_labeling(frame, 100)
        print(f"select_for_labeling, {len(frame):,} logged rows ({n_requests:,} requests): "
              f"{time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default="50,150")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    args = parser.parse_args()
    quality(args.seeds, [int(b) for b in args.budgets.split(",")], args.epochs, args.finetune_epochs)
    speed()


if __name__ == "__main__":
    main()
