"""Standard FID, IS and KID through torch-fidelity, tested with a randomly initialised Inception weight file
(the real one cannot be downloaded here): the bench's numbers equal the library's own on the same images,
the chunked and resumed path equals the one-shot path, and every missing or bad input is a clear error."""

from __future__ import annotations

import json
import pathlib
from unittest import mock

import numpy as np
import pytest
import torch

from bench.metrics import fidelity
from bench.metrics.fidelity import InceptionWeightsError, StandardInception, find_weights, standard_metrics
from tests.helpers import invoke, run_ok


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """torch-fidelity's Inception-V3 with He-initialised random weights, saved as a state dict."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with (
        mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None),
        mock.patch(
            "torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}
        ),
    ):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("conv.weight"):
            value = torch.randn(value.shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
        elif key == "fc.weight":
            value = torch.randn(value.shape, generator=g)
        state[key] = value
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(state, path)
    return path


def images(n: int, high: int, seed: int) -> torch.Tensor:
    return torch.randint(
        0, high, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


class RGB(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.expand(-1, 3, -1, -1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def test_the_bench_reports_the_librarys_numbers(weights):
    import torch_fidelity

    samples, reference = images(24, 256, 0), images(20, 180, 1)
    extractor = StandardInception(weights)
    pool, logits = extractor.features(samples)
    ours = standard_metrics(pool, logits, extractor.features(reference)[0])
    theirs = torch_fidelity.calculate_metrics(
        input1=RGB(samples), input2=RGB(reference), cuda=False, fid=True, isc=True, kid=True,
        feature_extractor_weights_path=str(weights), kid_subset_size=20, verbose=False, save_cpu_ram=True,
    )  # fmt: skip
    assert ours["fid"] > 1e-3 and ours["inception_score"]["mean"] > 1.01  # the random net is not degenerate
    pairs = [
        (ours["fid"], theirs["frechet_inception_distance"]),
        (ours["inception_score"]["mean"], theirs["inception_score_mean"]),
        (ours["inception_score"]["std"], theirs["inception_score_std"]),
        (ours["kid_inception"]["mean"], theirs["kernel_inception_distance_mean"]),
        (ours["kid_inception"]["std"], theirs["kernel_inception_distance_std"]),
    ]
    for a, b in pairs:
        assert a == pytest.approx(b, rel=1e-4)
    # [-1, 1] floats give the features of the uint8 images they come from
    assert torch.equal(extractor.features(samples.float() / 127.5 - 1)[0], pool)


def test_chunked_resumed_and_one_shot_paths_agree(weights, tmp_path, monkeypatch):
    import bench.runs.resample
    from bench.runs import fid_samples
    real_reference = bench.runs.resample.reference_features
    monkeypatch.setattr(  # 16 training images keep the reference cheap
        bench.runs.resample,
        "reference_features",
        lambda ext, name, train, progress: real_reference(ext, name, train[:16]),
    )
    run_dir = run_ok(tmp_path)
    kwargs = dict(
        n=10, method="ddim", steps=[3], eta=1.0, seed=0, progress=False, fid_weights=weights, fid_chunk=4
    )
    real_generate, calls = fid_samples.generate, []

    def interrupted_at_the_second_chunk(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(*args, **kw)

    monkeypatch.setattr(fid_samples, "generate", interrupted_at_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        bench.runs.resample.evaluate_run(run_dir, **kwargs)
    monkeypatch.setattr(fid_samples, "generate", real_generate)
    resumed = bench.runs.resample.evaluate_run(run_dir, **kwargs)[0]
    again = bench.runs.resample.evaluate_run(run_dir, **kwargs)[0]
    assert resumed.sample.images_per_s is not None and again.sample.images_per_s is None  # nothing made twice
    assert again.fid == resumed.fid

    (chunks,) = (run_dir / "samples").glob("fid-step10-ddim-3steps-*")
    saved = [torch.load(p, weights_only=True) for p in sorted(chunks.glob("chunk-*.pt"))]
    assert len(saved) == 3 and sum(len(s["images"]) for s in saved) == 12
    samples = torch.cat([s["images"] for s in saved])[:10]
    extractor = StandardInception(weights)
    pool, logits = extractor.features(samples)  # one shot, from the images alone
    from bench.datasets import load

    reference = extractor.features(load("digits").train_images[:16])[0]
    assert resumed.fid == pytest.approx(standard_metrics(pool, logits, reference)["fid"], rel=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["fid"] for e in metrics["evaluations"]] == [resumed.fid, again.fid]


def test_the_reference_cache_is_keyed_by_the_images_not_only_the_name(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    extractor = StandardInception(weights)
    a, b = images(4, 256, 2).float() / 127.5 - 1, images(4, 256, 3).float() / 127.5 - 1
    first = fidelity.reference_features(extractor, "folder", a)
    assert torch.equal(fidelity.reference_features(extractor, "folder", a), first)  # from the cache
    assert not torch.equal(fidelity.reference_features(extractor, "folder", b), first)
    assert len(list((tmp_path / "cache" / "fid-reference").iterdir())) == 2


def test_weights_are_found_or_the_error_says_how(weights, tmp_path, monkeypatch):
    monkeypatch.delenv(fidelity.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(InceptionWeightsError) as err:
        find_weights()
    for hint in (
        "--inception-weights PATH",
        fidelity.WEIGHTS_ENV,
        "--download-inception",
        fidelity.WEIGHTS_FILE,
    ):
        assert hint in str(err.value)
    assert find_weights(weights) == weights
    monkeypatch.setenv(fidelity.WEIGHTS_ENV, str(weights))
    assert find_weights() == weights
    with pytest.raises(InceptionWeightsError, match="no Inception weight file"):
        find_weights(tmp_path / "nope.pth")


def test_bad_weight_files_are_refused_before_unpickling(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80not a torch file")
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(10, 10)}, other)
    pickled = tmp_path / "pickled.pth"
    torch.save({"fc.weight": pathlib.Path("x")}, pickled)  # an arbitrary object: refused by weights_only
    cases = [
        (garbage, "is not a PyTorch weight file: it is not a PyTorch file"),
        (other, "Conv2d_1a_3x3.conv.weight should have shape"),
        (pickled, "is not a PyTorch weight file: it holds Python objects other than tensors"),
    ]
    for path, message in cases:
        with pytest.raises(InceptionWeightsError, match=message) as err:
            fidelity.check_weights(path)
        assert "weights_only=False" not in str(err.value)  # torch's advice to unpickle is never relayed


def test_cli_errors_are_usage_errors(weights, tmp_path, monkeypatch):
    WEIGHTS_FILE = fidelity.WEIGHTS_FILE
    monkeypatch.delenv(fidelity.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((6, 12, 12, 1), dtype=np.uint8))  # digits are 8x8
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"nonsense")
    cases = [
        (["--fid"], "--inception-weights PATH"),
        (["--fid", "--inception-weights", str(garbage)], f"expected the Inception weights {WEIGHTS_FILE}"),
        (["--fid", "--inception-weights", str(weights)], "samples have shape (1, 12, 12)"),
    ]
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((6, 8, 8, 3), dtype=np.uint8))  # digits have one channel
    result = invoke(
        "eval", "--samples", str(rgb), "--dataset", "digits", "--fid", "--inception-weights", str(weights)
    )
    assert result.exit_code == 2 and "samples have shape (3, 8, 8)" in result.output
    for extra, message in cases:
        result = invoke("eval", "--samples", str(wrong), "--dataset", "digits", *extra, "--quiet")
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_a_fid_run_scores_at_the_end_and_during_training(weights, tmp_path, monkeypatch):
    import bench.runs.measure
    import bench.runs.resample
    from bench.metrics import fidelity as fidelity_module

    real_reference = fidelity_module.reference_features

    def cheap_reference(ext, name, train, progress=False):  # 16 training images keep the reference cheap
        return real_reference(ext, name, train[:16])

    for module in (fidelity_module, bench.runs.resample):
        monkeypatch.setattr(module, "reference_features", cheap_reference)
    monkeypatch.setattr(bench.runs.measure, "DURING_TRAINING_SAMPLES", 12)
    run_dir = run_ok(
        tmp_path,
        "--eval",
        "--n-samples",
        "12",
        "--eval-every",
        "10",
        "--fid",
        "--inception-weights",
        str(weights),
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (
        metrics["fid"] > 0 and metrics["inception_score"]["mean"] >= 1 and "mean" in metrics["kid_inception"]
    )
    from bench.runs.run_folder import RunFolder

    rows = RunFolder(run_dir).read_eval_curve()
    assert [row["step"] for row in rows] == [10] and rows[0]["fid"] > 0
    evaluated = invoke(
        "eval", str(run_dir), "--fid", "--inception-weights", str(weights), "--n", "12", "--quiet"
    )
    assert evaluated.exit_code == 0 and "; FID " in evaluated.output, evaluated.output
    entry = json.loads((run_dir / "metrics.json").read_text())["evaluations"][0]
    assert entry["fid"] > 0 and entry["fid_settings"]["n_samples"] == 12
    monkeypatch.delenv(fidelity.WEIGHTS_ENV, raising=False)
    missing = invoke(
        "run",
        "--denoiser",
        "tiny-test",
        "--dataset",
        "digits",
        "--fid",
        "--out",
        str(tmp_path / "m"),
        "--quiet",
    )
    assert (
        missing.exit_code == 2
        and "--inception-weights PATH" in missing.output
        and not (tmp_path / "m").exists()
    )
