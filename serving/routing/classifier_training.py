"""Train the task classifier (simple / complex / code) from the labelled examples in the repo.

Multinomial logistic regression, full-batch gradient descent from zero with L2 decay, on
MiniLM embeddings: deterministic, so a rebuild reproduces the committed weights (a test
checks it). ``manage.py train_task_classifier`` runs it and writes
``serving/routing/data/classifier.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.routing.classifier import CLASSES, DATA_DIR, LinearClassifier

STEPS = 400
LEARNING_RATE = 2.0
L2 = 1e-3


def load_examples(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        if r["label"] not in CLASSES:
            raise ValueError(f"{path}: unknown label {r['label']!r}")
    return [r["text"] for r in rows], [r["label"] for r in rows]


def fit(x: np.ndarray, labels: list[str]) -> LinearClassifier:
    y = np.zeros((len(labels), len(CLASSES)), dtype=np.float64)
    y[np.arange(len(labels)), [CLASSES.index(lab) for lab in labels]] = 1.0
    x = x.astype(np.float64)
    w = np.zeros((len(CLASSES), x.shape[1]))
    b = np.zeros(len(CLASSES))
    for _ in range(STEPS):
        logits = x @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - y) / len(labels)
        w -= LEARNING_RATE * (grad.T @ x + L2 * w)
        b -= LEARNING_RATE * grad.sum(axis=0)
    return LinearClassifier(w, b, CLASSES)


def accuracy(model: LinearClassifier, x: np.ndarray, labels: list[str]) -> float:
    return float(np.mean([p == lab for p, lab in zip(model.predict(x), labels, strict=True)]))


@dataclass
class TrainingReport:
    model: LinearClassifier
    train_accuracy: float
    heldout_accuracy: float
    train_size: int
    heldout_size: int
    confusion: dict[str, dict[str, int]]


def train(embed, data_dir: Path = DATA_DIR) -> TrainingReport:
    """``embed(texts) -> array (n, 384)``; returns the model and its accuracy."""
    texts, labels = load_examples(data_dir / "train.jsonl")
    held_texts, held_labels = load_examples(data_dir / "heldout.jsonl")
    x = np.asarray(embed(texts), dtype=np.float32)
    xh = np.asarray(embed(held_texts), dtype=np.float32)
    model = fit(x, labels)
    confusion = {a: dict.fromkeys(CLASSES, 0) for a in CLASSES}
    for pred, truth in zip(model.predict(xh), held_labels, strict=True):
        confusion[truth][pred] += 1
    return TrainingReport(model, accuracy(model, x, labels), accuracy(model, xh, held_labels),
                          len(texts), len(held_texts), confusion)  # fmt: skip


def to_json(report: TrainingReport) -> str:
    m = report.model
    return json.dumps(
        {
            "classes": list(m.classes),
            "weights": np.round(m.weights.astype(np.float64), 6).tolist(),
            "bias": np.round(m.bias.astype(np.float64), 6).tolist(),
            "train_size": report.train_size,
            "heldout_size": report.heldout_size,
            "heldout_accuracy": round(report.heldout_accuracy, 4),
        }
    )
