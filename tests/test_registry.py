import textwrap

import pytest

import denoisers
import schedules
from bench.registry import Registry, UnknownPluginError


def test_register_get_names_and_description():
    reg = Registry("widget", "bench.test-widgets")

    @reg.register("b")
    def b():
        """The b widget.

        More text that bench list does not print."""

    reg.register("a", lambda: None, description="The a widget")
    assert reg.names() == ["a", "b"]
    assert reg.get("b") is b
    assert reg.plugin("b").description == "The b widget."
    assert reg.plugin("a").description == "The a widget"
    assert "a" in reg and "zzz" not in reg


def test_unknown_name_lists_known_names():
    reg = Registry("widget", "bench.test-widgets")
    reg.register("alpha", lambda: None)
    with pytest.raises(UnknownPluginError, match=r"unknown widget 'beta'; known widgets: alpha"):
        reg.get("beta")
    assert issubclass(UnknownPluginError, ValueError)


def test_duplicate_name_is_refused():
    reg = Registry("widget", "bench.test-widgets")
    reg.register("x", lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x", lambda: 2)


def _install_fake_distribution(tmp_path, group: str, name: str) -> None:
    """Write a real installed distribution (dist-info with entry_points.txt) onto a sys.path folder."""
    (tmp_path / "fake_bench_plugin.py").write_text(
        textwrap.dedent(
            '''
            import torch

            def constant(T: int, *, beta: float = 0.01) -> torch.Tensor:
                """Constant betas, from a third-party package."""
                return torch.full((T,), beta, dtype=torch.float64)
            '''
        )
    )
    info = tmp_path / "fake_bench_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-bench-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = fake_bench_plugin:constant\n")


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, "bench.schedules", "constant")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = schedules.REGISTRY
    registry.reload_entry_points()
    try:
        assert "constant" in schedules.names()
        betas = schedules.make("constant", 7)
        assert betas.tolist() == [0.01] * 7
        plugin = registry.plugin("constant")
        assert "fake-bench-plugin" in plugin.source
        assert plugin.description == "Constant betas, from a third-party package."
    finally:
        registry._plugins.pop("constant", None)
        registry.reload_entry_points()


def test_broken_entry_point_warns_and_keeps_builtins(tmp_path, monkeypatch):
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.test-broken]\nbad = no_such_module:thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget", "bench.test-broken")
    reg.register("good", lambda: None)
    with pytest.warns(UserWarning, match="could not load widget plugin 'bad'"):
        assert reg.names() == ["good"]


def test_a_third_party_denoiser_declares_its_presets_where_it_registers(tmp_path, monkeypatch):
    """The module an entry point names may register itself, with metadata; the registry keeps that."""
    (tmp_path / "fake_denoiser_plugin.py").write_text(
        textwrap.dedent(
            '''
            import denoisers
            from denoisers.unet import build_unet

            @denoisers.register("tiny-unet", presets={"tiny": {"base_channels": 8}})
            def tiny_unet(image_shape, *, preset="tiny", **options):
                """A U-Net with its own preset, from a third-party package."""
                opts = {**{"tiny": {"base_channels": 8}}[preset], **options}
                return build_unet(image_shape, denoisers.Recipe(), **opts)
            '''
        )
    )
    info = tmp_path / "fake_denoiser_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-denoiser-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.denoisers]\ntiny-unet = fake_denoiser_plugin:tiny_unet\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = denoisers.REGISTRY
    registry.reload_entry_points()
    try:
        assert denoisers.presets("tiny-unet") == ["tiny"]
        assert "fake-denoiser-plugin" in registry.plugin("tiny-unet").source
        assert registry.plugin("tiny-unet").description.startswith("A U-Net with its own preset")
    finally:
        registry._plugins.pop("tiny-unet", None)
        registry.reload_entry_points()
