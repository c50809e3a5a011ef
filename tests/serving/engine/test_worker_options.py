"""The worker's command line (`manage.py serve_model` and `python -m serving.engine.cli`
share it): every option reaches the worker's options and its ``EngineConfig``, and bad values
are refused with a message."""

from __future__ import annotations

import argparse

import pytest
import torch

from serving.engine import cli
from serving.engine.config import EngineConfig, resolve_isolation

# Every option with a value other than its default.
GIVEN = {
    "--model": "other.gguf",
    "--host": "0.0.0.0",
    "--port": "9101",
    "--no-embeddings": None,
    "--kv-cache-mb": "3",
    "--max-num-seqs": "5",
    "--max-num-batched-tokens": "7",
    "--max-prefill-tokens-while-decoding": "11",
    "--isolation-tokens": "13",
    "--isolation-prefill-tokens": "17",
    "--kv-dtype": "float16",
    "--weights": "hybrid",
    "--threads": "2",
    "--auth-token": "given",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p


def parse(*argv: str) -> cli.WorkerOptions:
    return cli.worker_options(vars(parser().parse_args(list(argv))))


def test_isolation_is_on_by_default_on_cpu_and_reaches_the_engine_config():
    assert parse().engine.isolation_tokens == (None if torch.cuda.is_available() else 0)
    assert resolve_isolation("auto", cuda=False) == 0
    assert resolve_isolation("auto", cuda=True) is None
    assert parse("--isolation-tokens", "off").engine.isolation_tokens is None
    config = parse("--isolation-tokens", "0", "--isolation-prefill-tokens", "32").engine
    assert config.isolation_tokens == 0
    assert config.isolation_prefill_tokens == 32


def test_every_option_reaches_the_worker():
    flags = {a.option_strings[0] for a in parser()._actions if a.dest != "help"}
    assert flags == set(GIVEN)  # an option added to the CLI is added here too
    argv = [part for flag, value in GIVEN.items() for part in (flag, value) if part is not None]
    assert parse(*argv) == cli.WorkerOptions(
        model="other.gguf",
        engine=EngineConfig(
            kv_cache_bytes=3 << 20,
            kv_dtype=torch.float16,
            max_num_seqs=5,
            max_num_batched_tokens=7,
            max_prefill_tokens_while_decoding=11,
            isolation_tokens=13,
            isolation_prefill_tokens=17,
            weights="hybrid",
            threads=2,
        ),
        host="0.0.0.0",
        port=9101,
        embeddings=False,
        auth_token="given",
    )


def test_the_command_lines_defaults_are_the_configs(monkeypatch):
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    assert parse() == cli.WorkerOptions(
        engine=EngineConfig(isolation_tokens=resolve_isolation("auto"))
    )


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


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"isolation_tokens": -1}, "isolation_tokens must be 0 or more, got -1"),
        ({"isolation_prefill_tokens": 0}, "isolation_prefill_tokens must be at least 1, got 0"),
        ({"weights": "q3"}, "weight format must be one of"),
    ],
)
def test_an_engine_config_refuses_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**fields)


def test_the_auth_token_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    assert parse().auth_token is None
    monkeypatch.setenv(cli.TOKEN_ENV, "from-env")
    assert parse().auth_token == "from-env"
    assert parse("--auth-token", "given").auth_token == "given"


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
    with caplog.at_level("WARNING", logger="serving.engine.cli"):
        cli.warn_if_open(host, token)
    assert ("WITHOUT an auth token" in caplog.text) is warned
