"""Report exports: standalone HTML (escaped, offline), Markdown, constitution JSON, CSV injection guard."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from icai_core import figures as F
from icai_core import report as R
from icai_core.constitution import build_constitution
from icai_core.reconstruct import evaluate, split_train_test
from icai_core.stats import principle_stats

REPO = Path(__file__).resolve().parents[1]
# PRINCIPIA_DATA_DIR, else the shared data beside the clone (CI layout: ../shared/data), else inside it
_CANDIDATES = [os.environ.get("PRINCIPIA_DATA_DIR", ""), REPO.parent / "shared" / "data", REPO / "shared" / "data"]
DATA = next((Path(p) for p in _CANDIDATES if p and (Path(p) / "prd_lfqa_expert.csv").exists()), None)
pytestmark = pytest.mark.skipif(DATA is None, reason="real data (shared/data) not found")

PRINCIPLES = [
    SimpleNamespace(
        key="longer", text="Select the response that is longer.", inverse_text="Select the response that is shorter."
    ),
    SimpleNamespace(
        key="more_lines",
        text="Select the response that has more lines.",
        inverse_text="Select the response that has fewer lines.",
    ),
]
EVIL = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"


def _sign(a: pd.Series, b: pd.Series) -> np.ndarray:
    a, b = a.to_numpy(float), b.to_numpy(float)
    return np.where(np.abs(a - b) > 0.1 * np.maximum(a, b), np.sign(a - b), 0).astype(np.int8)


@pytest.fixture(scope="module")
def audit():
    pairs = pd.read_csv(DATA / "prd_lfqa_expert.csv", keep_default_na=False)
    pairs["preferred"] = pairs["preferred_text"].map({"text_a": "a", "text_b": "b", "tie": "tie"})
    pairs.loc[0, "prompt"] = EVIL  # untrusted text must come out escaped
    pairs.loc[1, "text_a"] = "=HYPERLINK(\"http://evil\")"
    votes = pd.DataFrame(
        {
            "longer": _sign(pairs["text_a"].str.len(), pairs["text_b"].str.len()),
            "more_lines": _sign(pairs["text_a"].str.count("\n") + 1, pairs["text_b"].str.count("\n") + 1),
        },
        index=pairs.index,
    )
    stats = principle_stats(votes, pairs["preferred"], PRINCIPLES)
    tr, te = split_train_test(pairs["preferred"], test_size=0.3, seed=0)
    train_stats = principle_stats(votes.iloc[tr], pairs["preferred"].iloc[tr], PRINCIPLES)
    const = build_constitution(train_stats, principles=PRINCIPLES, require_significant=False, min_abs_strength=0.0)
    recon = evaluate(votes, pairs["preferred"], const, train_index=tr, test_index=te)
    return SimpleNamespace(
        dataset_name=f"lfqa {EVIL}",
        dataset_hash="abc123",
        config={"test_size": 0.3, "seed": 0},
        pairs=pairs,
        votes=votes,
        stats=stats,
        constitution=const,
        reconstruction=recon,
    )


def test_neutralise_cells():
    for bad in ["=1+1", "+1", "-cmd", "@SUM(A1)", "\tx", "\rx"]:
        assert R.neutralise_cell(bad) == "'" + bad
    for ok in ["hello", "a=b", " -x", "", "1.5"]:
        assert R.neutralise_cell(ok) == ok
    assert R.neutralise_cell(-1) == -1


def test_votes_csv_neutralises_text_and_keeps_numbers(audit):
    raw = R.votes_csv(audit.pairs, audit.votes, include_text=True)
    df = pd.read_csv(io.BytesIO(raw), keep_default_na=False)
    assert len(df) == len(audit.pairs)
    assert set(df["vote_longer"].unique()) <= {-1, 0, 1}
    assert df.loc[1, "text_a"].startswith("'=HYPERLINK")
    # every text cell of the export is safe for a spreadsheet
    text_cols = [c for c in df.columns if pd.api.types.is_string_dtype(df[c]) or df[c].dtype == object]
    for col in text_cols:
        assert not df[col].astype(str).str.match(r"^[=+\-@\t\r]").any(), col
    # without texts: no response columns
    lean = pd.read_csv(io.BytesIO(R.votes_csv(audit.pairs, audit.votes)))
    assert "text_a" not in lean.columns and "vote_more_lines" in lean.columns


def test_stats_csv_roundtrip(audit):
    df = pd.read_csv(io.BytesIO(R.stats_csv(audit.stats)))
    assert list(df["key"]) == list(audit.stats["key"])
    assert np.allclose(df["strength"], audit.stats["strength"])


def test_html_report_is_standalone_and_escaped(audit):
    page = R.html_report(audit)
    assert page.startswith("<!DOCTYPE html>")
    assert EVIL not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert" in page
    # plotly.js is inlined once (readable offline), no external script
    assert "window.PlotlyConfig" in page and len(page) > 1_000_000  # plotly.js bundle inlined
    assert "<script src=" not in page and "cdn.plot.ly" not in page.split("</script>", 3)[-1]
    for entry in audit.constitution.entries:
        assert entry.text.replace("'", "&#x27;") in page
    assert "Reconstruction" in page


def test_markdown_and_json(audit):
    md = R.markdown_summary(audit, settings={"min_relevance": 0.05})
    assert md.startswith("# Principia audit")
    assert "<script>" not in md
    for entry in audit.constitution.entries:
        assert R._md_escape(entry.text) in md
    doc = json.loads(R.constitution_json(audit, settings={"max_size": 10}))
    assert doc["dataset"]["pairs"] == len(audit.pairs)
    assert [e["key"] for e in doc["constitution"]["entries"]] == audit.constitution.keys
    assert doc["reconstruction"] and {"method", "agreement"} <= set(doc["reconstruction"][0])
    assert "api_key" not in json.dumps(doc)


def test_figures_build(audit):
    assert len(F.strength_bar(audit.stats, selected=audit.constitution.keys).data) == 1
    assert len(F.reconstruction_bar(audit.reconstruction.table).data) == 1
    assert len(F.length_distribution(audit.pairs).data) == 2
    assert len(F.length_distribution(audit.pairs, kind="box").data) == 2
    assert len(F.preference_balance(audit.pairs).data) == 3
    pts = pd.DataFrame(
        {
            "text": ["a <b>", "b", "c"],
            "cluster": [0, 0, -1],
            "x": [0.0, 1.0, 2.0],
            "y": [0.0, 1.0, 0.5],
            "is_representative": [True, False, False],
            "support": [0.1, 0.2, 0.0],
        }
    )
    fig = F.principle_scatter(pts)
    assert len(fig.data) == 2 and fig.data[1].marker.color == F.NOISE
    assert "&lt;b&gt;" in fig.data[0].customdata[0][0]
    m = pd.DataFrame([[0.1, -0.2], [0.0, 0.3]], index=["longer", "more_lines"], columns=["g1", "g2"])
    hm = F.strength_heatmap(m, m - 0.1, m + 0.1)
    assert hm.data[0].z.shape == (2, 2)
