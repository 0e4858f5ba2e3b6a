"""Offline discovery: directions in which preferred and rejected responses differ, found in the data.

The measurable library (`icai_core.judges`) can only name what someone wrote a rule for. This module
follows the recipe of WIMHF ("What's In My Human Feedback", ICLR 2026) without any LLM:

1. embed the two responses of every *distinct* pair with the bundled MiniLM (`max_seq_length=64`,
   as the judges use) and take the difference `d = emb(A) - emb(B)`;
2. learn a small sparse dictionary on the differences (scikit-learn `MiniBatchDictionaryLearning`,
   codes by orthogonal matching pursuit with at most `top_k` non-zero codes per pair, the analogue of
   a top-k sparse autoencoder); the fit sees every difference and its negation, so the directions
   do not depend on which response happens to be called A;
3. each direction j gives every pair an activation `a_j` (A side minus B side: the OMP code of
   `d`, which flips sign when A and B are swapped); its vote is `sign(a_j)` where `|a_j| >= margin`,
   else 0 ("not relevant");
4. each direction is tested against the preference with a logistic model with and without the
   normalised length difference as covariate (statsmodels GLM Binomial, no intercept, cluster-robust
   by prompt, Benjamini-Hochberg q-values);
5. directions whose votes correlate with a measurable judge's votes (|r| >= `redundancy_threshold`)
   are dropped as already named; so are directions with too little support and directions that no
   word describes (they stay in `table` with the reason);
6. each kept direction is described by the words over-represented on its high side versus its low
   side (log-odds ratio with an informative Dirichlet prior, Monroe, Colaresi & Quinn 2008) and by
   its most typical pairs (largest |activation|).

The measured choices (dictionary vs sparse PCA, margin, thresholds) are in docs/discovery.md.
Nothing here talks to an LLM. With an LLM configured, `icai_core.naming.name_directions` names each kept
direction from its keywords and typical pairs and scores the name by fidelity (docs/discovery.md).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from icai_core.jobs import CancelToken, Progress, check
from icai_core.judge import Judge

__all__ = [
    "DiscoverConfig",
    "Discovery",
    "TABLE_COLUMNS",
    "default_embedder",
    "discover",
    "length_covariate",
    "log_odds_keywords",
    "preference_effects",
]

TABLE_COLUMNS = [
    "key",
    "text",
    "inverse_text",
    "kept",
    "reason",
    "keywords_high",
    "keywords_low",
    "example_pair_ids",
    "support",
    "support_share",
    "max_abs_corr_library",
    "closest_library_judge",
    "n_labelled",
    "strength",
    "strength_ci_low",
    "strength_ci_high",
    "accuracy",
    "marginal_coef",
    "marginal_ci_low",
    "marginal_ci_high",
    "marginal_p",
    "marginal_q",
    "controlled_coef",
    "controlled_ci_low",
    "controlled_ci_high",
    "controlled_p",
    "controlled_q",
    "length_coef",
    "fit_note",
]


@dataclass(frozen=True)
class DiscoverConfig:
    """Parameters of `discover`; measurements behind the defaults are in docs/discovery.md.

    * `n_directions`: dictionary atoms; capped to (distinct pairs // 5) so that every atom has data.
    * `top_k`: non-zero codes per pair (OMP), the "k" of a top-k sparse autoencoder.
    * `margin`: a pair votes on direction j only when |a_j| >= margin (a_j is in the units of the
      embedding difference along a unit-length atom; unit embeddings differ by 0.3-1.4 in norm).
    * `method`: "dictionary" (MiniBatchDictionaryLearning + OMP codes) or "sparse_pca" (SparsePCA,
      ridge codes thresholded by the same margin), kept for the comparison in docs/discovery.md.
    * `redundancy_threshold`: a direction whose votes have |Pearson r| >= this with any measurable
      judge's votes (over distinct pairs) duplicates that judge and is dropped.
    * `min_support`: a direction must vote on at least max(min_support, min_support_share * pairs)
      distinct pairs.
    * `n_keywords`, `n_examples`: description size; `min_df`: a word or bigram must occur in this
      many distinct responses to be counted; `prior_scale`: total pseudo-count of the Dirichlet prior.
    * `seed`: the dictionary's random state (same data + seed = same directions).
    """

    n_directions: int = 16
    top_k: int = 3
    margin: float = 0.05
    method: str = "dictionary"
    alpha: float = 0.1
    max_iter: int = 15
    redundancy_threshold: float = 0.5
    min_support: int = 5
    min_support_share: float = 0.02
    n_keywords: int = 6
    n_examples: int = 5
    min_df: int = 3
    prior_scale: float = 500.0
    alpha_test: float = 0.05
    max_seq_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("dictionary", "sparse_pca"):
            raise ValueError(f"method must be 'dictionary' or 'sparse_pca', not {self.method!r}")
        if self.n_directions < 1 or self.top_k < 1:
            raise ValueError("n_directions and top_k must be at least 1")
        if self.margin < 0:
            raise ValueError("margin must be >= 0")
        if not 0 < self.redundancy_threshold <= 1:
            raise ValueError("redundancy_threshold must be in (0, 1]")


@dataclass
class Discovery:
    """Outcome of `discover`.

    * `judges`: the kept directions as `Judge(kind="discovered", family="discovered")`, keys
      `disc_00`, `disc_01`, ... (numbered over all learned directions, so a dropped one leaves a gap).
    * `votes`: int8 DataFrame indexed like the input pairs, one column per kept judge.
    * `activations`: float DataFrame indexed like the pairs, one column per *learned* direction.
    * `table`: one row per learned direction (`TABLE_COLUMNS`), kept ones first.
    * `directions`: (n_directions, 384) unit atoms in embedding space.
    * `params`, `timings`: effective parameters and seconds per stage.
    """

    judges: list[Judge]
    votes: pd.DataFrame
    activations: pd.DataFrame
    table: pd.DataFrame
    directions: np.ndarray
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def examples(self, pairs: pd.DataFrame, key: str, n: int | None = None) -> pd.DataFrame:
        """The most typical pairs of a direction (largest |activation|), with the side that has more
        of it: `high_side` is "a" or "b"."""
        a = self.activations[key]
        order = a.abs().sort_values(ascending=False, kind="stable").index
        seen, rows = set(), []
        ids = _pair_ids(pairs)
        for i in order:
            if a[i] == 0 or ids[i] in seen:
                continue
            seen.add(ids[i])
            rows.append(i)
            if n is not None and len(rows) >= n:
                break
        out = pairs.loc[rows, [c for c in ("prompt", "text_a", "text_b", "preferred") if c in pairs.columns]]
        out = out.copy()
        out.insert(0, "pair_id", [ids[i] for i in rows])
        out["activation"] = a[rows].to_numpy()
        out["high_side"] = np.where(out["activation"] > 0, "a", "b")
        return out


# --------------------------------------------------------------------------- helpers


def _pair_ids(pairs: pd.DataFrame) -> pd.Series:
    col = "pair_id" if "pair_id" in pairs.columns else "id" if "id" in pairs.columns else None
    if col is None:
        return pd.Series([f"row-{i}" for i in range(len(pairs))], index=pairs.index)
    return pairs[col].astype(str)


def length_covariate(text_a: Sequence[str], text_b: Sequence[str]) -> np.ndarray:
    """(len_a - len_b) / (len_a + len_b) in characters (Chatbot Arena's style control); 0 when both
    are empty. Flips sign when A and B are swapped."""
    la = np.array([len(str(t)) for t in text_a], dtype=np.float64)
    lb = np.array([len(str(t)) for t in text_b], dtype=np.float64)
    s = la + lb
    return np.divide(la - lb, s, out=np.zeros_like(s), where=s > 0)


def preference_effects(
    votes: np.ndarray, y: np.ndarray, length: np.ndarray, groups: np.ndarray, alpha: float = 0.05
) -> pd.DataFrame:
    """Per column of `votes` (n x m, in {-1, 0, 1}): log-odds effect of the vote on P(annotator
    prefers A), alone ("marginal") and with the length covariate ("controlled").

    statsmodels GLM Binomial, no intercept (the model is then symmetric under swapping A and B: all
    regressors and the label flip together), standard errors clustered by `groups` (prompt), Wald
    CIs, BH q-values over the columns. `y` is 1 (A preferred) or 0; ties must be removed before.
    A fit that fails or hits perfect separation gives NaN with the reason in `fit_note`."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    from icai_core.stats import bh_qvalues, z_value

    z = z_value(alpha)
    rows = []
    for j in range(votes.shape[1]):
        v = votes[:, j].astype(np.float64)
        row = {}
        notes = []
        for name, x in (("marginal", v[:, None]), ("controlled", np.column_stack([v, length]))):
            res = dict.fromkeys(("coef", "ci_low", "ci_high", "p"), np.nan)
            if not np.any(v != 0):
                notes.append(f"{name}: the direction votes on no labelled pair")
            elif len(np.unique(groups[v != 0])) < 2:
                notes.append(f"{name}: votes come from fewer than 2 prompts (no clustered SE)")
            else:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        fit = sm.GLM(y, x, family=sm.families.Binomial()).fit(
                            cov_type="cluster", cov_kwds={"groups": groups}
                        )
                        coef, se = float(fit.params[0]), float(fit.bse[0])
                        res = {"coef": coef, "ci_low": coef - z * se, "ci_high": coef + z * se,
                               "p": float(fit.pvalues[0])}
                        if name == "controlled":
                            row["length_coef"] = float(fit.params[1])
                    except Exception as exc:  # a singular design, a separation error
                        notes.append(f"{name}: fit failed ({type(exc).__name__}: {exc})")
                for w in caught:
                    if issubclass(w.category, (ConvergenceWarning, PerfectSeparationWarning)):
                        notes.append(f"{name}: {w.category.__name__}")
                        res = dict.fromkeys(res, np.nan)
            for k, val in res.items():
                row[f"{name}_{k}"] = val
        row.setdefault("length_coef", np.nan)
        row["fit_note"] = "; ".join(dict.fromkeys(notes))
        rows.append(row)
    out = pd.DataFrame(rows)
    for name in ("marginal", "controlled"):
        col = out[f"{name}_p"] if len(out) else pd.Series(dtype=float)
        out[f"{name}_q"] = bh_qvalues(col.to_numpy(dtype=float)) if len(out) else col
    return out


def log_odds_keywords(
    high_counts: np.ndarray, low_counts: np.ndarray, prior_counts: np.ndarray, vocab: np.ndarray,
    *, prior_scale: float = 500.0, n: int = 6, z_min: float = 1.96,
) -> tuple[list[str], list[str], np.ndarray]:
    """Words over-represented on the high side vs the low side: the log-odds ratio with an
    informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, eq. 16-22).

    The prior is the word distribution of the whole data set scaled to `prior_scale` pseudo-counts,
    which shrinks rare words towards "no difference". Returns (top high words, top low words,
    z-scores); only words with |z| >= `z_min` are listed, so an empty list means "no word
    distinguishes the sides"."""
    yh = np.asarray(high_counts, dtype=np.float64)
    yl = np.asarray(low_counts, dtype=np.float64)
    prior = np.asarray(prior_counts, dtype=np.float64)
    a = prior_scale * prior / max(prior.sum(), 1.0)
    a0 = a.sum()
    nh, nl = yh.sum(), yl.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.log((yh + a) / (nh + a0 - yh - a)) - np.log((yl + a) / (nl + a0 - yl - a))
        var = 1.0 / (yh + a) + 1.0 / (yl + a)
        zs = np.where(a > 0, delta / np.sqrt(var), 0.0)
    zs = np.nan_to_num(zs)
    order = np.argsort(-zs, kind="stable")
    high = [str(vocab[i]) for i in order[:n] if zs[i] >= z_min]
    low = [str(vocab[i]) for i in order[::-1][:n] if zs[i] <= -z_min]
    return high, low, zs


def _quote(words: Sequence[str]) -> str:
    return ", ".join(f"\u201c{w}\u201d" for w in words)


def _texts(high: list[str], low: list[str], key: str) -> tuple[str, str]:
    """The judge's wording: only the measured keyword contrast, nothing interpreted."""
    if high and low:
        text = f"uses more of the words {_quote(high)} and fewer of {_quote(low)}"
        inv = f"uses fewer of the words {_quote(high)} and more of {_quote(low)}"
    elif high:
        text = f"uses more of the words {_quote(high)}"
        inv = f"uses fewer of the words {_quote(high)}"
    elif low:
        text = f"uses fewer of the words {_quote(low)}"
        inv = f"uses more of the words {_quote(low)}"
    else:
        text = f"lies further along embedding direction {key} (no word distinguishes its sides)"
        inv = f"lies less far along embedding direction {key} (no word distinguishes its sides)"
    return f"Select the response that {text}.", f"Select the response that {inv}."


def default_embedder(max_seq_length: int = 64):
    """The bundled MiniLM (as the judges use it: 64 word pieces) with its vectors cached in
    `$PRINCIPIA_HOME/embeddings.sqlite` (`~/.principia` without the variable), the audit's cache."""
    from icai_core.embed import Embedder

    home = os.environ.get("PRINCIPIA_HOME")
    base = Path(home) if home else Path.home() / ".principia"
    return Embedder(cache_path=base / "embeddings.sqlite", batch_size=128, max_seq_length=max_seq_length)


def _fit_directions(x: np.ndarray, config: DiscoverConfig, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Learn k unit atoms on the differences and their negations; return (atoms, codes of x)."""
    sym = np.vstack([x, -x]).astype(np.float64)
    if config.method == "dictionary":
        from sklearn.decomposition import MiniBatchDictionaryLearning

        model = MiniBatchDictionaryLearning(
            n_components=k,
            alpha=config.alpha,
            batch_size=256,
            max_iter=config.max_iter,
            random_state=config.seed,
            transform_algorithm="omp",
            transform_n_nonzero_coefs=min(config.top_k, k),
            fit_algorithm="cd",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(sym)
        atoms = model.components_.copy()
    else:
        from sklearn.decomposition import SparsePCA

        model = SparsePCA(n_components=k, alpha=1.0, random_state=config.seed, max_iter=config.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(sym)
        atoms = model.components_.copy()
    norms = np.linalg.norm(atoms, axis=1, keepdims=True)
    atoms = atoms / np.where(norms > 0, norms, 1.0)
    # Sign convention (label-free, as sklearn's svd_flip): the largest coordinate of each atom is positive.
    flip = np.sign(atoms[np.arange(len(atoms)), np.argmax(np.abs(atoms), axis=1)])
    atoms *= np.where(flip == 0, 1.0, flip)[:, None]
    if config.method == "dictionary":
        from sklearn.decomposition import sparse_encode

        with warnings.catch_warnings():
            # OMP's "ended prematurely due to linear dependence": the code is still the best k-sparse fit found
            warnings.simplefilter("ignore", RuntimeWarning)
            codes = sparse_encode(
                x.astype(np.float64), atoms, algorithm="omp", n_nonzero_coefs=min(config.top_k, k)
            )
    else:
        # SparsePCA's transform is a ridge projection on the centred data; the symmetric fit has mean 0.
        gram = atoms @ atoms.T + 0.01 * np.eye(len(atoms))
        codes = np.linalg.solve(gram, atoms @ x.astype(np.float64).T).T
    return atoms, codes


# --------------------------------------------------------------------------- main entry point


def discover(
    pairs: pd.DataFrame,
    *,
    embedder=None,
    config: DiscoverConfig | None = None,
    library_votes: pd.DataFrame | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> Discovery:
    """Find, test and describe directions in which the two responses of a pair differ.

    `pairs`: the canonical pair table (`prompt`, `text_a`, `text_b`, `preferred`; several rows may
    judge the same pair: they are embedded once and get the same votes; every non-tie row enters the
    preference test, with errors clustered by prompt). `embedder`: an `icai_core.embed.Embedder`
    (default: the bundled MiniLM with `max_seq_length` 64, cached in `$PRINCIPIA_HOME/embeddings.sqlite`).
    `library_votes`: the measurable judges' votes on `pairs` if already computed (else computed
    here without the embedding judge). `progress(done, total, message)` counts work units (embedding
    dominates); `cancel` is checked between stages and embedding batches.
    """
    from icai_core.reconstruct import content_groups
    from icai_core.stats import principle_stats

    config = config or DiscoverConfig()
    for col in ("text_a", "text_b", "preferred"):
        if col not in pairs.columns:
            raise ValueError(f"discover needs a pair table with column {col!r} (see icai_core.data.load_pairs)")
    timings: dict[str, float] = {}
    prompts = pairs["prompt"].astype(str) if "prompt" in pairs.columns else pd.Series("", index=pairs.index)
    # factorize numbers the distinct pairs in order of first appearance: row -> distinct pair
    pair_of_row = pd.factorize(pd.Series(content_groups(pairs)), sort=False)[0].astype(np.int64)
    _, first = np.unique(pair_of_row, return_index=True)
    n_u = len(first)
    uniq = pairs.iloc[first]
    # work units: embedding counts 1 per text, the rest is a fixed share so that the bar moves evenly
    n_texts = 2 * n_u
    rest = max(10, n_texts // 4)
    total = n_texts + rest

    def report(done: int, message: str) -> None:
        if progress is not None:
            progress(min(done, total), total, message)

    k = int(min(config.n_directions, max(1, n_u // 5)))
    params = {**asdict(config), "n_rows": len(pairs), "n_pairs": n_u, "n_directions_used": k}
    if n_u < 10:
        raise ValueError(
            f"discovery needs at least 10 distinct pairs to learn directions; this table has {n_u}"
        )

    # ---- 1. embed the distinct responses
    check(cancel)
    t0 = time.perf_counter()
    embedder = embedder or default_embedder(config.max_seq_length)
    texts = uniq["text_a"].astype(str).tolist() + uniq["text_b"].astype(str).tolist()
    emb = embedder.embed(
        texts, progress=lambda d, t, m: report(int(d * n_texts / max(t, 1)), m), cancel=cancel
    )
    diff = emb[:n_u].astype(np.float64) - emb[n_u:].astype(np.float64)
    timings["embed_s"] = time.perf_counter() - t0
    report(n_texts, "Learning directions")

    # ---- 2. dictionary
    check(cancel)
    t0 = time.perf_counter()
    atoms, codes = _fit_directions(diff, config, k)
    timings["fit_s"] = time.perf_counter() - t0
    keys = [f"disc_{j:02d}" for j in range(k)]
    act_u = np.where(np.abs(codes) >= config.margin, codes, 0.0)
    votes_u = np.sign(act_u).astype(np.int8)
    report(n_texts + rest // 4, "Comparing with the measurable judges")

    # ---- 3. redundancy with the library (over distinct pairs)
    check(cancel)
    t0 = time.perf_counter()
    if library_votes is None:
        from icai_core.judges import compute_votes

        lib_u = compute_votes(uniq.reset_index(drop=True), cancel=cancel)
    else:
        lib_u = library_votes.iloc[first].reset_index(drop=True)
    lib = lib_u.to_numpy(dtype=np.float64)
    corr = _abs_corr(votes_u.astype(np.float64), lib)
    timings["library_s"] = time.perf_counter() - t0
    report(n_texts + rest // 2, "Describing directions")

    # ---- 4. keywords
    check(cancel)
    t0 = time.perf_counter()
    descriptions = _describe(uniq, votes_u, config)
    timings["keywords_s"] = time.perf_counter() - t0
    report(n_texts + 3 * rest // 4, "Testing directions against the preferences")

    # ---- 5. statistics on the labelled rows
    check(cancel)
    t0 = time.perf_counter()
    votes_rows = votes_u[pair_of_row]
    pref = pairs["preferred"].astype(str).to_numpy()
    lab = np.isin(pref, ["a", "b"])
    y = (pref[lab] == "a").astype(np.float64)
    length = length_covariate(pairs["text_a"].astype(str)[lab], pairs["text_b"].astype(str)[lab])
    groups = pd.factorize(prompts[lab])[0]
    effects = preference_effects(votes_rows[lab], y, length, groups, config.alpha_test)
    st = principle_stats(pd.DataFrame(votes_rows, columns=keys, index=pairs.index), pairs["preferred"])
    st = st.set_index("key").loc[keys]
    timings["stats_s"] = time.perf_counter() - t0

    # ---- 6. assemble
    ids = _pair_ids(uniq).to_numpy()
    min_support = max(config.min_support, int(np.ceil(config.min_support_share * n_u)))
    lib_keys = list(lib_u.columns)
    rows, judges_out = [], []
    for j, key in enumerate(keys):
        support = int((votes_u[:, j] != 0).sum())
        best = int(np.nanargmax(corr[j])) if lib_keys and np.isfinite(corr[j]).any() else -1
        max_r = float(corr[j, best]) if best >= 0 else 0.0
        high, low = descriptions[j]
        text, inv = _texts(high, low, key)
        if support < min_support:
            kept, reason = False, f"votes on {support} pairs (< {min_support})"
        elif max_r >= config.redundancy_threshold:
            kept, reason = False, f"duplicates measurable judge '{lib_keys[best]}' (|r| = {max_r:.2f})"
        elif not (high or low):
            # a direction no word describes cannot be read as a principle (icai_core.naming names kept ones only)
            kept, reason = False, "no word or bigram distinguishes its high side from its low side"
        else:
            kept, reason = True, ""
        top = np.argsort(-np.abs(act_u[:, j]), kind="stable")
        examples = [str(ids[i]) for i in top[: config.n_examples] if act_u[i, j] != 0]
        e = effects.iloc[j]
        s = st.loc[key]
        rows.append(
            {
                "key": key, "text": text, "inverse_text": inv, "kept": kept, "reason": reason,
                "keywords_high": high, "keywords_low": low, "example_pair_ids": examples,
                "support": support, "support_share": support / n_u,
                "max_abs_corr_library": max_r,
                "closest_library_judge": lib_keys[best] if best >= 0 else "",
                "n_labelled": int(s["n"]),
                "strength": float(s["strength"]), "strength_ci_low": float(s["strength_ci_low"]),
                "strength_ci_high": float(s["strength_ci_high"]), "accuracy": float(s["accuracy"]),
                **{c: e[c] for c in effects.columns},
            }
        )
        if kept:
            judges_out.append(
                Judge(
                    key=key, text=text, inverse_text=inv, family="discovered", kind="discovered",
                    margin=(f"the pair's embedding difference has a component below {config.margin:g} "
                            f"along this direction (OMP code, at most {config.top_k} directions per pair)"),
                    support=support,
                )
            )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table = table.sort_values(["kept", "key"], ascending=[False, True], kind="stable").reset_index(drop=True)
    kept_keys = [jd.key for jd in judges_out]
    votes = pd.DataFrame(votes_rows, columns=keys, index=pairs.index)[kept_keys].astype(np.int8)
    activations = pd.DataFrame(act_u[pair_of_row], columns=keys, index=pairs.index)
    report(total, f"Discovered {len(kept_keys)} directions beyond the library (of {k} learned)")
    return Discovery(
        judges=judges_out, votes=votes, activations=activations, table=table, directions=atoms,
        params=params, timings=timings,
    )


def _abs_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson r| between every column of a and every column of b (NaN where one is constant)."""
    if b.shape[1] == 0:
        return np.full((a.shape[1], 0), np.nan)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na = np.linalg.norm(a, axis=0)
    nb = np.linalg.norm(b, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a.T @ b) / np.outer(na, nb)
    return np.abs(np.where(np.outer(na, nb) > 0, r, np.nan))


def _describe(uniq: pd.DataFrame, votes_u: np.ndarray, config: DiscoverConfig) -> list[tuple[list[str], list[str]]]:
    """Keyword contrast per direction: the high side of a pair is the response with more of it."""
    from sklearn.feature_extraction.text import CountVectorizer

    ta = uniq["text_a"].astype(str).tolist()
    tb = uniq["text_b"].astype(str).tolist()
    n = len(ta)
    vec = CountVectorizer(
        lowercase=True,
        ngram_range=(1, 2),
        token_pattern=r"(?u)[^\W\d_]+(?:['\u2019][^\W\d_]+)*",
        min_df=min(config.min_df, max(1, n // 10)),
        binary=True,  # a word counts once per response: one long response cannot dominate
        dtype=np.float64,
    )
    try:
        m = vec.fit_transform(ta + tb).tocsr()
    except ValueError:  # empty vocabulary (all texts empty or below min_df)
        return [([], []) for _ in range(votes_u.shape[1])]
    vocab = vec.get_feature_names_out()
    ma, mb = m[:n], m[n:]
    prior = np.asarray(m.sum(axis=0)).ravel()
    out = []
    for j in range(votes_u.shape[1]):
        pos = votes_u[:, j] > 0
        neg = votes_u[:, j] < 0
        high = np.asarray(ma[pos].sum(axis=0)).ravel() + np.asarray(mb[neg].sum(axis=0)).ravel()
        low = np.asarray(mb[pos].sum(axis=0)).ravel() + np.asarray(ma[neg].sum(axis=0)).ravel()
        if not (pos | neg).any():
            out.append(([], []))
            continue
        h, lo, _ = log_odds_keywords(high, low, prior, vocab, prior_scale=config.prior_scale, n=config.n_keywords)
        out.append((h, lo))
    return out
