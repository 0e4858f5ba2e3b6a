"""Compare principle statistics across groups (annotators, categories, models) and datasets.

For each group the usual per-principle table is computed; strengths are laid out as a
principle x group matrix (with CI matrices) for heatmaps; and every principle's strength is tested
between groups (every pair of groups, or each group against all other groups when there are many)
with a normal approximation whose standard error is clustered by prompt (paired on the pairs both
sides judged when they match; docs/metrics.md), BH-corrected across all tests. Groups with fewer
than ``min_pairs`` non-tie pairs are listed in ``skipped``, never dropped silently.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy import stats as sps

from icai_core.constitution import Constitution
from icai_core.stats import (
    bh_qvalues,
    encode_preferred,
    resolve_principles,
    stats_from_counts,
    vote_counts,
    z_value,
)

DIFF_COLUMNS = [
    "key",
    "text",
    "group_a",
    "group_b",
    "n_a",
    "n_b",
    "strength_a",
    "strength_b",
    "difference",
    "diff_ci_low",
    "diff_ci_high",
    "z",
    "p_value",
    "q_value",
    "significant",
    "comparison",
]
SKIPPED_COLUMNS = ["group", "n_rows", "n", "reason"]
MISSING_GROUP = "(missing)"
REST = "(all other groups)"


@dataclass
class CompareResult:
    """Per-group statistics and between-group tests.

    * ``per_group``: long table, ``group`` + the ``principle_stats`` columns (``n`` = non-tie pairs of
      the group; q-values there are BH within the group).
    * ``strength_matrix``, ``strength_ci_low``, ``strength_ci_high``: principle key x group.
    * ``differences``: one row per (principle, comparison); ``difference = strength_a - strength_b``;
      ``q_value`` is BH across all rows; ``comparison`` is "pairwise" or "one_vs_rest".
    * ``skipped``: groups with fewer than ``min_pairs`` non-tie pairs (``group, n_rows, n, reason``).
    """

    per_group: pd.DataFrame
    strength_matrix: pd.DataFrame
    strength_ci_low: pd.DataFrame
    strength_ci_high: pd.DataFrame
    differences: pd.DataFrame
    skipped: pd.DataFrame
    groups: list[str]
    by: str
    mode: str
    alpha: float
    notes: list[str] = field(default_factory=list)

    def matrix(self, column: str) -> pd.DataFrame:
        """Any ``per_group`` column as a principle x group matrix (same order as ``strength_matrix``)."""
        m = self.per_group.pivot(index="key", columns="group", values=column)
        return m.reindex(index=self.strength_matrix.index, columns=self.strength_matrix.columns)


def _group_labels(pairs: pd.DataFrame | None, by: Any, n: int) -> tuple[np.ndarray, str]:
    if isinstance(by, str):
        if pairs is None or by not in pairs.columns:
            raise KeyError(f"pairs have no column {by!r} to group by")
        raw, name = pairs[by], by
    else:
        raw = pd.Series(by) if not isinstance(by, pd.Series) else by
        name = str(raw.name) if raw.name is not None else "group"
    if len(raw) != n:
        raise ValueError(f"grouping has {len(raw)} values but the votes have {n} rows")
    values = raw.to_numpy(dtype=object)
    labels = np.array([MISSING_GROUP if pd.isna(v) else str(v) for v in values], dtype=object)
    return labels, name


def _clusters(pairs: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """One cluster id per row, by prompt as everywhere in the evidence (`inference.cluster_ids`), and
    whether they are real clusters: rows without the pair's texts (`compare_datasets` passes only the
    labels) are each their own cluster."""
    if {"text_a", "text_b"} <= set(pairs.columns):
        from icai_core.inference import cluster_ids

        return cluster_ids(pairs), True
    return np.arange(len(pairs), dtype=np.int64), False


def _clustered_diff(scores: np.ndarray, in_a: np.ndarray, in_b: np.ndarray, clusters: np.ndarray, alpha: float):
    """Difference of two groups' strengths (mean score over their decided rows, per principle) with a
    standard error clustered by prompt: (s_a, s_b, diff, low, high, z, p).

    Judgements of one prompt are not independent (a category, a model, a prompt set is a property of
    the prompt), so the rows are not the unit: the variance is the cluster-robust sandwich of the
    group dummy's coefficient in least squares of the score on a constant and the dummy, i.e.
    ``G/(G-1) * (N-1)/(N-2) * sum_g (sum_{i in g} psi_i)^2`` with ``psi_i = (x_i - s_a)/n_a`` in A and
    ``-(x_i - s_b)/n_b`` in B, exactly statsmodels' OLS with ``cov_type="cluster"`` (tested). The two
    groups are disjoint sets of rows and may share prompts (the shared ones enter once, with both
    groups' residuals). All principles at once."""
    rows = np.flatnonzero(in_a | in_b)
    x = scores[rows]
    a = in_a[rows]
    n_a, n_b = int(a.sum()), int((~a).sum())
    k = scores.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        s_a = x[a].mean(axis=0) if n_a else np.full(k, np.nan)
        s_b = x[~a].mean(axis=0) if n_b else np.full(k, np.nan)
        psi = np.where(a[:, None], (x - s_a) / n_a, -(x - s_b) / n_b)
        codes = pd.factorize(pd.Series(clusters[rows]))[0]
        g, n = int(codes.max()) + 1 if len(rows) else 0, len(rows)
        ind = sparse.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(g, n))
        sums = np.asarray(ind @ psi)
        var = (g / (g - 1) * (n - 1) / (n - 2) * (sums**2).sum(axis=0)) if g > 1 and n > 2 else np.full(k, np.nan)
        se = np.sqrt(var)
    diff = s_a - s_b
    low, high, z, p = _wald(diff, se, alpha)
    return s_a, s_b, diff, np.clip(low, -2.0, 2.0), np.clip(high, -2.0, 2.0), z, p


def _wald(diff: np.ndarray, se: np.ndarray, alpha: float):
    """(low, high, z, p) of a normal-approximation test of diff = 0; se 0 gives z = +/-inf (or 0 when
    diff is 0), se NaN gives NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        zc = z_value(alpha)
        z = np.where(se > 0, diff / se, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        z = np.where(np.isnan(se), np.nan, z)
        p = 2 * sps.norm.sf(np.abs(z))
    return diff - zc * se, diff + zc * se, z, p


def _pair_scores(votes: pd.DataFrame, preferred: np.ndarray, pair_ids: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """Mean per-pair score (vote x label, ties left out) of the given rows, one row per distinct pair."""
    rows = rows[preferred[rows] != 0]
    scores = votes.to_numpy(dtype=float)[rows] * preferred[rows][:, None]
    return pd.DataFrame(scores, index=pair_ids[rows]).groupby(level=0).mean()


def _paired_test(sa: pd.DataFrame, sb: pd.DataFrame, alpha: float, pair_clusters: pd.Series):
    """Paired difference of strengths on the pairs both sides judged: (s_a, s_b, diff, low, high, z, p, m).

    When two annotators judged the same pairs, each principle votes the same way for both, so the
    per-pair difference of scores removes the between-pair variance the independent test carries.
    The per-pair differences are averaged with a standard error clustered by prompt
    (`inference.clustered_means`; `pair_clusters`: each pair's prompt cluster), since pairs of one
    prompt are not independent either.
    """
    from icai_core.inference import clustered_means

    common = sa.index.intersection(sb.index)
    a, b = sa.loc[common].to_numpy(), sb.loc[common].to_numpy()
    m = len(common)
    d = a - b
    est = clustered_means(d, pair_clusters.reindex(common).to_numpy(), alpha=alpha)
    diff, se = est["estimate"].to_numpy(), est["se"].to_numpy()
    low, high, z, p = _wald(diff, se, alpha)
    return a.mean(axis=0), b.mean(axis=0), diff, low, high, z, p, m


def compare_groups(
    votes: pd.DataFrame,
    pairs: pd.DataFrame,
    by: Any,
    principles: Any = None,
    min_pairs: int = 20,
    alpha: float = 0.05,
    max_pairwise_groups: int = 6,
    paired: bool = True,
) -> CompareResult:
    """Principle statistics per group of ``pairs[by]`` and tests of between-group differences.

    ``pairs`` must hold ``preferred`` and be row-aligned with ``votes``; ``by`` is a column name of
    ``pairs`` or a sequence of group labels. With at most ``max_pairwise_groups`` kept groups every
    pair of groups is tested, otherwise each group against the pooled other kept groups.

    With ``paired`` (default), two sides that judged (nearly) the same pairs — at least 90% of each
    side's pairs shared, identified by content — are compared with a paired test on the shared pairs
    (``comparison`` = "paired" / "paired_one_vs_rest"); otherwise the groups are independent samples.
    """
    if "preferred" not in pairs.columns:
        raise KeyError("pairs need a 'preferred' column")
    if len(pairs) != len(votes):
        raise ValueError(f"pairs have {len(pairs)} rows but the votes have {len(votes)}")
    labels, by_name = _group_labels(pairs, by, len(votes))
    preferred = encode_preferred(pairs["preferred"].to_numpy(dtype=object))
    texts = resolve_principles(principles)
    keys = [str(c) for c in votes.columns]

    counts: dict[str, tuple[np.ndarray, np.ndarray, int, int]] = {}
    skipped_rows = []
    for g in sorted(set(labels), key=str):
        pos = np.flatnonzero(labels == g)
        agree, dis, n, n_ties = vote_counts(votes.iloc[pos], preferred[pos])
        if n < min_pairs:
            skipped_rows.append(
                {"group": g, "n_rows": len(pos), "n": n, "reason": f"fewer than {min_pairs} non-tie pairs"}
            )
            continue
        counts[g] = (agree, dis, n, n_ties)
    groups = list(counts)
    skipped = pd.DataFrame(skipped_rows, columns=SKIPPED_COLUMNS)
    notes = [
        f"group {r['group']!r} skipped: {r['n']} non-tie pairs < min_pairs={min_pairs}" for r in skipped_rows
    ]

    frames = []
    for g, (agree, dis, n, n_ties) in counts.items():
        table = stats_from_counts(keys, agree, dis, n, n_ties, principles, alpha)
        table.insert(0, "group", g)
        frames.append(table)
    if frames:
        per_group = pd.concat(frames, ignore_index=True)
    else:
        per_group = stats_from_counts([], np.zeros(0), np.zeros(0), 0, 0).assign(
            group=pd.Series(dtype=object)
        )
        per_group = per_group[["group", *per_group.columns[:-1]]]

    # row order of the matrices: pooled strength over the kept groups, descending
    if groups:
        tot_agree = sum(c[0] for c in counts.values())
        tot_dis = sum(c[1] for c in counts.values())
        tot_n = sum(c[2] for c in counts.values())
        pooled = (tot_agree - tot_dis) / max(tot_n, 1)
        order = [keys[i] for i in np.argsort(-pooled, kind="mergesort")]
    else:
        order = keys

    def mat(col: str) -> pd.DataFrame:
        if per_group.empty:
            return pd.DataFrame(index=pd.Index(order, name="key"), columns=pd.Index(groups, name="group"))
        m = per_group.pivot(index="key", columns="group", values=col)
        return m.reindex(index=order, columns=groups)

    mode = "pairwise" if len(groups) <= max_pairwise_groups else "one_vs_rest"
    comparisons: list[tuple[str, str, tuple, tuple]] = []
    if mode == "pairwise":
        for g1, g2 in itertools.combinations(groups, 2):
            comparisons.append((g1, g2, counts[g1], counts[g2]))
    else:
        tot = tuple(sum(c[i] for c in counts.values()) for i in range(3))
        for g in groups:
            c = counts[g]
            rest = (tot[0] - c[0], tot[1] - c[1], tot[2] - c[2])
            comparisons.append((g, REST, c, rest))

    clusters, clustered = _clusters(pairs)
    if not clustered and len(groups) >= 2:
        notes.append("no prompts or texts to cluster by: each row is its own cluster in the difference tests")
    decided = preferred != 0
    scores = votes.to_numpy(dtype=float) * preferred[:, None]
    pair_scores: dict[str, pd.DataFrame] = {}
    pair_clusters = pd.Series(dtype=np.int64)
    if paired and len(groups) >= 2 and {"text_a", "text_b"} <= set(pairs.columns):
        from icai_core.reconstruct import content_groups

        pair_ids = content_groups(pairs)
        pair_clusters = pd.Series(clusters, index=pair_ids)
        pair_clusters = pair_clusters[~pair_clusters.index.duplicated()]
        pair_scores = {g: _pair_scores(votes, preferred, pair_ids, np.flatnonzero(labels == g)) for g in groups}
        if mode == "one_vs_rest":
            for g in groups:
                others = np.flatnonzero(np.isin(labels, [h for h in groups if h != g]))
                pair_scores[(g, REST)] = _pair_scores(votes, preferred, pair_ids, others)

    def matched(sa: pd.DataFrame, sb: pd.DataFrame) -> bool:
        shared = len(sa.index.intersection(sb.index))
        return shared >= min_pairs and shared >= 0.9 * max(len(sa), len(sb))

    diff_frames = []
    for g1, g2, c1, c2 in comparisons:
        sa = pair_scores.get(g1)
        sb = pair_scores.get(g2) if g2 != REST else pair_scores.get((g1, REST))
        if sa is not None and sb is not None and matched(sa, sb):
            s_a, s_b, diff, low, high, z, p, m = _paired_test(sa, sb, alpha, pair_clusters)
            kind = "paired" if mode == "pairwise" else "paired_one_vs_rest"
            c1, c2 = (None, None, m), (None, None, m)
        else:
            in_a = decided & (labels == g1)
            in_b = decided & (np.isin(labels, [h for h in groups if h != g1]) if g2 == REST else labels == g2)
            s_a, s_b, diff, low, high, z, p = _clustered_diff(scores, in_a, in_b, clusters, alpha)
            kind = mode
        diff_frames.append(
            pd.DataFrame(
                {
                    "key": keys,
                    "text": [texts[k].text if k in texts else k for k in keys],
                    "group_a": g1,
                    "group_b": g2,
                    "n_a": int(c1[2]),
                    "n_b": int(c2[2]),
                    "strength_a": s_a,
                    "strength_b": s_b,
                    "difference": diff,
                    "diff_ci_low": low,
                    "diff_ci_high": high,
                    "z": z,
                    "p_value": p,
                    "comparison": kind,
                }
            )
        )
    if diff_frames:
        differences = pd.concat(diff_frames, ignore_index=True)
        differences["q_value"] = bh_qvalues(differences["p_value"].to_numpy())
        differences["significant"] = (differences["q_value"] < alpha).fillna(False).astype(bool)
        differences = differences[DIFF_COLUMNS]
    else:
        differences = pd.DataFrame(columns=DIFF_COLUMNS)
        if len(groups) < 2:
            notes.append("fewer than two groups with enough pairs: no differences tested")

    return CompareResult(
        per_group=per_group,
        strength_matrix=mat("strength"),
        strength_ci_low=mat("strength_ci_low"),
        strength_ci_high=mat("strength_ci_high"),
        differences=differences,
        skipped=skipped,
        groups=groups,
        by=by_name,
        mode=mode,
        alpha=alpha,
        notes=notes,
    )


def compare_datasets(
    datasets: list[tuple[str, pd.DataFrame, Any]],
    principles: Any = None,
    min_pairs: int = 20,
    alpha: float = 0.05,
    max_pairwise_groups: int = 6,
) -> CompareResult:
    """``compare_groups`` across datasets given as ``(name, votes, preferred)``.

    Only principles present in every dataset are compared (the others are named in ``notes``).
    """
    if not datasets:
        raise ValueError("no datasets to compare")
    names = [str(d[0]) for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique, got {names}")
    common = [str(c) for c in datasets[0][1].columns]
    for _, v, _ in datasets[1:]:
        cols = {str(c) for c in v.columns}
        common = [c for c in common if c in cols]
    notes = []
    for name, v, _ in datasets:
        dropped = [str(c) for c in v.columns if str(c) not in common]
        if dropped:
            notes.append(f"dataset {name!r}: principle(s) not in every dataset left out: {dropped}")
    vote_frames, pair_frames = [], []
    to_label = {1: "a", -1: "b", 0: "tie"}
    for name, v, pref in datasets:
        v = v.rename(columns=str)
        codes = encode_preferred(pref, v.index)
        vote_frames.append(v[common].reset_index(drop=True))
        pair_frames.append(
            pd.DataFrame({"preferred": [to_label[int(c)] for c in codes], "dataset": str(name)})
        )
    votes = pd.concat(vote_frames, ignore_index=True).astype(np.int8)
    pairs = pd.concat(pair_frames, ignore_index=True)
    result = compare_groups(votes, pairs, "dataset", principles, min_pairs, alpha, max_pairwise_groups)
    result.notes = notes + result.notes
    return result


@dataclass
class ConstitutionDiff:
    """Which principles two constitutions share.

    ``both``: in both with the same direction; ``flipped``: in both, opposite direction;
    ``only_a`` / ``only_b``. ``table`` has one row per principle with ``key, status, text_a, text_b,
    inverted_a, inverted_b, strength_a, strength_b`` (strengths of the principle as stated, i.e.
    negative when the constitution holds it inverted).
    """

    both: list[str]
    only_a: list[str]
    only_b: list[str]
    flipped: list[str]
    table: pd.DataFrame


def constitution_diff(constitution_a: Constitution, constitution_b: Constitution) -> ConstitutionDiff:
    a = {e.key: e for e in constitution_a.entries}
    b = {e.key: e for e in constitution_b.entries}
    order = list(a) + [k for k in b if k not in a]
    both, only_a, only_b, flipped, rows = [], [], [], [], []
    for k in order:
        ea, eb = a.get(k), b.get(k)
        if ea is not None and eb is not None:
            status = "flipped" if ea.inverted != eb.inverted else "both"
        else:
            status = "only_a" if ea is not None else "only_b"
        {"both": both, "flipped": flipped, "only_a": only_a, "only_b": only_b}[status].append(k)
        rows.append(
            {
                "key": k,
                "status": status,
                "text_a": ea.text if ea else None,
                "text_b": eb.text if eb else None,
                "inverted_a": ea.inverted if ea else None,
                "inverted_b": eb.inverted if eb else None,
                "strength_a": ea.original_strength if ea else np.nan,
                "strength_b": eb.original_strength if eb else np.nan,
            }
        )
    cols = ["key", "status", "text_a", "text_b", "inverted_a", "inverted_b", "strength_a", "strength_b"]
    return ConstitutionDiff(both, only_a, only_b, flipped, pd.DataFrame(rows, columns=cols))
