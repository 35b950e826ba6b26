# SPDX-License-Identifier: Apache-2.0
"""The one step-cache rule (xview_loc_ros.fsutil.StepCache) and the command steps of the demo and
the benchmarks (CommandSteps), on real files."""

from __future__ import annotations

import json

import pytest

from xview_loc_ros.fsutil import CommandSteps, StepCache


def _make(step: StepCache, text: str = "out") -> None:
    step.start(outputs=["a.txt", "sub"])
    (step.folder / "a.txt").write_text(text)
    (step.folder / "sub").mkdir()
    (step.folder / "sub" / "b.bin").write_bytes(b"12345")
    step.finish(["a.txt", "sub"], note="n")


def test_step_is_done_only_with_the_same_inputs_and_intact_outputs(tmp_path):
    step = StepCache(tmp_path / "s", {"teacher": "abc", "keep": 80.0})
    assert not step.done() and "no valid record" in step.why_not_done()
    _make(step)
    assert step.done() and step.record()["note"] == "n"
    assert StepCache(tmp_path / "s", {"teacher": "abc", "keep": 80}).done()  # JSON-equal inputs
    assert "inputs differ in keep" in StepCache(tmp_path / "s", {"teacher": "abc", "keep": 60.0}).why_not_done()
    (tmp_path / "s" / "a.txt").write_text("changed")
    assert "a.txt: missing or corrupt" in step.why_not_done()
    _make(step)
    (tmp_path / "s" / "sub" / "b.bin").unlink()  # a folder output: its listing is fingerprinted
    assert "sub: missing or corrupt" in step.why_not_done()
    # outputs only, for a reader that does not know the inputs
    _make(step)
    assert StepCache(tmp_path / "s", None).why_not_done(check_inputs=False) is None


def test_start_drops_the_record_first_and_removes_listed_outputs(tmp_path):
    step = StepCache(tmp_path / "s", {"x": 1})
    _make(step)
    (tmp_path / "s" / "keep.pt").write_text("checkpoint")
    step.start(outputs=["a.txt", "sub"])
    assert not step.done() and not (tmp_path / "s" / "a.txt").exists() and not (tmp_path / "s" / "sub").exists()
    assert (tmp_path / "s" / "keep.pt").is_file()  # not listed: left alone


def test_resumable_step_keeps_a_partial_run_of_the_same_inputs_only(tmp_path):
    folder = tmp_path / "aux"
    StepCache(folder, {"epochs": 3}).start(resumable=True)
    (folder / "last.pt").write_text("epoch 1")
    StepCache(folder, {"epochs": 3}).start(resumable=True)  # killed and restarted: resumes
    assert (folder / "last.pt").read_text() == "epoch 1"
    StepCache(folder, {"epochs": 5}).start(resumable=True)  # other inputs: from scratch
    assert not (folder / "last.pt").exists()
    assert json.loads((folder / "started.json").read_text()) == {"epochs": 5}


def test_command_steps_skip_done_steps_and_redo_what_was_made_from_a_redone_step(tmp_path):
    root, ran = tmp_path / "out", []
    model = tmp_path / "model.pt"  # a file outside the root the command reads
    model.write_text("v1")

    def steps(city_seed: int) -> None:
        s = CommandSteps(root)
        city, pairs = root / "city", root / "pairs.txt"
        s.run(
            city,
            ["synth", "city", "--seed", city_seed, "--out", city],
            lambda: (
                ran.append("city"),
                city.mkdir(parents=True),
                (city / "t.png").write_text(f"seed {city_seed}" * city_seed),
            ),
        )
        s.run(
            pairs,
            ["pairs", "--city", city / "t.png", "--model", model, "--out", pairs],
            lambda: (ran.append("pairs"), pairs.write_text("p")),
        )

    steps(1)
    assert ran == ["city", "pairs"]
    steps(1)
    assert ran == ["city", "pairs"]  # nothing re-run
    steps(2)  # another city: the pairs made from it are redone although their command is the same
    assert ran == ["city", "pairs", "city", "pairs"]
    model.write_text("v2")  # another model behind the same path
    steps(2)
    assert ran[-1] == "pairs" and len(ran) == 5
    (root / "pairs.txt").write_text("edited by hand")
    steps(2)
    assert len(ran) == 6 and (root / "pairs.txt").read_text() == "p"


def test_a_step_met_twice_in_one_session_stays_done(tmp_path):
    """A benchmark that builds one city for two purposes asks for its steps twice: the second time the step's
    own output (made by then) is not an input of it, so nothing is redone (this re-ran a whole city once)."""
    root, ran = tmp_path / "out", []
    s = CommandSteps(root)
    city = root / "city"

    def make() -> None:
        ran.append("city")
        city.mkdir(parents=True)
        (city / "t.png").write_text("t")

    assert s.run(city, ["synth", "city", "--out", city], make)
    assert not s.run(city, ["synth", "city", "--out", city], make)
    assert not CommandSteps(root).run(city, ["synth", "city", "--out", city], make)
    assert ran == ["city"]


def test_command_step_that_makes_nothing_fails(tmp_path):
    with pytest.raises(RuntimeError, match="did not make"):
        CommandSteps(tmp_path).run(tmp_path / "x", ["true"], lambda: None)
