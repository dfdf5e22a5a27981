"""`wwwserve bench SCENARIO.toml`: every policy on the same scenario, then the comparison."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from wwwserve.bench.report import curve_ratios, summarize, table, write_csv, write_plots
from wwwserve.bench.runner import POLICY_FLAGS, Record, run_policy
from wwwserve.bench.scenario import load_scenario
from wwwserve.bench.workload import arrivals


async def run_bench(path: Path, policies: list[str], json_out: bool, out: Path | None) -> dict[str, Any]:
    """Run the scenario under each policy; print a table (or JSON); write CSV and plots to `out`."""
    unknown = [p for p in policies if p not in POLICY_FLAGS]
    if unknown:
        raise ValueError(f"unknown policies {unknown}: use {sorted(POLICY_FLAGS)}")
    scenario = load_scenario(path)
    todo = arrivals(scenario)
    console = Console(stderr=True)
    records: dict[str, list[Record]] = {}
    measures: dict[str, dict[str, float]] = {}
    with Progress(console=console, transient=json_out) as progress:
        for policy in policies:
            task = progress.add_task(f"{scenario.name}: {policy}", total=len(todo))
            logs = out / "logs" / policy if out is not None else None
            measures[policy] = {}
            records[policy] = await run_policy(
                scenario, policy, todo, partial(progress.advance, task), logs, measures[policy]
            )
    results = {p: {**summarize(r, scenario.workload), **measures[p]} for p, r in records.items()}
    if "isolated" in results:  # the reference's headline: best (and worst) ratio over the e2e sweep
        base = results["isolated"]["e2e_slo_curve"]
        for name, s in results.items():
            if name != "isolated":
                s["e2e_slo_ratio_vs_isolated"] = curve_ratios(s["e2e_slo_curve"], base)
    doc = {"scenario": scenario.name, "requests": len(todo), "policies": results}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "requests.csv", records)
        write_plots(out, results, records)
        (out / "summary.json").write_text(json.dumps(doc, indent=2))
    if json_out:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        Console().print(table(results, f"{scenario.name}: {len(todo)} requests"))
    return doc
