"""Cluster candidate principles: embed, reduce with UMAP, cluster with HDBSCAN, keep one per cluster.

Inverse Constitutional AI (arXiv 2406.06560) lets an LLM propose many candidate principles
("Select the response that ..."); many are rephrasings of each other. This module groups them:

1. near-identical texts (same text after Unicode/case/whitespace/trailing-punctuation normalisation)
   are collapsed into one point whose `support` counts the proposals;
2. the distinct texts are embedded (bundled MiniLM, unit vectors, `max_seq_length=64`);
3. an exact cosine k-nearest-neighbour graph is computed with numpy and handed to UMAP, which
   reduces the vectors to `n_components` (5) dimensions for clustering; a second UMAP on the same
   graph gives the 2-D coordinates for the scatter plot;
4. HDBSCAN clusters the 5-D points (`-1` = noise);
5. each cluster's representative is its most central member: the highest mean cosine similarity
   (in the original embedding space) to the cluster's other proposals; with `weights` (e.g. a
   principle's |strength|) the member closest to the weight-averaged cluster centre.

Small inputs (fewer than `ClusterConfig.small_max` distinct texts, e.g. the ~30-60 principles of a
principle map) are clustered instead by average-linkage agglomerative clustering on cosine distance
with a fixed threshold (`method="auto"`): UMAP + HDBSCAN on the 32 library texts gave 2 to 8
clusters when one text was added (adjusted Rand index with the partition before: median 0.78, min
0.28); the agglomerative partition is deterministic without a seed (ARI after adding one text:
median 0.97, min 0.87), and its 2-D layout is PCA, which barely moves when a text is added. Measurements in docs/clustering.md.

Measurements behind the defaults are in docs/clustering.md. Nothing here talks to an LLM; another
module can ask one to merge a cluster using `ClusterResult.members(cluster_id)`.
"""

from __future__ import annotations

import re
import time
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from icai_core.jobs import CancelToken, Progress, check

__all__ = [
    "ClusterConfig",
    "ClusterResult",
    "cluster_principles",
    "normalize_text",
    "auto_min_cluster_size",
    "exact_cosine_knn",
    "warm_up",
]

SMALL_INPUT = 5  # fewer distinct texts than this: every text is its own cluster, no UMAP
METHODS = ("auto", "umap_hdbscan", "agglomerative")
TIE_TOLERANCE = 1e-6  # centralities closer than this are equal (embedding float noise is ~1e-7)
PRINCIPLE_MAX_SEQ_LENGTH = 64  # principles are ~10-30 words, i.e. well under 64 word pieces

POINT_COLUMNS = ["text", "support", "cluster", "x", "y", "membership", "centrality", "is_representative"]
CLUSTER_COLUMNS = [
    "cluster",
    "size",
    "n_texts",
    "representative",
    "representative_support",
    "mean_similarity",
    "top_members",
    "members",
    "x",
    "y",
]


@dataclass
class ClusterConfig:
    """Parameters of `cluster_principles`; `None` means "choose from the input size".

    * `n_neighbors`: UMAP neighbourhood size, capped to (distinct texts - 1).
    * `n_components`: dimensions of the UMAP used for clustering (5, capped to distinct texts - 2).
      The plot gets its own 2-D UMAP (`plot_min_dist` 0.1) built on the same k-NN graph
      (`plot_layout="separate"`); `plot_layout="shared"` clusters directly on the 2-D layout, which
      saves one UMAP (about 4.5 s for 5,000 texts) but was less pure over 21 seeds on labelled prompts
      (median 0.61 vs 0.64) and, without `max_cluster_share`, collapsed on 7 of 21 (docs/clustering.md).
    * `min_cluster_size`: `None` = `auto_min_cluster_size(n)` = clamp(round(n / 50), 2, 25).
    * `min_samples`: neighbours (not counting the point itself, the `hdbscan` package's meaning;
      sklearn receives min_samples + 1) a point needs to be a core point. `None` = min(min_cluster_size, 5),
      which marks fewer texts as noise than the libraries' default min_samples = min_cluster_size.
    * `max_cluster_share`: HDBSCAN ("eom") may not return a cluster holding more than this share of
      the distinct texts (0.5): without it, 1 of 21 UMAP seeds on a labelled set merged 64 % of the
      texts into one cluster of purity 0.34. A large group of alike texts is split into several
      clusters instead (more candidates, not fewer); when no cluster fits under the limit at all,
      HDBSCAN is rerun with `allow_single_cluster` and no limit. `None` = no limit.
    * `backend`: "sklearn" (`sklearn.cluster.HDBSCAN`, the default) or "hdbscan" (the `hdbscan`
      package, run with an exact minimum spanning tree). Both give the same partitions (median
      ARI 0.97-0.99 over 21 seeds) in about 0.1 s for 5,000 texts; see docs/clustering.md.
    * `include_noise_as_candidates`: noise points also become representatives (their own candidates).
    * `method`: "umap_hdbscan", "agglomerative" (average linkage on cosine distance, clusters of
      fewer than `min_cluster_size` texts are noise; deterministic, no seed) or "auto" (the default:
      agglomerative below `small_max` distinct texts, UMAP + HDBSCAN from there on).
    * `distance_threshold`: cosine distance at which the agglomerative merging stops (0.6: on the 32
      library texts with the shared "Select the response that" removed, 16 groups, stable when one
      text is added); `strip_prefix`: embed principle texts without that shared prefix (it makes
      every pair of principles look alike; measured in docs/clustering.md).
    * `max_seq_length`: word pieces the embedding model reads when this module creates the embedder.
    """

    n_neighbors: int = 15
    n_components: int = 5
    min_dist: float = 0.0
    n_epochs: int | None = None  # None: UMAP's own choice (500 up to 10,000 texts, 200 above)
    plot_layout: str = "separate"  # "separate" | "shared"
    plot_min_dist: float = 0.1
    min_cluster_size: int | None = None
    min_samples: int | None = None
    max_cluster_share: float | None = 0.5
    cluster_selection_method: str = "eom"
    metric: str = "cosine"
    random_state: int = 42
    backend: str = "sklearn"  # "sklearn" | "hdbscan"
    include_noise_as_candidates: bool = False
    max_seq_length: int = PRINCIPLE_MAX_SEQ_LENGTH
    top_members: int = 5
    method: str = "auto"  # "auto" | "umap_hdbscan" | "agglomerative"
    small_max: int = 60
    distance_threshold: float = 0.6
    strip_prefix: bool = True
    exact_knn_max: int = 30_000  # above this many texts, UMAP's own approximate NN-descent is used

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if not 0 < self.distance_threshold <= 2:
            raise ValueError("distance_threshold must be a cosine distance in (0, 2]")
        if self.backend not in ("hdbscan", "sklearn"):
            raise ValueError(f"backend must be 'hdbscan' or 'sklearn', not {self.backend!r}")
        if self.plot_layout not in ("separate", "shared"):
            raise ValueError(f"plot_layout must be 'separate' or 'shared', not {self.plot_layout!r}")
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', not {self.metric!r}")
        if self.n_neighbors < 2:
            raise ValueError("n_neighbors must be at least 2")
        if self.n_components < 2:
            raise ValueError("n_components must be at least 2")
        if self.min_cluster_size is not None and self.min_cluster_size < 2:
            raise ValueError("min_cluster_size must be at least 2 (or None for automatic)")
        if self.min_samples is not None and self.min_samples < 1:
            raise ValueError("min_samples must be at least 1 (or None for automatic)")
        if self.max_cluster_share is not None and not 0 < self.max_cluster_share <= 1:
            raise ValueError("max_cluster_share must be in (0, 1] (or None for no limit)")


@dataclass
class ClusterResult:
    """Outcome of `cluster_principles`.

    * `points`: one row per distinct (normalised) text: `text` (the most frequent raw wording),
      `support` (how many proposals had this text), `cluster` (-1 = noise), `x`, `y` (2-D plot
      coordinates), `membership` (HDBSCAN membership strength in [0, 1]), `centrality` (mean cosine
      similarity to the cluster's other proposals; NaN for noise), `is_representative`.
    * `clusters`: one row per cluster, largest first: `cluster`, `size` (proposals),
      `n_texts` (distinct texts), `representative`, `representative_support`, `mean_similarity`
      (mean cosine of the other distinct members to the representative), `top_members` (most central
      first), `members` (all distinct texts, most central first), `x`, `y` (plot centroid).
    * `representatives`: one text per cluster in `clusters` order, then (only with
      `include_noise_as_candidates`) the noise texts, most supported first.
    * `input_point`, `input_cluster`: for each input text, its row in `points` and its cluster.
    * `params`: the effective parameters (after automatic choices and capping); `timings`: seconds.
    """

    points: pd.DataFrame
    clusters: pd.DataFrame
    representatives: list[str]
    input_point: np.ndarray
    input_cluster: np.ndarray
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    @property
    def noise_share(self) -> float:
        """Share of proposals (support-weighted) labelled noise."""
        total = float(self.points["support"].sum()) if len(self.points) else 0.0
        if total == 0:
            return 0.0
        return float(self.points.loc[self.points["cluster"] == -1, "support"].sum()) / total

    def members(self, cluster_id: int) -> list[str]:
        """Distinct member texts of a cluster, most central first (-1 gives the noise texts)."""
        if cluster_id == -1:
            noise = self.points[self.points["cluster"] == -1]
            return noise.sort_values("support", ascending=False, kind="stable")["text"].tolist()
        row = self.clusters[self.clusters["cluster"] == cluster_id]
        if row.empty:
            raise KeyError(f"no cluster {cluster_id}")
        return list(row["members"].iloc[0])


# --------------------------------------------------------------------------- text handling

_WS = re.compile(r"\s+")
_TRAIL = " \t\n.!;:,\"'`“”‘’"


def normalize_text(text: str) -> str:
    """Key under which two proposals count as the same text: NFKC, case-folded, single spaces,
    surrounding quotes and trailing punctuation removed."""
    t = unicodedata.normalize("NFKC", str(text))
    t = _WS.sub(" ", t).strip().casefold()
    return t.strip(_TRAIL)


def _dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Collapse near-identical texts. Returns (display texts, support, input -> point index).

    Points are ordered by first appearance; the display text is the most frequent raw wording
    (stripped), ties going to the first seen."""
    key_index: dict[str, int] = {}
    variants: list[dict[str, int]] = []
    input_point = np.empty(len(texts), dtype=np.int64)
    for i, raw in enumerate(texts):
        raw = "" if raw is None else str(raw)
        key = normalize_text(raw)
        j = key_index.get(key)
        if j is None:
            j = len(variants)
            key_index[key] = j
            variants.append({})
        shown = _WS.sub(" ", raw).strip()
        variants[j][shown] = variants[j].get(shown, 0) + 1
        input_point[i] = j
    display = [max(v.items(), key=lambda kv: kv[1])[0] for v in variants]  # max keeps first on ties
    support = np.array([sum(v.values()) for v in variants], dtype=np.int64)
    return display, support, input_point


# --------------------------------------------------------------------------- numeric helpers


def auto_min_cluster_size(n: int) -> int:
    """clamp(round(n / 50), 2, 25): 10 for 500 texts, 25 from 1,250 texts on."""
    return int(min(25, max(2, round(n / 50))))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def exact_cosine_knn(unit_vectors: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine distance (1 - dot) of unit vectors, self first.

    Returns (indices int64 (n, k), distances float32 (n, k)) in the layout UMAP's
    `precomputed_knn` expects. Ties are broken by index, so the result is deterministic."""
    n = len(unit_vectors)
    k = min(k, n)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = unit_vectors[start:stop] @ unit_vectors.T
        rows = np.arange(stop - start)
        sims[rows, rows + start] = np.inf  # self always first, even among exact duplicates
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part.sort(axis=1)  # index order, so the stable sort below breaks ties by index
        psims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-psims, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        d = 1.0 - np.take_along_axis(psims, order, axis=1)
        d[:, 0] = 0.0
        dist[start:stop] = np.clip(d, 0.0, 2.0)
    return idx, dist


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Deterministic 2-D PCA coordinates for tiny inputs (sign fixed so the largest loading is positive)."""
    n = len(x)
    out = np.zeros((n, 2), dtype=np.float64)
    if n < 2:
        return out
    centred = x.astype(np.float64) - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    m = min(2, len(s))
    for c in range(m):
        sign = 1.0 if vt[c, np.argmax(np.abs(vt[c]))] >= 0 else -1.0
        out[:, c] = u[:, c] * s[c] * sign
    return out


def _quiet_warnings() -> None:
    """Silence the specific, harmless warnings umap/numba/hdbscan print on every run.

    Called before each reduction: re-adding an identical filter only moves it to the front, and
    it keeps working when a caller (pytest, a UI) has reset the warning filters in between."""
    for message in (
        r"n_jobs value .* overridden to 1 by setting random_state",
        r"precomputed_knn\[2\] \(knn_search_index\) is not an NNDescent object",
        r"'force_all_finite' was renamed to 'ensure_all_finite'",
        r"Spectral initialisation failed",
        r"A large number of your vertices were disconnected",
        r"n_neighbors is larger than the dataset size",
        r"The TBB threading layer requires TBB version",
        r"Tensorflow not installed; ParametricUMAP will be unavailable",
    ):
        warnings.filterwarnings("ignore", message=message)
    try:  # numba deprecation/performance chatter from umap & pynndescent internals
        from numba.core.errors import NumbaDeprecationWarning, NumbaPerformanceWarning

        warnings.filterwarnings("ignore", category=NumbaDeprecationWarning)
        warnings.filterwarnings("ignore", category=NumbaPerformanceWarning)
    except ImportError:  # pragma: no cover - numba always comes with umap
        pass


def _umap(
    x: np.ndarray,
    n_components: int,
    n_neighbors: int,
    min_dist: float,
    config: ClusterConfig,
    knn: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    import umap

    n = len(x)
    kwargs = dict(
        n_neighbors=n_neighbors,
        n_components=n_components,
        min_dist=min_dist,
        metric=config.metric,
        random_state=config.random_state,
        n_jobs=1,
        low_memory=True,
    )
    if config.n_epochs is not None:
        kwargs["n_epochs"] = int(config.n_epochs)
    if n_components + 1 >= n:  # spectral initialisation needs more points than dimensions
        kwargs["init"] = "random"
    if knn is not None:
        kwargs["precomputed_knn"] = (knn[0], knn[1], None)
    reducer = umap.UMAP(**kwargs)
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def _hdbscan(
    y: np.ndarray,
    min_cluster_size: int,
    min_samples: int,
    config: ClusterConfig,
    allow_single: bool,
    max_cluster_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    if config.backend == "hdbscan":
        import hdbscan

        model = hdbscan.HDBSCAN(
            min_cluster_size=min_cluster_size,
            min_samples=min_samples,
            metric="euclidean",
            cluster_selection_method=config.cluster_selection_method,
            allow_single_cluster=allow_single,
            approx_min_span_tree=False,  # the approximate tree collapsed 1 of 21 seeds into one cluster
            max_cluster_size=max_cluster_size or 0,
            core_dist_n_jobs=1,
        )
    else:
        from sklearn.cluster import HDBSCAN

        model = HDBSCAN(
            min_cluster_size=min_cluster_size,
            # sklearn counts the point itself among its min_samples, the hdbscan package does not
            min_samples=min(min_samples + 1, len(y)),
            metric="euclidean",
            cluster_selection_method=config.cluster_selection_method,
            allow_single_cluster=allow_single,
            max_cluster_size=max_cluster_size,
            copy=True,
        )
    model.fit(y)
    labels = np.asarray(model.labels_, dtype=np.int64)
    probs = np.asarray(model.probabilities_, dtype=np.float64)
    return labels, probs


def _relabel(labels: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Renumber clusters 0.. by proposals (desc), distinct texts (desc), first appearance (asc)."""
    ids = [c for c in np.unique(labels) if c >= 0]
    keyed = []
    for c in ids:
        mask = labels == c
        keyed.append((-int(support[mask].sum()), -int(mask.sum()), int(np.argmax(mask)), c))
    keyed.sort()
    mapping = {c: new for new, (*_, c) in enumerate(keyed)}
    return np.array([mapping.get(int(c), -1) for c in labels], dtype=np.int64)


def _centrality(sims: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Mean cosine of each distinct text to the cluster's *other proposals* (its own duplicates
    count with similarity 1). With all supports 1 this is the plain mean similarity to the other
    members. A cluster of one proposal has centrality 1."""
    s = support.astype(np.float64)
    total = s.sum()
    weighted = sims.astype(np.float64) @ s  # includes self with weight s_i and similarity ~1
    own = np.diag(sims).astype(np.float64) * s
    num = weighted - own + (s - 1.0)  # the other s_i - 1 copies of itself, similarity 1
    den = total - 1.0
    if den <= 0:
        return np.ones(len(s))
    return num / den


def _weighted_centrality(sims: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Cosine of each member to the weight-averaged members, up to a common factor:
    sum_j w_j cos(i, j) / sum_j w_j (self included with cosine 1). When every weight in the cluster
    is 0 the members weigh alike."""
    w = w.astype(np.float64)
    if w.sum() <= 0:
        w = np.ones_like(w)
    s = sims.astype(np.float64).copy()
    np.fill_diagonal(s, 1.0)
    return (s @ w) / w.sum()


def _strip(text: str) -> str:
    """A principle text without the shared "Select the response that" (see ClusterConfig.strip_prefix)."""
    t = str(text)
    for prefix in ("select the response that ", "select the response which "):
        if t.lstrip().lower().startswith(prefix):
            return t.lstrip()[len(prefix):]
    return t


def _agglomerative(
    vectors: np.ndarray, config: ClusterConfig, params: dict, timings: dict, progress: Progress | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average-linkage clustering on cosine distance, stopped at `distance_threshold`; groups with
    fewer than `min_cluster_size` texts become noise (-1). Layout: PCA (on the 32 library texts plus
    one, Procrustes disparity median 0.005 vs 0.23 for the seeded UMAP layout: PCA does not move)."""
    from sklearn.cluster import AgglomerativeClustering

    n = len(vectors)
    mcs = int(max(2, min(config.min_cluster_size or 2, n)))
    params.update(method="agglomerative", min_cluster_size_used=mcs, distance_threshold_used=config.distance_threshold)
    if progress is not None:
        progress(0, 1, "Clustering (agglomerative)")
    t0 = time.perf_counter()
    raw = AgglomerativeClustering(
        n_clusters=None, distance_threshold=config.distance_threshold, metric="cosine", linkage="average"
    ).fit_predict(vectors.astype(np.float64))
    counts = np.bincount(raw)
    labels = np.where(counts[raw] >= mcs, raw, -1).astype(np.int64)
    membership = (labels >= 0).astype(np.float64)
    timings["agglomerative_s"] = time.perf_counter() - t0
    coords = _pca_2d(vectors)
    params["layout"] = "pca"
    return labels, membership, coords


def warm_up() -> float:
    """Import umap and compile its numba functions now (5-8 s on 2 cores, once per process) so a later
    `cluster_principles` call does not pay it; returns the seconds spent. Safe to call from a
    background thread. The input is 40 fixed pseudo-random unit vectors: only their dtype and shape
    matter to the compiler."""
    t0 = time.perf_counter()
    _quiet_warnings()
    x = _unit(np.random.default_rng(0).normal(size=(40, 384)))
    config = ClusterConfig()
    knn = exact_cosine_knn(x, 15)
    reduced = _umap(x, config.n_components, 15, config.min_dist, config, knn)
    _umap(x, 2, 15, config.plot_min_dist, config, knn)
    _hdbscan(reduced, 5, 5, config, allow_single=False)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- main entry point


def cluster_principles(
    texts: Sequence[str],
    *,
    embedder=None,
    embeddings: np.ndarray | None = None,
    config: ClusterConfig | None = None,
    weights: Sequence[float] | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> ClusterResult:
    """Cluster candidate principle texts; see the module docstring and `ClusterResult`.

    `embeddings` (one row per input text, any scale) skips the embedding model; otherwise
    `embedder` (an `icai_core.embed.Embedder`) or a fresh in-memory one with `max_seq_length=64`
    is used. Duplicate texts are embedded once. `progress(done, total, message)` receives the
    embedder's progress, then "Reducing (UMAP)", then "Clustering (HDBSCAN)". `cancel` is checked
    between stages (a running UMAP fit is not interruptible).

    `weights` (one non-negative number per input text, e.g. |strength| of each principle): the
    representative of a cluster is then the member closest to the cluster's weight-averaged centre
    (`centrality` = sum_j w_j cos(i, j) / sum_j w_j over the members j, itself included, with w_j =
    weight x proposals; the weight of a distinct text is the largest weight among its proposals).
    Without weights each proposal weighs 1 and `centrality` is the mean similarity to the others.
    """
    config = config or ClusterConfig()
    timings: dict[str, float] = {}
    texts = ["" if t is None else str(t) for t in texts]
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(texts):
            raise ValueError(
                f"embeddings must have one row per text: got shape {embeddings.shape} for {len(texts)} texts"
            )
    display, support, input_point = _dedupe(texts)
    n = len(display)
    point_weight = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(texts),) or not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError(f"weights must be {len(texts)} finite non-negative numbers, one per text")
        point_weight = np.zeros(n)
        np.maximum.at(point_weight, input_point, w)
    params: dict = {"n_inputs": len(texts), "n_texts": n, "backend": config.backend, **asdict(config)}

    if n == 0:
        return ClusterResult(
            points=pd.DataFrame({c: pd.Series(dtype=_POINT_DTYPES[c]) for c in POINT_COLUMNS}),
            clusters=pd.DataFrame({c: pd.Series(dtype=_CLUSTER_DTYPES[c]) for c in CLUSTER_COLUMNS}),
            representatives=[],
            input_point=np.zeros(0, dtype=np.int64),
            input_cluster=np.zeros(0, dtype=np.int64),
            params={**params, "method": "empty"},
            timings=timings,
        )

    # ---- embed (distinct texts only, shortest first so batches carry little padding)
    check(cancel)
    t0 = time.perf_counter()
    if embeddings is not None:
        first = np.full(n, -1, dtype=np.int64)
        for i in range(len(texts) - 1, -1, -1):
            first[input_point[i]] = i
        vectors = _unit(embeddings[first])
    else:
        if embedder is None:
            from icai_core.embed import Embedder

            embedder = Embedder(max_seq_length=config.max_seq_length)
        order = sorted(range(n), key=lambda i: (len(display[i]), i))
        shown = [_strip(display[i]) if config.strip_prefix else display[i] for i in order]
        emb_sorted = embedder.embed(shown, progress=progress, cancel=cancel)
        vectors = np.empty_like(emb_sorted)
        vectors[np.asarray(order)] = emb_sorted
        vectors = _unit(vectors)
    timings["embed_s"] = time.perf_counter() - t0
    check(cancel)

    if n < SMALL_INPUT:
        labels = np.arange(n, dtype=np.int64)
        membership = np.ones(n)
        coords = _pca_2d(vectors)
        labels = _relabel(labels, support)
        params["method"] = "singletons"
    elif config.method == "agglomerative" or (config.method == "auto" and n < config.small_max):
        labels, membership, coords = _agglomerative(vectors, config, params, timings, progress)
        labels = _relabel(labels, support)
    else:
        _quiet_warnings()
        n_neighbors = int(min(config.n_neighbors, n - 1))
        mcs = config.min_cluster_size or auto_min_cluster_size(n)
        mcs = int(max(2, min(mcs, n)))
        ms = config.min_samples if config.min_samples is not None else min(mcs, 5)
        ms = int(max(1, min(ms, n - 1)))
        n_comp = int(max(2, min(config.n_components, n - 2)))
        params.update(
            method="umap+hdbscan",
            n_neighbors_used=n_neighbors,
            min_cluster_size_used=mcs,
            min_samples_used=ms,
            n_components_used=n_comp,
        )
        if progress is not None:
            progress(0, 2, "Reducing (UMAP)")
        t0 = time.perf_counter()
        knn = None
        if config.metric == "cosine" and n <= config.exact_knn_max:
            knn = exact_cosine_knn(vectors, n_neighbors)
        timings["knn_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if config.plot_layout == "shared":
            reduced = _umap(vectors, 2, n_neighbors, config.min_dist, config, knn)
            coords = reduced
        else:
            reduced = _umap(vectors, n_comp, n_neighbors, config.min_dist, config, knn)
            timings["umap_cluster_s"] = time.perf_counter() - t0
            check(cancel)
            if progress is not None:
                progress(1, 2, "Reducing (UMAP) for the 2-D plot")
            t1 = time.perf_counter()
            coords = _umap(vectors, 2, n_neighbors, config.plot_min_dist, config, knn)
            timings["umap_plot_s"] = time.perf_counter() - t1
        timings["umap_s"] = time.perf_counter() - t0
        check(cancel)
        if progress is not None:
            progress(0, 1, "Clustering (HDBSCAN)")
        t0 = time.perf_counter()
        max_size = None
        if config.max_cluster_share is not None and config.cluster_selection_method == "eom":
            max_size = max(mcs, int(config.max_cluster_share * n))
        params["max_cluster_size_used"] = max_size
        labels, membership = _hdbscan(reduced, mcs, ms, config, allow_single=False, max_cluster_size=max_size)
        params["single_cluster_fallback"] = False
        if not (labels >= 0).any():
            # Nothing separates: allow HDBSCAN to call the whole set one cluster (it may still mark noise).
            labels, membership = _hdbscan(reduced, mcs, ms, config, allow_single=True)
            params["single_cluster_fallback"] = True
        timings["hdbscan_s"] = time.perf_counter() - t0
        labels = _relabel(labels, support)

    points, clusters, reps = _summarise(
        display, support, labels, membership, coords, vectors, config, point_weight
    )
    if progress is not None:
        noise = int((labels == -1).sum())
        progress(1, 1, f"Clustered {n:,} texts: {len(clusters)} clusters, {noise:,} noise")
    return ClusterResult(
        points=points,
        clusters=clusters,
        representatives=reps,
        input_point=input_point,
        input_cluster=labels[input_point],
        params=params,
        timings=timings,
    )


_POINT_DTYPES = {
    "text": "object",
    "support": "int64",
    "cluster": "int64",
    "x": "float64",
    "y": "float64",
    "membership": "float64",
    "centrality": "float64",
    "is_representative": "bool",
}
_CLUSTER_DTYPES = {
    "cluster": "int64",
    "size": "int64",
    "n_texts": "int64",
    "representative": "object",
    "representative_support": "int64",
    "mean_similarity": "float64",
    "top_members": "object",
    "members": "object",
    "x": "float64",
    "y": "float64",
}


def _summarise(
    display: list[str],
    support: np.ndarray,
    labels: np.ndarray,
    membership: np.ndarray,
    coords: np.ndarray,
    vectors: np.ndarray,
    config: ClusterConfig,
    point_weight: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    n = len(display)
    centrality = np.full(n, np.nan)
    is_rep = np.zeros(n, dtype=bool)
    rows = []
    reps: list[str] = []
    for c in sorted(int(c) for c in np.unique(labels) if c >= 0):
        idx = np.flatnonzero(labels == c)
        sims = vectors[idx] @ vectors[idx].T
        if point_weight is None:
            cent = _centrality(sims, support[idx])
        else:
            cent = _weighted_centrality(sims, support[idx] * point_weight[idx])
        centrality[idx] = cent
        # most central; ties (within 1e-6: float noise of the embedding) -> more support -> first appearance.
        # (Rounding to 6 decimals is not a tolerance: two equal values can round apart.)
        top = float(np.max(cent))
        tied = np.abs(cent - top) <= TIE_TOLERANCE
        order = sorted(
            range(len(idx)),
            key=lambda k: (not tied[k], -float(cent[k]) if not tied[k] else 0.0, -int(support[idx[k]]), idx[k]),
        )
        rep_local = order[0]
        rep = int(idx[rep_local])
        is_rep[rep] = True
        others = [k for k in range(len(idx)) if k != rep_local]
        mean_sim = float(np.mean(sims[rep_local, others])) if others else 1.0
        members = [display[idx[k]] for k in order]
        rows.append(
            {
                "cluster": c,
                "size": int(support[idx].sum()),
                "n_texts": len(idx),
                "representative": display[rep],
                "representative_support": int(support[rep]),
                "mean_similarity": mean_sim,
                "top_members": members[: config.top_members],
                "members": members,
                "x": float(coords[idx, 0].mean()),
                "y": float(coords[idx, 1].mean()),
            }
        )
        reps.append(display[rep])
    if config.include_noise_as_candidates:
        noise = np.flatnonzero(labels == -1)
        for i in sorted(noise, key=lambda i: (-int(support[i]), i)):
            is_rep[i] = True
            reps.append(display[i])
    points = pd.DataFrame(
        {
            "text": pd.Series(display, dtype="object"),
            "support": support.astype(np.int64),
            "cluster": labels.astype(np.int64),
            "x": coords[:, 0].astype(np.float64),
            "y": coords[:, 1].astype(np.float64),
            "membership": np.where(labels >= 0, membership, 0.0).astype(np.float64),
            "centrality": centrality,
            "is_representative": is_rep,
        }
    )
    if rows:
        clusters = pd.DataFrame(rows, columns=CLUSTER_COLUMNS)
    else:
        clusters = pd.DataFrame({c: pd.Series(dtype=_CLUSTER_DTYPES[c]) for c in CLUSTER_COLUMNS})
    return points, clusters, reps
