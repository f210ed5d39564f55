"""``fusedfocal compare``: the same model, data, seed and budget under several losses.

parse -> resolve (one spec, the settings chosen once on the first seed's data) -> one run per loss and
seed (:func:`~fusedfocal.cli.commands.one_run.run_one`) -> aggregate -> the report
(:mod:`fusedfocal.cli.store.comparison`)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fusedfocal.cli import resolve
from fusedfocal.cli.commands.one_run import run_one
from fusedfocal.cli.errors import CLIError, RunEnded, log
from fusedfocal.cli.stages import fused, heads, load, runtime, stops
from fusedfocal.cli.stages.lossargs import loss_label, parse_value
from fusedfocal.cli.store import comparison, report, rundir

__all__ = ["DEFAULT_LOSSES", "parse_loss_specs", "cmd_compare", "compare"]

DEFAULT_LOSSES = "bce,focal,asl,db,la"


def parse_loss_specs(specs):
    """``['bce,focal:gamma=2,alpha=0.25']`` -> ``[('bce', {}), ('focal', {'gamma': 2, 'alpha': 0.25})]``.

    A comma-separated item with ``=`` and no ``:`` is one more parameter of the loss before it.
    """
    out = []
    for spec in specs or [DEFAULT_LOSSES]:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            if ":" in item:
                name, _, first = item.partition(":")
                out.append((name.strip(), {}))
                item = first
            elif "=" not in item:
                out.append((item, {}))
                continue
            if not out:
                raise CLIError("--losses", f"expected a loss name before the parameter; received {item!r}")
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CLIError("--losses", f"expected NAME or NAME:KEY=VALUE,KEY=VALUE; received {item!r}")
            try:
                out[-1][1][key.strip().replace("-", "_")] = parse_value(value)
            except ValueError:
                raise CLIError("--losses", f"expected a number, 'none' or floats joined by '/'; received {item!r}")
    if not out:
        raise CLIError("--losses", "expected at least one loss; received none")
    return out


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def cmd_compare(args, *, given=frozenset(), stored=frozenset()):
    """The command: resolves ``args`` (``given``: the flags on the command line; ``stored``: those
    ``--resume`` restored) into a spec, validates every loss, and compares them."""
    specs = parse_loss_specs(args.losses or ([fused.DEFAULT_LOSSES] if args.head == "fused" else None))
    shared = resolve.loss_params(args)  # {param: (value, flag)}: each reported under its own flag
    out = Path(args.out)
    resolve.check_before_data(args, out, markers=rundir.COMPARE_FILES, finished=rundir.COMPARISON_JSON,
                              losses=[name for name, _ in specs], flag="--losses")
    runtime.connect_label_shard_workers(args.label_shard_workers)  # the label shards' workers, before the data
    t_start = time.time()
    seeds = list(args.seeds or [args.seed])
    preps = resolve.prepare_seeds(args, seeds, out)
    prep = preps[seeds[0]]
    if prep.head == "fused" and not args.losses:  # --head auto chose it: its default losses
        specs = parse_loss_specs([fused.DEFAULT_LOSSES])
    resolve.check_after_data(args, prep, losses=[name for name, p in specs if "gamma" not in p])
    runs = []
    for name, params in specs:  # validate all first
        given = {**shared, **{k: (v, "--losses") for k, v in params.items()}}
        tagged = resolve.loss_params(args, name, head=prep.head) | given
        heads.HEADS[prep.head].check_loss(name, tagged, prep, "--losses")
        runs.append((name, tagged))
    spec = resolve.spec(args, "compare", settings=prep.settings, head=prep.head, given=given, stored=stored)
    compare(spec, preps, runs, t_start=t_start)


def compare(spec, preps, runs, *, t_start=None):
    """Trains every ``(loss, params)`` of ``runs`` on every seed's preparation (``preps``), then
    aggregates the seeds and writes the comparison (its wall time from ``t_start``)."""
    t_start = time.time() if t_start is None else t_start
    out, run = Path(spec.run.out), spec.run
    seeds, seeded = list(preps), bool(spec.evaluation.seeds)
    prep = preps[seeds[0]]
    labels_text = (f"{prep.pipeline.num_labels} labels ({prep.head} head); {prep.fit_docs} training documents, "
                   f"{len(prep.val[0])} held out for {heads.HEADS[prep.head].held_out_for}, "
                   f"{len(prep.test[0])} {prep.eval_split} documents")
    with rundir.RunLock(out):
        rundir.guard(out, rundir.COMPARE_FILES, resume=run.resume, overwrite=run.overwrite,
                     finished=rundir.COMPARISON_JSON)
        if not (run.resume and (out / rundir.CONFIG_FILE).exists()):
            rundir.write_compare_config(out, spec.to_json(), spec.settings)
        per_loss = []
        k, total = 0, len(runs) * len(seeds)
        for name, tagged in runs:
            label = loss_label(name, tagged)
            per_seed = []
            for seed in seeds:
                k += 1
                run_dir = out / rundir.RUNS_DIR / (_slug(label) + (f"-seed{seed}" if seeded else ""))
                title = (f"[{k}/{total}] {spec.model.model} + {label}" + (f", seed {seed}" if seeded else "")
                         + f": at most {spec.optim.epochs} epoch(s) on {labels_text}")
                per_seed.append(_one(spec.with_seed(seed), preps[seed], name, tagged, run_dir, title, out))
                per_seed[-1]["run_dir"] = str(run_dir)
            per_loss.append(per_seed)
        results, diverged = _aggregate(per_loss)
        facts = comparison.Facts(model=spec.model.model, epochs=spec.optim.epochs,
                                 select=fused.resolve_select(spec.optim.select, prep.head),
                                 patience=spec.optim.patience, seeds=tuple(seeds), seeded=seeded,
                                 threshold_mode=spec.evaluation.threshold_mode, groups=spec.evaluation.groups)
        comparison.write_comparison(facts, prep, results, out, time.time() - t_start, labels_text, diverged)


def _one(spec, prep, name, tagged, run_dir, title, out):
    """One loss on one seed: kept if it finished (or diverged) already, else trained (or resumed)."""
    resume = spec.run.resume
    with rundir.RunLock(run_dir):
        info = stops.diverged_info(run_dir) if resume else None
        if info is not None and not (run_dir / rundir.METRICS_FILE).exists():
            log(f"{title}: diverged already in {run_dir} (no finite epoch), kept as diverged")
            result = {"name": loss_label(name, tagged), "loss": name, "diverged": info, "metrics": None}
        elif resume and rundir.is_finished(run_dir):
            log(f"{title}: finished already in {run_dir}, kept")
            result = load.finished_result(run_dir, prep)
        else:
            resume = resume and (run_dir / rundir.CONFIG_FILE).exists()
            try:
                result = run_one(spec, prep, name, tagged, run_dir, resume=resume,
                                 title=title + (" [resumed]" if resume else ""))
            except RunEnded as e:
                raise stops.ended(e, run_dir, f"fusedfocal compare --resume --out {out}")
    if result.get("diverged"):
        d = result["diverged"]
        log(f"{title}: diverged in epoch {d['epoch']}, batch {d['batch']} ({d.get('value')} "
            f"{d.get('what', 'training loss')}); "
            + (f"kept epoch {d['kept_epoch']}" if d.get("kept_epoch") else "no finite epoch")
            + "; going on with the next loss")
    return result


def _aggregate(per_loss):
    """``(results, diverged)``: each loss's seeds aggregated (a diverged seed marked in its name), and
    the losses none of whose seeds finished an epoch finite."""
    results, diverged = [], []
    for per_seed in per_loss:
        ok = [r for r in per_seed if r.get("metrics") is not None]
        if ok:
            results.append(report.aggregate(ok))
            marks = [comparison.diverged_mark(r["diverged"]) for r in per_seed if r.get("diverged")]
            if marks:  # the table marks it: diverged, with its last finite epoch
                results[-1]["name"] += f" [{'; '.join(marks)}]"
                results[-1]["diverged"] = [r.get("diverged") for r in per_seed]
        else:
            diverged.append({"name": per_seed[0]["name"], "loss": per_seed[0]["loss"],
                             "diverged": [r["diverged"] for r in per_seed],
                             "run_dirs": [r["run_dir"] for r in per_seed]})
    return results, diverged
