"""The ``m2m`` command line: help for everything, ``info``, ``openapi``, ``serve`` wiring."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import m2m
from m2m import cli

SPEC = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_and_option_has_help():
    parser = cli.build_parser()
    commands = _subparsers(parser)
    assert {"serve", "info", "openapi"} <= set(commands)
    listed = {
        choice.dest: choice.help
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for choice in a._choices_actions
    }
    for name, sub in commands.items():
        assert listed.get(name), f"command {name!r} has no help text"
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, (
                f"{name} {action.option_strings} lacks help"
            )


def test_help_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "m2m", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "serve" in out.stdout and "info" in out.stdout


def test_info_lists_collections_and_counts(tmp_path, capsys):
    with m2m.Client(tmp_path) as client:
        client.create_collection("alpha", 3, "l2").add(["a", "b"], np.eye(2, 3, dtype=np.float32))
        client.create_collection("beta", 5)
    assert cli.main(["info", "--path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 collection(s)" in out
    assert "alpha\tdim=3\tmetric=l2\tcount=2" in out and "beta\tdim=5\tmetric=cosine\tcount=0" in out
    assert cli.main(["info", "--path", str(tmp_path / "missing")]) == 1


def test_openapi_command_prints_the_checked_in_spec(capsys):
    pytest.importorskip("fastapi")
    assert cli.main(["openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(SPEC.read_text())


def test_serve_builds_settings_and_warns_when_exposed(monkeypatch, tmp_path, capsys):
    pytest.importorskip("uvicorn")
    import m2m.server.serve as serve_module

    seen = {}

    def capture(settings, access_log=False):  # records what `m2m serve` would run
        seen["settings"] = settings
        return 0

    monkeypatch.setattr(serve_module, "serve", capture)
    monkeypatch.setenv("M2M_API_KEYS", "")
    keys = tmp_path / "keys"
    keys.write_text("from-file:write\n")
    assert (
        cli.main(["serve", "--path", str(tmp_path), "--port", "8123", "--no-grpc", "--host", "0.0.0.0"]) == 0
    )
    assert "NO API KEY is configured" in capsys.readouterr().err
    settings = seen["settings"]
    assert (settings.host, settings.port, settings.grpc_port, settings.api_keys) == (
        "0.0.0.0",
        8123,
        None,
        {},
    )
    assert (
        cli.main(
            [
                "serve",
                "--path",
                str(tmp_path),
                "--api-key",
                "k1:admin",
                "--api-keys-file",
                str(keys),
                "--max-body-bytes",
                "1000",
                "--host",
                "0.0.0.0",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "NO API KEY" not in err and "k1" not in err and "from-file" not in err
    settings = seen["settings"]
    assert settings.max_body_bytes == 1000 and settings.grpc_port == 9090 and settings.blas_threads == 1
    assert {k: r.name for k, r in settings.api_keys.items()} == {"k1": "ADMIN", "from-file": "WRITE"}
    assert cli.main(["serve", "--path", str(tmp_path), "--api-key", "k1:root"]) == 2
    assert "unknown role" in capsys.readouterr().err


def test_importing_m2m_pulls_in_no_server_or_client_dependency():
    code = (
        "import sys, m2m, m2m.clients, m2m.server, m2m.server.settings, m2m.cli\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'grpc', 'fastapi', 'uvicorn', 'starlette'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
