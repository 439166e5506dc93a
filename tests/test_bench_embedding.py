import json

from typer.testing import CliRunner

from streamrec.cli import app


def test_bench_embedding_quick_reports_every_ratio_and_figure_as_json():
    result = CliRunner().invoke(app, ["bench", "embedding", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("lookup_vs_modulo", "lookup_vs_dict", "train_step_vs_modulo", "insert_vs_dict"):
        assert out["ratios"][key] > 0
    # Structural properties that do not depend on machine noise:
    assert out["load_factor_at_growth_min"] >= 0.85
    assert out["overhead_bytes_per_id"] <= 24
    assert 0 <= out["false_admission_rate"] < 0.05
    assert set(out["goals_met"]) >= {"lookup_vs_modulo", "load_factor_at_growth", "overhead_bytes_per_id"}
