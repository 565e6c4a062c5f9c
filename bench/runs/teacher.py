"""The teacher a student learns from: a complete run of this project, rebuilt from its folder, checked
against its student before anything is written, and loaded as a deterministic sampler (its EMA model)."""

from __future__ import annotations

import torch

from ..config import DistillConfig
from ..environment import configure_allocator, configure_tf32
from ..evaluation.throughput import forward_flops_per_image
from ..process.denoiser import CONSISTENCY_FUNCTIONS, Denoiser
from ..training.objectives import declaration
from ..training.pairs import Teacher, TeacherError
from .experiment import Experiment, load_run
from .run_folder import RunFolder


def load_teacher(config: DistillConfig, student: Experiment) -> Teacher:
    """The teacher that ``config`` names for the ``student`` run, checked before anything is written: a
    complete run of an iterative, unconditional design of the same image size and, for the designs that
    follow its ODE from a noise level rather than from pure noise (consistency distillation, reflow), of the
    same schedule; for reflow, a flow."""
    recipe, name = student.recipe, student.config.denoiser
    if config.teacher is None:
        raise TeacherError(
            f"denoiser {name!r} learns from a teacher: give --teacher RUN_DIR, a complete run of an "
            "iterative design (e.g. results/<run-id> of `bench run --denoiser unet`"
            + (", with --target flow)" if recipe.reflows else ")")
        )
    if student.config.train.hflip and recipe.pairs == "teacher":
        raise TeacherError("--hflip breaks teacher pairs: a mirrored image is not the teacher's map of x_T")
    folder = RunFolder(config.teacher)
    if not folder.is_run():
        raise TeacherError(f"--teacher {config.teacher!r} is not a run folder: it has no config.json")
    state = folder.state()
    if state != "complete" or not folder.has_metrics():
        raise TeacherError(
            f"--teacher {config.teacher!r} is not a complete run (state: {state or 'unknown'}); finish it "
            f"with `bench run --resume {config.teacher}`"
        )
    cuda = [torch.cuda.current_device()] if student.device.type == "cuda" else []
    # rebuilding the teacher seeds torch: keep the student's random streams
    with torch.random.fork_rng(devices=cuda):
        exp, ckpt = load_run(folder.path, device=student.config.device)
    # ... and sets process-wide switches from the teacher's config: the student's own apply
    configure_tf32(student.device, student.config.tf32)
    configure_allocator(student.device, student.config.tune_malloc)
    check_teacher(config.teacher, exp, student)
    exp.model.load_state_dict(ckpt["ema"]["module"])
    model = exp.model.to(exp.device).eval()
    flops = forward_flops_per_image(model, exp.data.image_shape, exp.device)
    denoiser = Denoiser.of(model, exp.diffusion, exp.recipe, clip_x0=config.teacher_clip_x0)
    return Teacher(folder.path, denoiser, int(ckpt["step"]), flops, tuple(exp.data.image_shape), exp.device)


def check_teacher(path: str, teacher: Experiment, student: Experiment) -> None:
    """Refuse a teacher that cannot teach this student (see :func:`load_teacher`)."""
    recipe = student.recipe
    if teacher.recipe.timesteps != "all" or teacher.recipe.prediction in CONSISTENCY_FUNCTIONS:
        why = "trained only on pure noise" if teacher.recipe.timesteps != "all" else "a consistency model"
        raise TeacherError(
            f"--teacher {path!r} is a {teacher.config.denoiser!r} run, {why}, with no probability-flow ODE "
            "to follow; a teacher must be an iterative design trained at every noise level (unet, "
            "transformer, reflow)"
        )
    if teacher.data.image_shape != student.data.image_shape:
        raise TeacherError(
            f"--teacher {path!r} makes {'x'.join(map(str, teacher.data.image_shape))} images, but "
            f"this run trains on {'x'.join(map(str, student.data.image_shape))}; use a teacher of the same "
            "dataset and --image-size"
        )
    if teacher.num_classes != student.num_classes:

        def classes(exp: Experiment) -> str:
            return f"class-conditional ({exp.num_classes} classes)" if exp.num_classes else "unconditional"

        raise TeacherError(
            f"--teacher {path!r} is {classes(teacher)} and this run is {classes(student)}; a teacher must be "
            "conditioned as its student is (the one-step designs are unconditional)"
        )
    follows_ode = declaration(recipe.objective).teacher == "ode-steps" or recipe.timesteps == "all"
    if follows_ode and teacher.config.diffusion != student.config.diffusion:
        t, s = teacher.config.diffusion, student.config.diffusion
        raise TeacherError(
            f"--teacher {path!r} was trained on the {t.schedule!r} schedule (T={t.timesteps}) and this run "
            f"uses {s.schedule!r} (T={s.timesteps}); {student.config.denoiser} follows the teacher's ODE "
            f"between noise levels, so give this run --schedule {t.schedule} --timesteps {t.timesteps}"
        )
    if recipe.reflows and teacher.recipe.prediction != "flow":
        raise TeacherError(
            f"--teacher {path!r} predicts {teacher.recipe.prediction!r}: reflow trains on a flow's own "
            "(noise, image) pairs, so the teacher must be a flow run (bench run --target flow --schedule "
            "rectified-flow) or a reflow run"
        )
