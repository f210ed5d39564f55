"""The resolver's checks of the head flags: ``--head-optimizer``, ``--head-dtype``,
``--head-learning-rate`` and ``--label-shards`` against the head, the strategy and a resumed run;
and where the label shards live: ``--label-shards S --strategy multiworker`` puts one on each of
``TF_CONFIG``'s S workers (:func:`label_shard_cluster`), whose chief trains under the default
strategy (:func:`loop_strategy`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from fusedfocal.cli.errors import CLIError

__all__ = ["check_head_flags", "check_resumed_head", "check_head_early", "ShardCluster", "label_shard_cluster",
           "loop_strategy", "label_shards_why"]

_TF_CONFIG = ('TF_CONFIG such as {"cluster": {"worker": ["host0:2222", "host1:2222"], "chief": ["host2:2222"]}, '
              '"task": {"type": "worker", "index": 0}} (task type chief on the chief)')


@dataclass(frozen=True)
class ShardCluster:
    """``TF_CONFIG`` read for label shards on worker processes: the workers' addresses (shard ``s``
    on worker ``s``) and this process's task (``"chief"``: it trains; ``"worker"``: it serves a shard)."""

    workers: tuple
    task_type: str
    index: int

    @property
    def serves(self):
        """Whether this process is a worker (holds shard :attr:`index`, trains nothing)."""
        return self.task_type == "worker"


def label_shard_cluster(args, environ=None):
    """The :class:`ShardCluster` of ``--label-shards S --strategy multiworker`` (``None`` without
    them): ``TF_CONFIG`` must name S workers (else a CLIError naming ``--label-shards``) and this
    process's task, ``chief`` or a worker's index (else naming ``--strategy``)."""
    shards = getattr(args, "label_shards", None)
    if getattr(args, "strategy", None) != "multiworker" or not shards:
        return None
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        raise CLIError("--strategy", f"expected {_TF_CONFIG} with --strategy multiworker --label-shards; received "
                                     "no TF_CONFIG environment variable")
    from fusedfocal.cli.stages.runtime import tf_config_parts

    cluster, task = tf_config_parts(raw, f"expected {_TF_CONFIG}")
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise CLIError("--strategy", f"expected {_TF_CONFIG}: a cluster with the workers' host:port, one label "
                                     f"shard each; received {raw[:120]!r}")
    kind, index = (task or {}).get("type"), (task or {}).get("index", 0)
    if kind not in ("chief", "worker") or not isinstance(index, int) or not 0 <= index < (
            len(workers) if kind == "worker" else 1):
        raise CLIError("--strategy", f"expected {_TF_CONFIG}: task type chief (index 0: trains, holds no shard) or "
                                     f"worker (index 0 to {len(workers) - 1}: holds that label shard); received "
                                     f"task {task!r}")
    if shards != len(workers):
        raise CLIError("--label-shards", f"expected the number of workers in TF_CONFIG ({len(workers)}: one label "
                                         f"shard on each) with --strategy multiworker; received {shards}")
    return ShardCluster(tuple(workers), kind, index)


def loop_strategy(args):
    """The strategy the training loop runs under: ``--strategy``'s, but the default one when the
    label shards live on worker processes (the chief drives each step: the encoder is data-parallel
    over the workers through ``FocalHeadModel(encoder_devices=...)``, the head split, not replicated).
    No other code may create ``MultiWorkerMirroredStrategy`` first: it starts a server of its own."""
    return "default" if label_shard_cluster(args) is not None else args.strategy


def label_shards_why(args):
    """The settings block's reason for ``--label-shards`` (where the shards live, what moves per step)."""
    shards, batch = args.label_shards, args.batch_size
    cluster = label_shard_cluster(args)
    split = f"the head's kernel, bias and slots split by label into {shards} shards"
    moves = (f"[{batch}, H] features and the label ids and returns their gradient and a scalar, whatever the label "
             f"count (no XLA)")
    encoder = f"the encoder data-parallel over the same {shards} " + ("devices" if cluster is None else "workers")
    encoder += f" (each encodes 1/{shards} of a batch's rows, forward and backward; its weights stay here)"
    if cluster is None:
        return f"{split}, one a device; {encoder}; per step each shard gets the {moves}"
    where = ", ".join(f"worker {i} {a}" for i, a in enumerate(cluster.workers))
    return (f"{split}, one on each worker process of TF_CONFIG ({where}); {encoder}; per step each worker gets the "
            f"{moves}, over the network")


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
        raise CLIError("--label-shards", f"expected --strategy default (the shards on this process's devices) or "
                                         f"multiworker (one on each worker of TF_CONFIG) with --label-shards (the "
                                         f"head is split over labels, not replicated); received {replicas} replicas "
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
                     replicas=make_strategy(loop_strategy(args)).num_replicas_in_sync)
    if args.resume and (Path(folder) / rundir.CONFIG_FILE).exists():
        try:
            stored = specs.load(json.loads((Path(folder) / rundir.CONFIG_FILE).read_text())).flat()
        except ValueError:
            stored = {}
        check_resumed_head(stored, args)
