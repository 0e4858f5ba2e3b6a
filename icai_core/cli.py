"""`icai` command line: batch audits without the web app.

    icai audit data.csv --out results/        offline audit (no key, no network)
    icai formats                              input formats recognised
    icai principles                           the measurable principle library
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from icai_core.jobs import Cancelled, CancelToken


def _tqdm_progress():
    from tqdm import tqdm

    bar = tqdm(total=1, unit="step", dynamic_ncols=True, file=sys.stderr)

    def progress(done: int, total: int, message: str = "") -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.set_description_str(message[:60])
        bar.refresh()

    return bar, progress


def _parse_mapping(items: list[str] | None):
    if not items:
        return None
    from icai_core.data import ColumnMapping

    fields = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--map expects FIELD=COLUMN (e.g. prompt=instruction), got {item!r}")
        k, v = item.split("=", 1)
        fields[k.strip()] = v.strip()
    try:
        return ColumnMapping(**fields)
    except TypeError as exc:
        raise SystemExit(f"--map: {exc}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    from icai_core.audit import AuditConfig, config_dict, run_offline_audit
    from icai_core.data import DataError, load_pairs

    try:
        loaded = load_pairs(args.data, mapping=_parse_mapping(args.map), ties=args.ties)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError:
        print(f"error: file not found: {args.data}", file=sys.stderr)
        return 2
    print(loaded.report.summary(), file=sys.stderr)
    pairs = loaded.pairs
    if args.annotator:
        if "annotator" not in pairs.columns:
            print("error: --annotator given but the data has no 'annotator' column", file=sys.stderr)
            return 2
        pairs = pairs[pairs["annotator"] == args.annotator].reset_index(drop=True)
        if pairs.empty:
            print(f"error: no rows with annotator == {args.annotator!r}", file=sys.stderr)
            return 2
    config = AuditConfig(
        test_size=args.test_size,
        seed=args.seed,
        alpha=args.alpha,
        use_embeddings=not args.no_embeddings,
        max_size=args.max_size,
    )
    bar, progress = _tqdm_progress()
    cancel = CancelToken()
    try:
        result = run_offline_audit(
            pairs,
            config,
            dataset_name=Path(args.data).name,
            progress=progress,
            cancel=cancel,
            cache_dir=None if args.no_cache else args.cache_dir,
        )
    except (KeyboardInterrupt, Cancelled):
        bar.close()
        print("cancelled; votes computed so far are not saved, embeddings are cached", file=sys.stderr)
        return 130
    bar.close()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stats = result.stats
    stats.to_csv(out / "principle_stats.csv", index=False)
    (out / "principle_stats.json").write_text(
        json.dumps(
            {
                "dataset": result.dataset_name,
                "dataset_hash": result.dataset_hash,
                "n_pairs": len(result.pairs),
                "config": config_dict(config),
                "principles": json.loads(stats.to_json(orient="records")),
            },
            indent=2,
        )
    )
    (out / "constitution.json").write_text(json.dumps(result.constitution.to_dict(), indent=2))
    result.reconstruction.table.to_csv(out / "reconstruction.csv", index=False)
    summary = result.summary()
    (out / "summary.txt").write_text(summary + "\n")
    from icai_core import report

    (out / "votes.csv").write_bytes(report.votes_csv(result.pairs, result.votes))
    (out / "report.md").write_text(report.markdown_summary(result))
    (out / "report.html").write_text(report.html_report(result))
    print(summary)
    print(f"\nWrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    return 0


def _llm_config(args: argparse.Namespace, model: str | None = None, base_url: str | None = None):
    from icai_core.llm import LLMConfig

    return LLMConfig(
        base_url=base_url or args.base_url,
        model=model or args.model,
        api_key=None,  # read from OPENAI_API_KEY / PRINCIPIA_API_KEY; never a command-line argument
        concurrency=args.concurrency,
    )


def _client(config, cache_dir):
    from icai_core.llm import LLMClient, ResponseCache

    cache = ResponseCache(Path(cache_dir) / "llm_cache.sqlite") if cache_dir else None
    return LLMClient(config, cache=cache)


def _print_estimate(estimates: dict) -> None:
    total_calls = total_usd = 0
    print("Cost estimate (before the run):", file=sys.stderr)
    for stage, est in estimates.items():
        print(
            f"  {stage:<10} {est.calls:>7,} calls ({est.cached_calls:,} cached)  "
            f"~{est.prompt_tokens:,} prompt + {est.completion_tokens:,} completion tokens  ${est.dollars:,.2f}",
            file=sys.stderr,
        )
        total_calls += est.calls
        total_usd += est.dollars
    print(f"  total      {total_calls:>7,} calls  ${total_usd:,.2f}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    """The full ICAI pipeline on an OpenAI-compatible endpoint."""
    from icai_core.audit import dataset_hash
    from icai_core.data import DataError, load_pairs
    from icai_core.icai import ICAIConfig, config_dict, estimate_run, run_icai
    from icai_core.store import RunStore

    try:
        loaded = load_pairs(args.data, ties=args.ties)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs = loaded.pairs
    if args.max_pairs and len(pairs) > args.max_pairs:
        pairs = pairs.sample(n=args.max_pairs, random_state=args.seed).sort_index().reset_index(drop=True)
    config = ICAIConfig(
        n_principles_per_pair=args.principles_per_pair,
        max_propose_pairs=args.max_propose_pairs,
        max_candidates=args.max_candidates,
        principle_batch_size=args.batch_size,
        seed=args.seed,
        flipped_check=args.flipped,
        max_annotate_pairs=args.max_annotate_pairs,
        merge_with_llm=args.merge_clusters,
    )
    client = _client(_llm_config(args), args.cache_dir)
    embedder = None
    if args.embedding_model:
        from icai_core.embed import RemoteEmbedder

        embedder = RemoteEmbedder(client.config, model=args.embedding_model)
    _print_estimate(estimate_run(pairs, config, client))
    if args.estimate_only:
        return 0
    store = RunStore(Path(args.cache_dir) / "runs.sqlite" if args.cache_dir else None)
    data_hash = dataset_hash(pairs)
    run_cfg = {"icai": config_dict(config), "llm": client.config.redacted()}
    run_id = store.find_resumable("icai", data_hash, run_cfg)
    if run_id:
        print(f"Resuming run {run_id}", file=sys.stderr)
    else:
        run_id = store.create_run("icai", Path(args.data).name, data_hash, run_cfg)
    bar, progress = _tqdm_progress()
    cancel = CancelToken()
    try:
        result = run_icai(pairs, client, config, store=store, run_id=run_id, embedder=embedder,
                          progress=progress, cancel=cancel)
    except (KeyboardInterrupt, Cancelled):
        bar.close()
        store.update(run_id, status="interrupted", message="cancelled", cost=client.usage.to_dict())
        print(f"cancelled; rerun the same command to resume run {run_id}", file=sys.stderr)
        return 130
    except Exception as exc:
        bar.close()
        store.update(run_id, status="failed", message=str(exc), cost=client.usage.to_dict())
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    store.update(run_id, status="done", message="finished", cost=client.usage.to_dict())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from icai_core import interop

    interop.write_icai_outputs(result, out)
    print(interop.icai_summary(result))
    print(f"\nWrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    return 0


def cmd_iteralign(args: argparse.Namespace) -> int:
    from icai_core.iteralign import IterAlignConfig, LLMOracle, OfflineOracle, run_iteralign
    from icai_core.redteam import load_prompts

    try:
        red = load_prompts(args.prompts)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = _client(_llm_config(args), args.cache_dir)
    proposer = _client(_llm_config(args, model=args.proposer_model or args.model,
                                   base_url=args.proposer_base_url), args.cache_dir)
    if args.oracle_model == "offline":
        oracle = OfflineOracle()
    else:
        oracle = LLMOracle(_client(_llm_config(args, model=args.oracle_model or args.model,
                                               base_url=args.oracle_base_url), args.cache_dir))
    config = IterAlignConfig(iterations=args.iterations, max_prompts=args.max_prompts)
    bar, progress = _tqdm_progress()
    try:
        result = run_iteralign(red, base, proposer, oracle, config, progress=progress)
    except KeyboardInterrupt:
        bar.close()
        print("cancelled; rerun the same command: cached answers are not requested again", file=sys.stderr)
        return 130
    bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sft.jsonl").write_text(result.sft_jsonl())
    (out / "preference_pairs.csv").write_text(result.preference_csv())
    (out / "constitution.json").write_text(json.dumps(result.constitution_dict(), indent=2))
    result.iteration_table().to_csv(out / "iterations.csv", index=False)
    print(result.iteration_table().to_string(index=False))
    print("\nConstitution:\n" + "\n".join(f"{i}. {t}" for i, t in enumerate(result.constitution, 1)))
    print(f"\nWrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    return 0


def cmd_formats(args: argparse.Namespace) -> int:
    from icai_core.data import SUPPORTED_FORMATS

    for name, desc in SUPPORTED_FORMATS.items():
        print(f"{name:<16} {desc}")
    return 0


def cmd_principles(args: argparse.Namespace) -> int:
    from icai_core.judges import PRINCIPLES

    for p in PRINCIPLES:
        print(f"{p.key:<28} {p.text}\n{'':<28} not relevant when: {p.margin}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icai", description="Principia: audit pairwise preference data.")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("audit", help="offline audit with the measurable judges (no key, no network)")
    a.add_argument("data", help="CSV / TSV / JSON / JSONL / Parquet file of pairwise preferences")
    a.add_argument("--out", default="results", help="output folder (default: results/)")
    a.add_argument("--ties", choices=["keep", "exclude"], default="keep")
    a.add_argument("--annotator", help="audit only rows of this annotator")
    a.add_argument("--map", nargs="*", metavar="FIELD=COLUMN", help="explicit column mapping")
    a.add_argument("--test-size", type=float, default=0.3)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--alpha", type=float, default=0.05)
    a.add_argument("--max-size", type=int, default=10, help="maximum constitution size")
    a.add_argument("--no-embeddings", action="store_true", help="skip the embedding-based judge (faster)")
    a.add_argument("--cache-dir", default=None, help="cache folder (default: ~/.principia)")
    a.add_argument("--no-cache", action="store_true")
    a.set_defaults(func=cmd_audit)

    def llm_args(p):
        p.add_argument("--base-url", required=True, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
        p.add_argument("--model", required=True)
        p.add_argument("--concurrency", type=int, default=16)
        p.add_argument("--cache-dir", default=None, help="cache + run store folder (default: ~/.principia)")
        p.add_argument("--out", default="results")
        p.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("run", help="the full ICAI pipeline on an OpenAI-compatible endpoint "
                                   "(key from OPENAI_API_KEY or PRINCIPIA_API_KEY)")
    r.add_argument("data")
    llm_args(r)
    r.add_argument("--engine", choices=["openai"], default="openai", help="OpenAI-compatible endpoint")
    r.add_argument("--ties", choices=["keep", "exclude"], default="keep")
    r.add_argument("--max-pairs", type=int, default=None, help="audit a seeded sample of this many pairs")
    r.add_argument("--principles-per-pair", type=int, default=3)
    r.add_argument("--max-propose-pairs", type=int, default=200)
    r.add_argument("--max-candidates", type=int, default=30)
    r.add_argument("--batch-size", type=int, default=10, help="principles per vote call")
    r.add_argument("--max-annotate-pairs", type=int, default=300)
    r.add_argument("--flipped", action="store_true", help="also annotate with A/B swapped (position bias)")
    r.add_argument("--merge-clusters", action="store_true", help="let the LLM summarise each cluster")
    r.add_argument("--embedding-model", default=None,
                   help="embed principles with this model of the endpoint (default: bundled MiniLM, offline)")
    r.add_argument("--estimate-only", action="store_true", help="print the cost estimate and stop")
    r.set_defaults(func=cmd_run)

    it = sub.add_parser("iteralign", help="IterAlign: constitutions from red-team failures")
    it.add_argument("prompts", help="CSV/JSONL/TXT of red-team prompts (a 'prompt' column or one per line)")
    llm_args(it)
    it.add_argument("--oracle-model", default=None, help="oracle model, or 'offline' for the refusal judge")
    it.add_argument("--oracle-base-url", default=None)
    it.add_argument("--proposer-model", default=None)
    it.add_argument("--proposer-base-url", default=None)
    it.add_argument("--iterations", type=int, default=3)
    it.add_argument("--max-prompts", type=int, default=None)
    it.set_defaults(func=cmd_iteralign)

    f = sub.add_parser("formats", help="list recognised input formats")
    f.set_defaults(func=cmd_formats)
    p = sub.add_parser("principles", help="list the measurable principles")
    p.set_defaults(func=cmd_principles)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "cache_dir", "unset") is None and not getattr(args, "no_cache", False):
        from icai_core.audit import default_cache_dir

        args.cache_dir = default_cache_dir()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
