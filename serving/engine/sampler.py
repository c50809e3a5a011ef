"""Per-request sampling over a batch of logits, vectorised where requests agree.

Greedy rows take an argmax; penalties, temperature, top-k and top-p are applied to the rows
that ask for them; seeded rows draw from their own generator, so a seeded request gives the
same tokens whatever else is in the batch.
"""

from __future__ import annotations

import torch

from serving.engine.sequence import Sequence


def _apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> None:
    for row, seq in enumerate(seqs):
        p = seq.params
        if not (p.presence_penalty or p.frequency_penalty) or not seq.num_output_tokens:
            continue
        out = torch.tensor(seq.output_token_ids, dtype=torch.long)
        counts = torch.bincount(out, minlength=logits.shape[1]).to(logits.dtype)
        logits[row] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(
            logits.dtype
        )


def _top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[1]
    ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab)).unsqueeze(1)
    mask = ranks >= k
    probs = sorted_logits.softmax(dim=-1)
    cum = probs.cumsum(dim=-1) - probs  # mass strictly before each token
    mask |= cum > top_p.unsqueeze(1)
    sorted_logits = sorted_logits.masked_fill(mask, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> tuple[list[int], torch.Tensor | None]:
    """Next token per row, and the raw log-probabilities (B, V) when any row asked for them."""
    logits = logits.float()
    want_logprobs = any(s.params.logprobs for s in seqs)
    logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
    _apply_penalties(logits, seqs)
    temps = [s.params.temperature for s in seqs]
    greedy_rows = [i for i, t in enumerate(temps) if t <= 0]
    tokens = [0] * len(seqs)
    if greedy_rows:
        picked = logits[greedy_rows].argmax(dim=-1).tolist()
        for row, tok in zip(greedy_rows, picked, strict=True):
            tokens[row] = tok
    sample_rows = [i for i, t in enumerate(temps) if t > 0]
    if sample_rows:
        sub = logits[sample_rows] / torch.tensor([temps[i] for i in sample_rows]).unsqueeze(1)
        top_k = torch.tensor([seqs[i].params.top_k for i in sample_rows])
        top_p = torch.tensor([seqs[i].params.top_p for i in sample_rows], dtype=sub.dtype)
        if bool((top_k > 0).any()) or bool((top_p < 1).any()):
            sub = _top_k_top_p(sub, top_k, top_p)
        probs = sub.softmax(dim=-1)
        unseeded = [j for j, i in enumerate(sample_rows) if seqs[i].generator is None]
        if unseeded:
            drawn = torch.multinomial(probs[unseeded], 1).squeeze(1).tolist()
            for j, tok in zip(unseeded, drawn, strict=True):
                tokens[sample_rows[j]] = tok
        for j, i in enumerate(sample_rows):
            gen = seqs[i].generator
            if gen is not None:
                tokens[i] = int(torch.multinomial(probs[j], 1, generator=gen))
    return tokens, logprobs
