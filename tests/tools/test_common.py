"""tools.common: the console runner (log file, progress digest, one-line failure) and dataset.json reading."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import console_env, load_dataset_json, run_command


def test_run_command_logs_everything_and_echoes_the_digest(tmp_path: Path, capsys):
    log = tmp_path / "logs" / "step.log"
    script = "print('Epoch 0'); print('noise'); print('Epoch 1')"
    run_command([sys.executable, "-c", script], console_env(), log_file=log,
                echo=lambda line: line.upper() if line.startswith("Epoch") else None)
    assert log.read_text() == "Epoch 0\nnoise\nEpoch 1\n"
    assert capsys.readouterr().out == "EPOCH 0\nEPOCH 1\n"


def test_failed_command_is_a_user_error_naming_the_log(tmp_path: Path):
    log = tmp_path / "fail.log"
    with pytest.raises(UserError, match=r"step X failed with exit code 3 \(full log: .*fail.log\)") as e:
        run_command([sys.executable, "-c", "print('last words'); raise SystemExit(3)"], console_env(),
                    log_file=log, what="step X")
    assert "last words" in str(e.value)


def test_dataset_json_from_folder_or_file(tmp_path: Path):
    (tmp_path / "dataset.json").write_text('{"file_ending": ".png"}')
    assert load_dataset_json(tmp_path) == load_dataset_json(tmp_path / "dataset.json") == {"file_ending": ".png"}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_dataset_json(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        load_dataset_json(tmp_path / "nowhere")



def test_an_interrupted_command_stops_its_child(tmp_path: Path, monkeypatch):
    """Ctrl-C in run_command must not leave the child running (Popen's exit waits only 0.25 s for it)."""
    started = []

    class Recording(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    def interrupt(line):
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "Popen", Recording)
    begin = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_command([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                    console_env(), log_file=tmp_path / "log.txt", echo=interrupt)
    assert started[0].poll() is not None and time.time() - begin < 30  # ended, not left sleeping
