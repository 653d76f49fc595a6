"""bench/workdirs.py: how results files record the command that made them; the state benchmarks resume from."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.workdirs import State, command_line, portable  # noqa: E402


def test_paths_inside_a_checkouts_bench_become_relative_to_its_root():
    assert portable("/work/bench_wt/bench/work/quality-64") == "bench/work/quality-64"
    assert portable("/home/u/nnunet_gsd/bench/results/audit") == "bench/results/audit"


def test_other_absolute_paths_keep_only_their_last_part():
    assert portable("/data/sets/Kvasir-SEG") == "PATH/Kvasir-SEG"
    assert portable("/data/sets/Kvasir-SEG/") == "PATH/Kvasir-SEG"
    assert portable("--out=/tmp/x/survey") == "--out=PATH/survey"
    assert portable("convert kvasir --source /d/K --id 5") == "convert kvasir --source PATH/K --id 5"


def test_relative_paths_and_plain_values_are_left_alone():
    assert portable("bench/work/x") == "bench/work/x"
    assert portable("0.285715") == "0.285715"
    assert portable("heavy_S_R") == "heavy_S_R"


def test_command_line_drops_background_and_names_the_script():
    assert (command_line("bench/quality.py", ["--source", "/d/Kvasir-SEG", "--background", "--jobs", "1"])
            == ".venv/bin/python bench/quality.py --source PATH/Kvasir-SEG --jobs 1")


def test_write_markdown_names_every_run_that_trained(tmp_path):
    from bench.workdirs import write_markdown
    write_markdown(tmp_path / "r", ["# R"], ["a --x 1"])
    assert (tmp_path / "r.md").read_text() == "# R\nCommand: `a --x 1`\n"
    write_markdown(tmp_path / "r", ["# R"], ["a --x 1", "a --x 2"])
    assert (tmp_path / "r.md").read_text() == "# R\nCommands:\n\n- `a --x 1`\n- `a --x 2`\n"


def test_processes_sharing_a_state_keep_each_others_commands(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"runs": {}, "datasets": {}, "command": "the run before the list"}))
    first, second = State(path), State(path)
    first.add_command("run A")
    second.add_command("run B")
    second.add_command("run A")
    assert json.loads(path.read_text())["commands"] == ["the run before the list", "run A", "run B"]


def test_processes_sharing_a_state_keep_each_others_records(tmp_path):
    path = tmp_path / "state.json"
    first, second = State(path), State(path)
    first.set("arm A", trained=True)
    second.set("arm B", trained=True)
    first.set("arm A", evaluated=True)
    second.set_dataset(612, {"convert": "key"})
    assert json.loads(path.read_text()) == {"runs": {"arm A": {"trained": True, "evaluated": True},
                                                     "arm B": {"trained": True}},
                                            "datasets": {"612": {"convert": "key"}}}


def test_a_state_from_before_the_shared_class_keeps_its_steps(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"steps": {"cv:stock:0": {"train_s": 12.5}}, "command": "its one run"}))
    state = State(path)
    assert state.run("cv:stock:0") == {"train_s": 12.5}
    assert state.commands == ["its one run"]
