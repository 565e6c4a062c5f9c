"""The training objective as a plugin registry: ``bench list`` reads what each declares, a third-party package
adds one through the ``bench.objectives`` entry point and trains with it, the run's checks refuse what a
declaration rules out (exit 2, nothing written), and the cost a run records is the one its objective declared.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

import denoisers
from bench.config import ConsistencyConfig, FlowMapConfig, RunConfig
from bench.training.objectives import OBJECTIVES, Declaration, StatelessObjective, declaration
from denoisers.unet import build_unet
from tests.helpers import invoke, refused_run

BUILT_IN = (
    *("consistency-distillation", "consistency-training", "consistency-tuning", "continuous-consistency"),
    "meanflow",
    "progressive-distillation",
    *("regression", "shortcut"),
)

TINY_ARGS = [
    "-o", "base_channels=8", "-o", "channel_mult=(1,)", "-o", "num_res_blocks=1",
    "--dataset", "digits", "--steps", "2", "--batch-size", "16", "--timesteps", "50", "--n-samples", "8",
    "--sample-steps", "5", "--no-eval", "--device", "cpu", "--no-tensorboard", "--quiet",
]  # fmt: skip
"""The 8-channel U-Net on 8x8 digits for two steps of 16 images, 8 samples, nothing scored."""

PLUGIN = textwrap.dedent(
    '''
    """A user's package: a training objective and a denoiser whose recipe names it."""

    import torch

    import denoisers
    from bench.training.objectives import OBJECTIVES, Declaration, StepCost
    from denoisers.unet import build_unet

    STEPS = []


    class HalfwayX0:
        """x0 at the middle noise level, L1: a loss no built-in design trains with."""

        def __init__(self, diffusion):
            self.diffusion = diffusion
            self.steps_taken = 0

        def bind(self, model):
            self.device = next(model.parameters()).device

        def loss(self, student, batch, step, generator):
            STEPS.append((step, tuple(batch.x0.shape), batch.inputs is None, batch.labels is None))
            t = torch.full((batch.x0.shape[0],), self.diffusion.num_timesteps // 2, device=batch.x0.device)
            noise = torch.randn(batch.x0.shape, generator=generator, device=batch.x0.device)
            x_t = self.diffusion.q_sample(batch.x0, t, noise)
            return (student(x_t, t)[0] - batch.x0).abs().flatten(1).mean(1)

        def after_step(self):
            self.steps_taken += 1

        def state_dict(self):
            return {"steps_taken": torch.tensor(self.steps_taken)}

        def load_state_dict(self, state):
            self.steps_taken = int(state["steps_taken"])


    @OBJECTIVES.register(
        "halfway-x0",
        declares=Declaration(predictions=("x0",), cost=lambda config: StepCost(extra_forwards=3)),
    )
    def halfway_x0(context):
        """x0 at the middle noise level with an L1 distance (a third-party objective)."""
        return HalfwayX0(context.diffusion)


    @denoisers.register("halfway-unet")
    def halfway_unet(image_shape, **options):
        """The unet backbone trained with the halfway-x0 objective."""
        recipe = denoisers.Recipe(prediction="x0", sampler="ddim", objective="halfway-x0")
        return build_unet(image_shape, recipe, **options)
    '''
)


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A distribution on sys.path whose entry points name an objective and a denoiser (as ``pip install``
    of a user's package would leave it); the registries forget both afterwards."""
    (tmp_path / "halfway_plugin.py").write_text(PLUGIN)
    info = tmp_path / "halfway_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halfway-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[bench.objectives]\nhalfway-x0 = halfway_plugin:halfway_x0\n\n"
        "[bench.denoisers]\nhalfway-unet = halfway_plugin:halfway_unet\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for registry in (OBJECTIVES, denoisers.REGISTRY):
        registry.reload_entry_points()
    yield tmp_path
    for registry, name in ((OBJECTIVES, "halfway-x0"), (denoisers.REGISTRY, "halfway-unet")):
        registry._plugins.pop(name, None)
        registry.reload_entry_points()


def objective_lines() -> dict[str, str]:
    """``bench list``'s objectives section, a line per objective by name."""
    result = invoke("list")
    assert result.exit_code == 0, result.output
    section = result.output.split("\nobjectives (", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0]: line for line in section.splitlines()[1:]}


def test_bench_list_shows_every_objective_with_what_it_trains_needs_and_costs():
    lines = objective_lines()
    assert set(lines) == set(BUILT_IN)
    expected = {
        "regression": ("trains eps/x0/v/edm/flow, takes teacher pairs, takes labels", "none"),
        "consistency-distillation": ("trains consistency, teacher's ODE steps", "+1 forward, +2 teacher"),
        "consistency-training": ("trains consistency", "+1 forward"),
        "progressive-distillation": ("trains x0/v/edm/flow, teacher's ODE steps", "+2 teacher"),
        "consistency-tuning": ("trains consistency, teacher's weights", "+1 forward"),
        "continuous-consistency": ("trains trigflow, forward-mode AD (JVP)", "+3 forwards"),
        "meanflow": ("trains flow-map, a second time input, forward-mode AD (JVP)", "+3 forwards"),
        "shortcut": ("trains flow-map, a second time input", "+0.5 forward"),
    }
    for name, (needs, calls) in expected.items():
        columns = [c.strip() for c in lines[name].split("  ") if c.strip()]
        assert columns[1:3] == [needs, calls], lines[name]


def test_a_third_party_objective_trains_two_steps_through_its_entry_point(plugin_package, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--denoiser", "halfway-unet", *TINY_ARGS, "--out", str(out), "--run-id", "toy")
    assert result.exit_code == 0, result.output
    import halfway_plugin

    # the trainer called the plugin's loss once per step, on the batch of images alone
    assert halfway_plugin.STEPS == [(0, (16, 1, 8, 8), True, True), (1, (16, 1, 8, 8), True, True)]
    run_dir = out / "toy"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert int(checkpoint["objective"]["steps_taken"]) == 2  # its state travels in the checkpoint
    # its declared cost is what the run records: 3 extra forwards per image beside forward and backward
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train = metrics["train"]
    per_image = train["training_flops_per_image"] + 3 * train["forward_flops_per_image"]
    assert metrics["cost"]["train_flops"] == pytest.approx(train["images_seen"] * per_image, rel=1e-12)
    assert train["images_seen"] == 32
    # bench list names it, with the package it came from
    assert "x0 at the middle noise level" in objective_lines()["halfway-x0"]
    assert "halfway-plugin" in OBJECTIVES.plugin("halfway-x0").source


@pytest.fixture
def toy_designs():
    """Registers objectives with the declarations under test and a denoiser naming each; forgets them."""

    class Zero(StatelessObjective):
        def loss(self, student, batch, step, generator):
            return batch.x0.flatten(1).mean(1) * 0

    added = []

    def design(name: str, declared: Declaration, *, labels: bool = False, **recipe: str) -> None:
        OBJECTIVES.register(name, lambda context: Zero(), declares=declared, description="a test objective")
        fields = {"prediction": "eps", "sampler": "ddim", **recipe, "objective": name}
        denoisers.register(
            f"net-{name}",
            lambda image_shape, **options: build_unet(image_shape, denoisers.Recipe(**fields), **options),
            labels=labels,
        )
        added.append(name)

    yield design
    for name in added:
        OBJECTIVES._plugins.pop(name, None)
        denoisers.REGISTRY._plugins.pop(f"net-{name}", None)


def refused(tmp_path, name: str, *args: str) -> str:
    return refused_run(tmp_path, "--denoiser", f"net-{name}", *args)


def test_what_a_declaration_rules_out_is_refused_before_anything_is_written(toy_designs, tmp_path):
    toy_designs("needs-ode", Declaration(predictions=("eps",), teacher="ode-steps"))
    assert "learns from a teacher: give --teacher RUN_DIR" in refused(tmp_path, "needs-ode")

    toy_designs("two-times", Declaration(predictions=("eps",), second_time=True))
    assert "needs a network that takes a second time input" in refused(tmp_path, "two-times")

    toy_designs("x0-only", Declaration(predictions=("x0",)))
    message = refused(tmp_path, "x0-only")
    assert "the x0-only objective trains the x0 prediction, not 'eps'" in message

    toy_designs("no-pairs", Declaration(predictions=("x0",)), prediction="x0", pairs="teacher",
                timesteps="terminal", sampler="one_shot")  # fmt: skip
    assert "takes no teacher pairs" in refused(tmp_path, "no-pairs")

    toy_designs("own-noise", Declaration(predictions=("eps",), own_noise=True))
    message = refused(tmp_path, "own-noise", "--noise-levels", "lognormal")
    assert "draws its own noise levels and weights its own loss" in message


def test_an_objective_without_labels_refuses_a_conditional_run(toy_designs, tmp_path):
    toy_designs("unlabelled", Declaration(predictions=("eps",)), labels=True)
    message = refused(tmp_path, "unlabelled", "--conditional")
    assert "trains no class-conditional model: it takes no labels" in message


def test_an_unknown_objective_is_refused_with_the_names_that_exist(tmp_path):
    denoisers.register(
        "net-unknown-objective",
        lambda image_shape, **options: build_unet(
            image_shape, denoisers.Recipe(objective="no-such-loss"), **options
        ),
    )
    try:
        message = refused_run(tmp_path, "--denoiser", "net-unknown-objective")
    finally:
        denoisers.REGISTRY._plugins.pop("net-unknown-objective", None)
    assert "unknown objective 'no-such-loss'" in message
    assert all(name in message for name in BUILT_IN)


@pytest.mark.parametrize(
    ("name", "solver", "extra", "teacher"),
    [
        ("regression", "heun", 0, 0),
        ("consistency-training", "heun", 1, 0),
        ("consistency-tuning", "heun", 1, 0),
        ("consistency-distillation", "heun", 1, 2),
        ("consistency-distillation", "ddim", 1, 1),
        ("progressive-distillation", "heun", 0, 2),
    ],
)
def test_each_built_in_objective_declares_its_network_calls(name, solver, extra, teacher):
    """One forward of the target network per example for the consistency objectives; the teacher's calls:
    Heun's two or DDIM's one per CD step, the two DDIM steps a progressive student learns in one."""
    cost = declaration(name).cost(RunConfig(consistency=ConsistencyConfig(teacher_solver=solver)))
    assert (cost.extra_forwards, cost.teacher_calls) == (extra, teacher)


@pytest.mark.parametrize(
    ("name", "settings", "extra"),
    [
        ("meanflow", {"derivative": "jvp"}, 3),
        ("meanflow", {"derivative": "finite-difference"}, 2),
        ("shortcut", {"consistency_fraction": 0.25}, 0.5),
        ("shortcut", {"consistency_fraction": 1.0}, 2),
    ],
)
def test_the_flow_map_objectives_declare_their_extra_forwards(name, settings, extra):
    """MeanFlow's du/dt: a JVP (three forwards' FLOPs as counted on the U-Net) or two more forwards;
    shortcut's two half steps on its self-consistency share of the batch; no teacher for either."""
    cost = declaration(name).cost(RunConfig(flow_map=FlowMapConfig(**settings)))
    assert (cost.extra_forwards, cost.teacher_calls) == (extra, 0)
