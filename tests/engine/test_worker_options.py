"""The worker's command line (`manage.py serve_model` and `python -m serving.engine.server`
share it): every option reaches ``serve``, and bad values are refused with a message."""

from __future__ import annotations

import argparse

import pytest
import torch

from serving.engine import server


def parse(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    server.add_arguments(parser)
    return server.serve_options(vars(parser.parse_args(list(argv))))


def test_isolation_is_on_by_default_on_cpu_and_reaches_serve():
    assert parse()["isolation_tokens"] == (None if torch.cuda.is_available() else 0)
    assert server.resolve_isolation("auto", cuda=False) == 0
    assert server.resolve_isolation("auto", cuda=True) is None
    assert parse("--isolation-tokens", "off")["isolation_tokens"] is None
    opts = parse("--isolation-tokens", "0", "--isolation-prefill-tokens", "32")
    assert opts["isolation_tokens"] == 0
    assert opts["isolation_prefill_tokens"] == 32
    assert set(opts) <= set(server.serve.__kwdefaults__)  # every option is a serve() keyword


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--isolation-tokens", "-1"], "must be at least 0, got -1"),
        (["--isolation-prefill-tokens", "0"], "must be at least 1, got 0"),
        (["--isolation-tokens", "many"], "invalid integer value: 'many'"),
    ],
)
def test_bad_isolation_values_are_refused(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err


def test_the_auth_token_comes_from_the_environment(monkeypatch):
    assert parse()["auth_token"] is None
    monkeypatch.setenv(server.TOKEN_ENV, "from-env")
    assert parse()["auth_token"] == "from-env"
    assert parse("--auth-token", "given")["auth_token"] == "given"


@pytest.mark.parametrize(
    "host,token,warned",
    [
        ("0.0.0.0", None, True),
        ("10.1.2.3", "", True),
        ("worker.internal", None, True),
        ("0.0.0.0", "secret", False),
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
)
def test_an_open_worker_without_a_token_warns_loudly(caplog, host, token, warned):
    with caplog.at_level("WARNING", logger="serving.engine.server"):
        server.warn_if_open(host, token)
    assert ("WITHOUT an auth token" in caplog.text) is warned
