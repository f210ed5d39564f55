"""The resolved run spec: one frozen, typed config per stage, and where each value came from.

The parser reads the flags; :mod:`fusedfocal.cli.resolve` completes them from the data (or from a
run folder's ``config.json``) and freezes them here. Below the commands, nothing sees the flags:
each stage takes its own config, and its signature says what it reads.

==================  ==============================================  =================================
config              stage                                           fields
==================  ==============================================  =================================
:class:`DataConfig`     read the files, hold out validation            ``--data``, ``--eval``, fields, ``--val-size``
:class:`ModelConfig`    build the encoder                              ``--model`` ... ``--encoder``
:class:`HeadConfig`     the head (dense or fused) and its update       ``--head`` ... ``--label-shards``
:class:`LossConfig`     the loss(es)                                   ``--loss``/``--losses`` and parameters
:class:`OptimConfig`    fit and select                                 ``--optimizer`` ... ``--select``
:class:`RuntimeConfig`  strategy, precision, XLA, determinism          ``--strategy`` ... ``--deterministic``
:class:`RunConfig`      the run folder                                 ``--out``, ``--resume``, ``--overwrite``, ...
:class:`EvalConfig`     thresholds, groups, seeds of a comparison      ``--threshold-mode``, ``--groups``, ``--seeds``
==================  ==============================================  =================================

``config.json`` stores :meth:`Spec.to_json` under ``"spec"`` (``"fusedfocal_cli": 2``);
:func:`load` reads it back, and migrates a version-1 file (a flat ``"args"`` dict of the flags).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["Setting", "DataConfig", "ModelConfig", "HeadConfig", "LossConfig", "OptimConfig", "RuntimeConfig", "RunConfig",
           "EvalConfig", "Spec", "SECTIONS", "VERSION", "load", "SOURCES"]

VERSION = 2
# Where a value came from: given on the command line, stored in the run folder's config.json
# (--resume), chosen from the data, the model's own default, or the command line's default.
SOURCES = ("flag", "stored", "data", "model", "default")


@dataclass
class Setting:
    """One resolved setting: its value, where it came from (``"flag"``, ``"data"``, ``"model"`` or
    ``"default"``) and why (printed in the settings block, stored in ``config.json``)."""

    value: object
    source: str
    why: str

    def as_dict(self):
        return {"value": self.value, "source": self.source, "why": self.why}


def settings_from_json(stored):
    """``{name: Setting}`` of a ``config.json``'s ``"settings"`` (``{}`` for an older run folder)."""
    return {k: Setting(v.get("value"), v.get("source", "flag"), v.get("why", "")) for k, v in (stored or {}).items()}


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


@dataclass(frozen=True)
class DataConfig:
    """The data stage: which files, how to read them, the validation hold-out."""

    data: tuple | None = None  # None: the built-in synthetic corpus
    eval: tuple | None = None
    text_field: str | None = "text"
    labels_field: str | None = "labels"
    label_separator: str | None = "|"
    split_string_labels: bool = False
    val_size: float | int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """The build stage's encoder (the dense head's logits layer too)."""

    model: str | None = None
    encoder: str | None = None  # a KerasHub preset or path: the encoder is that backbone
    vocab_size: int | None = None
    max_length: int | None = None
    embed_dim: int | None = None
    filters: int = 96
    layers: int = 1
    dropout: float = 0.2
    prior_bias: bool = True
    ngram_hidden: int | None = None
    ngram_bigrams: int | None = None
    ngram_weighting: str | None = "tfidf"
    seed: int = 0


@dataclass(frozen=True)
class HeadConfig:
    """Which head (``"auto"`` until the label count resolves it), and the fused head's update."""

    head: str | None = "auto"
    fused_head_above: int | None = 4096
    head_optimizer: str | None = None
    head_dtype: str | None = None
    head_learning_rate: float | None = None
    label_shards: int | None = None


@dataclass(frozen=True)
class LossConfig:
    """``--loss`` (train) or ``--losses`` (compare) and the loss parameters' flags."""

    loss: str | None = None
    losses: tuple | None = None
    gamma: float | None = None
    alpha: str | float | None = None
    gamma_neg: float | None = None
    gamma_pos: float | None = None
    clip: float | None = None
    beta: float | None = None
    label_smoothing: float | None = None
    loss_param: tuple | None = None


@dataclass(frozen=True)
class OptimConfig:
    """The fit and select stages: the optimizer, the batches and epochs, the best-epoch rule."""

    optimizer: str | None = None
    learning_rate: float | None = None
    adam_epsilon: float | None = None
    weight_decay: float = 0.0
    warmup: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    patience: int | None = None
    select: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class RuntimeConfig:
    """Process-wide runtime: the ``tf.distribute`` strategy, precision, XLA, determinism, seeds.

    ``label_shard_workers``: not a flag; the resolver's reading of ``--strategy multiworker`` with
    ``--label-shards S``: ``TF_CONFIG``'s worker addresses, one label shard on each, this process
    their chief (``None`` otherwise). The chief's training loop then runs under the default
    strategy (:attr:`loop_strategy`): the head is split over the workers, not replicated."""

    strategy: str = "default"
    mixed_precision: str = "off"
    jit_compile: str = "auto"
    deterministic: bool = False
    seed: int = 0
    label_shard_workers: tuple | None = None

    @property
    def loop_strategy(self):
        """The ``tf.distribute`` strategy the training loop runs under: ``--strategy``'s, but
        ``"default"`` where the label shards live on worker processes."""
        return "default" if self.label_shard_workers else self.strategy


@dataclass(frozen=True)
class RunConfig:
    """The run folder and what the run prints into it."""

    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    verbose: int = 1
    profile: int = 0


@dataclass(frozen=True)
class EvalConfig:
    """The evaluate stage: label groups, the comparison's threshold mode and seeds."""

    groups: object = None  # "auto", "huang" or (head_min, tail_max)
    threshold_mode: str = "global"
    seeds: tuple | None = None


SECTIONS = {"data": DataConfig, "model": ModelConfig, "head": HeadConfig, "loss": LossConfig,
            "optim": OptimConfig, "runtime": RuntimeConfig, "run": RunConfig, "evaluation": EvalConfig}
# flags that live in several sections (each stage reads its own copy)
SHARED = {"seed": ("data", "model", "optim", "runtime")}


@dataclass(frozen=True)
class Spec:
    """The whole resolved run: one config per stage, ``sources`` (``{flag name: source}``, see
    :data:`SOURCES`) and ``settings`` (``{name: Setting}``: the values chosen from the data or the
    model, with why; printed in the settings block)."""

    command: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=RunConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    sources: dict = field(default_factory=dict, compare=False)
    settings: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_flat(cls, command, flat, *, sources=None, settings=None):
        """A spec of the flag values ``flat`` (``{dest: value}``: the parser's names); unknown names
        are ignored (another command's flags), missing ones take the field's default."""
        parts = {}
        for name, section in SECTIONS.items():
            kw = {f.name: _tuple(flat[f.name]) for f in dataclasses.fields(section) if f.name in flat}
            parts[name] = section(**kw)
        return cls(command, **parts, sources=dict(sources or {}), settings=dict(settings or {}))

    def flat(self):
        """``{flag dest: value}`` of every section (what ``--resume`` sets as the parser's defaults)."""
        out = {}
        for name in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, name)))
        return out

    def with_seed(self, seed):
        """This spec with ``seed`` in every section that reads one (``compare --seeds``)."""
        return dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s), seed=seed)
                                            for s in SHARED["seed"]})

    def to_json(self):
        """``{"command", section: {field: value}, "sources"}``: what ``config.json`` stores as ``"spec"``."""
        out = {"command": self.command}
        for name in SECTIONS:
            out[name] = {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in dataclasses.asdict(getattr(self, name)).items()}
        out["sources"] = dict(self.sources)
        return out

    @classmethod
    def from_json(cls, obj, settings=None):
        parts = {}
        for name, section in SECTIONS.items():
            stored = obj.get(name) or {}
            names = {f.name for f in dataclasses.fields(section)}
            parts[name] = section(**{k: _tuple(v) for k, v in stored.items() if k in names})
        return cls(obj.get("command", "train"), **parts, sources=dict(obj.get("sources") or {}),
                   settings=dict(settings or {}))


def load(config):
    """The :class:`Spec` of a run folder's ``config.json`` (a dict): version 2 stores it under
    ``"spec"``; version 1 (before the spec) stored the flags as one flat ``"args"`` dict, which is
    migrated here (every value's source is then ``"stored"``)."""
    settings = settings_from_json(config.get("settings"))
    if "spec" in config:
        return Spec.from_json(config["spec"], settings)
    flat = dict(config.get("args") or {})
    if config.get("head") in ("dense", "fused"):  # the head --head resolved to on the run's data
        flat["head"] = config["head"]
    command = config.get("command", "train")
    return Spec.from_flat(command, flat, sources={k: "stored" for k in flat}, settings=settings)
