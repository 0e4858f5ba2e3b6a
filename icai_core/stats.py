"""Per-principle statistics of a vote matrix against an annotator's preferences.

A vote matrix (see docs/ARCHITECTURE.md) holds, per pair and principle, ``1`` (the principle picks
response A), ``-1`` (picks B) or ``0`` (not relevant). Against the annotator's ``preferred`` label each
relevant vote either *agrees* or *disagrees*. From those counts we derive Feedback Forensics'
relevance, accuracy, Cohen's kappa (chance agreement 0.5) and strength, with confidence intervals,
exact binomial p-values and Benjamini-Hochberg q-values. Formulas and their justification:
docs/metrics.md.

Everything is vectorised over principles: 50,000 pairs x 40 principles take well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

STATS_COLUMNS = [
    "key",
    "text",
    "n",
    "n_ties",
    "n_relevant",
    "relevance",
    "n_agree",
    "n_disagree",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "kappa",
    "strength",
    "strength_ci_low",
    "strength_ci_high",
    "p_value",
    "q_value",
    "significant",
    "direction",
]

_LABEL_CODES = {"a": 1, "b": -1, "tie": 0, "text_a": 1, "text_b": -1}

SELECT_PREFIX = "Select the response that "


# --------------------------------------------------------------------------------------------------
# Principle texts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrincipleText:
    """The two wordings of a principle: as stated and reversed."""

    key: str
    text: str
    inverse_text: str


def default_inverse_text(text: str) -> str:
    """A reversed wording for a principle that comes without one.

    In a pair there are only two responses, so "the response other than the one that X" is exactly
    the principle with its votes negated.
    """
    if text.startswith(SELECT_PREFIX):
        return f"Select the response other than the one that {text[len(SELECT_PREFIX) :]}"
    return f"Select the response that does the opposite of: {text}"


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def resolve_principles(principles: Any = None) -> dict[str, PrincipleText]:
    """Normalise the accepted principle descriptions into ``{key: PrincipleText}``.

    Accepted: ``None``; a mapping ``key -> text``; a mapping ``key -> object/dict`` with ``text`` (and
    optionally ``inverse_text``); an iterable of objects or dicts with ``key``, ``text`` and optionally
    ``inverse_text`` (e.g. ``judges.PRINCIPLES``).
    """
    out: dict[str, PrincipleText] = {}
    if principles is None:
        return out
    if isinstance(principles, Mapping):
        items: Iterable[tuple[str, Any]] = principles.items()
    else:
        items = []
        for p in principles:
            key = _get(p, "key")
            if key is None:
                raise ValueError(f"principle {p!r} has no 'key'")
            items.append((key, p))
    for key, value in items:
        if isinstance(value, str):
            text, inverse = value, None
        else:
            text, inverse = _get(value, "text"), _get(value, "inverse_text")
        text = str(text) if text else str(key)
        inverse = str(inverse) if inverse else default_inverse_text(text)
        out[str(key)] = PrincipleText(str(key), text, inverse)
    return out


# --------------------------------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------------------------------


def encode_preferred(preferred: Any, index: pd.Index | None = None) -> np.ndarray:
    """Turn ``preferred`` into an int8 array: ``1`` = a, ``-1`` = b, ``0`` = tie.

    Accepts "a"/"b"/"tie" (also "text_a"/"text_b") or the numbers 1/-1/0. A Series whose index holds
    the same labels as ``index`` is aligned to it; anything else is taken in order.
    """
    if isinstance(preferred, pd.Series) and index is not None:
        if not preferred.index.equals(index):
            if len(preferred) == len(index) and preferred.index.sort_values().equals(index.sort_values()):
                preferred = preferred.reindex(index)
    series = preferred if isinstance(preferred, pd.Series) else pd.Series(np.asarray(preferred, dtype=object))
    if np.ndim(series.to_numpy()) != 1:
        raise ValueError("preferred must be one-dimensional")
    if index is not None and len(series) != len(index):
        raise ValueError(f"preferred has {len(series)} labels but the votes have {len(index)} rows")
    values = series.to_numpy(dtype=object)
    codes = pd.Series(values, dtype=object).map(
        lambda v: _LABEL_CODES.get(v.strip().lower()) if isinstance(v, str) else _numeric_code(v)
    )
    bad = codes.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"preferred label {values[i]!r} at position {i} is not one of 'a', 'b', 'tie' "
            f"({int(bad.sum())} invalid labels)"
        )
    return codes.to_numpy(dtype=np.int8)


def _numeric_code(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | np.integer | float | np.floating) and v in (1, -1, 0):
        return int(v)
    return None


def votes_array(votes: pd.DataFrame) -> np.ndarray:
    """The vote matrix as an int8 numpy array, checking that every value is -1, 0 or 1."""
    if not isinstance(votes, pd.DataFrame):
        raise TypeError("votes must be a pandas DataFrame with one column per principle key")
    arr = votes.to_numpy()
    if arr.dtype != np.int8:
        if arr.size and (pd.isna(arr).any() if arr.dtype == object or arr.dtype.kind == "f" else False):
            raise ValueError("votes contain missing values; store not-relevant/invalid votes as 0")
        arr = arr.astype(np.int8)
    if arr.size and (arr.min() < -1 or arr.max() > 1):
        raise ValueError("votes must be -1, 0 or 1")
    return arr


# --------------------------------------------------------------------------------------------------
# Elementary statistics
# --------------------------------------------------------------------------------------------------


def z_value(alpha: float = 0.05) -> float:
    """Two-sided normal quantile for a (1 - alpha) interval (1.96 for alpha = 0.05)."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    return float(sps.norm.ppf(1 - alpha / 2))


def wilson_ci(successes: Any, n: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion; NaN where ``n == 0``. Vectorised."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = z_value(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        center = (p + z**2 / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        low = np.where(n > 0, np.clip(center - half, 0.0, 1.0), np.nan)
        high = np.where(n > 0, np.clip(center + half, 0.0, 1.0), np.nan)
    return low, high


def binom_two_sided_p(k: Any, n: Any) -> np.ndarray:
    """Exact two-sided binomial p-value of ``k`` successes in ``n`` trials against p = 0.5.

    Under p = 0.5 the distribution is symmetric, so the "sum of outcomes at most as likely" p-value of
    ``scipy.stats.binomtest`` equals ``min(1, 2 * P(X <= min(k, n - k)))``. NaN where ``n == 0``.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    tail = np.minimum(k, n - k)
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2.0 * sps.binom.cdf(tail, n, 0.5))
    return np.where(n > 0, p, np.nan)


def bh_qvalues(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaNs are ignored and stay NaN.

    ``q_(i) = min_{j >= i} min(1, m * p_(j) / j)`` over the m non-missing p-values sorted ascending,
    which makes the q-values monotone in the p-values.
    """
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return q
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def strength_se(strength: Any, relevance: Any, n: Any) -> np.ndarray:
    """Standard error of the mean of per-pair scores in {+1, -1, 0}.

    The scores have mean ``strength`` and mean square ``relevance``, so their sample variance is
    ``n / (n - 1) * (relevance - strength**2)``. NaN where ``n < 2``.
    """
    s = np.asarray(strength, dtype=float)
    r = np.asarray(relevance, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(n > 1, n / (n - 1) * np.maximum(r - s**2, 0.0), np.nan)
        return np.sqrt(var / n)


def direction_of(significant: np.ndarray, strength: np.ndarray) -> np.ndarray:
    return np.where(significant, np.where(strength > 0, "rewards", "penalises"), "no evidence")


# --------------------------------------------------------------------------------------------------
# The main table
# --------------------------------------------------------------------------------------------------


def vote_counts(
    votes: pd.DataFrame, preferred: Any, valid: pd.DataFrame | None = None
) -> tuple[np.ndarray, np.ndarray, int | np.ndarray, int]:
    """Per principle ``(n_agree, n_disagree)`` plus ``n`` (non-tie pairs) and ``n_ties``.

    ``valid`` (optional, bool, same shape as ``votes``): False marks an invalid answer (an LLM reply
    that could not be read). Such a vote is missing, not "not relevant": it leaves ``n`` for that
    principle, so ``n`` becomes an array (one count per principle).
    """
    arr = votes_array(votes)
    y = encode_preferred(preferred, votes.index)
    decided = y != 0
    n: int | np.ndarray = int(decided.sum())
    n_ties = int(len(y) - int(decided.sum()))
    if arr.shape[1] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), n, n_ties
    prod = arr[decided] * y[decided, None]  # +1 agree, -1 disagree, 0 not relevant
    if valid is not None:
        ok = np.asarray(valid, dtype=bool)[decided]
        prod = np.where(ok, prod, 0)
        n = ok.sum(axis=0).astype(np.int64)
    n_agree = np.count_nonzero(prod == 1, axis=0).astype(np.int64)
    n_disagree = np.count_nonzero(prod == -1, axis=0).astype(np.int64)
    return n_agree, n_disagree, n, n_ties


def invalid_counts(votes: pd.DataFrame, valid: pd.DataFrame | None) -> np.ndarray:
    """Per principle, how many votes are invalid answers (0 everywhere without a validity mask)."""
    if valid is None:
        return np.zeros(votes.shape[1], dtype=np.int64)
    return (~np.asarray(valid, dtype=bool)).sum(axis=0).astype(np.int64)


def stats_from_counts(
    keys: list[str],
    n_agree: np.ndarray,
    n_disagree: np.ndarray,
    n: int | np.ndarray,
    n_ties: int | np.ndarray,
    principles: Any = None,
    alpha: float = 0.05,
    sort: bool = True,
) -> pd.DataFrame:
    """Build the principle-stats table from agree/disagree counts (shared by stats and compare)."""
    texts = resolve_principles(principles)
    n_agree = np.asarray(n_agree, dtype=np.int64)
    n_disagree = np.asarray(n_disagree, dtype=np.int64)
    k = len(keys)
    n_arr = np.broadcast_to(np.asarray(n, dtype=np.int64), (k,))
    ties_arr = np.broadcast_to(np.asarray(n_ties, dtype=np.int64), (k,))
    n_rel = n_agree + n_disagree
    nf = n_arr.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        relevance = np.where(n_arr > 0, n_rel / nf, np.nan)
        accuracy = np.where(n_rel > 0, n_agree / n_rel.astype(float), np.nan)
        strength = np.where(n_arr > 0, (n_agree - n_disagree) / nf, np.nan)
    kappa = 2 * accuracy - 1
    acc_low, acc_high = wilson_ci(n_agree, n_rel, alpha)
    z = z_value(alpha)
    se = strength_se(strength, relevance, n_arr)
    s_low = np.clip(strength - z * se, -1.0, 1.0)
    s_high = np.clip(strength + z * se, -1.0, 1.0)
    p = binom_two_sided_p(n_agree, n_rel)
    q = bh_qvalues(p)
    significant = np.where(np.isnan(q), False, q < alpha)
    table = pd.DataFrame(
        {
            "key": list(keys),
            "text": [texts[key].text if key in texts else key for key in keys],
            "n": n_arr.astype(np.int64),
            "n_ties": ties_arr.astype(np.int64),
            "n_relevant": n_rel,
            "relevance": relevance,
            "n_agree": n_agree,
            "n_disagree": n_disagree,
            "accuracy": accuracy,
            "accuracy_ci_low": acc_low,
            "accuracy_ci_high": acc_high,
            "kappa": kappa,
            "strength": strength,
            "strength_ci_low": s_low,
            "strength_ci_high": s_high,
            "p_value": p,
            "q_value": q,
            "significant": significant.astype(bool),
            "direction": direction_of(significant, strength),
        },
        columns=STATS_COLUMNS,
    )
    if sort:
        table = table.sort_values("strength", ascending=False, kind="mergesort", na_position="last")
        table = table.reset_index(drop=True)
    return table


def principle_stats(
    votes: pd.DataFrame,
    preferred: Any,
    principles: Any = None,
    alpha: float = 0.05,
    valid: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per principle (column of ``votes``), sorted by strength descending.

    Columns: ``key, text, n, n_ties, n_relevant, relevance, n_agree, n_disagree, accuracy,
    accuracy_ci_low, accuracy_ci_high, kappa, strength, strength_ci_low, strength_ci_high, p_value,
    q_value, significant, direction, n_invalid``. ``n`` counts pairs whose label is not a tie (and,
    with ``valid``, whose vote is a valid answer); tied pairs are excluded and counted in ``n_ties``;
    invalid answers are counted in ``n_invalid``. ``principles`` (optional) supplies the texts.
    """
    n_agree, n_disagree, n, n_ties = vote_counts(votes, preferred, valid)
    keys = [str(c) for c in votes.columns]
    table = stats_from_counts(keys, n_agree, n_disagree, n, n_ties, principles, alpha, sort=False)
    table["n_invalid"] = invalid_counts(votes, valid)
    table = table.sort_values("strength", ascending=False, kind="mergesort", na_position="last")
    return table.reset_index(drop=True)


def bootstrap_ci(
    votes: pd.DataFrame,
    preferred: Any,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Percentile bootstrap intervals for strength and accuracy, one row per principle.

    Resampling the non-tie pairs with replacement makes a principle's (agree, disagree, irrelevant)
    counts multinomial with the observed proportions, so the marginal bootstrap distribution is drawn
    exactly and fast from that multinomial instead of materialising resampled matrices.
    Columns: ``key, strength_boot_low, strength_boot_high, accuracy_boot_low, accuracy_boot_high``.
    """
    n_agree, n_disagree, n, _ = vote_counts(votes, preferred)
    rng = np.random.default_rng(seed)
    keys = [str(c) for c in votes.columns]
    rows = []
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    for key, a, d in zip(keys, n_agree, n_disagree, strict=True):
        if n == 0:
            rows.append((key, np.nan, np.nan, np.nan, np.nan))
            continue
        probs = np.array([a, d, n - a - d], dtype=float) / n
        draws = rng.multinomial(n, probs, size=n_boot)
        strength = (draws[:, 0] - draws[:, 1]) / n
        rel = draws[:, 0] + draws[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(rel > 0, draws[:, 0] / rel, np.nan)
        acc = acc[~np.isnan(acc)]
        s_lo, s_hi = np.quantile(strength, [lo_q, hi_q])
        a_lo, a_hi = np.quantile(acc, [lo_q, hi_q]) if len(acc) else (np.nan, np.nan)
        rows.append((key, s_lo, s_hi, a_lo, a_hi))
    return pd.DataFrame(
        rows,
        columns=["key", "strength_boot_low", "strength_boot_high", "accuracy_boot_low", "accuracy_boot_high"],
    )


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Scalar Wilson score interval ``(low, high)``; ``(nan, nan)`` when ``n == 0``."""
    low, high = wilson_ci(successes, n, alpha)
    return float(low), float(high)
