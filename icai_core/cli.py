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
    try:
        from icai_core import report

        report.write_all(result, out)
    except (ImportError, AttributeError):
        pass
    print(summary)
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

    f = sub.add_parser("formats", help="list recognised input formats")
    f.set_defaults(func=cmd_formats)
    p = sub.add_parser("principles", help="list the measurable principles")
    p.set_defaults(func=cmd_principles)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "cache_dir", "unset") is None and not getattr(args, "no_cache", True):
        from icai_core.audit import default_cache_dir

        args.cache_dir = default_cache_dir()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
