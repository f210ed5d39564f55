"""``fusedfocal profile RUN``: what a profiled run's step and loss cost, from its trace."""

from __future__ import annotations

from pathlib import Path

from fusedfocal.cli.store import rundir
from fusedfocal.cli.errors import CLIError

__all__ = ["add_parser", "cmd_profile", "SUMMARY_FILE"]

SUMMARY_FILE = "profile_summary.json"


def add_parser(sub):
    p = sub.add_parser(
        "profile", help="summarise the profiler trace of a run trained with --profile",
        description="Read the newest profiler trace of a run (RUN/logs/train/plugins/profile/<ts>/*.xplane.pb, "
                    "or RUN/logs/plugins/profile/... without TensorBoard) with the profiler's own converters "
                    "and print the step time, the loss's time per step (forward, backward) and share of the "
                    "step, the top ops or XLA kernels and the input pipeline's share; also written as JSON.")
    p.add_argument("run_dir", metavar="RUN", help="a run folder, its logs/, or one profile session folder")
    p.add_argument("--top", type=int, default=10, help="ops or kernels listed (default 10)")
    p.add_argument("--loss-scope", default="compile_loss/",
                   help="name scope whose ops count as the loss (default compile_loss/, Keras' scope of a "
                        "compiled loss)")
    p.add_argument("--output", metavar="JSON", help=f"write the summary here (default RUN/{SUMMARY_FILE})")
    return p


def cmd_profile(args):
    from fusedfocal import profiling

    run = Path(args.run_dir)
    if not run.exists():
        raise CLIError("RUN", f"expected a run folder trained with --profile STEPS; received {str(run)!r}, "
                              "which does not exist")
    try:
        summary = profiling.summarize(run, loss_scope=args.loss_scope, top=args.top)
    except FileNotFoundError as e:
        raise CLIError("RUN", f"expected a profiler trace; {e}")
    for line in profiling.format_summary(summary):
        print(line)
    out = Path(args.output) if args.output else (run if run.is_dir() else run.parent) / SUMMARY_FILE
    rundir.write_json(out, summary)  # strict JSON, atomic, a write error is a message
    print(f"Wrote {out}")
