"""Benchmark of the principle-clustering step (embed -> UMAP -> HDBSCAN) on 2 CPU cores.

    .venv/bin/python bench/clustering.py                      # 500 and 5,000 texts, default backend
    .venv/bin/python bench/clustering.py --compare-backends   # also the other HDBSCAN backend
    .venv/bin/python bench/clustering.py --compare-layouts    # also clustering on the 2-D plot layout
    .venv/bin/python bench/clustering.py --stability 20       # labels over 21 UMAP seeds, all variants

Each size runs in a fresh Python process, so its figures include everything a first run in the app
pays: library imports, loading the bundled MiniLM model (reported separately), numba JIT compilation
inside UMAP, and embedding with an empty cache.

The texts are stand-ins: real principle proposals need an LLM, which a benchmark must not need.
We use real sentences from the responses in /work/shared/data/*.csv (split on sentence ends,
6-40 words, plain prose characters only, truncated to 20 words like a principle, exact duplicates
removed, shuffled with a fixed seed). Real proposals are more repetitive than these sentences, so
expect more and denser clusters (and less noise) on real proposals than shown here.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PRINCIPIA_SHARED_DATA", "/work/shared/data"))
_PROSE = re.compile(r"[A-Za-z0-9 ,.;:'’\"()?!-]+")
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def stand_in_texts(n: int, seed: int = 0) -> tuple[list[str], int]:
    """`n` real response sentences (<= 20 words each) and the size of the pool they come from."""
    import pandas as pd

    pool: list[str] = []
    for path in sorted(glob.glob(str(DATA / "*.csv"))):
        frame = pd.read_csv(path, keep_default_na=False)
        for col in ("text_a", "text_b"):
            for text in frame[col].drop_duplicates():
                for sentence in _SENT.split(text):
                    sentence = sentence.strip()
                    words = sentence.split()
                    if 6 <= len(words) <= 40 and sentence[0].isupper() and _PROSE.fullmatch(sentence):
                        pool.append(" ".join(words[:20]))
    unique = list(dict.fromkeys(pool))
    random.Random(seed).shuffle(unique)
    if len(unique) < n:
        raise SystemExit(f"only {len(unique)} usable sentences in {DATA}, asked for {n}")
    return unique[:n], len(unique)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(n: int, backend: str, compare_backends: bool, compare_layouts: bool) -> dict:
    """Measure one size in this (fresh) process and return the figures."""
    t_start = time.perf_counter()
    texts, pool = stand_in_texts(n)
    t_texts = time.perf_counter() - t_start

    t0 = time.perf_counter()
    import hdbscan  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import umap  # noqa: F401

    from icai_core.cluster import ClusterConfig, cluster_principles
    from icai_core.embed import Embedder, load_default_model

    t_imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_default_model()
    t_load = time.perf_counter() - t0

    config = ClusterConfig(backend=backend)
    embedder = Embedder(max_seq_length=config.max_seq_length)
    t0 = time.perf_counter()
    result = cluster_principles(texts, embedder=embedder, config=config)
    t_cluster = time.perf_counter() - t0
    tm = result.timings
    runs = [
        {
            "label": f"{backend} (default)" if backend == ClusterConfig().backend else backend,
            "backend": backend,
            "layout": config.plot_layout,
            "embed_s": tm["embed_s"],
            "umap_s": tm["knn_s"] + tm["umap_s"],
            "umap_cluster_s": tm.get("umap_cluster_s", tm["umap_s"]),
            "hdbscan_s": tm["hdbscan_s"],
            "clusters": result.n_clusters,
            "noise": result.noise_share,
            "total_s": t_imports + t_load + t_cluster,
            "ari_vs_first": 1.0,
        }
    ]
    examples = [
        (int(r.size), float(r.mean_similarity), r.representative)
        for r in result.clusters.head(6).itertuples()
    ]
    params = {k: result.params[k] for k in ("n_neighbors_used", "min_cluster_size_used", "min_samples_used")}
    peak_main = _peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_main = usage.ru_utime + usage.ru_stime

    if compare_backends or compare_layouts:
        from sklearn.metrics import adjusted_rand_score

        vectors = embedder.embed(texts)  # cached in the embedder's memory: no second model pass
        others = []
        if compare_backends:
            other = "sklearn" if backend == "hdbscan" else "hdbscan"
            others.append((other, ClusterConfig(backend=other)))
        if compare_layouts:
            others.append(
                (
                    f"{backend}, clustered on 2-D plot layout",
                    ClusterConfig(backend=backend, plot_layout="shared"),
                )
            )
        for label, cfg in others:
            t0 = time.perf_counter()
            res = cluster_principles(texts, embeddings=vectors, config=cfg)
            dt = time.perf_counter() - t0
            tm2 = res.timings
            runs.append(
                {
                    "label": label,
                    "backend": cfg.backend,
                    "layout": cfg.plot_layout,
                    "embed_s": float("nan"),
                    "umap_s": tm2["knn_s"] + tm2["umap_s"],
                    "umap_cluster_s": tm2.get("umap_cluster_s", tm2["umap_s"]),
                    "hdbscan_s": tm2["hdbscan_s"],
                    "clusters": res.n_clusters,
                    "noise": res.noise_share,
                    "total_s": dt,
                    "ari_vs_first": float(adjusted_rand_score(result.input_cluster, res.input_cluster)),
                }
            )
    return {
        "n": n,
        "pool": pool,
        "cpu_s": cpu_main,
        "load_avg": os.getloadavg()[0],
        "texts_s": t_texts,
        "imports_s": t_imports,
        "load_s": t_load,
        "peak_rss_mb": peak_main,
        "peak_rss_all_mb": _peak_rss_mb(),
        "params": params,
        "runs": runs,
        "examples": examples,
    }


def labelled_prompts() -> tuple[list[str], list[str]]:
    """Real prompts with a real topic label: Chatbot Arena prompts (English, the source's 6 topic
    categories) and the first human turn of 300 Anthropic HH harmless dialogues, <= 25 words each."""
    import pandas as pd

    arena = pd.read_csv(DATA / "arena_llama3_70b_human.csv", keep_default_na=False)
    arena = arena[arena["language"] == "en"].drop_duplicates("prompt")
    hh = pd.read_csv(DATA / "hh_rlhf_harmless_test.csv", keep_default_na=False)
    first = hh["prompt"].str.split("\n\nAssistant:").str[0].str.removeprefix("Human: ").str.strip()
    first = first.drop_duplicates().head(300)
    texts = [" ".join(p.split()[:25]) for p in arena["prompt"]] + [" ".join(p.split()[:25]) for p in first]
    labels = list(arena["category"]) + ["hh_harmless"] * len(first)
    frame = pd.DataFrame({"t": texts, "l": labels}).drop_duplicates("t")
    return frame["t"].tolist(), frame["l"].tolist()


def stability(n_seeds: int, sizes: list[int]) -> int:
    """Cluster the same embeddings under n_seeds + 1 UMAP seeds (0..n_seeds-1 and 42) with every variant."""
    import warnings

    import hdbscan
    import numpy as np
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from icai_core.cluster import (
        ClusterConfig,
        _hdbscan,
        _quiet_warnings,
        _umap,
        auto_min_cluster_size,
        exact_cosine_knn,
    )
    from icai_core.embed import Embedder

    _quiet_warnings()
    warnings.filterwarnings("ignore", category=FutureWarning)
    datasets = []
    for n in sizes:
        texts, pool = stand_in_texts(n)
        datasets.append((f"stand-in {n:,}", texts, None))
    texts, labels = labelled_prompts()
    datasets.append((f"labelled prompts {len(texts):,}", texts, np.array(labels)))
    seeds = list(range(n_seeds)) + ([42] if 42 >= n_seeds else [])
    print(f"Stability: {len(seeds)} UMAP seeds per data set; same embeddings and k-NN graph for every run.")
    print(
        "labelled prompts = Chatbot Arena prompts (6 topic categories of the source) + 300 HH harmless first turns."
    )
    for name, texts, labels in datasets:
        emb = Embedder(max_seq_length=64).embed(texts)
        n = len(texts)
        knn = exact_cosine_knn(emb, 15)
        mcs = auto_min_cluster_size(n)
        ms = min(mcs, 5)
        rows = []
        for seed in seeds:
            cfg = ClusterConfig(random_state=seed)
            y5 = _umap(emb, 5, 15, 0.0, cfg, knn)
            y2 = _umap(emb, 2, 15, 0.0, cfg, knn)
            y5_200 = _umap(emb, 5, 15, 0.0, ClusterConfig(random_state=seed, n_epochs=200), knn)
            half = max(mcs, n // 2)  # ClusterConfig.max_cluster_share = 0.5
            runs = {
                "sklearn, 5-D (default)": _hdbscan(y5, mcs, ms, cfg, False, half)[0],
                "sklearn, 5-D, no max cluster share": _hdbscan(y5, mcs, ms, cfg, False)[0],
                "hdbscan exact MST, 5-D": _hdbscan(
                    y5, mcs, ms, ClusterConfig(backend="hdbscan"), False, half
                )[0],
                "hdbscan approx MST (lib defaults), 5-D": hdbscan.HDBSCAN(
                    min_cluster_size=mcs, min_samples=ms
                )
                .fit(y5)
                .labels_,
                "sklearn, 5-D, 200 UMAP epochs": _hdbscan(y5_200, mcs, ms, cfg, False, half)[0],
                "sklearn, clustered on 2-D layout": _hdbscan(y2, mcs, ms, cfg, False, half)[0],
            }
            ref = runs["sklearn, 5-D (default)"]
            for method, lab in runs.items():
                kept = lab >= 0
                row = {
                    "method": method,
                    "clusters": int(lab.max() + 1),
                    "noise": float((~kept).mean()),
                    "largest": float(np.bincount(lab[kept]).max() / n) if kept.any() else 0.0,
                    "ari_vs_default": float(adjusted_rand_score(ref, lab)),
                }
                if labels is not None:
                    hits = sum(pd.Series(labels[lab == c]).value_counts().iloc[0] for c in set(lab[kept]))
                    row["purity"] = hits / max(1, int(kept.sum()))
                rows.append(row)
        frame = pd.DataFrame(rows)
        agg = frame.groupby("method", sort=False).agg(
            k_min=("clusters", "min"),
            k_median=("clusters", "median"),
            k_max=("clusters", "max"),
            noise_median=("noise", "median"),
            largest_max=("largest", "max"),
            collapsed=("largest", lambda v: int((v > 0.5).sum())),
            ari_median=("ari_vs_default", "median"),
            **(
                {"purity_median": ("purity", "median"), "purity_min": ("purity", "min")}
                if labels is not None
                else {}
            ),
        )
        print(
            f"\n{name} texts (min_cluster_size={mcs}, min_samples={ms}); collapsed = seeds whose largest cluster holds > 50 % of texts"
        )
        print(agg.round(3).to_string())
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    ap.add_argument(
        "--backend", choices=["hdbscan", "sklearn"], default=None, help="default: ClusterConfig's"
    )
    ap.add_argument("--compare-backends", action="store_true", help="also run the other HDBSCAN backend")
    ap.add_argument("--compare-layouts", action="store_true", help="also cluster directly on the 2-D layout")
    ap.add_argument("--stability", type=int, default=None, metavar="SEEDS", help="seed sweep of all variants")
    ap.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child is not None:
        sys.path.insert(0, str(ROOT))
        from icai_core.cluster import ClusterConfig

        backend = args.backend or ClusterConfig().backend
        print(json.dumps(child(args._child, backend, args.compare_backends, args.compare_layouts)))
        return 0

    sys.path.insert(0, str(ROOT))
    if args.stability is not None:
        return stability(args.stability, args.sizes)
    from icai_core.cluster import ClusterConfig

    backend = args.backend or ClusterConfig().backend
    print("Principle clustering benchmark (embed -> UMAP -> HDBSCAN)")
    print(
        f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  default backend: {ClusterConfig().backend}"
    )
    results = []
    for n in args.sizes:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(n), "--backend", backend]
        if args.compare_backends:
            cmd.append("--compare-backends")
        if args.compare_layouts:
            cmd.append("--compare-layouts")
        env = dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    pool = results[0]["pool"] if results else 0
    print(
        f"stand-in texts: {pool:,} real sentences from shared data (response texts, <= 20 words each); "
        "principle proposals need an LLM, so these real sentences stand in for them."
    )
    print("Each size runs in a fresh process: imports, model load and numba JIT are included.\n")
    head = (
        f"{'texts':>6} | {'run':<38} | {'imports':>7} | {'load':>5} | {'embed':>6} | {'UMAP':>6} | "
        f"{'HDBSCAN':>7} | {'total':>6} | {'CPU':>6} | {'peak RSS':>8} | {'clusters':>8} | {'noise':>5} | {'ARI':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        for i, run in enumerate(r["runs"]):
            first = i == 0
            imports = f"{r['imports_s']:.1f}s" if first else "-"
            load = f"{r['load_s']:.1f}s" if first else "-"
            embed = f"{run['embed_s']:.1f}s" if first else "reused"
            rss = f"{r['peak_rss_mb']:.0f} MB" if first else "-"
            cpu = f"{r['cpu_s']:.0f}s" if first else "-"
            ari = "-" if first else f"{run['ari_vs_first']:.2f}"
            print(
                f"{r['n']:>6,} | {run['label']:<38} | {imports:>7} | {load:>5} | {embed:>6} | "
                f"{run['umap_s']:>5.1f}s | {run['hdbscan_s']:>6.2f}s | {run['total_s']:>5.1f}s | {cpu:>6} | {rss:>8} | "
                f"{run['clusters']:>8} | {run['noise']:>5.0%} | {ari:>5}"
            )
    print(
        "\ntotal = imports + model load + embed + UMAP + HDBSCAN for the first run of a size; for comparison "
        "runs it is UMAP + HDBSCAN on the same embeddings.\nUMAP = exact cosine k-NN + 5-D UMAP for clustering "
        "+ 2-D UMAP for the plot (one UMAP for 'clustered on 2-D plot layout'); the first UMAP in a process "
        "includes numba JIT compilation.\nARI = adjusted Rand index of the run's labels against the first run "
        "of the same size (1 = identical partitions). peak RSS = ru_maxrss of the size's process.\n"
        "CPU = user + system seconds of the size's process up to the end of its first run (includes reading "
        "the CSVs); with 2 cores, wall time cannot be below CPU / 2.\n1-minute load average when each size "
        "finished: "
        + ", ".join(f"{r['n']:,}: {r['load_avg']:.1f}" for r in results)
        + " (other jobs on this "
        "machine slow the wall times down; compare with CPU)."
    )
    for r in results:
        p = r["params"]
        print(
            f"\n{r['n']:,} texts: n_neighbors={p['n_neighbors_used']}, min_cluster_size={p['min_cluster_size_used']}, "
            f"min_samples={p['min_samples_used']}; largest clusters (proposals, mean cosine to representative, "
            "representative):"
        )
        for size, sim, rep in r["examples"]:
            print(f"  {size:>4}  {sim:.2f}  {rep}")
    target = [r for r in results if r["n"] == 5000]
    if target:
        total = target[0]["runs"][0]["total_s"]
        verdict = "meets" if total < 90 else "MISSES"
        print(
            f"\n5,000 texts end to end: {total:.1f} s ({verdict} the 90 s target on {os.cpu_count()} cores)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
