"""Budget-aware choice of the pairs sent to an LLM proposer (after MIG: information gain in semantic space).

When only N of many training pairs may be shown to the proposer, the first N (or N at random) tend to
repeat what is common and miss what is rare. Here the pairs are chosen for coverage of the space of
*how their two responses differ* (MiniLM embedding of response A minus response B, sign-aligned so
the preferred response is always "+"), and pairs that the measurable library cannot explain (its
majority vote disagrees with the annotator, or it has nothing to say) weigh double: they are where a
new principle can be learnt.

The rule is greedy weighted k-center (farthest-point) selection: start from the heaviest pair, then
repeatedly add the pair with the largest weight x distance to its nearest chosen pair. It is
deterministic for a given seed (ties broken by a seeded permutation).
"""

from __future__ import annotations

import numpy as np


def k_center(vectors: np.ndarray, k: int, weights: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Indices of `k` rows of `vectors` chosen by greedy weighted farthest-point selection (sorted)."""
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(n)  # tie-break: seeded, stable
    x, w = x[order], w[order]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    chosen = [int(np.argmax(w))]
    dist = 1.0 - x @ x[chosen[0]]  # cosine distance to the nearest chosen point
    for _ in range(k - 1):
        score = w * np.maximum(dist, 0.0)
        score[chosen] = -1.0
        j = int(np.argmax(score))
        chosen.append(j)
        dist = np.minimum(dist, 1.0 - x @ x[j])
    return np.sort(order[np.asarray(chosen)])


def library_disagreement(votes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1.0 where the measurable library's plain majority vote does not predict the label (or abstains),
    else 0.0. `votes`: int8 rows x judges in {-1, 0, 1}; `y`: +1 (A) / -1 (B)."""
    s = np.sign(np.asarray(votes, dtype=np.int64).sum(axis=1))
    return (s != np.asarray(y)).astype(np.float64)


def coverage_rows(pairs, rows: np.ndarray, budget: int, *, embedder=None, seed: int = 0) -> np.ndarray:
    """The `budget` rows (positions in `pairs`, a subset of `rows`) to send to the proposer."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) <= budget:
        return np.sort(rows)
    from icai_core import judges

    sub = pairs.iloc[rows]
    if embedder is None:
        from icai_core.embed import Embedder

        embedder = Embedder(max_seq_length=64)
    ea = np.asarray(embedder.embed(sub["text_a"].astype(str).tolist()))
    eb = np.asarray(embedder.embed(sub["text_b"].astype(str).tolist()))
    y = np.where(sub["preferred"].to_numpy() == "a", 1, -1)
    diff = (ea - eb) * y[:, None]  # the preferred response's side is always "+"
    lib = judges.compute_votes(sub.reset_index(drop=True)).to_numpy()
    weights = 1.0 + library_disagreement(lib, y)
    picked = k_center(diff, budget, weights, seed=seed)
    return np.sort(rows[picked])
