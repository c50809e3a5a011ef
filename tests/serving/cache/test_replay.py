"""Cached bodies replayed as streams, and streams assembled into bodies: a round trip."""

from serving.cache.replay import StreamAssembler, fresh_response, stream_chunks
from serving.cache.stage import hit_charge

USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def _chat_body(text: str, finish: str = "stop") -> dict:
    return {
        "id": "old", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish}],
        "usage": USAGE,
    }  # fmt: skip


def test_chat_round_trip_keeps_text_spacing_and_finish_reason():
    body = fresh_response(_chat_body("  Hello,  world!\nBye "), request_id="req_1", created=9,
                          model="pub")  # fmt: skip
    chunks = stream_chunks("chat.completions", body, include_usage=True)
    assert {c["id"] for c in chunks} == {"req_1"} and chunks[-1]["usage"] == USAGE
    asm = StreamAssembler()
    for c in chunks:
        asm.feed("chat.completions", c)
    assert asm.complete()
    again = asm.response("chat.completions", request_id="req_1", created=9, model="pub",
                         usage=USAGE)  # fmt: skip
    assert again["choices"] == body["choices"]


def test_completions_round_trip_with_length_finish():
    body = {"id": "x", "object": "text_completion", "created": 1, "model": "m", "usage": USAGE,
            "choices": [{"index": 0, "text": "a b c", "finish_reason": "length",
                         "logprobs": None}]}  # fmt: skip
    chunks = stream_chunks("completions", body, include_usage=False)
    assert all("usage" not in c for c in chunks)
    asm = StreamAssembler()
    for c in chunks:
        asm.feed("completions", c)
    out = asm.response("completions", request_id="x", created=1, model="m", usage=USAGE)
    assert out["choices"] == body["choices"]


def test_broken_or_unfinished_streams_are_not_complete():
    asm = StreamAssembler()
    asm.feed("chat.completions", {"choices": [{"index": 0, "delta": {"content": "a"}}]})
    assert not asm.complete()
    asm.feed("chat.completions", {"error": {"message": "boom"}})
    asm.feed("chat.completions", {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert not asm.complete()


def test_fresh_response_does_not_touch_the_cached_body():
    cached = _chat_body("x")
    fresh_response(cached, request_id="new", created=2, model="pub")["choices"][0]["index"] = 5
    assert cached["id"] == "old" and cached["choices"][0]["index"] == 0


def test_hit_charge_splits_the_full_cost_exactly():
    assert hit_charge(1_000, 0) == (0, 1_000)
    assert hit_charge(1_000, 100) == (1_000, 0)
    assert hit_charge(333, 50) == (167, 166)  # rounded half up
    assert hit_charge(0, 50) == (0, 0)
