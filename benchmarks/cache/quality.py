"""Semantic-cache quality on a labelled set of prompt pairs: precision and recall by threshold,
with cosine similarity alone and with the second check (serving.cache.agreement).

A pair counts as a predicted hit when its MiniLM cosine similarity reaches the threshold (and,
for the second curve, the prompts agree). Positives are true paraphrases
(pairs_paraphrase.txt), negatives hard negatives that share words (pairs_negative.txt).

Run: .venv/bin/python -m benchmarks.cache.quality [--plot benchmarks/cache/quality.png]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.cache.agreement import prompts_agree
from serving.engine.embeddings import MiniLMEmbedder

HERE = Path(__file__).resolve().parent
THRESHOLDS = [round(0.70 + 0.01 * i, 2) for i in range(30)]
TARGET_PRECISION = 0.97
RECALL_SLACK = 0.02


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool


def load_pairs(prefix: str = "pairs") -> list[Pair]:
    """``pairs``: the labelled set the second check was tuned on; ``holdout``: pairs written
    after that, never used to tune it."""
    pairs = []
    for name, same in ((f"{prefix}_paraphrase.txt", True), (f"{prefix}_negative.txt", False)):
        for line in (HERE / name).read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            a, b = (s.strip() for s in line.split("|"))
            pairs.append(Pair(a, b, same))
    return pairs


def precision_recall(hit: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    tp = int((hit & same).sum())
    fp = int((hit & ~same).sum())
    fn = int((~hit & same).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    return precision, tp / (tp + fn) if tp + fn else 0.0


def evaluate(
    pairs: list[Pair], embedder: MiniLMEmbedder
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    texts = sorted({p.a for p in pairs} | {p.b for p in pairs})
    vecs = dict(zip(texts, embedder.embed(texts), strict=True))
    sims = np.array([float(np.dot(vecs[p.a], vecs[p.b])) for p in pairs])
    agree = np.array([prompts_agree(p.a, p.b) for p in pairs])
    same = np.array([p.same for p in pairs])
    rows = []
    for t in THRESHOLDS:
        p1, r1 = precision_recall(sims >= t, same)
        p2, r2 = precision_recall((sims >= t) & agree, same)
        rows.append({"threshold": t, "cos_p": p1, "cos_r": r1, "chk_p": p2, "chk_r": r2})
    return rows, sims, agree


def pick_default(rows: list[dict]) -> dict:
    """The highest threshold whose precision (with the check) meets the target and whose
    recall is within ``RECALL_SLACK`` of the best such recall: nearly all the recall, with
    as much of cosine's own margin as that allows."""
    ok = [r for r in rows if r["chk_p"] >= TARGET_PRECISION]
    best = max(r["chk_r"] for r in ok)
    return max((r for r in ok if r["chk_r"] >= best - RECALL_SLACK), key=lambda r: r["threshold"])


def plot(rows: list[dict], holdout: list[dict], default: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["threshold"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(t, [r["cos_p"] for r in rows], "--", color="tab:red", label="precision, cosine only")
    ax.plot(t, [r["cos_r"] for r in rows], "--", color="tab:blue", label="recall, cosine only")
    ax.plot(t, [r["chk_p"] for r in rows], "-", color="tab:red", label="precision, + second check")
    ax.plot(t, [r["chk_r"] for r in rows], "-", color="tab:blue", label="recall, + second check")
    ax.plot(t, [r["chk_p"] for r in holdout], ":", color="tab:red", label="precision, held-out")
    ax.plot(t, [r["chk_r"] for r in holdout], ":", color="tab:blue", label="recall, held-out")
    ax.axhline(TARGET_PRECISION, color="grey", lw=0.8, ls=":")
    ax.axvline(default["threshold"], color="black", lw=0.8, ls=":")
    ax.annotate(f"default {default['threshold']:.2f}", (default["threshold"], 0.05),
                xytext=(4, 0), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("cosine similarity threshold (MiniLM)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Semantic cache on the labelled pairs")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _table(rows: list[dict]) -> None:
    print(
        "| threshold | precision (cosine) | recall (cosine) | precision (+check) | recall (+check) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threshold']:.2f} | {r['cos_p']:.3f} | {r['cos_r']:.3f} | "
              f"{r['chk_p']:.3f} | {r['chk_r']:.3f} |")  # fmt: skip


def _summary(name: str, pairs: list[Pair], sims: np.ndarray, agree: np.ndarray) -> None:
    same = np.array([p.same for p in pairs])
    print(f"{name}: {len(pairs)} pairs ({same.sum()} paraphrases, {(~same).sum()} hard negatives); "
          f"cosine median {np.median(sims[same]):.3f} / {np.median(sims[~same]):.3f}; "
          f"negatives at cosine >= 0.95: {(sims[~same] >= 0.95).sum()}; the second check alone "
          f"accepts {agree[same].sum()} paraphrases and {agree[~same].sum()} negatives")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", type=Path, default=HERE / "quality.png")
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()
    embedder = MiniLMEmbedder()
    pairs, held = load_pairs("pairs"), load_pairs("holdout")
    rows, sims, agree = evaluate(pairs, embedder)
    hrows, hsims, hagree = evaluate(held, embedder)
    _summary("Labelled set", pairs, sims, agree)
    _summary("Held-out set", held, hsims, hagree)
    print("\nLabelled set (the second check was tuned on it):\n")
    _table(rows)
    print("\nHeld-out set:\n")
    _table(hrows)
    default = pick_default(rows)
    h = next(r for r in hrows if r["threshold"] == default["threshold"])
    print(f"\nDefault {default['threshold']:.2f}: precision {default['chk_p']:.3f}, recall "
          f"{default['chk_r']:.3f} on the labelled set; precision {h['chk_p']:.3f}, recall "
          f"{h['chk_r']:.3f} held out (with the second check)")  # fmt: skip
    if args.show_errors:
        t = default["threshold"]
        for ss, aa, pp in ((sims, agree, pairs), (hsims, hagree, held)):
            for s, a, p in zip(ss, aa, pp, strict=True):
                if (s >= t and a) != p.same:
                    kind = "FALSE HIT " if not p.same else "missed    "
                    print(f"{kind} {s:.3f} agree={a}  {p.a!r} | {p.b!r}")
    plot(rows, hrows, default, args.plot)
    print(f"Plot: {args.plot}")


if __name__ == "__main__":
    main()
