import textwrap

import pytest

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
