"""Budget-aware proposal pairs (icai_core.selection): coverage of the space, weight on what the library misses."""

from __future__ import annotations

import numpy as np

from icai_core.selection import k_center, library_disagreement


def test_k_center_covers_every_cluster_before_repeating_one():
    rng = np.random.default_rng(0)
    centres = np.eye(6)[:, :6] * 10
    sizes = [200, 5, 5, 5, 5, 5]  # one dominant cluster, five rare ones
    x = np.vstack([c + rng.normal(0, 0.1, (n, 6)) for c, n in zip(centres, sizes, strict=True)])
    labels = np.repeat(np.arange(6), sizes)
    picked = k_center(x, 6, seed=1)
    assert sorted(labels[picked]) == [0, 1, 2, 3, 4, 5]  # one per cluster
    # uniform sampling of 6 from the same pool hits the rare clusters far less often (independent check)
    hits = [len(set(labels[rng.choice(len(x), 6, replace=False)])) for _ in range(200)]
    assert np.mean(hits) < 3.5
    assert np.array_equal(picked, k_center(x, 6, seed=1))  # deterministic


def test_weights_pull_the_choice_towards_unexplained_pairs():
    x = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    w = np.array([1.0, 1.0, 1.0, 5.0])
    first = k_center(x, 1, w)
    assert list(first) == [3]
    votes = np.array([[1, 1, 0], [-1, 0, 0], [0, 0, 0], [1, -1, -1]], dtype=np.int8)
    y = np.array([1, 1, -1, -1])
    # majority +1 -> A (agrees), -1 -> B (disagrees with A), 0 -> abstains, -1 -> B (agrees)
    assert list(library_disagreement(votes, y)) == [0.0, 1.0, 1.0, 0.0]
