"""`icai` command line: batch audits without the web app.

    icai audit data.csv --out results/        offline audit (no key, no network)
    icai formats                              input formats recognised
    icai principles                           the measurable principle library
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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


def _workspace(args: argparse.Namespace):
    """The workspace of --cache-dir (default: PRINCIPIA_HOME or ~/.principia); None + message on error."""
    from icai_core.workspace import Workspace, WorkspaceError

    try:
        return Workspace(getattr(args, "cache_dir", None))
    except WorkspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _out_dir(path: str) -> Path | None:
    """The output folder, created; None + message when a file is in the way or it cannot be made."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file, not a folder: give a folder name (it is created if missing)",
              file=sys.stderr)
        return None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create the output folder {out} ({exc.strerror or exc}): choose another --out",
              file=sys.stderr)
        return None
    return out


def _workspace_and_out(args: argparse.Namespace):
    """(workspace, output folder) of a command that writes files, or None after a one-line error."""
    ws = _workspace(args)
    if ws is None:
        return None
    out = _out_dir(args.out)
    if out is None:
        return None
    return ws, out


def _load(args: argparse.Namespace, mapping=None):
    from icai_core.data import DataError, load_pairs

    try:
        return load_pairs(args.data, mapping=mapping, ties=args.ties)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except FileNotFoundError:
        print(f"error: file not found: {args.data}", file=sys.stderr)
    except IsADirectoryError:
        print(f"error: {args.data} is a folder: give the path of a data file", file=sys.stderr)
    return None


def write_audit_outputs(result, out: Path) -> None:
    """Every file of `icai audit` / `icai run`: stats, constitutions, reconstruction, votes, reports,
    summary.json (one entry per annotator; schema in docs/metrics.md)."""
    import pandas as pd

    from icai_core import report
    from icai_core.summary import summary_document

    names = result.annotator_names
    views = [result.view(n) for n in names]
    # the table the app and the report show (clustered by prompt when the evidence stage ran;
    # binomial_* beside it), so no output of one run names a different significant set
    presented = {v.annotator: report.stats_export(v) for v in views}
    stats = pd.concat([t.assign(annotator=name) for name, t in presented.items()], ignore_index=True)
    report.write_csv(stats, out / "principle_stats.csv")
    first = views[0]
    (out / "principle_stats.json").write_text(json.dumps(
        {
            "dataset": result.dataset_name,
            "dataset_hash": result.dataset_hash,
            "n_pairs": int(first.analysis.n_pairs),
            "n_rows": len(result.all_pairs),
            "annotators": names,
            "config": result.config.to_dict(),
            "principles": json.loads(presented[first.annotator].to_json(orient="records")),
            "by_annotator": {name: json.loads(t.to_json(orient="records")) for name, t in presented.items()},
        },
        indent=2,
    ))
    (out / "constitution.json").write_text(json.dumps(first.constitution.to_dict(), indent=2))
    (out / "constitutions.json").write_text(
        json.dumps({v.annotator: v.constitution.to_dict() for v in views}, indent=2))
    recon = []
    for v in views:
        tables = [v.reconstruction.table]
        if v.llm_reconstruction is not None and len(v.llm_reconstruction):
            tables.insert(0, v.llm_reconstruction)
        recon.append(pd.concat(tables, ignore_index=True).assign(annotator=v.annotator))
    report.write_csv(pd.concat(recon, ignore_index=True), out / "reconstruction.csv")
    (out / "summary.txt").write_text(result.summary() + "\n")
    (out / "votes.csv").write_bytes(report.votes_csv(result.all_pairs, result.all_votes, valid=result.all_valid))
    (out / "report.md").write_text(report.markdown_summary(result))
    (out / "report.html").write_text(report.html_report(result))
    (out / "summary.json").write_text(json.dumps(summary_document(result), indent=2, allow_nan=False))
    if "discovery" in result.extras:
        report.write_csv(result.extras["discovery"], out / "discovered_principles.csv")
    fidelity_votes = result.extras.get("discovery_fidelity_votes")
    if fidelity_votes is not None and len(fidelity_votes):
        report.write_csv(fidelity_votes, out / "discovery_fidelity_votes.csv")
    if any(j.kind != "measurable" for j in result.judges):
        from icai_core.principle_map import map_frame

        report.write_csv(map_frame(result.judges, first.stats), out / "principle_map.csv")


def _write_outputs(write, out: Path, run_id: str) -> bool:
    """Run `write`; a file that cannot be written (a folder in its place, a full disk, no permission)
    is one message naming it, not a traceback. The run itself is already recorded."""
    try:
        write()
    except OSError as exc:
        where = exc.filename or out
        print(f"error: cannot write {where} ({exc.strerror or exc}): choose another --out. The run is "
              f"recorded: `icai report {run_id} --out report.html` renders it without recomputing.",
              file=sys.stderr)
        return False
    return True


def cmd_audit(args: argparse.Namespace) -> int:
    if getattr(args, "stream", False):
        return cmd_audit_stream(args)
    place = _workspace_and_out(args)
    if place is None:
        return 2
    ws, out = place
    loaded = _load(args, _parse_mapping(args.map))
    if loaded is None:
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
    config = _run_config(args, engine="offline")
    with contextlib.ExitStack() as stack:
        client = _namer_client(args, ws, stack)
        if client is False:
            return 2
        return _audit_in_memory(args, ws, out, pairs, config, client)


def _namer_client(args: argparse.Namespace, ws, stack: contextlib.ExitStack):
    """The LLM client that names discovered directions (`--discover` with `--base-url/--model` or
    `--gguf`), None without one, False after an error message. The judges stay offline either way."""
    from icai_core.llm import LLMError

    wants = bool(args.base_url or args.model or args.gguf)
    if not wants:
        return None
    if not args.discover:
        print("error: --base-url / --model / --gguf name the directions that --discover finds; add --discover "
              "(the measurable judges of `icai audit` never call a model; for the LLM engine use `icai run`)",
              file=sys.stderr)
        return False
    if args.gguf:
        llm_config = _local_llm_config(args, stack)
        if llm_config is None:
            return False
    elif not (args.base_url and args.model):
        print("error: naming discovered directions with an endpoint needs both --base-url and --model "
              "(or --gguf PATH for a local model)", file=sys.stderr)
        return False
    else:
        llm_config = _llm_config(args)
    try:
        client = ws.llm_client(llm_config)
        _preflight(client.config)
    except LLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    except Exception as exc:  # llm.CacheError: a response cache that cannot be opened says what to do
        print(f"error: {exc}", file=sys.stderr)
        return False
    return client


def _audit_in_memory(args: argparse.Namespace, ws, out: Path, pairs, config, client) -> int:
    from icai_core.audit import dataset_hash, run_offline_audit

    bar, progress = _tqdm_progress()
    cancel = CancelToken()
    name = Path(args.data).name
    with ws, ws.run("offline_audit", name, dataset_hash(pairs), config.to_dict(), client=client) as run:
        try:
            result = run_offline_audit(pairs, config, dataset_name=name, progress=run.wrap(progress),
                                       cancel=cancel, cache_dir=None if args.no_cache else ws.cache_dir,
                                       run_id=run.id, client=client)
        except (KeyboardInterrupt, Cancelled) as exc:
            bar.close()
            run.fail(exc)
            print("cancelled; votes computed so far are not saved, embeddings are cached", file=sys.stderr)
            return 130
        bar.close()
        run.finish(result, message="audit finished (CLI)")
    if client is not None:
        _print_actual({}, result)
    if not _write_outputs(lambda: write_audit_outputs(result, out), out, run.id):
        return 2
    print(result.summary())
    print(f"\nWrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    print(f"Run {run.id} recorded: `icai report {run.id} --out report.html`, or open the app with ?run={run.id}")
    return 0


_STREAM_CONTAINS = [
    "principle_stats.csv / principle_stats.json: the principle stats per annotator and pooled as "
    "--annotators chooses, with row-level binomial CIs and significance (NOT clustered by prompt; the "
    "in-memory audit's files carry the clustered ones, with the binomial ones as binomial_* columns)",
    "per annotator: rows judged, distinct pairs (by content: prompt + both responses), decided and tied rows",
]
_STREAM_LACKS = [
    "constitution (no train/test split is drawn in a single pass)",
    "reconstruction of held-out choices",
    "clustered / length-controlled effects, report card, cross-validated verdict, agreement between annotators",
    "votes.csv and the HTML/Markdown report",
    "a record in the run store (icai runs / icai report / ?run= need the in-memory audit)",
]


def _stream_input_error(path, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"error: file not found: {path}"
    text = str(exc).strip().replace("\n", " ")
    return f"error: {text}" if str(path) in text else f"error: {path}: {text}"


def cmd_audit_stream(args: argparse.Namespace) -> int:
    """`icai audit FILE --stream`: the measurable judges and the principle stats over a file of any size,
    read in chunks (icai_core.chunked), per annotator and pooled, on --workers processes. Writes the
    principle stats files and a summary.json that says what a streamed audit holds and what it does not."""
    from concurrent.futures.process import BrokenProcessPool

    import pyarrow as pa

    from icai_core import report
    from icai_core.chunked import chunked_principle_stats

    for flag, what in (("map", "--map"), ("discover", "--discover")):
        if getattr(args, flag, None):
            print(f"error: {what} is not available with --stream: a streamed audit reads the canonical columns "
                  "(prompt, text_a, text_b, preferred or preferred_text, annotator) and runs the measurable "
                  f"library only. Drop --stream to use {what}, or convert the file first "
                  "(icai_core.data.load_pairs(FILE).pairs.to_parquet(...)).", file=sys.stderr)
            return 2
    if args.address and args.ties == "exclude":
        print("error: --ties exclude is not available with --address (the cluster path counts every row); "
              "drop one of them", file=sys.stderr)
        return 2
    if args.chunk_rows < 1 or args.workers < 1:
        print("error: --chunk-rows and --workers must be at least 1", file=sys.stderr)
        return 2
    place = _workspace_and_out(args)
    if place is None:
        return 2
    ws, out = place
    config = _run_config(args, engine="offline")
    path = Path(args.data)
    bar, progress = _tqdm_progress()
    cancel = CancelToken()
    try:
        if args.address:
            from icai_core.distributed import distributed_principle_stats

            res = distributed_principle_stats(
                path, address=args.address, keys=config.measurable.principles,
                use_embeddings=config.measurable.use_embeddings, alpha=config.alpha,
                chunk_rows=args.chunk_rows, progress=progress, cancel=cancel,
            )
        else:
            res = chunked_principle_stats(
                path, chunk_rows=args.chunk_rows, use_embeddings=config.measurable.use_embeddings,
                alpha=config.alpha, workers=args.workers, progress=progress, cancel=cancel,
                keys=config.measurable.principles, exclude_ties=args.ties == "exclude",
                cache_dir=None if args.no_cache else ws.cache_dir,
            )
    except (KeyboardInterrupt, Cancelled):
        cancel.cancel()
        bar.close()
        print("cancelled; nothing was written (a streamed audit keeps no partial results)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, IsADirectoryError, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        bar.close()
        print(_stream_input_error(path, exc), file=sys.stderr)
        return 2
    except ImportError as exc:  # --address without the [dask] extra: the message names the extra
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the scheduler cannot be reached, or the file cannot be read
        bar.close()
        where = f"on the Dask scheduler {args.address}" if args.address else f"the streamed audit of {path}"
        print(f"error: cannot run {where}: {exc}", file=sys.stderr)
        return 2
    except BrokenProcessPool:
        bar.close()
        print(f"error: a worker process stopped unexpectedly (out of memory?) while auditing {path}; nothing was "
              "written. Rerun with fewer --workers or a smaller --chunk-rows.", file=sys.stderr)
        return 1
    bar.close()
    if res.n_rows == 0:
        print(f"error: {path}: the file has a header but no rows: nothing to audit", file=sys.stderr)
        return 2
    views = res.views(config.annotators)
    if args.annotator:
        if not res.annotators:
            print("error: --annotator given but the data has no 'annotator' column", file=sys.stderr)
            return 2
        if args.annotator not in res.by_annotator:
            print(f"error: no rows with annotator == {args.annotator!r}", file=sys.stderr)
            return 2
        views = [(args.annotator, res.by_annotator[args.annotator], False)]
    import pandas as pd

    tables = {name: c.stats(config.alpha) for name, c, _ in views}
    stats = pd.concat([t.assign(annotator=name) for name, t in tables.items()], ignore_index=True)
    report.write_csv(stats, out / "principle_stats.csv")
    first_name, first, _ = views[0]
    (out / "principle_stats.json").write_text(json.dumps({
        "dataset": path.name,
        "dataset_hash": None,  # the in-memory hash needs the whole table; a streamed audit has none
        "streamed": True,
        "n_pairs": first.n_distinct,
        "n_rows": res.n_rows,
        "annotators": [name for name, _, _ in views],
        "config": config.to_dict(),
        "principles": json.loads(tables[first_name].to_json(orient="records")),
        "by_annotator": {name: json.loads(t.to_json(orient="records")) for name, t in tables.items()},
    }, indent=2))

    def entry(c) -> dict:
        return {"n_rows": int(c.n_rows), "n_pairs": c.n_distinct, "n_decided": int(c.n), "n_ties": int(c.n_ties)}

    (out / "summary.json").write_text(json.dumps({
        "kind": "streamed_audit",
        "dataset": path.name,
        "n_rows": res.n_rows,
        "n_pairs": res.counts.n_distinct,
        "n_chunks": res.n_chunks,
        "chunk_rows": args.chunk_rows,
        "workers": args.workers,
        "embeddings": bool(config.measurable.use_embeddings),
        "annotators": {name: entry(c) for name, c, _ in views},
        "contains": _STREAM_CONTAINS,
        "does_not_contain": _STREAM_LACKS,
        "note": "Counts of pairs are distinct pairs (prompt + both responses, the in-memory audit's content "
                "hash); the stats count each annotator's rows, as the in-memory audit does. For the missing "
                "parts run `icai audit FILE` without --stream on a file that fits in memory.",
    }, indent=2, allow_nan=False))
    print(f"Streamed audit of {path.name}: {res.n_rows:,} rows, {res.counts.n_distinct:,} distinct pairs, "
          f"{res.n_chunks} chunks of up to {args.chunk_rows:,} rows, {args.workers} worker(s)")
    for name, _, _ in views:
        t = tables[name].head(5)
        print(f"\n{name}: {views[[v[0] for v in views].index(name)][1].n_distinct:,} distinct pairs; strongest:")
        for row in t.itertuples():
            print(f"  {row.strength:+.3f} [{row.strength_ci_low:+.3f}, {row.strength_ci_high:+.3f}]  {row.key}")
    print("\nNot in a streamed audit: constitution, reconstruction, controlled effects, report, run record "
          "(see summary.json).")
    print(f"Wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    return 0


def _run_config(args: argparse.Namespace, engine: str):
    """The RunConfig of a command: defaults from icai_core.config, overridden by the flags given."""
    from icai_core.config import RunConfig

    flat = {}
    for name in ("test_size", "seed", "alpha", "max_size", "n_principles_per_pair", "max_propose_pairs",
                 "max_candidates", "principle_batch_size", "max_annotate_pairs", "flipped_check",
                 "merge_with_llm", "name_with_llm", "fidelity_threshold"):
        value = getattr(args, name, None)
        if value is not None:
            flat[name] = value
    if getattr(args, "no_embeddings", False):
        flat["use_embeddings"] = False
    if getattr(args, "discover", False):
        flat["discover"] = True
    return RunConfig.from_flat(engine=engine, annotators=getattr(args, "annotators", "each") or "each", **flat)


def _llm_config(args: argparse.Namespace, model: str | None = None, base_url: str | None = None):
    from icai_core.llm import LLMConfig

    return LLMConfig(
        base_url=base_url or args.base_url,
        model=model or args.model,
        api_key=None,  # read from OPENAI_API_KEY / PRINCIPIA_API_KEY; never a command-line argument
        concurrency=args.concurrency,
    )


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
    """The full ICAI pipeline on an OpenAI-compatible endpoint (or a local GGUF model)."""
    from icai_core.audit import dataset_hash
    from icai_core.icai import estimate_run, run_icai
    from icai_core.llm import LLMError
    from icai_core.workspace import run_config_record

    place = _workspace_and_out(args)
    if place is None:
        return 2
    ws, out = place
    loaded = _load(args)
    if loaded is None:
        return 2
    pairs = loaded.pairs
    if args.max_pairs and len(pairs) > args.max_pairs:
        pairs = pairs.sample(n=args.max_pairs, random_state=args.seed or 0).sort_index().reset_index(drop=True)
    config = _run_config(args, engine="llm")
    with contextlib.ExitStack() as stack:
        if args.engine == "local":
            llm_config = _local_llm_config(args, stack)
            if llm_config is None:
                return 2
        else:
            if not args.base_url or not args.model:
                print("error: --base-url and --model are required with --engine openai "
                      "(or use --engine local --gguf PATH)", file=sys.stderr)
                return 2
            llm_config = _llm_config(args)
        try:
            client = ws.llm_client(llm_config)
        except Exception as exc:  # llm.CacheError: a response cache that cannot be opened says what to do
            print(f"error: {exc}", file=sys.stderr)
            return 2
        embedder = None
        if args.embedding_model:
            from icai_core.embed import RemoteEmbedder

            embedder = RemoteEmbedder(client.config, model=args.embedding_model)
        estimate = estimate_run(pairs, config, client)
        _print_estimate(estimate)
        if args.estimate_only:
            return 0
        try:
            _preflight(client.config)
        except LLMError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        data_hash = dataset_hash(pairs)
        name = Path(args.data).name
        stack.enter_context(ws)
        run = stack.enter_context(ws.run("icai", name, data_hash, run_config_record(config, client.config),
                                         resume=True, client=client))
        if run.resumed:
            print(f"Resuming run {run.id}", file=sys.stderr)
        bar, progress = _tqdm_progress()
        cancel = CancelToken()
        try:
            result = run_icai(pairs, client, config, store=ws.store, run_id=run.id, embedder=embedder,
                              progress=run.wrap(progress), cancel=cancel, cache_dir=ws.cache_dir,
                              dataset_name=name)
        except (KeyboardInterrupt, Cancelled) as exc:
            bar.close()
            run.fail(exc)
            print(f"cancelled; rerun the same command to resume run {run.id}", file=sys.stderr)
            return 130
        except Exception as exc:
            bar.close()
            run.fail(exc)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        bar.close()
        run.finish(result, message="ICAI finished (CLI)")
    from icai_core import interop

    if not _write_outputs(lambda: (write_audit_outputs(result, out), interop.write_icai_outputs(result, out)),
                          out, run.id):
        return 2
    print(result.summary())
    _print_actual(estimate, result)
    print(f"\nWrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    print(f"Run {run.id} recorded: `icai report {run.id} --out report.html`, or open the app with ?run={run.id}")
    return 0


def _preflight(llm_config) -> None:
    from icai_core import llm

    check = getattr(llm, "preflight", None)
    if check is not None:
        check(llm_config)


def _local_llm_config(args: argparse.Namespace, stack: contextlib.ExitStack):
    """Start llama.cpp's server for --gguf on 127.0.0.1 (stopped when the command ends)."""
    from icai_core import local_engine

    gguf = args.gguf or local_engine.bundled_gguf()
    if gguf is None:
        print("error: --engine local needs --gguf PATH (a GGUF model file)", file=sys.stderr)
        return None
    try:
        server = stack.enter_context(local_engine.LocalServer(gguf, threads=args.threads))
    except Exception as exc:  # the engine's own messages say what went wrong (path, format, port)
        print(f"error: could not start the local model server: {exc}", file=sys.stderr)
        return None
    print(f"Local model {Path(gguf).name} served at {server.base_url}", file=sys.stderr)
    return server.llm_config()  # concurrency = the server's parallel slots (1 by default)


def _print_actual(estimate: dict, result) -> None:
    """Estimate vs what the run did, per stage, and the answers' validity per stage."""
    usage = result.usage or {}
    est_calls = sum(e.calls for e in estimate.values())
    est = f"estimated {est_calls:,} (upper bound) · " if estimate else ""
    print(f"\nCalls: {est}sent {usage.get('calls', 0):,} · "
          f"served from cache {usage.get('cache_hits', 0):,} · cost ${usage.get('dollars', 0) or 0:,.4f}")
    faults = {k: v for k, v in (usage.get("faults") or {}).items() if v}
    if faults or usage.get("retries"):
        print("  faults: " + (", ".join(f"{k} {v:,}" for k, v in sorted(faults.items())) or "none")
              + f" · {usage.get('retries', 0):,} retries · {usage.get('failures', 0):,} requests failed for good")
    for stage, counts in (result.stage_counts or {}).items():
        d = counts.to_dict() if hasattr(counts, "to_dict") else dict(counts)
        print(f"  {stage:<9} answers: {d.get('valid', 0)} valid, {d.get('recovered', 0)} recovered, "
              f"{d.get('invalid', 0)} invalid ({d.get('invalid_rate', 0):.0%} invalid)")


def cmd_runs(args: argparse.Namespace) -> int:
    """List recorded runs (all kinds, CLI and app)."""
    ws = _workspace(args)
    if ws is None:
        return 2
    with ws:
        runs = ws.list_runs(limit=args.limit)
    if args.json:
        records = [
            {"id": r["id"], "kind": r["kind"], "dataset": r["dataset_name"], "status": r["status"],
             "created": r["created"].isoformat(timespec="seconds"), "message": r["message"],
             "dollars": r["dollars"], "error": r["error"]}
            for _, r in runs.iterrows()
        ]
        print(json.dumps(records, indent=2))
        return 0
    if runs.empty:
        print("No runs recorded yet. Start one with `icai audit FILE`.")
        return 0
    for _, r in runs.iterrows():
        print(f"{r['id']:<24} {r['created']:%Y-%m-%d %H:%M}  {r['kind']:<14} {r['status']:<12} {r['dataset_name']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render a stored run as an HTML (or Markdown) report, without recomputing anything."""
    from icai_core import report

    ws = _workspace(args)
    if ws is None:
        return 2
    with ws:
        if ws.get_run(args.run_id) is None:
            print(f"error: no run {args.run_id!r} in {ws.store_path}; `icai runs` lists the recorded runs",
                  file=sys.stderr)
            return 2
        try:
            result = ws.load_result(args.run_id)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
    if args.annotator:
        if args.annotator not in result.annotator_names:
            print(f"error: run {args.run_id} has no annotator {args.annotator!r}; it has: "
                  f"{', '.join(result.annotator_names)}", file=sys.stderr)
            return 2
        result = result.view(args.annotator)
    out = Path(args.out)
    if out.is_dir():
        print(f"error: --out {out} is a folder: give a file name such as report.html", file=sys.stderr)
        return 2
    text = report.markdown_summary(result) if out.suffix.lower() == ".md" else report.html_report(result)
    try:
        out.write_text(text)
    except OSError as exc:
        print(f"error: cannot write {out} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(f"Wrote {out} (run {args.run_id}, {result.dataset_name})")
    return 0


def cmd_iteralign(args: argparse.Namespace) -> int:
    import hashlib

    from icai_core.iteralign import IterAlignConfig, LLMOracle, OfflineOracle, run_iteralign
    from icai_core.redteam import load_prompts

    place = _workspace_and_out(args)
    if place is None:
        return 2
    ws, out = place
    try:
        red = load_prompts(args.prompts)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = ws.llm_client(_llm_config(args))
    proposer = ws.llm_client(_llm_config(args, model=args.proposer_model or args.model,
                                         base_url=args.proposer_base_url))
    if args.oracle_model == "offline":
        oracle = OfflineOracle()
    else:
        oracle = LLMOracle(ws.llm_client(_llm_config(args, model=args.oracle_model or args.model,
                                                     base_url=args.oracle_base_url)))
    config = IterAlignConfig(iterations=args.iterations, max_prompts=args.max_prompts)
    prompts_list = list(getattr(red, "prompts", red))
    data_hash = hashlib.sha256("\n".join(map(str, prompts_list)).encode()).hexdigest()[:16]
    record = {"iteralign": dataclasses.asdict(config), "base": base.config.redacted(),
              "proposer": proposer.config.redacted()}
    bar, progress = _tqdm_progress()
    with ws, ws.run("iteralign", Path(args.prompts).name, data_hash, record, resume=True, client=base) as run:
        try:
            result = run_iteralign(red, base, proposer, oracle, config, store=ws.store, run_id=run.id,
                                   progress=run.wrap(progress))
        except (KeyboardInterrupt, Cancelled) as exc:
            bar.close()
            run.fail(exc)
            print("cancelled; rerun the same command: stored answers are not requested again", file=sys.stderr)
            return 130
        except Exception as exc:
            bar.close()
            run.fail(exc)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        bar.close()
        run.finish(results={"constitution": result.constitution_dict()}, message="IterAlign finished (CLI)")
    from icai_core import report

    (out / "sft.jsonl").write_text(result.sft_jsonl())
    # The spreadsheet-safe CSV (formula-like cells get a leading ', as every CSV the product writes) and
    # the exact texts as JSON Lines for re-import (`icai audit preference_pairs.jsonl`).
    report.write_csv(result.preference_table(), out / "preference_pairs.csv")
    (out / "preference_pairs.jsonl").write_text(result.preference_table().to_json(orient="records", lines=True,
                                                                                  force_ascii=False))
    (out / "constitution.json").write_text(json.dumps(result.constitution_dict(), indent=2))
    report.write_csv(result.iteration_table(), out / "iterations.csv")
    print(result.iteration_table().to_string(index=False))
    print("\nConstitution:\n" + "\n".join(f"{i}. {t}" for i, t in enumerate(result.constitution, 1)))
    print(f"\nWrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    print(f"Run {run.id} recorded (`icai runs`).")
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
    from icai_core.config import defaults

    d = defaults()  # every default below is read from icai_core.config (defined once)
    parser = argparse.ArgumentParser(prog="icai", description="Principia: audit pairwise preference data.")
    sub = parser.add_subparsers(dest="command", required=True)

    def split_args(p):
        p.add_argument("--test-size", type=float, default=None, help=f"held-out share (default {d.test_size})")
        p.add_argument("--seed", type=int, default=None, help=f"split / sampling seed (default {d.seed})")
        p.add_argument("--alpha", type=float, default=None, help=f"significance level (default {d.alpha})")
        p.add_argument("--max-size", type=int, default=None,
                       help=f"maximum constitution size (default {d.max_size})")
        p.add_argument("--annotators", choices=["each", "pooled", "both"], default=d.annotators,
                       help="audit each annotator separately (default), all rows pooled, or both")
        p.add_argument("--ties", choices=["keep", "exclude"], default="keep")
        p.add_argument("--cache-dir", default=None,
                       help="Principia's home: caches + run store (default: $PRINCIPIA_HOME or ~/.principia)")
        p.add_argument("--out", default="results", help="output folder (default: results/)")

    a = sub.add_parser("audit", help="offline audit with the measurable judges (no key, no network)")
    a.add_argument("data", help="CSV / TSV / JSON / JSONL / Parquet file of pairwise preferences")
    split_args(a)
    a.add_argument("--annotator", help="audit only rows of this annotator")
    a.add_argument("--map", nargs="*", metavar="FIELD=COLUMN", help="explicit column mapping")
    a.add_argument("--no-embeddings", action="store_true", help="skip the embedding-based judge (faster)")
    a.add_argument("--no-cache", action="store_true", help="do not read or write the vote cache")
    a.add_argument("--discover", action="store_true",
                   help="also discover directions in the data beyond the measurable library (offline, "
                        "embeds every response: slower)")
    a.add_argument("--stream", action="store_true",
                   help="stream a CSV/TSV/Parquet file of any size in chunks (bounded memory): principle stats "
                        "per annotator and pooled only (no constitution, reconstruction or report)")
    a.add_argument("--chunk-rows", type=int, default=10_000, help="rows per chunk with --stream (default 10000)")
    a.add_argument("--workers", type=int, default=1,
                   help="processes judging chunks in parallel with --stream (default 1; memory ~ workers x chunk)")
    a.add_argument("--address", default=None,
                   help="with --stream: run the chunks on this Dask scheduler (tcp://host:8786) instead of "
                        "local processes (needs the principia[dask] extra; Parquet input)")
    namer = a.add_argument_group("names for discovered directions (optional; with --discover)")
    namer.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint that names the directions")
    namer.add_argument("--model", default=None)
    namer.add_argument("--concurrency", type=int, default=16)
    namer.add_argument("--gguf", default=None, help="or a local GGUF model served through llama.cpp")
    namer.add_argument("--threads", type=int, default=1, help="CPU threads of the local model server (default 1)")
    namer.add_argument("--no-llm-names", dest="name_with_llm", action="store_false", default=None,
                       help="keep the keyword descriptions even with a model configured")
    namer.add_argument("--fidelity-threshold", type=float, default=None,
                       help=f"names below this fidelity are flagged (default {d.discovery.fidelity_threshold})")
    a.set_defaults(func=cmd_audit)

    def llm_args(p, required: bool = True):
        p.add_argument("--base-url", required=required, default=None,
                       help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
        p.add_argument("--model", required=required, default=None)
        p.add_argument("--concurrency", type=int, default=16)

    r = sub.add_parser("run", help="the full ICAI pipeline on an OpenAI-compatible endpoint "
                                   "(key from OPENAI_API_KEY or PRINCIPIA_API_KEY) or a local GGUF model")
    r.add_argument("data")
    split_args(r)
    llm_args(r, required=False)
    r.add_argument("--engine", choices=["openai", "local"], default="openai",
                   help="openai: any OpenAI-compatible endpoint (--base-url, --model); local: a GGUF model "
                        "served by Principia through llama.cpp on 127.0.0.1 (--gguf)")
    r.add_argument("--gguf", default=None, help="GGUF model file for --engine local")
    r.add_argument("--threads", type=int, default=1, help="CPU threads of the local model server (default 1)")
    r.add_argument("--max-pairs", type=int, default=None, help="audit a seeded sample of this many pairs")
    r.add_argument("--principles-per-pair", dest="n_principles_per_pair", type=int, default=None,
                   help=f"default {d.n_principles_per_pair}")
    r.add_argument("--max-propose-pairs", type=int, default=None, help=f"default {d.max_propose_pairs}")
    r.add_argument("--max-candidates", type=int, default=None, help=f"default {d.max_candidates}")
    r.add_argument("--batch-size", dest="principle_batch_size", type=int, default=None,
                   help=f"principles per vote call (default {d.principle_batch_size})")
    r.add_argument("--max-annotate-pairs", type=int, default=None, help=f"default {d.max_annotate_pairs}")
    r.add_argument("--flipped", dest="flipped_check", action="store_true", default=None,
                   help="also annotate with A/B swapped (position bias)")
    r.add_argument("--merge-clusters", dest="merge_with_llm", action="store_true", default=None,
                   help="let the LLM summarise each cluster")
    r.add_argument("--embedding-model", default=None,
                   help="embed principles with this model of the endpoint (default: bundled MiniLM, offline)")
    r.add_argument("--estimate-only", action="store_true", help="print the cost estimate and stop")
    r.set_defaults(func=cmd_run)

    it = sub.add_parser("iteralign", help="IterAlign: constitutions from red-team failures")
    it.add_argument("prompts", help="CSV/JSONL/TXT of red-team prompts (a 'prompt' column or one per line)")
    llm_args(it)
    it.add_argument("--cache-dir", default=None, help="Principia's home (default: ~/.principia)")
    it.add_argument("--out", default="results")
    it.add_argument("--seed", type=int, default=0)
    it.add_argument("--oracle-model", default=None, help="oracle model, or 'offline' for the refusal judge")
    it.add_argument("--oracle-base-url", default=None)
    it.add_argument("--proposer-model", default=None)
    it.add_argument("--proposer-base-url", default=None)
    it.add_argument("--iterations", type=int, default=3)
    it.add_argument("--max-prompts", type=int, default=None)
    it.set_defaults(func=cmd_iteralign)

    rs = sub.add_parser("runs", help="list recorded runs (CLI and app)")
    rs.add_argument("--json", action="store_true", help="machine-readable list")
    rs.add_argument("--limit", type=int, default=50)
    rs.add_argument("--cache-dir", default=None, help="Principia's home (default: ~/.principia)")
    rs.set_defaults(func=cmd_runs)

    rp = sub.add_parser("report", help="re-render a recorded run as a report (no recomputation)")
    rp.add_argument("run_id")
    rp.add_argument("--out", default="report.html", help="report.html (HTML) or report.md (Markdown)")
    rp.add_argument("--annotator", default=None, help="the annotator to report (default: the first)")
    rp.add_argument("--cache-dir", default=None, help="Principia's home (default: ~/.principia)")
    rp.set_defaults(func=cmd_report)

    f = sub.add_parser("formats", help="list recognised input formats")
    f.set_defaults(func=cmd_formats)
    p = sub.add_parser("principles", help="list the measurable principles")
    p.set_defaults(func=cmd_principles)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    # Warnings (a damaged cache moved aside, a store recovered) reach the user as one "warning:" line,
    # not through Python's last-resort handler; a caller that configured logging keeps its own.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
