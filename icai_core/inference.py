"""Clustered inference and length-controlled effects for ONE annotator's judgements.

Why clustered: rows of a preference file are not independent draws. The same pair can be judged
several times (three MTurk votes, both presentation orders), and one prompt usually has several
pairs (the same instruction answered by many models, against one shared reference output). A
principle's votes and the length of the responses are properties of the pair, so rows that share a
prompt share most of what is being tested; treating them as independent makes standard errors too
small. Every interval and p-value here is therefore **cluster-robust by prompt** (the sandwich
estimator with the usual G/(G-1) small-sample factor); a pair is nested in its prompt, so prompt
clusters also cover repeated judgements of one pair. Rows with an empty prompt are clustered by
their pair content instead (see `cluster_ids`).

We use the sandwich rather than a cluster bootstrap because it is closed form (fast, deterministic,
vectorised over 40 principles) and is what `statsmodels` implements for GLMs; the tests check it
against statsmodels and against a by-hand cluster bootstrap with a fixed seed.

Controlled effects follow Chatbot Arena's style control: a logistic model of P(annotator picks A)
on the principle's vote plus the normalised length difference (len_a - len_b) / (len_a + len_b)
(and Bradley-Terry model-identity columns where `model_a`/`model_b` are known). Every covariate
changes sign when A and B are swapped and there is no intercept, so the model is symmetric under
that swap; an intercept (a position effect) is added only when the presentation order is known.
Fits use `statsmodels` GLM Binomial with `cov_type="cluster"`; convergence and separation are
checked and a failed fit says why instead of returning a silent NaN.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy import stats as sps

from icai_core.stats import bh_qvalues, encode_preferred, votes_array, z_value

LENGTH_KEYS = ("longer",)  # measurable principles that ARE the length covariate (n_chars)
LENGTH_BIN_EDGES = (-1.0, -0.5, -0.3, -0.15, -0.05, 0.05, 0.15, 0.3, 0.5, 1.0)
_MAX_ABS_COEF = 15.0  # a logistic coefficient beyond this means (quasi-)separation, not an effect

__all__ = [
    "ClusteredMean",
    "LogitFit",
    "StyleControl",
    "LengthView",
    "cluster_ids",
    "ordered_text_hashes",
    "text_hashes",
    "utf8_buffers",
    "clustered_mean",
    "clustered_means",
    "normalised_diff",
    "length_diff",
    "model_design",
    "fit_logit",
    "marginal_effects",
    "controlled_effects",
    "style_control",
    "length_view",
]


# --------------------------------------------------------------------------------------------------
# Clusters and covariates
# --------------------------------------------------------------------------------------------------


def utf8_buffers(values: Any) -> tuple[list[int], memoryview]:
    """(offsets, data) of a string column's UTF-8 bytes, read from its Arrow buffers
    (`token_kernel.large_utf8_view`, the one reader of a column's bytes): text i is
    ``data[offsets[i]:offsets[i + 1]]``; missing values are empty. No Python string is built, so a
    10 MB text costs no 40 MB UCS-4 copy (pyarrow-backed `str` columns are not copied at all); the
    offsets are a Python list because slicing with Python ints is what the per-row loops do."""
    from icai_core.token_kernel import utf8_buffer

    _, buf, offsets = utf8_buffer(values)
    return offsets.tolist(), memoryview(buf)


_HASH_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("principia_text_hash_memo", default=None)


@contextlib.contextmanager
def memoised_text_hashes():
    """Within this block (or decorated function), `text_hashes` of the same Arrow buffers is computed
    once. One annotator's evidence hashes the same three columns ~24 times (pair keys, clusters, the
    order and position checks): 2.0 of 7.9 s at 50,000 pairs, profiled. Scoped rather than global
    because the memo pins the arrays it is keyed by (so their buffer addresses cannot be reused while
    it lives); only columns whose Arrow buffers are their own are memoised (pandas' default pyarrow
    `str`), since an object column is converted afresh on every call; a nested block shares the memo."""
    if _HASH_MEMO.get() is not None:
        yield
        return
    token = _HASH_MEMO.set({})
    try:
        yield
    finally:
        _HASH_MEMO.reset(token)


def text_hashes(values: Any) -> np.ndarray:
    """A 64-bit content hash (blake2b of the UTF-8 bytes) of every text; missing values hash as "".

    Read straight from the Arrow buffers of a string column (`utf8_buffers`), so no Python string is
    built: one 10 MB text with a non-Latin character is a 40 MB Python string, and hashing it through
    pandas cost ~140 MB at the peak of the evidence stage (issue 11, item 6). The values are part of
    the pair keys (`reportcard.pair_keys`), so they must not change: the first 8 digest bytes, little
    endian, as always; the digests are joined and read as one array (no per-row int conversion).
    Inside `memoised_text_hashes`, the hashes of buffers already hashed are returned again (a copy)."""
    import hashlib

    from icai_core.token_kernel import large_utf8_view

    a, shared = large_utf8_view(values)
    memo = _HASH_MEMO.get()
    key = None
    if memo is not None and shared and len(a):  # a converted copy is new each call: pinning it would only cost memory
        bufs = a.buffers()
        # immutable Arrow buffers, pinned by the memo entry: same addresses + offset + length = same texts
        key = (bufs[0].address if bufs[0] is not None else 0, bufs[1].address,
               bufs[2].address if bufs[2] is not None else 0, a.offset, len(a))
        if key in memo:
            return memo[key][1].copy()
    off, data = utf8_buffers(a)
    n = len(off) - 1
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    blake = hashlib.blake2b
    digests = b"".join([blake(data[off[i]:off[i + 1]], digest_size=8).digest() for i in range(n)])
    out = np.frombuffer(digests, dtype="<u8").astype(np.uint64)
    if key is not None:
        memo[key] = (a, out.copy())
    return out


def _mix(*cols: np.ndarray) -> np.ndarray:
    """One uint64 from several uint64 hashes (wrapping multiply-add with odd constants)."""
    out = np.zeros(len(cols[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k, c in enumerate(cols):
            out = out * np.uint64(0x9E3779B97F4A7C15) + (c ^ np.uint64(0xC2B2AE3D27D4EB4F * (k + 1) & (2**64 - 1)))
    return out


def ordered_text_hashes(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, flipped)``: the two responses' content hashes in a canonical order (the smaller hash
    first) and whether the row shows them the other way round; the same for A/B swapped."""
    ha = text_hashes(pairs["text_a"])
    hb = text_hashes(pairs["text_b"])
    flipped = ha > hb
    return np.where(flipped, hb, ha), np.where(flipped, ha, hb), flipped


def cluster_ids(pairs: pd.DataFrame) -> np.ndarray:
    """One integer cluster id per row: the prompt, or the pair content where the prompt is empty.

    Rows that share a prompt share a cluster (this nests every repeated judgement of one pair,
    whatever the order in which it was shown). A file with no prompts at all (every prompt "")
    would otherwise collapse into one cluster, so empty-prompt rows fall back to their content
    (the order-insensitive pair of texts).
    """
    n = len(pairs)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if "prompt" in pairs:
        prompt = pairs["prompt"]
        has_prompt = (prompt.fillna("").astype(str).str.strip() != "").to_numpy()
        hp = text_hashes(prompt)
    else:
        has_prompt, hp = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint64)
    lo, hi, _ = ordered_text_hashes(pairs)
    key = np.where(has_prompt, _mix(np.ones(n, dtype=np.uint64), hp), _mix(np.zeros(n, dtype=np.uint64), lo, hi))
    return pd.factorize(key)[0].astype(np.int64)


def normalised_diff(a: Any, b: Any) -> np.ndarray:
    """(a - b) / (a + b), 0 where both are 0: in [-1, 1], negated when A and B are swapped."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(a + b > 0, (a - b) / (a + b), 0.0)
    return np.nan_to_num(out)


def text_lengths(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Character counts of text_a and text_b (the same measure as the `longer` principle)."""
    la = pairs["text_a"].astype(str).str.len().to_numpy(dtype=float)
    lb = pairs["text_b"].astype(str).str.len().to_numpy(dtype=float)
    return la, lb


def length_diff(pairs: pd.DataFrame) -> np.ndarray:
    """Arena-style normalised length difference (len_a - len_b) / (len_a + len_b) in characters."""
    return normalised_diff(*text_lengths(pairs))


def _model_names(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    if "model_a" not in pairs or "model_b" not in pairs:
        return None
    ma = pairs["model_a"].fillna("").astype(str).str.strip().to_numpy()
    mb = pairs["model_b"].fillna("").astype(str).str.strip().to_numpy()
    return ma, mb


def model_design(pairs: pd.DataFrame) -> pd.DataFrame:
    """Bradley-Terry model-identity columns: +1 where the model wrote A, -1 where it wrote B.

    One column per known model except the most frequent one (the reference, whose strength is 0):
    without an intercept the full set of columns sums to zero on every row, so one must go. Rows
    with an unknown model (empty name) get 0 in every column. Empty frame when fewer than two
    models are known.
    """
    names = _model_names(pairs)
    if names is None:
        return pd.DataFrame(index=pairs.index)
    ma, mb = names
    counts = pd.Series(np.concatenate([ma, mb])).value_counts()
    counts = counts[counts.index != ""]
    if len(counts) < 2:
        return pd.DataFrame(index=pairs.index)
    known = (ma != "") & (mb != "")
    order = sorted(counts.index, key=lambda m: (-counts[m], m))
    cols = {}
    for m in order[1:]:
        cols[f"model[{m}]"] = np.where(known, (ma == m).astype(float) - (mb == m).astype(float), 0.0)
    return pd.DataFrame(cols, index=pairs.index)


# --------------------------------------------------------------------------------------------------
# Cluster-robust means
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusteredMean:
    """A mean with a cluster-robust standard error and a Wald interval.

    ``p_value`` tests ``estimate == null``. ``n`` rows, ``n_clusters`` clusters. NaN fields come
    with ``message`` saying why (no rows, one cluster, no variation).
    """

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_clusters: int
    null: float = 0.0
    message: str = ""

    @property
    def ci(self) -> list[float | None]:
        return [_num(self.ci_low), _num(self.ci_high)]


def _num(x: Any) -> float | None:
    """JSON-friendly float: None for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def clustered_means(
    values: np.ndarray,
    clusters: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    null: float = 0.0,
    alpha: float = 0.05,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Column-wise means of ``values`` (n x k) over the rows where ``mask`` is True.

    Standard error: the cluster-robust sandwich of an intercept-only least-squares fit, i.e.
    ``se^2 = G/(G-1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2`` with ``G`` the number of
    clusters that have rows. This is exactly ``statsmodels`` OLS on a constant with
    ``cov_type="cluster"`` (tested). Returns columns ``estimate, se, ci_low, ci_high, p_value, n,
    n_clusters`` (interval clipped to ``bounds``; p two-sided normal against ``null``).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n_rows, k = x.shape
    m = np.ones_like(x, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(n_rows, -1)
    if m.shape[1] == 1 and k > 1:
        m = np.repeat(m, k, axis=1)
    codes = pd.factorize(pd.Series(np.asarray(clusters)))[0] if n_rows else np.zeros(0, dtype=np.int64)
    n_groups = int(codes.max()) + 1 if n_rows else 0
    w = m.astype(float)
    n = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, (np.where(m, x, 0.0)).sum(axis=0) / n, np.nan)
        resid = np.where(m, x - mean, 0.0)
        if n_rows:
            ind = sparse.csr_matrix((np.ones(n_rows), (codes, np.arange(n_rows))), shape=(n_groups, n_rows))
            sums = np.asarray(ind @ resid)
            g_have = np.asarray((ind @ w) > 0).sum(axis=0)
        else:
            sums = np.zeros((0, k))
            g_have = np.zeros(k)
        g_have = np.asarray(g_have, dtype=float)
        var = np.where(g_have > 1, g_have / (g_have - 1) * (sums**2).sum(axis=0) / n**2, np.nan)
        se = np.sqrt(var)
        z = z_value(alpha)
        lo, hi = mean - z * se, mean + z * se
        if bounds is not None:
            lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
        p = np.where(se > 0, 2 * sps.norm.sf(np.abs(mean - null) / se), np.nan)
    return pd.DataFrame(
        {
            "estimate": mean,
            "se": se,
            "ci_low": lo,
            "ci_high": hi,
            "p_value": p,
            "n": n.astype(np.int64),
            "n_clusters": g_have.astype(np.int64),
        }
    )


def clustered_mean(
    values: Any,
    clusters: Any,
    *,
    null: float = 0.0,
    alpha: float = 0.05,
    bounds: tuple[float, float] | None = None,
) -> ClusteredMean:
    """Scalar version of `clustered_means`, with a plain-words ``message`` when undefined."""
    v = np.asarray(values, dtype=float)
    row = clustered_means(v, np.asarray(clusters), null=null, alpha=alpha, bounds=bounds).iloc[0]
    msg = ""
    if row["n"] == 0:
        msg = "no rows to estimate from"
    elif row["n_clusters"] < 2:
        msg = "all rows share one prompt, so no cluster-robust interval can be computed"
    elif not row["se"] > 0:
        msg = "every row has the same value, so the interval has no width and no test is possible"
    return ClusteredMean(
        estimate=float(row["estimate"]),
        se=float(row["se"]),
        ci_low=float(row["ci_low"]),
        ci_high=float(row["ci_high"]),
        p_value=float(row["p_value"]),
        n=int(row["n"]),
        n_clusters=int(row["n_clusters"]),
        null=null,
        message=msg,
    )


# --------------------------------------------------------------------------------------------------
# Logistic fits
# --------------------------------------------------------------------------------------------------


@dataclass
class LogitFit:
    """A cluster-robust logistic fit, or the reason it could not be made.

    ``ok`` False means there is no estimate; ``message`` says why in plain words. ``table`` has
    one row per term: ``term, coef, se, ci_low, ci_high, p_value``.
    """

    ok: bool
    message: str
    table: pd.DataFrame
    n: int
    n_clusters: int
    dropped: list[str] = field(default_factory=list)
    result: Any = None  # the statsmodels results object (None when not ok)
    separating: str | None = None  # the term blamed for (quasi-)separation, when that is why it failed

    def term(self, name: str) -> dict[str, float]:
        if not self.ok or name not in set(self.table["term"]):
            nan = float("nan")
            return {"coef": nan, "se": nan, "ci_low": nan, "ci_high": nan, "p_value": nan}
        row = self.table.loc[self.table["term"] == name].iloc[0]
        return {c: float(row[c]) for c in ("coef", "se", "ci_low", "ci_high", "p_value")}


_TERM_COLUMNS = ["term", "coef", "se", "ci_low", "ci_high", "p_value"]


def _failed(message: str, n: int, g: int, dropped: list[str] | None = None) -> LogitFit:
    return LogitFit(False, message, pd.DataFrame(columns=_TERM_COLUMNS), n, g, list(dropped or []))


def independent_columns(X: np.ndarray, names: list[str]) -> tuple[list[int], list[str]]:
    """Indices of a maximal set of linearly independent, non-constant columns (greedy, in order).

    Columns that are all zero, or a linear combination of earlier kept columns (e.g. two principles
    that vote identically), are dropped and named; earlier columns win.
    """
    kept: list[int] = []
    dropped: list[str] = []
    basis = np.zeros((X.shape[0], 0))
    for j in range(X.shape[1]):
        col = np.asarray(X[:, j], dtype=float)
        norm = float(np.linalg.norm(col))
        if norm == 0:
            dropped.append(names[j])
            continue
        resid = col - basis @ (basis.T @ col)
        resid = resid - basis @ (basis.T @ resid)  # re-orthogonalise once (classical Gram-Schmidt twice)
        r = float(np.linalg.norm(resid))
        if r > 1e-8 * norm:
            kept.append(j)
            basis = np.column_stack([basis, resid / r])
        else:
            dropped.append(names[j])
    return kept, dropped


def one_sided(vote: np.ndarray, y: np.ndarray) -> bool:
    """True when every decided row where the principle votes agrees with the choice, or every one
    disagrees (y in {1, -1}). Such a column separates the choices exactly: the likelihood keeps rising
    as its coefficient goes to +/- infinity whatever the other covariates, so there is no estimate."""
    s = vote[(vote != 0) & (y != 0)] * y[(vote != 0) & (y != 0)]
    return bool(len(s)) and (bool((s > 0).all()) or bool((s < 0).all()))


def _separation_message(key: str, vote: np.ndarray, y: np.ndarray) -> str:
    s = vote[(vote != 0) & (y != 0)] * y[(vote != 0) & (y != 0)]
    how = "agrees with" if (s > 0).all() else "disagrees with"
    return (f"separation: '{key}' {how} the choice on all {len(s)} decided rows where it votes, "
            "so its coefficient is unbounded")


def fit_logit(
    y: Any,
    X: Any,
    clusters: Any,
    names: list[str],
    *,
    alpha: float = 0.05,
    required: tuple[str, ...] = (),
) -> LogitFit:
    """Logistic regression of ``y`` (1 = A chosen, 0 = B chosen) on ``X`` without an added intercept.

    statsmodels GLM Binomial with ``cov_type="cluster"`` (groups = ``clusters``). Columns that are
    constant zero or collinear with earlier columns are dropped (named in ``dropped``); if one of
    ``required`` is dropped the fit fails with that reason. A fit also fails, with a message, when
    there are too few rows or clusters, one outcome class only, no convergence, or (quasi-)complete
    separation (a coefficient beyond +/-15 on the log-odds scale or a non-finite standard error).
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    codes = pd.factorize(pd.Series(np.asarray(clusters)))[0] if len(y) else np.zeros(0, dtype=np.int64)
    n, g = len(y), (int(codes.max()) + 1 if len(y) else 0)
    if n == 0:
        return _failed("no decided (non-tie) rows to fit", n, g)
    if y.min() == y.max():
        side = "A" if y[0] == 1 else "B"
        return _failed(f"every decided row chose {side}, so a choice model cannot be fitted", n, g)
    if g < 2:
        return _failed("all rows share one prompt: a cluster-robust fit needs at least 2 prompts", n, g)
    kept, dropped = independent_columns(X, names)
    lost = [r for r in required if r in dropped]
    if lost:
        why = "never votes on a decided row" if not np.any(X[:, names.index(lost[0])] != 0) else (
            "votes exactly like another covariate (collinear)"
        )
        return _failed(f"'{lost[0]}' {why}, so its effect cannot be separated", n, g, dropped)
    if not kept:
        return _failed("no covariate varies across the rows", n, g, dropped)
    if n <= len(kept) + 1:
        return _failed(f"{n} rows are too few for {len(kept)} coefficients", n, g, dropped)
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        PerfectSeparationError,
        PerfectSeparationWarning,
    )

    Xk = X[:, kept]
    kept_names = [names[j] for j in kept]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.GLM(y, Xk, family=sm.families.Binomial()).fit(
                cov_type="cluster", cov_kwds={"groups": codes}, maxiter=100
            )
        except PerfectSeparationError:
            return _failed("perfect separation: some covariate predicts every choice", n, g, dropped)
        except (np.linalg.LinAlgError, ValueError) as exc:  # pragma: no cover - defensive
            return _failed(f"the fit failed numerically ({exc})", n, g, dropped)
    kinds = {type(w.message) for w in caught} | {w.category for w in caught}
    params = np.asarray(res.params, dtype=float)
    bse = np.asarray(res.bse, dtype=float)
    if PerfectSeparationWarning in kinds or np.any(np.abs(params) > _MAX_ABS_COEF):
        worst = kept_names[int(np.argmax(np.abs(params)))]
        out = _failed(
            f"(quasi-)separation: '{worst}' almost perfectly predicts the choices where it applies, "
            "so its coefficient is unbounded",
            n,
            g,
            dropped,
        )
        out.separating = worst
        return out
    if ConvergenceWarning in kinds or not bool(getattr(res, "converged", True)):
        return _failed("the logistic fit did not converge in 100 iterations", n, g, dropped)
    if not np.all(np.isfinite(bse)):
        return _failed("the cluster-robust covariance is singular (too few prompts for the terms)", n, g, dropped)
    z = z_value(alpha)
    table = pd.DataFrame(
        {
            "term": kept_names,
            "coef": params,
            "se": bse,
            "ci_low": params - z * bse,
            "ci_high": params + z * bse,
            "p_value": 2 * sps.norm.sf(np.abs(params) / np.where(bse > 0, bse, np.nan)),
        }
    )
    return LogitFit(True, "", table, n, g, dropped, res)


# --------------------------------------------------------------------------------------------------
# Per-principle effects
# --------------------------------------------------------------------------------------------------


def _valid_array(valid: pd.DataFrame | None, votes: pd.DataFrame) -> np.ndarray:
    if valid is None:
        return np.ones(votes.shape, dtype=bool)
    v = valid.reindex(index=votes.index, columns=votes.columns)
    if v.isna().to_numpy().any():
        raise ValueError("valid must have the same rows and columns as votes (True/False for every vote)")
    return v.to_numpy(dtype=bool)


def marginal_effects(
    votes: pd.DataFrame,
    preferred: Any,
    clusters: Any,
    *,
    valid: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Each principle's strength (mean of vote x label over decided rows) with a clustered interval.

    Strength is exactly `stats.principle_stats`' strength when every vote is valid; an invalid vote
    (``valid`` False) is missing for that principle, not "not relevant", so the row leaves that
    principle's ``n``. The test is the cluster-robust Wald test of strength = 0 (the binomial sign
    test of `stats` assumes independent rows). Columns ``key, n, n_clusters, strength, se, ci_low,
    ci_high, p_value, q_value`` (BH over the principles with a p-value).
    """
    arr = votes_array(votes).astype(float)
    y = encode_preferred(preferred, votes.index).astype(float)
    ok = _valid_array(valid, votes) & (y != 0)[:, None]
    scores = arr * y[:, None]
    table = clustered_means(scores, np.asarray(clusters), ok, null=0.0, alpha=alpha, bounds=(-1.0, 1.0))
    table.insert(0, "key", [str(c) for c in votes.columns])
    table = table.rename(columns={"estimate": "strength"})
    table["q_value"] = bh_qvalues(table["p_value"].to_numpy())
    return table[["key", "n", "n_clusters", "strength", "se", "ci_low", "ci_high", "p_value", "q_value"]]


def _choice(pairs_or_preferred: Any, index: pd.Index) -> np.ndarray:
    return encode_preferred(pairs_or_preferred, index)


def controlled_effects(
    votes: pd.DataFrame,
    pairs: pd.DataFrame,
    *,
    clusters: Any = None,
    valid: pd.DataFrame | None = None,
    order_known: bool = False,
    alpha: float = 0.05,
    length_keys: tuple[str, ...] = LENGTH_KEYS,
    step: Any = None,
) -> pd.DataFrame:
    """Marginal and length-controlled effect of every principle, side by side.

    Controlled model per principle j (decided rows where j's vote is valid):
    ``logit P(A) = b_j * vote_j + c * (len_a - len_b)/(len_a + len_b) [+ model columns] [+ position]``.
    ``effect`` is ``b_j``: the change in log-odds of choosing A when the principle picks A rather
    than being silent (so ``exp(2 b_j)`` is the odds ratio between "picks A" and "picks B").
    ``proxy_for_length`` is True when the marginal effect is significant (q < alpha) and the
    controlled one is not. Principles in ``length_keys`` are the covariate itself and get no
    controlled effect (``status`` says so). Columns: ``key, n, n_clusters, strength, strength_ci_low,
    strength_ci_high, marginal_p, marginal_q, effect, effect_ci_low, effect_ci_high, effect_p,
    effect_q, length_coef, proxy_for_length, status, message``. ``step(message)``, when given, is
    called before each principle's fit (the caller checks its cancel token and reports progress there:
    one fit on 100k rows takes seconds).
    """
    idx = votes.index
    arr = votes_array(votes).astype(float)
    y = _choice(pairs["preferred"].reindex(idx) if "preferred" in pairs else pairs, idx)
    cl = cluster_ids(pairs.loc[idx]) if clusters is None else np.asarray(clusters)
    ok_valid = _valid_array(valid, votes)
    marg = marginal_effects(votes, y, cl, valid=valid, alpha=alpha)
    ld = length_diff(pairs.loc[idx])
    models = model_design(pairs.loc[idx])
    decided = y != 0
    yy = (y == 1).astype(float)
    base_cols = [ld] + [models[c].to_numpy() for c in models.columns]
    base_names = ["length"] + list(models.columns)
    if order_known:
        base_cols.append(np.ones(len(idx)))
        base_names.append("position_first")
    rows = []
    for j, key in enumerate(votes.columns):
        key = str(key)
        if step is not None:
            step(f"controlled effect of {key}")
        r: dict[str, Any] = {"key": key}
        if key in length_keys:
            r.update(status="is_covariate", message="this principle is the length covariate itself")
            rows.append(r)
            continue
        use = decided & ok_valid[:, j]
        if one_sided(arr[use, j], y[use]):
            r.update(status="failed", message=_separation_message(key, arr[use, j], y[use]))
            rows.append(r)
            continue
        X = np.column_stack([arr[use, j]] + [c[use] for c in base_cols])
        fit = fit_logit(yy[use], X, cl[use], [key] + base_names, alpha=alpha, required=(key,))
        if fit.ok:
            t, lt = fit.term(key), fit.term("length")
            r.update(
                effect=t["coef"],
                effect_ci_low=t["ci_low"],
                effect_ci_high=t["ci_high"],
                effect_p=t["p_value"],
                length_coef=lt["coef"],
                status="ok",
                message="",
            )
        else:
            r.update(status="failed", message=fit.message)
        rows.append(r)
    ctl = pd.DataFrame(rows, columns=["key", "status", "message"]) if not rows else pd.DataFrame(rows)
    for c in ("effect", "effect_ci_low", "effect_ci_high", "effect_p", "length_coef"):
        if c not in ctl:
            ctl[c] = np.nan
    ctl["effect_q"] = bh_qvalues(ctl["effect_p"].to_numpy(dtype=float))
    out = marg.rename(
        columns={"ci_low": "strength_ci_low", "ci_high": "strength_ci_high", "p_value": "marginal_p",
                 "q_value": "marginal_q"}
    ).drop(columns=["se"])
    out["key"] = out["key"].astype(object)
    ctl["key"] = ctl["key"].astype(object)
    out = out.merge(ctl, on="key", how="left")
    marg_sig = out["marginal_q"].to_numpy(dtype=float) < alpha
    ctl_ok = out["status"].to_numpy() == "ok"
    ctl_sig = out["effect_q"].to_numpy(dtype=float) < alpha
    out["proxy_for_length"] = marg_sig & ctl_ok & ~ctl_sig
    cols = ["key", "n", "n_clusters", "strength", "strength_ci_low", "strength_ci_high", "marginal_p",
            "marginal_q", "effect", "effect_ci_low", "effect_ci_high", "effect_p", "effect_q", "length_coef",
            "proxy_for_length", "status", "message"]
    return out[cols]


@dataclass
class StyleControl:
    """One multivariate model over all principles plus length (Arena's style-control table).

    ``table``: ``term, coef, se, ci_low, ci_high, p_value, q_value`` (q: BH over the principle
    terms; the length/model/position terms get none). ``fit`` is the underlying `LogitFit`.
    """

    fit: LogitFit
    table: pd.DataFrame
    n_rows_dropped_invalid: int = 0
    separated: list[str] = field(default_factory=list)  # principles left out for (quasi-)separation

    @property
    def ok(self) -> bool:
        return self.fit.ok

    @property
    def message(self) -> str:
        return self.fit.message


def style_control(
    votes: pd.DataFrame,
    pairs: pd.DataFrame,
    *,
    clusters: Any = None,
    valid: pd.DataFrame | None = None,
    order_known: bool = False,
    alpha: float = 0.05,
    length_keys: tuple[str, ...] = LENGTH_KEYS,
    max_separated: int = 5,
    step: Any = None,
) -> StyleControl:
    """Fit ``logit P(A) = sum_j b_j vote_j + c * length_diff [+ models] [+ position]`` jointly.

    Rows with any invalid vote are left out (their count is kept). Principles that never vote on the
    rows, or vote exactly like an earlier one, are dropped from the model and named in
    ``fit.dropped``. Principles that agree (or disagree) with the choice on every row where they
    vote separate the choices exactly and are left out before fitting; up to ``max_separated`` more
    that the fit finds (quasi-)separating are left out one at a time and the model refitted (all are
    named in ``separated``). Length-principles (``length_keys``) are left to the continuous length term.
    """
    idx = votes.index
    keys = [str(c) for c in votes.columns if str(c) not in length_keys]
    arr = votes_array(votes[[c for c in votes.columns if str(c) not in length_keys]]).astype(float)
    y = _choice(pairs["preferred"].reindex(idx), idx)
    cl = cluster_ids(pairs.loc[idx]) if clusters is None else np.asarray(clusters)
    ok = np.ones(len(idx), dtype=bool)
    if valid is not None:
        ok = _valid_array(valid, votes).all(axis=1)
    use = (y != 0) & ok
    ld = length_diff(pairs.loc[idx])
    models = model_design(pairs.loc[idx])
    cols = [ld] + [models[c].to_numpy() for c in models.columns]
    names = ["length"] + list(models.columns)
    if order_known:
        cols.append(np.ones(len(idx)))
        names.append("position_first")
    X = np.column_stack(cols + [arr]) if keys else np.column_stack(cols)
    names = names + keys
    yy = (y[use] == 1).astype(float)
    separated = [k for j, k in enumerate(keys) if one_sided(arr[use, j], y[use])]
    if separated:
        cols_left = [i for i, nm in enumerate(names) if nm not in separated]
        X, names = X[:, cols_left], [names[i] for i in cols_left]
    if step is not None:
        step("style control (all principles jointly)")
    fit = fit_logit(yy, X[use], cl[use], names, alpha=alpha, required=("length",))
    # A principle that (almost) perfectly predicts the few choices where it votes has no finite
    # coefficient; leave it out (named in `separated`) and refit rather than lose the whole table.
    n_pre = len(separated)
    while not fit.ok and fit.separating in keys and len(separated) - n_pre < max_separated:
        if step is not None:
            step(f"style control without {fit.separating}")
        separated.append(fit.separating)
        cols_left = [i for i, nm in enumerate(names) if nm not in separated]
        fit = fit_logit(yy, X[use][:, cols_left], cl[use], [names[i] for i in cols_left], alpha=alpha,
                        required=("length",))
    table = fit.table.copy()
    q = np.full(len(table), np.nan)
    if len(table):
        is_p = table["term"].isin(keys).to_numpy()
        q[is_p] = bh_qvalues(table.loc[is_p, "p_value"].to_numpy(dtype=float))
    table["q_value"] = q
    return StyleControl(fit=fit, table=table, n_rows_dropped_invalid=int(((y != 0) & ~ok).sum()),
                        separated=separated)


# --------------------------------------------------------------------------------------------------
# Length view
# --------------------------------------------------------------------------------------------------


@dataclass
class LengthView:
    """How the annotator's choices depend on length.

    ``prefer_longer``: share of decided rows with unequal lengths where the longer response won
    (clustered CI, test against 0.5). ``bins``: P(choose A) by binned normalised length difference
    (``bin, lo, hi, n, n_clusters, p_choose_a, ci_low, ci_high``). ``length_fit``: the clustered
    logistic of the choice on the normalised length difference (+ models). ``lc_win_rates``: per
    model, raw and length-controlled win rate (AlpacaEval LC: the same GLM with the length term set to
    0), empty when models are unknown.
    """

    prefer_longer: ClusteredMean
    bins: pd.DataFrame
    length_fit: LogitFit
    lc_win_rates: pd.DataFrame


def length_view(
    pairs: pd.DataFrame,
    *,
    clusters: Any = None,
    alpha: float = 0.05,
    edges: tuple[float, ...] = LENGTH_BIN_EDGES,
) -> LengthView:
    """P(prefer longer), the binned length curve, the length coefficient and LC win rates."""
    y = encode_preferred(pairs["preferred"], pairs.index)
    cl = cluster_ids(pairs) if clusters is None else np.asarray(clusters)
    la, lb = text_lengths(pairs)
    ld = normalised_diff(la, lb)
    use = (y != 0) & (la != lb)
    longer_won = ((y == 1) & (la > lb)) | ((y == -1) & (lb > la))
    prefer_longer = clustered_mean(longer_won[use].astype(float), cl[use], null=0.5, alpha=alpha, bounds=(0, 1))

    decided = y != 0
    bin_of = np.clip(np.searchsorted(np.asarray(edges), ld, side="right") - 1, 0, len(edges) - 2)
    brow = []
    for b in range(len(edges) - 1):
        m = decided & (bin_of == b)
        est = clustered_means((y[m] == 1).astype(float), cl[m], null=0.5, alpha=alpha, bounds=(0, 1)).iloc[0]
        brow.append(
            {
                "bin": f"[{edges[b]:+.2f}, {edges[b + 1]:+.2f}{']' if b == len(edges) - 2 else ')'}",
                "lo": edges[b],
                "hi": edges[b + 1],
                "n": int(est["n"]),
                "n_clusters": int(est["n_clusters"]),
                "p_choose_a": float(est["estimate"]),
                "ci_low": float(est["ci_low"]),
                "ci_high": float(est["ci_high"]),
            }
        )
    bins = pd.DataFrame(brow)

    models = model_design(pairs)
    X = np.column_stack([ld] + [models[c].to_numpy() for c in models.columns])
    names = ["length"] + list(models.columns)
    yy = (y == 1).astype(float)
    fit = fit_logit(yy[decided], X[decided], cl[decided], names, alpha=alpha, required=("length",))
    return LengthView(prefer_longer, bins, fit, _lc_win_rates(pairs, y, models, fit))


def _lc_win_rates(pairs: pd.DataFrame, y: np.ndarray, models: pd.DataFrame, fit: LogitFit) -> pd.DataFrame:
    """Raw and length-controlled win rate of every known model over its decided battles.

    LC win rate (AlpacaEval 2.0, Dubois et al. 2024): predict each battle with the fitted GLM with the
    length term set to 0, i.e. ``sigmoid(theta_m - theta_opponent)``, and average over the model's
    battles. The reference model (the most frequent) has ``theta = 0``.
    """
    cols = ["model", "n_battles", "win_rate", "lc_win_rate", "theta"]
    names = _model_names(pairs)
    if names is None or models.shape[1] == 0 or not fit.ok:
        return pd.DataFrame(columns=cols)
    ma, mb = names
    theta = {c[len("model["):-1]: fit.term(c)["coef"] for c in models.columns}
    all_models = sorted(set(ma[ma != ""]) | set(mb[mb != ""]))
    for m in all_models:
        theta.setdefault(m, 0.0)  # the reference model (and any dropped collinear one)
    decided = y != 0
    rows = []
    for m in all_models:
        as_a = decided & (ma == m) & (mb != "") & (mb != m)
        as_b = decided & (mb == m) & (ma != "") & (ma != m)
        n = int(as_a.sum() + as_b.sum())
        if n == 0:
            continue
        wins = int(((y == 1) & as_a).sum() + ((y == -1) & as_b).sum())
        opp = np.concatenate([mb[as_a], ma[as_b]])
        diff = theta[m] - np.array([theta[o] for o in opp])
        rows.append(
            {"model": m, "n_battles": n, "win_rate": wins / n,
             "lc_win_rate": float(np.mean(1 / (1 + np.exp(-diff)))), "theta": theta[m]}
        )
    return pd.DataFrame(rows, columns=cols).sort_values("lc_win_rate", ascending=False, ignore_index=True)
