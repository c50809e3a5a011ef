"""Per-request sampling over a batch of logits, vectorised where requests agree.

Greedy rows (a temperature below ``GREEDY_TEMPERATURE`` or ``top_p == 0``) take an argmax;
penalties, temperature, top-k and top-p are applied to the rows that ask for them; seeded rows
draw from their own generator, so a seeded request gives the same tokens whatever else is in
the batch.

Rows of sequences with a grammar (``seq.constraint``: structured output, tools) are masked
first, so that whichever way a row is decided it picks a token the grammar allows; rows
without one pay nothing.

One row's trouble is that row's alone: a row whose logits or probabilities are not finite, or
whose draw raises, is reported in ``failed`` (row -> reason) and gets no token; every other
row is sampled as if it were not there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from serving.engine import grammar
from serving.engine.sequence import Sequence


@dataclass
class Sampled:
    tokens: list[int | None]  # None where the row failed
    logprobs: torch.Tensor | None  # raw log-probabilities (B, V) when any row asked for them
    failed: dict[int, str] = field(default_factory=dict)


def _apply_penalties(logits: torch.Tensor, seqs: list[Sequence], failed: dict[int, str]) -> None:
    for row, seq in enumerate(seqs):
        p = seq.params
        if not (p.presence_penalty or p.frequency_penalty) or not seq.num_output_tokens:
            continue
        try:
            out = torch.tensor(seq.output_token_ids, dtype=torch.long)
            counts = torch.bincount(out, minlength=logits.shape[1]).to(logits.dtype)
            logits[row] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(
                logits.dtype
            )
        except (RuntimeError, ValueError, IndexError) as exc:
            failed[row] = f"penalties failed: {exc}"


def _apply_grammars(logits: torch.Tensor, seqs: list[Sequence], failed: dict[int, str]) -> None:
    """Mask each constrained row to the tokens its grammar allows next (after the finiteness
    check: the masked-out logits are -inf on purpose)."""
    rows = [i for i, s in enumerate(seqs) if s.constraint is not None and i not in failed]
    if not rows:
        return
    try:
        stuck = grammar.apply_masks(logits, rows, [seqs[i].constraint for i in rows])
    except Exception as exc:  # noqa: BLE001 - these rows' failure, not the batch's
        for row in rows:
            failed[row] = f"the grammar mask failed: {exc}"
        return
    for row in stuck:
        failed[row] = "the grammar allows no next token"


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


def _draw(probs: torch.Tensor, gen: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=gen))


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> Sampled:
    """Next token per row; rows that cannot be sampled are in ``failed`` instead."""
    logits = logits.float()
    failed: dict[int, str] = {}
    want_logprobs = any(s.params.logprobs for s in seqs)
    logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
    _apply_penalties(logits, seqs, failed)
    # A model row with NaN or +-inf in it has no meaningful token (an argmax would pick the NaN).
    finite = torch.isfinite(logits).all(dim=-1).tolist()
    for row, ok in enumerate(finite):
        if not ok:
            failed.setdefault(row, "the model produced non-finite logits")
    _apply_grammars(logits, seqs, failed)
    tokens: list[int | None] = [None] * len(seqs)
    live = [i for i in range(len(seqs)) if i not in failed]
    greedy_rows = [i for i in live if seqs[i].params.greedy]
    if greedy_rows:
        picked = logits[greedy_rows].argmax(dim=-1).tolist()
        for row, tok in zip(greedy_rows, picked, strict=True):
            tokens[row] = tok
    sample_rows = [i for i in live if not seqs[i].params.greedy]
    if not sample_rows:
        return Sampled(tokens, logprobs, failed)
    temps = torch.tensor([seqs[i].params.temperature for i in sample_rows], dtype=torch.float32)
    sub = logits[sample_rows] / temps.unsqueeze(1)
    top_k = torch.tensor([seqs[i].params.top_k for i in sample_rows])
    top_p = torch.tensor([seqs[i].params.top_p for i in sample_rows], dtype=sub.dtype)
    if bool((top_k > 0).any()) or bool((top_p < 1).any()):
        sub = _top_k_top_p(sub, top_k, top_p)
    probs = sub.softmax(dim=-1)
    # A usable distribution: finite, non-negative, some mass (multinomial refuses the rest).
    usable = (torch.isfinite(probs).all(dim=-1) & (probs >= 0).all(dim=-1)) & (probs.sum(-1) > 0)
    ok_rows = []
    for j, ok in enumerate(usable.tolist()):
        if ok:
            ok_rows.append(j)
        else:
            failed[sample_rows[j]] = "the sampling distribution is not finite"
    unseeded = [j for j in ok_rows if seqs[sample_rows[j]].generator is None]
    if unseeded:
        try:
            drawn = torch.multinomial(probs[unseeded], 1).squeeze(1).tolist()
            for j, tok in zip(unseeded, drawn, strict=True):
                tokens[sample_rows[j]] = tok
        except RuntimeError:
            # Find the row that cannot be drawn from; the others still get their tokens.
            for j in unseeded:
                try:
                    tokens[sample_rows[j]] = _draw(probs[j], None)
                except RuntimeError as exc:
                    failed[sample_rows[j]] = f"sampling failed: {exc}"
    for j in ok_rows:
        gen = seqs[sample_rows[j]].generator
        if gen is not None:
            try:
                tokens[sample_rows[j]] = _draw(probs[j], gen)
            except RuntimeError as exc:
                failed[sample_rows[j]] = f"sampling failed: {exc}"
    return Sampled(tokens, logprobs, failed)
