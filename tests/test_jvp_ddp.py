"""MeanFlow and sCT under DistributedDataParallel: their JVP runs on the bare model without gradients, and
only the student's forward goes through the DDP wrapper, so the gradient sync sees every gradient. Two gloo
processes train three steps on different batches; every parameter must end the same on both (a loss whose
gradient bypassed the wrapper would leave each rank with its own weights), and must differ from the start."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import env

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch

    import denoisers
    import schedules
    from bench.config import FlowMapConfig, RunConfig, TrainConfig
    from bench.distributed import all_objects, init_distributed, shutdown
    from bench.process.diffusion import Diffusion
    from bench.training.objectives import ObjectiveContext, build_objective
    from bench.training.trainer import Trainer

    info = init_distributed("cpu")
    torch.manual_seed(0)
    net = denoisers.get(sys.argv[1])((1, 8, 8), base_channels=8, channel_mult=(1,), num_res_blocks=1)
    start = [p.detach().clone() for p in net.parameters()]
    diffusion = Diffusion(schedules.get("rectified-flow")(50))
    flow_map = FlowMapConfig(derivative=sys.argv[2])
    config = RunConfig(train=TrainConfig(batch_size=8, steps=3), flow_map=flow_map)
    objective = build_objective(ObjectiveContext(config, net.recipe, net, diffusion, (1, 8, 8)))
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    trainer = Trainer(net, diffusion, images, config.train, net.recipe, device=torch.device("cpu"), seed=0,
                      dist=info, objective=objective)
    for step in range(3):
        trainer.train_step(trainer.images[trainer.batch_indices(step)])
        trainer.step += 1
    weights = [p.detach().clone() for p in net.parameters()]
    gathered = all_objects(weights, info)
    if info.rank == 0:
        same = all(torch.equal(a, b) for a, b in zip(gathered[0], gathered[1]))
        moved = any(not torch.equal(a, b) for a, b in zip(weights, start))
        print("same" if same else "differ", "moved" if moved else "still")
    shutdown(info)
    """
)


@pytest.mark.slow  # three torchrun launches, about 30 s
@pytest.mark.parametrize(
    ("design", "derivative"), [("meanflow", "jvp"), ("meanflow", "finite-difference"), ("sct", "jvp")]
)
def test_a_jvp_objective_under_ddp_keeps_every_rank_in_sync(tmp_path, design, derivative):
    script = tmp_path / "jvp_ddp.py"
    script.write_text(SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
    ]
    proc = subprocess.run([*cmd, design, derivative], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same moved" in proc.stdout, proc.stdout + proc.stderr[-2000:]
