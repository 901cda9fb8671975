"""Numbers in docs/ come from files under docs/results/: the rendered tables must match them."""

import json

from conftest import ROOT

from bundle.benchmark.render import BLOCK, render, rendered_docs


def test_every_results_table_in_the_docs_is_rendered_from_its_file():
    pages = rendered_docs()
    stale = [str(page.relative_to(ROOT)) for page, text in pages.items() if page.read_text() != text]
    assert not stale, f"tables out of date with docs/results/ in {stale}: run python scripts/benchmark.py report"
    blocks = {match[1] for text in pages.values() for match in BLOCK.findall(text)}
    assert blocks == set(render()), "a results file has no table in docs/, or a table has no file"


def test_a_changed_result_changes_the_rendered_table(tmp_path):
    edges = json.loads((ROOT / "docs" / "results" / "edges.json").read_text())
    edges["rows"][0]["mean_iou"] = -1.0
    (tmp_path / "edges.json").write_text(json.dumps(edges))
    assert "| -1.0 |" in render(tmp_path)["edges"]
    assert render(tmp_path)["edges"] != render()["edges"]


def test_metadata_eval_metrics_are_the_measured_ones():
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    result = json.loads((ROOT / "docs" / "results" / "shipped_model.json").read_text())
    assert result["model"] == "models/model.pt"
    measured = next(v for v in result["volumes"] if v["name"] == "demo phantom")["metrics"]
    assert meta["eval_metrics"] == {
        "mean_iou": round(measured["mean_iou"], 4),
        **{f"iou_{name}": round(measured["iou"][name], 4) for name in ("matrix", "fibre", "porosity")},
        "source": "docs/results/shipped_model.json: the evaluate workflow with the inference defaults on the demo phantom's test slices",
    }
