# SPDX-License-Identifier: Apache-2.0
"""The bundled teacher's recipe (xview_testbed.teacher): source styles only, runs end to end at toy size,
and a re-run reuses every finished step."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import replace

import torch

from xview_loc_ros.models import load_checkpoint
from xview_testbed.steps import StepRunner
from xview_testbed.synth.randomize import SOURCE_STYLES, TARGET_STYLES
from xview_testbed.teacher import RECIPE, train_teacher


def test_recipe_sees_only_source_styles_and_keeps_suburb():
    assert set(RECIPE.styles) <= set(SOURCE_STYLES) and "suburb" in RECIPE.styles
    assert not set(RECIPE.styles) & set(TARGET_STYLES)
    assert len(RECIPE.seeds) == len(set(RECIPE.seeds)) >= 3  # independent cities per style


def test_toy_recipe_trains_a_teacher_and_a_rerun_skips_every_step(tmp_path):
    toy = replace(RECIPE, styles=("suburb", "industrial"), seeds=(7,), size_m=240.0, pairs=16, epochs=1)
    out = tmp_path / "teacher"
    buf = io.StringIO()
    with redirect_stdout(buf):
        best = train_teacher(StepRunner(out), out, toy)
    first = buf.getvalue()
    assert first.count("$ xview-loc synth city") == 2 and first.count("$ xview-loc synth pairs") == 2
    assert "--like-drive" in first and "--mix balanced" in first and "--photometric 1.0" in first
    model, ckpt = load_checkpoint(best)
    assert model.config["arch"] == "small"
    args = ckpt["train_args"]
    assert args["photometric"] == 1.0 and args["mix"] == "balanced" and len(args["data"]) == 2
    before = torch.load(best, weights_only=True)["state_dict"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        again = train_teacher(StepRunner(out), out, toy)
    assert again == best and "$ " not in buf.getvalue() and buf.getvalue().count("(exists, skipped)") == 5
    after = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
