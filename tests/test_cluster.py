"""Tests of principle clustering (icai_core.cluster) on real texts from the shared data.

Real principle proposals need an LLM, so the main input is two groups of real prompts from very
different sources: the first human turn of 40 Anthropic HH-RLHF harmless dialogues and 40 Chatbot
Arena prompts of the source's "Coding" category (each cut to 30 words, like a long principle).
The clustering must separate the sources.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from icai_core.cluster import (
    CLUSTER_COLUMNS,
    POINT_COLUMNS,
    ClusterConfig,
    auto_min_cluster_size,
    cluster_principles,
    exact_cosine_knn,
    normalize_text,
)
from icai_core.embed import Embedder
from icai_core.jobs import Cancelled, CancelToken
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON
from tests.support.embedding import MAX_SEQ_LENGTH, embedder_fixture, needs_data, small_embedder  # noqa: F401

N_PER_SOURCE = 40


def _cut(text: str, words: int = 30) -> str:
    return " ".join(str(text).split()[:words])


@pytest.fixture(scope="module")
def two_sources() -> tuple[list[str], np.ndarray]:
    if SHARED_DATA is None:
        pytest.skip(SHARED_DATA_MISSING_REASON)
    hh = pd.read_csv(SHARED_DATA / "hh_rlhf_harmless_test.csv", keep_default_na=False)
    first_turn = hh["prompt"].str.split("\n\nAssistant:").str[0].str.removeprefix("Human: ").map(_cut)
    harmless = list(dict.fromkeys(t for t in first_turn if len(t.split()) >= 4))[:N_PER_SOURCE]
    arena = pd.read_csv(SHARED_DATA / "arena_llama3_70b_human.csv", keep_default_na=False)
    coding = arena[(arena["category"] == "Coding") & (arena["language"] == "en")]["prompt"].map(_cut)
    coding = [t for t in dict.fromkeys(coding) if t not in harmless][:N_PER_SOURCE]
    assert len(harmless) == len(coding) == N_PER_SOURCE
    return harmless + coding, np.array([0] * N_PER_SOURCE + [1] * N_PER_SOURCE)


@pytest.fixture(scope="module")
def vectors(two_sources, embedder) -> np.ndarray:
    return embedder.embed(two_sources[0])


@pytest.fixture(scope="module")
def result(two_sources, embedder):
    return cluster_principles(two_sources[0], embedder=embedder)


def _purity(labels: np.ndarray, truth: np.ndarray) -> float:
    kept = labels >= 0
    hits = sum(np.bincount(truth[labels == c]).max() for c in np.unique(labels[kept]))
    return hits / max(1, int(kept.sum()))


@needs_data
def test_clusters_separate_the_two_sources(result, two_sources):
    texts, truth = two_sources
    assert list(result.points.columns) == POINT_COLUMNS
    assert list(result.clusters.columns) == CLUSTER_COLUMNS
    assert len(result.points) == len(texts)  # all distinct
    labels = result.input_cluster
    assert result.n_clusters >= 2
    assert result.noise_share <= 0.3
    assert _purity(labels, truth) >= 0.9
    # both sources own at least one cluster
    owners = {int(np.bincount(truth[labels == c]).argmax()) for c in range(result.n_clusters)}
    assert owners == {0, 1}
    # cluster ids are 0..k-1, largest first; sizes add up
    assert result.clusters["cluster"].tolist() == list(range(result.n_clusters))
    assert result.clusters["size"].is_monotonic_decreasing
    assert result.clusters["size"].sum() == int((labels >= 0).sum())
    assert result.params["method"] == "umap+hdbscan"
    assert np.isfinite(result.points[["x", "y"]].to_numpy()).all()


@needs_data
def test_same_input_gives_same_labels_and_coordinates(result, two_sources):
    again = cluster_principles(two_sources[0], embedder=small_embedder())
    np.testing.assert_array_equal(again.input_cluster, result.input_cluster)
    np.testing.assert_array_equal(again.points[["x", "y"]].to_numpy(), result.points[["x", "y"]].to_numpy())
    assert again.representatives == result.representatives


@needs_data
def test_representative_is_the_most_central_member(result, vectors):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pts = result.points
    assert pts["is_representative"].sum() == result.n_clusters == len(result.representatives)
    for row in result.clusters.itertuples():
        idx = np.flatnonzero(pts["cluster"].to_numpy() == row.cluster)
        assert row.representative in set(pts["text"].iloc[idx])
        sims = unit[idx] @ unit[idx].T
        mean_to_others = (sims.sum(axis=1) - np.diag(sims)) / (len(idx) - 1)
        # the most central member; members within 1e-6 of the best are tied (float noise) and the
        # first seen of them wins (all supports are 1 here)
        tied = idx[mean_to_others >= mean_to_others.max() - 1e-6]
        best = int(tied.min())
        assert pts["text"].iloc[best] == row.representative
        np.testing.assert_allclose(pts["centrality"].iloc[idx], mean_to_others, atol=1e-5)
        assert row.members[0] == row.representative and len(row.members) == row.n_texts
        assert row.top_members == row.members[:5]
        assert result.members(row.cluster) == row.members
        rep = best
        others = [i for i in idx if i != rep]
        np.testing.assert_allclose(row.mean_similarity, (unit[others] @ unit[rep]).mean(), atol=1e-5)
    # noise stays visible and has no centrality
    noise = pts[pts["cluster"] == -1]
    assert noise["centrality"].isna().all() and not noise["is_representative"].any()


@needs_data
def test_noise_can_become_candidates(two_sources, vectors):
    res = cluster_principles(
        two_sources[0], embeddings=vectors, config=ClusterConfig(include_noise_as_candidates=True)
    )
    n_noise = int((res.points["cluster"] == -1).sum())
    assert len(res.representatives) == res.n_clusters + n_noise
    assert res.points["is_representative"].sum() == res.n_clusters + n_noise
    assert set(res.members(-1)) == set(res.representatives[res.n_clusters :])


@needs_data
def test_hdbscan_backend_agrees_with_sklearn(result, two_sources, vectors):
    from sklearn.metrics import adjusted_rand_score

    other = cluster_principles(two_sources[0], embeddings=vectors, config=ClusterConfig(backend="hdbscan"))
    assert other.params["backend"] == "hdbscan"
    assert adjusted_rand_score(result.input_cluster, other.input_cluster) >= 0.8


@needs_data
def test_duplicates_are_embedded_once_and_counted_as_support(two_sources, vectors):
    texts = two_sources[0]
    # the first text proposed 3 more times (with case/spacing/punctuation variants), the 45th once more
    proposals = texts + [texts[0], "  " + texts[0].upper() + " ", texts[0] + ".", texts[44]]
    seen: list[str] = []

    class CountingEmbedder(Embedder):
        def embed(self, batch, progress=None, cancel=None):
            seen.extend(batch)
            return super().embed(batch, progress, cancel)

    res = cluster_principles(proposals, embedder=CountingEmbedder(max_seq_length=MAX_SEQ_LENGTH))
    assert len(seen) == len(texts) == len(res.points)
    assert res.points["support"].sum() == len(proposals)
    p0 = res.input_point[0]
    assert res.points["support"].iloc[p0] == 4 and res.points["text"].iloc[p0] == texts[0]
    assert (res.input_point[len(texts) :] == [p0, p0, p0, res.input_point[44]]).all()
    assert res.points["support"].iloc[res.input_point[44]] == 2
    np.testing.assert_array_equal(res.input_cluster, res.points["cluster"].to_numpy()[res.input_point])
    assert res.clusters["size"].sum() == int(res.points.loc[res.points["cluster"] >= 0, "support"].sum())


@needs_data
def test_support_weights_centrality(two_sources, vectors):
    """A text proposed many times counts once per proposal: it becomes its cluster's representative."""
    texts = two_sources[0]
    base = cluster_principles(texts, embeddings=vectors)
    row = base.clusters.iloc[0]
    least = row.members[-1]  # the least central member of the largest cluster
    i = texts.index(least)
    boosted_texts = texts + [least] * 30
    boosted_vecs = np.vstack([vectors, np.repeat(vectors[i : i + 1], 30, axis=0)])
    res = cluster_principles(boosted_texts, embeddings=boosted_vecs)
    c = int(res.input_cluster[i])
    assert c >= 0
    assert res.clusters.set_index("cluster").loc[c, "representative"] == least


@needs_data
def test_progress_stages_and_cancel(two_sources, vectors):
    messages: list[str] = []
    cluster_principles(
        two_sources[0][:20],
        embedder=small_embedder(),
        config=ClusterConfig(method="umap_hdbscan"),
        progress=lambda d, t, m: messages.append(m),
    )
    first_umap = next(i for i, m in enumerate(messages) if m.startswith("Reducing (UMAP)"))
    first_hdb = messages.index("Clustering (HDBSCAN)")
    assert any(m.startswith("Embedded") for m in messages[:first_umap])
    assert first_umap < first_hdb < len(messages) - 1
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        cluster_principles(two_sources[0], embeddings=vectors, cancel=token)


@needs_data
def test_no_library_warnings_reach_the_user(two_sources, vectors):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        cluster_principles(two_sources[0][:30], embeddings=vectors[:30])
    noisy = [w for w in caught if any(s in str(w.filename) for s in ("umap", "numba", "hdbscan", "sklearn"))]
    assert noisy == [], [str(w.message) for w in noisy]


@needs_data
def test_small_inputs(two_sources, vectors):
    texts = two_sources[0]
    empty = cluster_principles([])
    assert empty.points.empty and empty.clusters.empty and empty.representatives == []
    assert list(empty.points.columns) == POINT_COLUMNS and list(empty.clusters.columns) == CLUSTER_COLUMNS
    assert empty.n_clusters == 0 and empty.noise_share == 0.0

    one = cluster_principles(texts[:1], embeddings=vectors[:1])
    assert one.representatives == texts[:1] and one.points["cluster"].tolist() == [0]
    assert one.points[["x", "y"]].to_numpy().tolist() == [[0.0, 0.0]]

    # fewer than 5 distinct texts: each its own cluster, no UMAP; the most proposed first
    few = [texts[0], texts[50], texts[1], texts[50]]
    res = cluster_principles(few, embeddings=vectors[[0, 50, 1, 50]])
    assert res.params["method"] == "singletons"
    assert res.n_clusters == 3 and res.noise_share == 0.0
    assert res.representatives == [texts[50], texts[0], texts[1]]
    assert res.points["centrality"].tolist() == [1.0, 1.0, 1.0]
    assert np.isfinite(res.points[["x", "y"]].to_numpy()).all()

    # every proposal identical
    same = cluster_principles(["Select the response that is more concise."] * 7)
    assert len(same.points) == 1 and same.points["support"].tolist() == [7]
    assert same.representatives == ["Select the response that is more concise."]
    assert same.clusters["size"].tolist() == [7]
    assert same.input_cluster.tolist() == [0] * 7

    # just above the small-input threshold UMAP and HDBSCAN run on a handful of points
    for n in (5, 6, 9):
        idx = list(range(n // 2)) + list(range(50, 50 + n - n // 2))
        res = cluster_principles(
            [texts[i] for i in idx], embeddings=vectors[idx], config=ClusterConfig(method="umap_hdbscan")
        )
        assert res.params["method"] == "umap+hdbscan" and len(res.points) == n
        assert res.params["n_neighbors_used"] == n - 1
        assert np.isfinite(res.points[["x", "y"]].to_numpy()).all()
        assert res.n_clusters >= 1


def test_helpers_and_validation():
    assert normalize_text("  Select the response that IS  concise. ") == "select the response that is concise"
    assert normalize_text("“Be kind!”") == "be kind"
    assert [auto_min_cluster_size(n) for n in (5, 100, 500, 5000)] == [2, 2, 10, 25]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[7] = x[3]  # an exact duplicate still lists itself first
    idx, dist = exact_cosine_knn(x, 5, block=8)
    assert (idx[:, 0] == np.arange(30)).all() and (dist[:, 0] == 0).all()
    assert idx[3, 1] == 7 and idx[7, 1] == 3
    brute = np.argsort(-(x @ x.T), axis=1, kind="stable")
    for i in range(30):
        assert set(idx[i, 1:]) <= set(brute[i, :6])
    assert (np.diff(dist, axis=1) >= -1e-6).all()
    for bad in (dict(backend="faiss"), dict(plot_layout="3d"), dict(min_cluster_size=1), dict(n_neighbors=1)):
        with pytest.raises(ValueError):
            ClusterConfig(**bad)
    with pytest.raises(ValueError):
        cluster_principles(["a", "b"], embeddings=np.zeros((3, 4)))


@needs_data
def test_weights_choose_the_representative(two_sources, vectors):
    """With weights (a principle's |strength|) the representative is the member closest to the
    weighted centre: sum_j w_j cos(i, j) / sum_j w_j, recomputed here."""
    texts = two_sources[0]
    base = cluster_principles(texts, embeddings=vectors)
    least = base.clusters.iloc[0].members[-1]  # the least central member of the largest cluster
    i = texts.index(least)
    w = np.ones(len(texts))
    w[i] = 100.0
    res = cluster_principles(texts, embeddings=vectors, weights=w)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row in res.clusters.itertuples():
        idx = np.flatnonzero(res.points["cluster"].to_numpy() == row.cluster)
        sims = unit[idx] @ unit[idx].T
        np.fill_diagonal(sims, 1.0)
        score = sims @ w[idx] / w[idx].sum()
        np.testing.assert_allclose(res.points["centrality"].iloc[idx], score, atol=1e-5)
        tied = idx[score >= score.max() - 1e-6]
        assert row.representative == texts[int(tied.min())]
    assert res.clusters.set_index("cluster").loc[int(res.input_cluster[i]), "representative"] == least
    with pytest.raises(ValueError, match="weights"):
        cluster_principles(texts, embeddings=vectors, weights=w[:-1])
    with pytest.raises(ValueError, match="weights"):
        cluster_principles(texts, embeddings=vectors, weights=-w)


def test_small_sets_use_deterministic_agglomerative_clustering():
    """Under 60 texts (a principle map): average linkage on cosine distance, PCA layout. Measured on
    the 32 library texts plus one inverse wording (6 tries): ARI >= 0.87 (median 0.97); UMAP + HDBSCAN
    gave ARI 0.28-0.95 and 2 to 8 clusters."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    from icai_core.judges import PRINCIPLES

    emb = small_embedder()
    texts = [p.text for p in PRINCIPLES]
    res = cluster_principles(texts, embedder=emb)
    assert res.params["method"] == "agglomerative" and res.params["layout"] == "pca"
    # the partition is sklearn's average-linkage tree cut at 0.6 on the texts without the shared prefix
    vec = emb.embed([t.removeprefix("Select the response that ") for t in texts])
    raw = AgglomerativeClustering(n_clusters=None, distance_threshold=0.6, metric="cosine",
                                  linkage="average").fit_predict(vec)
    sizes = np.bincount(raw)
    expected = np.where(sizes[raw] >= 2, raw, -1)
    assert adjusted_rand_score(expected, res.input_cluster) == 1.0
    assert ((res.input_cluster == -1) == (expected == -1)).all()
    again = cluster_principles(texts, embedder=small_embedder())
    np.testing.assert_array_equal(again.input_cluster, res.input_cluster)
    np.testing.assert_array_equal(again.points[["x", "y"]].to_numpy(), res.points[["x", "y"]].to_numpy())
    aris = []
    for p in PRINCIPLES[:6]:
        more = cluster_principles(texts + [p.inverse_text], embedder=emb)
        aris.append(adjusted_rand_score(res.input_cluster, more.input_cluster[:-1]))
    assert min(aris) >= 0.8 and np.median(aris) >= 0.9
