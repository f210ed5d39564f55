"""Print the text-pipeline throughput table from a pytest-benchmark JSON.

Usage::

    .venv/bin/pytest benchmarks/bench_pipeline.py --benchmark \\
        --benchmark-json benchmarks/results/pipeline-<date>.json
    .venv/bin/python benchmarks/pipeline_report.py benchmarks/results/pipeline-<date>.json

Columns: median-epoch documents/s and tokens/s (non-padding ids), and the
``fusedfocal`` (uncached) rate divided by each provider's (``ours / theirs``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(path: Path) -> str:
    """Markdown table of docs/s, tokens/s and ratios, one row per corpus and provider."""
    payload = json.loads(path.read_text())
    rows: dict[tuple[str, str], dict] = {}
    for bench in payload["benchmarks"]:
        info = bench["extra_info"]
        rows[(info["corpus"], info["provider"])] = info
    machine = payload.get("machine_info", {})
    lines = [
        f"machine: {machine.get('machine', '?')}, {machine.get('cpu', {}).get('count', '?')} CPUs, "
        f"{machine.get('cpu', {}).get('brand_raw', '')}; date: {payload.get('datetime', '?')[:10]}",
        "",
        "| corpus | provider | docs | docs/s | tokens/s | fusedfocal / provider |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for corpus in sorted({c for c, _ in rows}):
        ours = rows.get((corpus, "fusedfocal"), {}).get("docs_per_s")
        for (c, provider), info in sorted(rows.items(), key=lambda kv: -kv[1]["docs_per_s"]):
            if c != corpus:
                continue
            ratio = f"{ours / info['docs_per_s']:.2f}x" if ours else "-"
            lines.append(f"| {corpus} | {provider} | {info['docs']:,} | {info['docs_per_s']:,.0f} | "
                         f"{info['tokens_per_s']:,.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="?", help="pytest-benchmark JSON (default: newest pipeline-*.json)")
    args = parser.parse_args(argv)
    path = args.json or max(Path("benchmarks/results").glob("pipeline-*.json"), key=lambda p: p.stat().st_mtime)
    print(table(path))


if __name__ == "__main__":
    main()
