"""``tune-tl dashboard DIR``: optuna-dashboard on the search's study, on 127.0.0.1 only."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from tune_tl.cli import main

REPO = Path(__file__).resolve().parents[1]


def tiny_study(folder: Path) -> None:
    folder.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dashboard_serves_the_searchs_study_on_localhost_and_prints_its_url(tmp_path):
    pytest.importorskip("optuna_dashboard")
    tiny_study(tmp_path / "demo")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tune_tl.cli", "dashboard", str(tmp_path / "demo"), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/dashboard/studies/1" in line
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert body is not None and '"demo"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_without_optuna_dashboard_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    tiny_study(tmp_path / "demo")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    assert main(["dashboard", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'tune-tl[dashboard]'" in err[0]


def test_a_folder_without_a_study_is_named(tmp_path, capsys):
    pytest.importorskip("optuna_dashboard")
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "optuna.db not found" in capsys.readouterr().err
