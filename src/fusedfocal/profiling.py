"""Profiler helpers: step markers for ``model.fit`` and a summary of a profiler trace.

* :class:`StepMarker` is a Keras 3 callback that names every training step for the TensorFlow
  profiler (``tf.profiler.experimental.Trace("train", step_num=N, _r=1)`` around each call of
  the train function). Without it the profiler's overview page says "No step marker observed"
  and the step-time graph and input-pipeline analysis stay empty. It works with any
  profiler start (``keras.callbacks.TensorBoard(profile_batch=...)``,
  ``tf.profiler.experimental.start``), with and without ``jit_compile``, and under
  ``tf.distribute`` (the train function runs once per global step on the host)::

      model.fit(ds, callbacks=[fusedfocal.profiling.StepMarker(),
                               keras.callbacks.TensorBoard("logs", profile_batch=(2, 6))])

* :func:`summarize` reads the ``*.xplane.pb`` of a run with the profiler's own converters (xprof's
  ``xspace_to_tool_data`` when the ``[profile]`` extra is installed, else TensorFlow's built-in
  ``_pywrap_profiler_plugin``) and returns the step time, the loss's time per step (forward and
  backward) and share of the step, the top ops and the input pipeline's share. ``fusedfocal
  profile RUN`` prints it.

How the loss is found: Keras runs every compiled loss under the name scope ``compile_loss/``
(``compile_loss/sigmoid_focal_loss/...``), and that name reaches the trace in every mode: as the
``long_name`` of TensorFlow op events (graph mode) and as the ``op_name`` metadata of the HLO
instructions that XLA fused (``--jit-compile on``; the trace events carry the HLO instruction
name, which the HLO module stored beside the trace maps back to the op name). Ops that the
gradient tape adds for them (``gradient_tape/compile_loss/...``) and the backward functions of
fusedfocal's losses (name scope ``*_grad``, or the ops that consume the loss's saved gradient)
count as the backward pass.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import defaultdict
from pathlib import Path

import keras
import tensorflow as tf

__all__ = ["StepMarker", "STEP_NAME", "LOSS_SCOPE", "NATIVE_OP", "find_traces", "summarize", "format_summary"]

#: The step marker's event name.
STEP_NAME = "train"
#: Keras' name scope of a compiled loss.
LOSS_SCOPE = "compile_loss/"
#: The native op's type (and its XLA kernel's op type).
NATIVE_OP = "FusedFocalLossGrad"
# tf.data's events: "Iterator::Root::<first stage>" is the consumer's GetNext of a batch (the
# profiler's input-pipeline analysis counts the same events as "Input").
_ROOT_ITERATOR = re.compile(r"^Iterator::Root::\w+$")


# ----------------------------------------------------------------------------- step markers
class StepMarker(keras.callbacks.Callback):
    """A Keras 3 callback that marks each training step for the TensorFlow profiler.

    It wraps ``model.train_function`` for the duration of ``fit`` so that each call runs inside
    ``tf.profiler.experimental.Trace(name, step_num=N, _r=1)``: ``_r=1`` makes it a root event,
    which is what the profiler groups steps by (Keras' own "Profiled batch" event lacks it).
    Its place in the callback list does not matter, and when no profiler is running it costs
    one flag check per step. ``N`` counts the steps this callback saw (across ``fit`` calls),
    from 0; the trace viewer shows the events as ``"<name> N"``.

    Args:
      name: The step event's name in the trace (default ``"train"``).
    """

    def __init__(self, name=STEP_NAME):
        super().__init__()
        self.name = str(name)
        self.steps = 0
        self._wrapped = None

    def on_train_begin(self, logs=None):
        """Wraps ``model.train_function`` in the step trace, unless another marker already did."""
        fn = getattr(self.model, "train_function", None)
        if fn is None or getattr(fn, "_fusedfocal_step_marker", False):
            return

        def marked(*args, **kwargs):
            with tf.profiler.experimental.Trace(self.name, step_num=self.steps, _r=1):
                out = fn(*args, **kwargs)
            self.steps += 1
            return out

        marked._fusedfocal_step_marker = True
        self._wrapped = fn
        self.model.train_function = marked

    def on_train_end(self, logs=None):
        """Puts the model's own ``train_function`` back."""
        if self._wrapped is not None:
            self.model.train_function = self._wrapped
            self._wrapped = None


# ----------------------------------------------------------------------------- reading traces
def find_traces(path):
    """The newest profile session under ``path``: ``(session_dir, [*.xplane.pb])``.

    ``path`` is a run folder, its ``logs/``, or a session folder. Keras' TensorBoard callback
    writes ``RUN/logs/train/plugins/profile/<timestamp>/`` (with the ``tensorboard`` package);
    without it, fusedfocal's scalar logger writes ``RUN/logs/plugins/profile/<timestamp>/``.
    Traces of other workers (``RUN/workers/worker-I/logs/...``) are not included.
    """
    path = Path(path)
    files = sorted(path.glob("*.xplane.pb"))
    if files:
        return path, files
    sessions = {}
    for pattern in ("plugins/profile/*/*.xplane.pb", "*/plugins/profile/*/*.xplane.pb",
                    "logs/plugins/profile/*/*.xplane.pb", "logs/*/plugins/profile/*/*.xplane.pb"):
        for f in path.glob(pattern):
            sessions.setdefault(f.parent, set()).add(f)
    if not sessions:
        return None, []
    newest = max(sessions, key=lambda d: (d.name, str(d)))
    return newest, sorted(sessions[newest])


class _Converter:
    """The profiler's converters: xprof's when installed, else TensorFlow's built-in plugin."""

    def __init__(self, files):
        self.files = [str(f) for f in files]
        try:
            from xprof.convert import raw_to_tool_data  # noqa: F401

            self.backend = "xprof"
        except ImportError:
            self.backend = "tensorflow"

    def tool(self, name, options=None):
        if self.backend == "xprof":
            from xprof.convert import raw_to_tool_data

            params = {"graph_viewer_options": options} if name == "graph_viewer" else dict(options or {})
            data, _ = raw_to_tool_data.xspace_to_tool_data(self.files, name, params)
            return data
        from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

        data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(self.files, name, dict(options or {}))
        return data if ok else None

    def tool_names(self):
        """Also makes the converter write ``<module>.hlo_proto.pb`` beside the trace (as TensorBoard does)."""
        if self.backend == "xprof":
            from xprof.convert import raw_to_tool_data

            return raw_to_tool_data.xspace_to_tool_names(self.files)
        from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

        data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(self.files, "tool_names", {})
        return data.decode().split(",") if ok else []

    def events(self):
        """Complete trace events as dicts ``{pid, tid, name, ts, dur, args}`` (microseconds).

        The trace viewer converts one host's XSpace at a time: the first file (this host's)."""
        files, self.files = self.files, self.files[:1]
        try:
            return self._events()
        finally:
            self.files = files

    def _events(self):
        if self.backend == "xprof":
            data = self.tool("trace_viewer")
            trace = json.loads(data) if data else {"traceEvents": []}
            threads = {(e.get("pid"), e.get("tid")): e["args"].get("name", "") for e in trace["traceEvents"]
                       if e.get("ph") == "M" and e.get("name") == "thread_name"}
            out = []
            for e in trace["traceEvents"]:
                if e.get("ph") == "X":
                    out.append({"pid": e.get("pid"), "tid": e.get("tid"), "name": e.get("name", ""),
                                "ts": float(e.get("ts", 0.0)), "dur": float(e.get("dur", 0.0)),
                                "args": e.get("args", {}),
                                "thread": threads.get((e.get("pid"), e.get("tid")), "")})
            return out
        from tensorflow.tsl.profiler.protobuf import trace_events_pb2

        data = self.tool("trace_viewer")
        trace = trace_events_pb2.Trace()
        if data:
            trace.ParseFromString(data)
        threads = {(pid, rid): r.name for pid, dev in trace.devices.items() for rid, r in dev.resources.items()}
        return [{"pid": e.device_id, "tid": e.resource_id, "name": e.name, "ts": e.timestamp_ps / 1e6,
                 "dur": e.duration_ps / 1e6, "args": dict(e.args),
                 "thread": threads.get((e.device_id, e.resource_id), "")} for e in trace.trace_events]

    def hlo_modules(self, session_dir):
        """``{module name: {instruction name: [op names of it and its fused instructions]}}``."""
        try:
            from tensorflow.compiler.xla.service import hlo_pb2
        except ImportError:  # pragma: no cover - TF without the XLA protos
            return {}
        out = {}
        for f in glob.glob(os.path.join(str(session_dir), "*.hlo_proto.pb")):
            proto = hlo_pb2.HloProto()
            with open(f, "rb") as fh:
                proto.ParseFromString(fh.read())
            m = proto.hlo_module
            comps = {c.id: c for c in m.computations}

            def names(inst, depth=0):
                found = [inst.metadata.op_name] if inst.metadata.op_name else []
                if depth < 4:
                    for cid in inst.called_computation_ids:
                        for sub in comps[cid].instructions if cid in comps else ():
                            found += names(sub, depth + 1)
                return found

            table = {}
            for c in m.computations:
                for inst in c.instructions:
                    if inst.opcode in ("parameter", "constant", "bitcast", "get-tuple-element", "tuple"):
                        continue
                    table[inst.name] = {"op_names": names(inst), "op_type": inst.metadata.op_type,
                                        "opcode": inst.opcode, "target": inst.custom_call_target}
            out[m.name] = table
        return out


def _loads(data):
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        return None


# ----------------------------------------------------------------------------- summary
def _self_times(events):
    """Self time of every event (its duration minus that of the events nested in it, per thread)."""
    by_thread = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e["pid"], e["tid"])].append(i)
    self_time = [e["dur"] for e in events]
    for idx in by_thread.values():
        idx.sort(key=lambda i: (events[i]["ts"], -events[i]["dur"]))
        stack = []
        for i in idx:
            e = events[i]
            while stack and events[stack[-1]]["ts"] + events[stack[-1]]["dur"] <= e["ts"] + 1e-9:
                stack.pop()
            if stack:
                self_time[stack[-1]] -= e["dur"]
            stack.append(i)
    return [max(t, 0.0) for t in self_time]


def _classify(op_names, loss_scope):
    """``"forward"``, ``"backward"`` or ``None`` for an op (or a fusion of ops) by name."""
    kinds = set()
    for n in op_names:
        n = re.sub(r"^(StatefulPartitionedCall/|PartitionedCall/|replica_\d+/)+", "", n)
        if f"gradient_tape/{loss_scope}" in n or re.search(r"(^|/)[A-Za-z0-9_]*_loss_grad(/|$)", n):
            kinds.add("backward")
        elif n.startswith(loss_scope) or f"/{loss_scope}" in n:
            kinds.add("forward")
    if "forward" in kinds:
        return "forward"
    return "backward" if kinds else None


def summarize(path, *, loss_scope=LOSS_SCOPE, top=10):
    """A summary of the newest profiler trace under ``path`` (a run folder or a session folder).

    Returns a dict: ``trace`` (files, converter), ``steps`` (count and mean/min/max step time in
    ms, from the step markers), ``xla`` (whether XLA programs ran), ``loss`` (forward, backward
    and total ms per step, share of the step, the events found and the search terms), ``top_ops``
    (the ``top`` ops or XLA kernels by self time per step) and ``input`` (the input pipeline's
    time per step and share). Raises ``FileNotFoundError`` when there is no trace.
    """
    session, files = find_traces(path)
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {path} (expected RUN/logs/train/plugins/profile/<ts>/ "
                                f"or RUN/logs/plugins/profile/<ts>/; train with --profile STEPS)")
    conv = _Converter(files)
    conv.tool_names()  # writes the HLO modules beside the trace (XLA runs)
    hlo = conv.hlo_modules(session)
    events = conv.events()
    steps, marker = _step_events(events)
    n_steps = len(steps)
    step_ms = [e["dur"] / 1e3 for e in steps]
    mean_step = sum(step_ms) / n_steps if n_steps else 0.0
    ops, loss, found, input_us, xla = _self_time_by_op(events, hlo, loss_scope)

    per = 1.0 / n_steps if n_steps else 0.0
    loss_ms = {k: v * per / 1e3 for k, v in loss.items()}
    total = loss_ms["forward"] + loss_ms["backward"]
    ranked = sorted(ops.items(), key=lambda kv: -kv[1]["us"])[:top]
    overview = _loads(conv.tool("overview_page"))
    profiler_step = _overview_step_ms(overview)
    input_ms = input_us * per / 1e3
    analyzer = _analyzer_input_ms(_loads(conv.tool("input_pipeline_analyzer")))
    input_source = "trace: Iterator::Root::* events (tf.data GetNext of each batch)"
    if analyzer is not None and n_steps:  # the profiler's own per-step "Input" time (xprof)
        input_ms, input_source = analyzer, "the profiler's input-pipeline analysis (per-step Input time)"
    return {
        "trace": {"session": str(session), "files": [str(f) for f in files], "converter": conv.backend},
        "xla": xla,
        "steps": {"count": n_steps, "marker": marker, "mean_ms": mean_step,
                  "min_ms": min(step_ms) if step_ms else 0.0, "max_ms": max(step_ms) if step_ms else 0.0,
                  "profiler_overview_ms": profiler_step},
        "loss": {"forward_ms": loss_ms["forward"], "backward_ms": loss_ms["backward"], "total_ms": total,
                 "share": total / mean_step if mean_step else 0.0, "scope": loss_scope,
                 "events": [{"name": k, "kind": v["kind"], "per_step_us": v["us"] * per, "count": v["count"]}
                            for k, v in sorted(found.items(), key=lambda kv: -kv[1]["us"])],
                 "search": search_terms(xla)},
        "top_ops": [{"name": k, "op": v["op"], "loss": v["kind"], "per_step_ms": v["us"] * per / 1e3,
                     "share": (v["us"] * per / 1e3) / mean_step if mean_step else 0.0, "count": v["count"]}
                    for k, v in ranked],
        "input": {"per_step_ms": input_ms, "share": input_ms / mean_step if mean_step else 0.0,
                  "source": input_source},
    }


def _step_events(events):
    """The training steps' events and what marked them: fusedfocal's step markers, else Keras' own
    batch events (no step markers: still gives a step time), else none."""
    # The converter renames step events to "<name> <step_num>" (args: step_name, step_num).
    step_re = re.compile(rf"^{re.escape(STEP_NAME)}( \d+)?$")
    steps = [e for e in events if step_re.match(e["name"]) and "step_num" in e["args"]]
    if steps:
        return steps, f"{STEP_NAME} (fusedfocal.profiling.StepMarker)"
    steps = [e for e in events if e["name"] == "Profiled batch"]
    return steps, "Profiled batch (Keras; no step markers)" if steps else None


def _op_event(e, hlo):
    """``(label, op_names, op_type)`` of a TensorFlow op or XLA kernel event, else None."""
    args = e["args"]
    if "hlo_op" in args:  # an XLA kernel (thunk) event
        info = hlo.get(args.get("hlo_module", ""), {}).get(args["hlo_op"], {})
        label = e["name"]
        if info.get("target"):
            label += f" (custom call {info['target']})"
        return label, info.get("op_names", []), info.get("op_type", "")
    if "long_name" in args and ":" in args["long_name"]:  # a TensorFlow op event
        return e["name"], [args["long_name"].rsplit(":", 1)[0]], e["name"]
    return None


def _self_time_by_op(events, hlo, loss_scope):
    """Self time (us, whole trace) per op or XLA kernel and of the loss's forward and backward ops, and
    the input pipeline's time: ``(ops, loss, found, input_us, xla)``."""
    ops = defaultdict(lambda: {"us": 0.0, "count": 0, "kind": None, "op": ""})
    loss = {"forward": 0.0, "backward": 0.0}
    found = defaultdict(lambda: {"us": 0.0, "count": 0, "kind": None})
    input_us = 0.0
    xla = False
    for e, st in zip(events, _self_times(events)):
        args = e["args"]
        xla = xla or "hlo_op" in args
        if "hlo_op" not in args and args.get("long_name", "").startswith("Iterator::"):  # tf.data
            if _ROOT_ITERATOR.match(args["long_name"]):  # the step's GetNext from the input pipeline
                input_us += e["dur"]
            continue
        op = _op_event(e, hlo)
        if op is None:
            continue
        label, op_names, op_type = op
        kind = _classify(op_names, loss_scope)
        if kind is None and (op_type == NATIVE_OP or info_target(args, hlo) == "fusedfocal_focal_loss"):
            kind = "forward"
        o = ops[label]
        o["us"] += st
        o["count"] += 1
        o["kind"] = o["kind"] or kind
        o["op"] = o["op"] or (op_names[0] if op_names else "")
        if kind:
            loss[kind] += st
            f = found[label]
            f["us"] += st
            f["count"] += 1
            f["kind"] = kind
    return ops, loss, found, input_us, xla


def info_target(args, hlo):
    return hlo.get(args.get("hlo_module", ""), {}).get(args.get("hlo_op", ""), {}).get("target", "")


def _overview_step_ms(overview):
    """The overview page's average step time (ms), or None when the converter gave none."""
    try:
        for table in overview:
            p = table.get("p", {})
            if "steptime_ms_average" in p:
                return float(p["steptime_ms_average"])
    except (TypeError, AttributeError, ValueError):
        pass
    return None


def _analyzer_input_ms(tables):
    """The input-pipeline analyzer's mean input time per step (ms, from its per-step rows), or None."""
    try:
        for table in tables:
            ids = [c.get("id") for c in table.get("cols", [])]
            if "infeedTimeMs" in ids and table.get("rows"):
                k = ids.index("infeedTimeMs")
                vals = [float(r["c"][k]["v"]) for r in table["rows"]]
                return sum(vals) / len(vals)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError):
        pass
    return None


def search_terms(xla):
    """What to type in the trace viewer's search box to find the loss."""
    if xla:
        return {"trace_viewer": NATIVE_OP,
                "note": "XLA kernels are named after HLO instructions; the fused op runs as the custom call "
                        "fusedfocal_focal_loss, the pure-TF path as anonymous fusions whose op_name "
                        "metadata starts with compile_loss/ (fusedfocal profile lists them)"}
    return {"trace_viewer": NATIVE_OP, "note": "TensorFlow op events are named by op type; long_name holds "
                                              "compile_loss/<loss>/..."}


def format_summary(s):
    """The summary as printed lines."""
    st, lo = s["steps"], s["loss"]
    lines = [f"Trace: {s['trace']['session']} ({len(s['trace']['files'])} file(s), converter: "
             f"{s['trace']['converter']}; {'XLA' if s['xla'] else 'no XLA'})"]
    if st["count"]:
        lines.append(f"Step time: {st['mean_ms']:.3f} ms mean over {st['count']} step(s) "
                     f"(min {st['min_ms']:.3f}, max {st['max_ms']:.3f}; marker: {st['marker']})")
    else:
        lines.append("Step time: unknown (no step markers in the trace: train with fusedfocal.profiling.StepMarker)")
    if st.get("profiler_overview_ms") is not None:
        lines.append(f"  profiler overview page: {st['profiler_overview_ms']:.3f} ms")
    lines.append(f"Loss ({lo['scope']}...): {lo['total_ms']:.4f} ms per step = {100 * lo['share']:.2f}% of the step "
                 f"(forward {lo['forward_ms']:.4f} ms, backward {lo['backward_ms']:.4f} ms)")
    for ev in lo["events"][:8]:
        lines.append(f"  {ev['kind']:<8} {ev['per_step_us']:9.2f} us/step  {ev['name']}")
    lines.append(f"Input pipeline: {s['input']['per_step_ms']:.4f} ms per step = {100 * s['input']['share']:.2f}% "
                 f"of the step (from {s['input']['source']})")
    lines.append("Top ops by self time per step:")
    for o in s["top_ops"]:
        tag = f" [loss {o['loss']}]" if o["loss"] else ""
        lines.append(f"  {o['per_step_ms']:9.4f} ms {100 * o['share']:6.2f}%  {o['name']}{tag}  {o['op'][:70]}")
    return lines
