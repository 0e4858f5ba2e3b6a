"""Tests of the principle map (icai_core.principle_map) on a real data set's candidate principles.

The judges are the measurable library plus the directions discovered on the real
`icai_synthetic_orthogonal.csv` (30 pairs: cheap to embed), with strengths measured on that file.
Expected values (signs, representatives, centrality) are recomputed in the test with numpy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import procrustes
from sklearn.metrics import adjusted_rand_score

from icai_core.data import load_pairs
from icai_core.discover import discover
from icai_core.embed import Embedder
from icai_core.judge import Judge
from icai_core.judges import PRINCIPLES, compute_votes
from icai_core.principle_map import MAP_COLUMNS, map_figure, map_frame, short_label
from icai_core.stats import principle_stats
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON

needs_data = pytest.mark.skipif(SHARED_DATA is None, reason=SHARED_DATA_MISSING_REASON)
PREFIX = "Select the response that "


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> Embedder:
    return Embedder(cache_path=tmp_path_factory.mktemp("home") / "embeddings.sqlite", max_seq_length=64)


@pytest.fixture(scope="module")
def setup(embedder):
    if SHARED_DATA is None:
        pytest.skip(SHARED_DATA_MISSING_REASON)
    pairs = load_pairs(SHARED_DATA / "icai_synthetic_orthogonal.csv").pairs
    disc = discover(pairs, embedder=embedder)
    judges = list(PRINCIPLES) + disc.judges
    votes = pd.concat([compute_votes(pairs), disc.votes], axis=1)
    stats = principle_stats(votes, pairs["preferred"], judges)
    return judges, stats, disc


@pytest.fixture(scope="module")
def frame(setup, embedder):
    judges, stats, _ = setup
    return map_frame(judges, stats, embedder=embedder)


def _strip(text: str) -> str:
    return text[len(PREFIX):] if text.startswith(PREFIX) else text


@needs_data
def test_map_shows_this_datasets_principles_with_signed_strength(setup, frame):
    judges, stats, disc = setup
    assert list(frame.columns) == MAP_COLUMNS
    assert frame["key"].tolist() == [j.key for j in judges]
    assert set(frame["kind"]) == {"measurable", "discovered"}
    assert (frame["kind"] == "discovered").sum() == len(disc.judges) >= 3
    st = stats.set_index("key")
    for r in frame.itertuples():
        j = next(j for j in judges if j.key == r.key)
        assert r.text == j.text and not r.inverted  # as written
        if r.key in st.index:
            assert r.strength == pytest.approx(st.loc[r.key, "strength"])
            assert r.support == st.loc[r.key, "n_relevant"]
            if r.strength < 0:  # the hover keeps the sign of the wording shown, and says what is rewarded
                assert f"{r.strength:+.3f}" in r.hover and "opposite" in r.hover
                assert short_label(j.inverse_text, 80) in r.hover
            elif r.strength > 0:
                assert f"{r.strength:+.3f}" in r.hover and "reward this" in r.hover
        assert r.text in r.hover
    assert (frame["strength"] < 0).any() and (frame["strength"] > 0).any()
    assert frame.attrs["layout"] == "pca" and frame.attrs["clustering"] == "agglomerative"
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all()


@needs_data
def test_rewarded_orientation_flips_negative_principles(setup, embedder, frame):
    judges, stats, _ = setup
    flipped = map_frame(judges, stats, embedder=embedder, orient="rewarded")
    by_key = {j.key: j for j in judges}
    neg = frame["strength"] < 0
    assert neg.any()
    np.testing.assert_array_equal(flipped["inverted"], neg)
    for r, orig in zip(flipped.itertuples(), frame.itertuples(), strict=True):
        if orig.strength < 0:
            assert r.text == by_key[r.key].inverse_text and r.strength == pytest.approx(-orig.strength)
            assert f"{r.strength:+.3f}" in r.hover and "+" in f"{r.strength:+.3f}"
        else:
            assert r.text == orig.text and (r.strength == orig.strength or np.isnan(orig.strength))
    assert (flipped["strength"].dropna() >= 0).all()


@needs_data
def test_same_judges_give_the_same_map(setup, frame):
    judges, stats, _ = setup
    again = map_frame(judges, stats, embedder=Embedder(max_seq_length=64))
    pd.testing.assert_frame_equal(again, frame)


@needs_data
def test_one_extra_principle_does_not_reshuffle_the_map(setup, embedder, frame):
    """Measured on this map: ARI 1.0 and Procrustes disparity 0.001 after adding one LLM principle."""
    judges, stats, _ = setup
    extra = Judge(key="llm_00", text="Select the response that tells a story about an animal.",
                  inverse_text="Select the response that does not tell a story about an animal.", kind="llm")
    bigger = map_frame(judges + [extra], stats, embedder=embedder)
    assert bigger["key"].iloc[-1] == "llm_00" and bigger["kind"].iloc[-1] == "llm"
    assert adjusted_rand_score(frame["cluster"], bigger["cluster"].iloc[:-1]) >= 0.8
    assert procrustes(frame[["x", "y"]].to_numpy(), bigger[["x", "y"]].to_numpy()[:-1])[2] <= 0.05


@needs_data
def test_representative_is_the_strength_weighted_centre(frame, embedder):
    vec = embedder.embed([_strip(t) for t in frame["text"]])
    vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    w_all = frame["strength"].abs().to_numpy()
    w_all = np.where(np.isfinite(w_all), w_all, np.nanmin(w_all))
    clusters = sorted(c for c in frame["cluster"].unique() if c >= 0)
    assert len(clusters) >= 2
    assert frame["is_representative"].sum() == len(clusters)
    for c in clusters:
        idx = np.flatnonzero(frame["cluster"].to_numpy() == c)
        w = w_all[idx] if w_all[idx].sum() > 0 else np.ones(len(idx))
        sims = vec[idx] @ vec[idx].T
        np.fill_diagonal(sims, 1.0)
        score = sims @ w / w.sum()
        tied = idx[score >= score.max() - 1e-6]
        rep = idx[frame["is_representative"].to_numpy()[idx]]
        assert rep.tolist() == [int(tied.min())]
    assert (frame.loc[frame["cluster"] == -1, "is_representative"] == False).all()  # noqa: E712


@needs_data
def test_figure_labels_colours_and_hover(frame):
    fig = map_figure(frame)
    points = pd.concat(
        [pd.DataFrame({"label": t.text, "hover": t.hovertext, "colour": t.marker.color, "kind": t.name})
         for t in fig.data]
    )
    assert len(points) == len(frame)
    assert all(t.mode == "markers+text" for t in fig.data)
    assert set(points["label"]) == set(frame["label"]) and points["label"].str.len().gt(0).all()
    lookup = frame.set_index("hover")
    for p in points.itertuples():
        assert lookup.loc[p.hover, "label"] == p.label and lookup.loc[p.hover, "kind"] == p.kind
        s = lookup.loc[p.hover, "strength"]
        assert p.colour == pytest.approx(0.0 if np.isnan(s) else s)
    ca = fig.layout.coloraxis
    assert ca.cmid == 0 and ca.cmin == -ca.cmax
    assert ca.cmax == pytest.approx(frame["strength"].abs().max())
    assert len(map_figure(frame.iloc[:0]).data) == 0


def test_short_labels_and_validation():
    assert short_label("Select the response that is longer (more characters).") == "is longer (more characters)"
    assert short_label(
        "Select the response that uses more of the words \u201ccat\u201d and fewer of \u201cdog\u201d."
    ) == "more \u201ccat\u201d / fewer \u201cdog\u201d"
    assert short_label("x " * 40).endswith("\u2026")
    j = Judge(key="a", text="Select the response that is short.", inverse_text="Select the response that is long.")
    with pytest.raises(ValueError, match="repeated: a"):
        map_frame([j, j])
    with pytest.raises(ValueError, match="orient"):
        map_frame([j], orient="up")
    empty = map_frame([])
    assert list(empty.columns) == MAP_COLUMNS and empty.empty


@needs_data
@pytest.mark.slow  # UMAP's numba compile (5-8 s) plus two UMAP fits on a busy machine
def test_large_maps_use_seeded_umap(embedder):
    """60 or more texts: UMAP + HDBSCAN, random_state = seed; the same seed gives the same map."""
    judges = list(PRINCIPLES) + [
        Judge(key=f"inv_{p.key}", text=p.inverse_text, inverse_text=p.text, kind="llm") for p in PRINCIPLES
    ]
    a = map_frame(judges, None, embedder=embedder, seed=3)
    b = map_frame(judges, None, embedder=embedder, seed=3)
    assert a.attrs["clustering"] == "umap+hdbscan" and a.attrs["seed_used"]
    pd.testing.assert_frame_equal(a, b)
    assert a["strength"].isna().all() and (a["support"] == 1).all()
    assert "strength not measured" in a["hover"].iloc[0]
