"""docs/your-own.md as a newcomer runs it: a folder of their own images trains, and the page's plugin package
(a schedule, a dataset, a denoiser, a sampler and a training objective, from its code blocks) appears in
``bench list`` and runs in the page's own commands."""

from __future__ import annotations

import json
import shlex

import numpy as np
from PIL import Image

from tests.helpers import YOUR_OWN, doc_blocks, invoke, your_own_plugins

AS_A_TEST = ["--device", "cpu", "--no-tensorboard", "--quiet"]


def page_commands(start: str) -> list[list[str]]:
    """The page's ``bench`` commands that start with ``start``, as argument lists."""
    return [
        shlex.split(line)[1:]
        for block in doc_blocks(YOUR_OWN, "bash")
        for line in block.splitlines()
        if line.startswith(start)
    ]


def test_a_folder_of_your_own_images_trains(tmp_path, monkeypatch):
    """The page's command on a folder of two classes of 20x20 images (resized to 16x16)."""
    rng = np.random.default_rng(0)
    for name, level in (("dark", 40), ("light", 200)):
        (tmp_path / "my-images" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal(level, 20, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "my-images" / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    (command,) = page_commands("bench run --dataset folder")
    result = invoke(*command, *AS_A_TEST, "--out", "out", "--run-id", "mine")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "mine" / "config.json").read_text())
    assert (config["dataset"], config["image_size"]) == ("folder", 16)
    assert json.loads((tmp_path / "out" / "mine" / "metrics.json").read_text())["image_shape"] == [1, 16, 16]


def test_the_pages_plugins_are_listed_and_run(tmp_path, monkeypatch):
    with your_own_plugins(tmp_path, monkeypatch) as names:
        listing = invoke("list")
        assert listing.exit_code == 0, listing.output
        for name in names:
            assert f"  {name} " in listing.output, name
        commands = page_commands("bench run --denoiser three-convs")
        assert len(commands) == 2
        for i, command in enumerate(commands):
            result = invoke(*command, *AS_A_TEST, "--out", str(tmp_path / "out"), "--run-id", f"run{i}")
            assert result.exit_code == 0, result.output
        first = json.loads((tmp_path / "out" / "run0" / "metrics.json").read_text())
        assert (first["sample"]["method"], first["sample"]["grid"]) == ("plain-ddim", "karras")
        second = json.loads((tmp_path / "out" / "run1" / "config.json").read_text())
        assert second["denoiser_options"] == {"objective": "middle-l1", "target": "x0"}
        assert second["dataset"] == "blobs"
