import json

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.datasets import find_dataset

pytestmark = pytest.mark.skipif(find_dataset("ml-100k") is None, reason="../shared/datasets/ml-100k is not present")


def test_movielens_demo_trains_online_keeps_the_serving_replica_exact_and_prints_json():
    result = CliRunner().invoke(app, ["demo", "--movielens", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["serving"]["in_sync"] is True
    assert summary["serving"]["deltas"] > 10
    auc = summary["auc_last_20pct"]
    # The model learns something real from MovieLens and keeps learning online.
    assert auc["frozen"] > 0.65 and auc["online"] > auc["frozen"]
    tables = summary["tables"]
    assert tables["item"]["unadmitted_lookups"] > 0  # admit_after=3 kept rare items out
    assert tables["item"]["evicted"] + tables["user"]["evicted"] > 0  # TTLs expired idle rows
    assert "Star Wars" in summary["neighbours"]
