"""Class-conditional runs end to end: the networks' class embeddings and null class, label dropout, the run
folder's record of the conditioning, the commands that sample and score with guidance, and every bad input
refused with exit code 2 before anything is written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import denoisers
import schedules
from bench.config import RunConfig, SampleConfig, TrainConfig
from bench.process.denoiser import NULL_LABEL
from bench.process.diffusion import Diffusion
from bench.runs.experiment import build_experiment
from bench.runs.run_folder import RunFolder
from bench.training.checkpoint import load_checkpoint
from bench.training.trainer import Trainer
from tests.helpers import TINY_UNET, invoke

CONDITIONAL = [*TINY_UNET, "--conditional"]


def randomize_outputs(net: torch.nn.Module) -> None:
    """The backbones start with zeroed output layers (every output 0): give every parameter random values so
    that what the labels change shows in the output."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize(
    ("name", "options"),
    [("unet", {"base_channels": 64, "channel_mult": (1,)}), ("transformer", {"depth": 1, "hidden_size": 32}),
     ("direct", {"base_channels": 64, "channel_mult": (1,)})],
)  # fmt: skip
def test_conditional_networks_embed_the_class_and_the_null_class(name, options):
    net = denoisers.get(name)((1, 8, 8), num_classes=3, **options).eval()
    randomize_outputs(net)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([10, 200, 500, 900])
    outputs = [net(x, t, torch.full((4,), k)) for k in range(3)]
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])
    null = net(x, t, torch.full((4,), NULL_LABEL))
    assert torch.equal(net(x, t), null) and torch.equal(net(x, t, None), null)  # None: the null class
    assert all(not torch.allclose(null, out) for out in outputs)
    mixed = net(x, t, torch.tensor([0, 1, NULL_LABEL, 2]))  # per item, not per batch
    assert torch.allclose(mixed[1], outputs[1][1], atol=1e-6) and torch.allclose(mixed[2], null[2], atol=1e-6)
    embedding = next(m for m in net.modules() if isinstance(m, denoisers.common.ClassEmbedding))
    assert embedding.table.num_embeddings == 4  # 3 classes and the null one


@pytest.mark.parametrize("name", ["unet", "transformer"])
def test_unconditional_networks_have_no_class_parameters_and_refuse_labels(name):
    torch.manual_seed(0)
    plain = denoisers.get(name)((1, 8, 8))
    torch.manual_seed(0)
    conditional = denoisers.get(name)((1, 8, 8), num_classes=10)
    extra = set(conditional.state_dict()) - set(plain.state_dict())
    assert extra and all("label_emb" in key or "y_embedder" in key for key in extra)
    for key, value in plain.state_dict().items():  # the same initial weights, the embedding drawn after
        assert torch.equal(value, conditional.state_dict()[key]), key
    with pytest.raises(ValueError, match="unconditional"):
        plain(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))


def test_plugins_declare_whether_they_take_labels():
    assert denoisers.accepts_labels("unet") and denoisers.accepts_labels("transformer")
    assert denoisers.accepts_labels("direct") and not denoisers.accepts_labels("direct-distilled")


class LabelRecorder(torch.nn.Module):
    """A denoiser that predicts zero noise and keeps every label batch it is trained with."""

    def __init__(self) -> None:
        super().__init__()
        self.recipe = denoisers.Recipe()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, t, y=None):
        self.seen.append(y.clone())
        return x * self.scale


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_label_dropout_trains_the_null_class_at_its_rate(dropout):
    images, labels = torch.zeros(400, 1, 4, 4), torch.arange(400) % 5
    net = LabelRecorder()
    config = TrainConfig(steps=25, batch_size=400, label_dropout=dropout, warmup_steps=0, log_every=25)
    trainer = Trainer(net, Diffusion(torch.linspace(1e-4, 0.02, 50)), images, config, net.recipe,
                      device=torch.device("cpu"), seed=0, labels=labels)  # fmt: skip
    trainer.run(progress=False)
    seen = torch.cat(net.seen)
    nulls = (seen == NULL_LABEL).float().mean().item()
    # 10,000 Bernoulli(p) draws: the standard error is at most 0.005
    assert abs(nulls - dropout) < 0.02
    kept = seen != NULL_LABEL
    assert set(seen[kept].tolist()) == set(range(5))  # the others keep their own class


def test_conditional_run_records_its_conditioning(tmp_path):
    result = invoke("run", *CONDITIONAL, "--label-dropout", "0.2", "--guidance-scale", "2",
                    "--guidance-interval", "0.5,20", "--out", str(tmp_path), "--run-id", "c",
                    "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tmp_path / "c"
    config = json.loads((run / "config.json").read_text())
    assert config["conditional"] is True and config["train"]["label_dropout"] == 0.2
    assert config["sample"]["guidance_scale"] == 2.0 and config["sample"]["guidance_interval"] == [0.5, 20.0]
    assert RunConfig.from_dict(config).sample.guidance_interval == (0.5, 20.0)
    meta = load_checkpoint(run / "checkpoint.pt")["meta"]
    assert meta["num_classes"] == 10
    sample = json.loads((run / "metrics.json").read_text())["sample"]
    assert sample["guidance_scale"] == 2.0 and sample["guidance_interval"] == [0.5, 20.0]
    with np.load(run / "samples.npz") as saved:
        assert saved["labels"].tolist() == [i % 10 for i in range(8)]  # balanced classes
    # the checkpoint's identity holds the classes: an unconditional config cannot load it
    saved_config = RunFolder(run).read_config()
    plain = build_experiment(replace(saved_config, conditional=False, sample=SampleConfig()))
    with pytest.raises(ValueError, match="num_classes"):
        load_checkpoint(run / "checkpoint.pt", plain.identity)


def test_eval_scores_each_guidance_scale_with_class_metrics(tmp_path):
    assert invoke("run", *CONDITIONAL, "--out", str(tmp_path), "--run-id", "c", "-q").exit_code == 0
    run = tmp_path / "c"
    result = invoke("eval", str(run), "--n", "20", "--steps", "4", "--guidance-scale", "1,3",
                    "--guidance-interval", "1,100", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = json.loads((run / "metrics.json").read_text())["evaluations"]
    assert [(e["sample"]["guidance_scale"], e["sample"]["guidance_interval"]) for e in entries] == [
        (1.0, None),
        (3.0, [1.0, 100.0]),
    ]
    diffusion = Diffusion(schedules.make("linear", 50))
    grid = [49, 33, 16, 0]  # 4 steps over T = 50
    inside = sum(1 < float(diffusion.sigmas[t]) <= 100 for t in grid)
    assert inside == 2  # the interval covers part of the grid: sigma 12.9 and 1.5, not 359 nor 0.045
    assert [e["sample"]["nfe"] for e in entries] == [4, 4 + inside]
    for entry in entries:
        assert 0 <= entry["quality"]["class_accuracy"] <= 1
        assert entry["quality"]["fd_class_worst"] >= entry["quality"]["fd_class_mean"] > 0
        assert entry["references"]["class-mean-image"]["class_accuracy"] >= 0
        assert "fd_class_mean" in entry["references"]["real"]
    sampled = invoke("sample", str(run), "--n", "6", "--steps", "3", "--class", "7", "-q")
    assert sampled.exit_code == 0, sampled.output
    npz = next(Path(line) for line in sampled.output.split() if line.endswith(".npz"))
    assert "class7" in npz.name
    with np.load(npz) as saved:
        assert saved["labels"].tolist() == [7] * 6


def unlabelled_folder(root: Path) -> Path:
    for i in range(12):
        Image.new("L", (8, 8), 20 * i).save(root / f"img{i:02d}.png")
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--guidance-scale", "2"], "needs a class-conditional run"),
        (["--guidance-scale", "-1", "--conditional"], "guidance_scale must be >= 0"),
        (["--conditional", "--label-dropout", "1"], "label_dropout must be in [0, 1)"),
        (["--conditional", "--label-dropout", "-0.1"], "label_dropout must be in [0, 1)"),
        (["--label-dropout", "0.2"], "--label-dropout applies to class-conditional runs"),
        (["--conditional", "--guidance-scale", "2", "--guidance-interval", "5,1"], "SIGMA_LO < SIGMA_HI"),
        (["--conditional", "--guidance-interval", "1,5"], "needs a guidance scale other than 1"),
        (["--conditional", "--label-dropout", "0", "--guidance-scale", "2"], "never learnt"),
        (["--conditional", "--denoiser", "direct-distilled"], "does not take class labels"),
    ],
)
def test_bad_conditioning_is_a_usage_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = invoke("run", *TINY_UNET, *args, "--out", str(out), "-q")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists() or not any(out.iterdir())


def test_conditional_on_an_unlabelled_folder_is_a_usage_error(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    out = tmp_path / "out"
    result = invoke("run", *TINY_UNET, "--conditional", "--dataset", "folder", "--data-root",
                    str(unlabelled_folder(folder)), "--out", str(out), "-q")  # fmt: skip
    assert result.exit_code == 2 and "needs a labelled dataset" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_sampling_settings_a_run_cannot_use_are_refused(tmp_path):
    assert invoke("run", *TINY_UNET, "--out", str(tmp_path), "--run-id", "u", "-q").exit_code == 0
    assert invoke("run", *CONDITIONAL, "--out", str(tmp_path), "--run-id", "c", "-q").exit_code == 0
    cases = [
        ("u", ["--guidance-scale", "2"], "needs a class-conditional run"),
        ("u", ["--class", "1"], "needs a class-conditional run"),
        ("c", ["--class", "10"], "class 10 is out of range"),
        ("c", ["--class", "-1"], "class_label must be >= 0"),
    ]
    for run, args, message in cases:
        result = invoke("sample", str(tmp_path / run), "--n", "2", "--steps", "2", *args, "-q")
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert not (tmp_path / run / "samples").exists()
    result = invoke("eval", str(tmp_path / "u"), "--n", "20", "--guidance-scale", "1,2", "-q")
    assert result.exit_code == 2 and "needs a class-conditional run" in result.output
    assert json.loads((tmp_path / "u" / "metrics.json").read_text()).get("evaluations", []) == []


def test_sample_config_names_its_conditioning_in_file_names():
    assert SampleConfig(method="ddim", steps=5).label() == "ddim-5steps-eta1"
    guided = SampleConfig(
        method="ddim", steps=5, guidance_scale=2.5, guidance_interval=(0.3, 5), class_label=4
    )
    assert guided.label() == "ddim-5steps-eta1-cfg2.5-interval0.3-5-class4"
