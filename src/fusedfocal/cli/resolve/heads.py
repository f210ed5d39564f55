"""The resolver's checks of the head flags: ``--head-optimizer``, ``--head-dtype``,
``--head-learning-rate`` and ``--label-shards`` against the head, the strategy and a resumed run."""

from __future__ import annotations

from fusedfocal.cli.errors import CLIError

__all__ = ["check_head_flags", "check_resumed_head", "check_head_early"]


def check_head_flags(args, head, *, replicas=1, why_dense=""):
    """``--head-optimizer``, ``--head-dtype`` and ``--head-learning-rate`` against the head and the
    strategy (``None``: not given or not chosen yet). The dense head takes none of them (but the
    defaults); bfloat16 weights need a fused update; a fused update trains one copy of the head,
    so not under a strategy with more than one replica. ``why_dense``: how the dense head was
    chosen (``--head auto`` on this data)."""
    opt, dtype = getattr(args, "head_optimizer", None), getattr(args, "head_dtype", None)
    rate = getattr(args, "head_learning_rate", None)
    _check_label_shards(args, head, replicas, why_dense)
    if head == "dense":
        dense = why_dense or "--head dense"
        for flag, value, default in (("--head-optimizer", opt, "shared"), ("--head-dtype", dtype, "float32")):
            if value not in (None, default):
                raise CLIError(flag, f"expected {default} (or no {flag}) with the dense head, whose Dense logits "
                                     f"layer is trained by --optimizer in float32 ({flag} is the fused head's: "
                                     f"--head fused); received {value} with {dense}")
        if rate is not None:
            raise CLIError("--head-learning-rate", f"expected no --head-learning-rate with the dense head (it is "
                                                   f"the fused head's update's rate: --head fused); received {rate} "
                                                   f"with {dense}")
        return
    if dtype == "bfloat16" and opt == "shared":
        raise CLIError("--head-dtype", "expected --head-optimizer sgd or adam with --head-dtype bfloat16 (their "
                                       "fused update rounds stochastically; the shared Keras optimizer would round "
                                       "every step to nearest and lose the small ones); received --head-optimizer "
                                       "shared")
    if opt == "shared" and rate is not None:
        raise CLIError("--head-learning-rate", f"expected --head-optimizer sgd or adam with --head-learning-rate "
                                               f"(with shared, --learning-rate trains the head); received "
                                               f"--head-learning-rate {rate} with --head-optimizer shared")
    if opt in ("sgd", "adam") and replicas > 1:
        raise CLIError("--head-optimizer", f"expected shared (or no --head-optimizer) with {replicas} replicas "
                                           f"(--strategy {getattr(args, 'strategy', '?')}): a fused update changes "
                                           f"each replica's copy of the head on its own; received {opt}")


def _check_label_shards(args, head, replicas, why_dense):
    shards = getattr(args, "label_shards", None)
    if shards is None:
        return
    if head == "dense":
        raise CLIError("--label-shards", f"expected no --label-shards with the dense head (it splits the fused head's "
                                         f"kernel: --head fused); received {shards} with {why_dense or '--head dense'}")
    if replicas > 1:
        raise CLIError("--label-shards", f"expected --strategy default with --label-shards (the head is split over "
                                         f"labels, not replicated); received {replicas} replicas "
                                         f"(--strategy {getattr(args, 'strategy', '?')})")
    if getattr(args, "jit_compile", "auto") == "on":
        raise CLIError("--jit-compile", "expected auto or off with --label-shards (XLA compiles a step for one "
                                        "device; the shards live on several); received on")


def check_resumed_head(stored, args):
    """``--resume`` with the stored head: a checkpoint holds that head's weights (their dtype, and
    the fused update's slots), so ``--head-optimizer``/``--head-dtype`` given now must match."""
    for name, default in (("head_optimizer", "shared"), ("head_dtype", "float32")):
        was, now = stored.get(name) or default, getattr(args, name, None) or default
        if was != now:
            flag = "--" + name.replace("_", "-")
            raise CLIError(flag, f"expected the interrupted run's {flag} {was} to resume it (its checkpoints hold "
                                 f"that head's weights); received {now}. Start a new run (another --out, or "
                                 f"--overwrite) to change it")


def check_head_early(args, folder):
    """The head flags that are wrong whatever the data, before minutes of data preparation:
    ``--head dense`` with the fused head's flags, a fused update given under several replicas,
    and, on ``--resume``, another head than the stored one (``folder``: the run's or the
    comparison's, holding ``config.json``)."""
    import json
    from pathlib import Path

    from fusedfocal.cli import spec as specs
    from fusedfocal.cli.stages.runtime import make_strategy
    from fusedfocal.cli.store import rundir

    head = getattr(args, "head", None)
    check_head_flags(args, "dense" if head == "dense" else "fused",
                     replicas=make_strategy(args.strategy).num_replicas_in_sync)
    if args.resume and (Path(folder) / rundir.CONFIG_FILE).exists():
        try:
            stored = specs.load(json.loads((Path(folder) / rundir.CONFIG_FILE).read_text())).flat()
        except ValueError:
            stored = {}
        check_resumed_head(stored, args)
