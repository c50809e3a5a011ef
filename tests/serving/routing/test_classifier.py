"""The task classifier: rebuilt from the examples in the repo, checked on the held-out set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.routing.classifier import (
    DATA_DIR,
    WEIGHTS,
    LinearClassifier,
    TaskClassifier,
    heuristic_class,
)
from serving.routing.classifier_training import load_examples, train


@pytest.fixture(scope="module")
def report(embedder):
    return train(embedder.embed)


def test_the_labelled_sets_are_big_enough_and_disjoint():
    train_texts, train_labels = load_examples(DATA_DIR / "train.jsonl")
    held_texts, held_labels = load_examples(DATA_DIR / "heldout.jsonl")
    assert len(train_texts) >= 300 and len(held_texts) >= 100
    assert not set(train_texts) & set(held_texts)
    assert set(train_labels) == set(held_labels) == {"simple", "complex", "code"}


def test_rebuilding_reproduces_the_committed_weights(report):
    committed = LinearClassifier.load(WEIGHTS)
    assert committed.classes == report.model.classes
    assert np.abs(committed.weights - report.model.weights).max() < 1e-3
    assert np.abs(committed.bias - report.model.bias).max() < 1e-3
    assert json.loads(WEIGHTS.read_text())["heldout_accuracy"] == pytest.approx(
        report.heldout_accuracy, abs=1e-3
    )


def test_held_out_accuracy_is_at_least_85_percent(report):
    assert report.heldout_accuracy >= 0.85


def test_the_classifier_labels_held_out_prompts(embedder):
    clf = TaskClassifier(mode="embeddings", embedder=embedder)
    texts, labels = load_examples(DATA_DIR / "heldout.jsonl")
    got = [clf.classify(t) for t in texts]
    assert {how for _, how in got} == {"embeddings"}
    assert np.mean([c == lab for (c, _), lab in zip(got, labels, strict=True)]) >= 0.85


def test_heuristics_decide_when_embeddings_are_unavailable():
    clf = TaskClassifier(mode="heuristic")
    assert clf.classify("Write a Python function that sorts a list.") == ("code", "heuristic")
    assert clf.classify("Compare the causes of the two world wars.") == ("complex", "heuristic")
    assert clf.classify("What is the capital of Peru?") == ("simple", "heuristic")
    assert heuristic_class("```\nprint(1)\n```") == "code"


def test_the_gateways_bfloat16_classifier_labels_held_out_prompts(settings):
    import torch

    from serving.routing import classifier

    settings.SWITCHYARD_CLASSIFIER_DTYPE = "bfloat16"
    classifier._embedder.cache_clear()
    threads = torch.get_num_threads()  # the gateway's loader sets its own thread count
    try:
        clf = TaskClassifier(mode="embeddings")  # the gateway's own MiniLM, in bfloat16
        texts, labels = load_examples(DATA_DIR / "heldout.jsonl")
        got = [clf.classify(t) for t in texts]
        bert = clf._embedder.model[0].auto_model
        assert str(next(bert.parameters()).dtype) == "torch.bfloat16"
        assert {how for _, how in got} == {"embeddings"}
        assert np.mean([c == lab for (c, _), lab in zip(got, labels, strict=True)]) >= 0.95
    finally:
        classifier._embedder.cache_clear()
        torch.set_num_threads(threads)
