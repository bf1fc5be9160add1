"""The render benchmark runs and compares compile-once with compiling MJML per user."""

from __future__ import annotations

from calm_mail.compose.bench import bench_render

from .conftest import ROOT


def test_bench_render_reports_compose_time_and_ratios() -> None:
    result = bench_render(60, root=ROOT)
    assert result["emails"] == 60 and result["cards"] == 6
    assert 0 < result["html_render_us_median"] <= result["compose_us_median"]
    # Compiling the MJML for every user is the slow path this design avoids.
    assert result["ratio_mjml_python_per_user_to_compose"] > 1
    if result["mjml_js_per_user_us_median"] is None:
        assert result["mjml_js"] != "ok"
