"""The GPU check script (benchmarks/engine/gpu_check.py) at CI sizes on the CPU, so it never
rots before a lent GPU runs it: the whole script as a process, and its checks' power to fail."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.engine import gpu_check

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow  # runs the GPU check's smoke run in a process
def test_the_smoke_run_passes_and_writes_its_reports(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine.gpu_check", "--device", "cpu", "--smoke",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "smoke"
    names = [c["name"] for c in report["checks"]]
    assert len(names) == 5 and all(c["ok"] for c in report["checks"]), report["checks"]
    assert any("preemption" in n for n in names) and any("abort" in n for n in names)
    preempt = next(c for c in report["checks"] if "preemption" in c["name"])
    assert not preempt["detail"].startswith("0 preemptions")
    workloads = [r["workload"] for r in report["speed"]]
    assert workloads[0].startswith("1 streams") and workloads[-1].startswith("mixed")
    for r in report["speed"]:
        assert r["switchyard"]["tok_s"] > 0 and r["transformers"]["tok_s"] > 0
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| batched vs one at a time | yes |" in md


def test_the_logits_check_catches_a_wrong_rotary_layout():
    """The reference built without moving Q/K rows out of the GGUF's interleaved layout is
    another function: the engine's logits fall far outside the tolerance."""
    torch.set_num_threads(1)
    cfg = dataclasses.replace(gpu_check.SMOKE, n_layers=1)
    w = gpu_check.random_weights(cfg, seed=5)
    tok = gpu_check.byte_level_tokenizer(cfg.vocab_size)
    ids = gpu_check.prompts(tok, [30], seed=1)[0]
    cpu = torch.device("cpu")
    ours = gpu_check.paged_logits(gpu_check.our_model(cfg, w, cpu, torch.float32), ids, 7)

    def ref_logits(weights) -> torch.Tensor:
        ref = gpu_check.reference_model(cfg, weights, cpu, torch.float32)
        with torch.inference_mode():
            return ref(torch.tensor([ids])).logits[0]

    right = (ours - ref_logits(w)).abs().max().item()
    assert right <= gpu_check.LOGITS_ATOL
    # Permuted twice: the reference sees the GGUF's rows where it wants its own.
    wrong_w = dict(w)
    for name, heads in (("blk.0.attn_q.weight", cfg.n_heads), ("blk.0.attn_k.weight", cfg.n_kv_heads)):  # fmt: skip
        wrong_w[name] = gpu_check._unpermute(w[name], heads)
    wrong = (ours - ref_logits(wrong_w)).abs().max().item()
    assert wrong > 20 * gpu_check.LOGITS_ATOL


def test_the_byte_level_tokenizer_has_the_models_vocabulary_and_specials():
    tok = gpu_check.byte_level_tokenizer(gpu_check.SMOLLM2_135M.vocab_size)
    assert tok.vocab_size == 49152
    assert tok.id_to_token(0) == "<|endoftext|>" and 2 in tok.eos_token_ids
    for text in [
        "  runs   of spaces",
        "Unicode: naïve café 日本語 🙂",
        "digits 12345",
        "x = f(y)\n",
    ]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(17 <= i < 17 + 256 for i in ids)  # one byte-level token a byte
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert chat.endswith("<|im_start|>assistant\n")
    assert tok.encode(chat)[0] == 1  # <|im_start|> is one special token
