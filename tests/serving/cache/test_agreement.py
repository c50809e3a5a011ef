"""The second check: prompts that embed alike but ask different things are told apart."""

import pytest

from serving.cache.agreement import prompts_agree, signature

SAME = [
    ("What is the capital of France?", "Tell me the capital of France."),
    ("What's France's capital?", "What is the capital of France?"),
    ("How do I convert 5 km to miles?", "Convert 5 kilometres to miles please"),
    ("How can I reset my password?", "How do I reset my password?"),
    ("Who wrote Hamlet?", "Who is the author of Hamlet?"),
    ("What is the capital of France?", "tell me the capital of france"),
]
DIFFERENT = [
    ("convert 5 km to miles", "convert 5 miles to km"),
    ("What is the capital of France?", "What is the capital of Spain?"),
    ("convert 5 km to miles", "convert 6 km to miles"),
    ("best laptop for gaming", "cheapest laptop for gaming"),
    ("flights from Paris to London", "flights from London to Paris"),
    ("Is a dog bigger than a cat?", "Is a cat bigger than a dog?"),
    ("How do I reset my password?", "How do I reset my username?"),
    ("numbers from 5 to 10", "numbers from 10 to 5"),
    ("Did Germany beat Brazil?", "Did Brazil beat Germany?"),
    ("Did Germany beat Brazil?", "did brazil beat germany?"),
    ("Is the US bigger than the UK?", "Is the UK bigger than the US?"),
    ("Move the file from folder A to folder B.", "Move the file from folder B to folder A."),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_paraphrases_agree(a, b):
    assert prompts_agree(a, b) and prompts_agree(b, a)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_hard_negatives_disagree(a, b):
    assert not prompts_agree(a, b) and not prompts_agree(b, a)


def test_signature_parts():
    sig = signature("Convert 5 km to miles for Alice in NASA units")
    assert sig.numbers == ("5",)
    assert sig.names == {"alice", "nasa"}
    assert sig.content == ("convert", "kilometer", "mile", "alice", "nasa", "unit")
    assert signature("What's France's capital?").content == ("capital", "france")
