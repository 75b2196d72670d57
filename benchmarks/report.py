"""Turns trial records into figures: median and spread per store and system, one printed
table, and a JSON document with every raw trial beside the aggregated figures.

Targets from the speed issue are printed next to the figures for orientation only; nothing
here passes or fails. With peers, each peer's fastest configuration and its defaults get a
column each, and one column says how many times better duratask is than the fastest.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.peers import PEERS

STORE_ORDER = ("memory", "sqlite", "postgresql", "azure")


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    better: str  # "higher", "lower" or "" (neither: a reference)
    targets: tuple[tuple[str, str], ...] = ()  # (store or "*", target text)

    def target_for(self, store: str) -> str:
        for where, text in self.targets:
            if where in ("*", store):
                return text
        return ""


# What each workload reports, in table order. Derived figures are computed below.
METRICS: dict[str, tuple[Metric, ...]] = {
    "L": (
        Metric("commits_per_s", "raw commits/s", "higher"),
        Metric("store_thread_commits_per_s", "commits/s via duratask's db layer", ""),
    ),
    "W1": (
        Metric("act_per_s", "activities/s", "higher"),
        Metric("orch_per_s", "orchestrations/s", "higher"),
        Metric("act_fraction_of_l", "activities/s ÷ L (1 conn)", "higher"),
        Metric("worker_cpu_s_per_1k", "worker CPU-s per 1,000 activities", "lower"),
        Metric("pg_cpu_s_per_1k", "server CPU-s per 1,000 activities", "lower"),
        Metric("workers_per_pg_core", "worker CPU ÷ server CPU", ""),
        Metric(
            "storage_calls_per_activity",
            "storage calls per activity (worker)",
            "lower",
            (("azure", "< 5 (the original's)"),),
        ),
    ),
    "W2": (
        Metric("seconds", "seconds", "lower", (("sqlite", "< 2 s"),)),
        Metric("act_per_s", "activities/s", "higher"),
    ),
    "W3": (
        Metric(
            "p50_ms",
            "p50 ms, client-observed",
            "lower",
            (("sqlite", "≤ 1.0 ms"), ("postgresql", "≤ 2.0 ms")),
        ),
        Metric("p99_ms", "p99 ms, client-observed", "lower"),
        Metric("store_p50_ms", "p50 ms, store created→completed", "lower"),
        Metric("store_p99_ms", "p99 ms, store created→completed", "lower"),
    ),
    "W4": (
        Metric("ms_per_step", "ms per step", "lower"),
        Metric("first_ms_per_step", "ms per step, first 50 steps", "lower"),
        Metric("last_ms_per_step", "ms per step, last 50 steps", "lower"),
    ),
    "W5": (
        Metric("rss_mb", "worker RSS MiB while idle", "lower", (("*", "< 200 MB"),)),
        Metric("idle_cpu_pct", "idle CPU % of one core", "lower", (("*", "< 2 %"),)),
        Metric("deliver_seconds", "seconds to deliver all events", "lower"),
        Metric("setup_seconds", "seconds to start all and reach the wait", "lower"),
    ),
    "W6": (
        Metric("signals_per_s", "signals/s processed", "higher"),
        Metric("call_p50_ms", "call_entity round trip p50 ms", "lower"),
        Metric("call_p99_ms", "call_entity round trip p99 ms", "lower"),
    ),
    "W7": (
        Metric("idle_cpu_pct", "idle CPU % of one core", "lower", (("*", "< 2 %"),)),
        Metric("setup_seconds", "seconds to create the schedules", "lower"),
    ),
}
W1_TARGETS = {"in-process": (("sqlite", "≥ 2,000 /s"),), "2 procs": (("postgresql", "≥ 1,000 /s"),)}
W6_TARGETS = {"1 entity": (("sqlite", "≥ 5,000 /s"),)}
W4_RATIO = Metric("ratio", "ratio ms/step long ÷ short", "lower", (("*", "≤ 1.3"),))

WORKLOAD_TITLES = {
    "L": "L",
    "W1": "W1 sequence",
    "W2": "W2 fan-out",
    "W3": "W3 latency",
    "W4": "W4 chain",
    "W5": "W5 idle",
    "W6": "W6 entities",
    "W7": "W7 idle schedules",
}


@dataclass(slots=True)
class Cell:
    """The repetitions of one figure for one store and system."""

    values: list[float] = field(default_factory=list)
    lower_bounds: list[float] = field(default_factory=list)  # from timed-out runs
    timeouts: int = 0
    skipped: int = 0  # not run: the same figure timed out before
    errors: int = 0

    @property
    def empty(self) -> bool:
        return not (
            self.values or self.lower_bounds or self.timeouts or self.skipped or self.errors
        )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(self.values), "values": self.values}
        if self.values:
            out |= {
                "median": statistics.median(self.values),
                "min": min(self.values),
                "max": max(self.values),
            }
        if self.lower_bounds:
            out["lower_bounds"] = self.lower_bounds
        if self.timeouts:
            out["timeouts"] = self.timeouts
        if self.skipped:
            out["skipped"] = self.skipped
        if self.errors:
            out["errors"] = self.errors
        return out

    def text(self) -> str:
        parts: list[str] = []
        if self.values:
            median = statistics.median(self.values)
            text = fmt(median)
            if len(self.values) > 1:
                text += f" ({fmt(min(self.values))}-{fmt(max(self.values))})"
            parts.append(text)
        elif self.lower_bounds:
            parts.append(f"≥ {fmt(max(self.lower_bounds))}")
        if self.timeouts:
            parts.append("timeout" if self.timeouts == 1 else f"{self.timeouts}x timeout")
        if self.skipped:
            parts.append(f"{self.skipped} not rerun")
        if self.errors:
            parts.append("error" if self.errors == 1 else f"{self.errors}x error")
        return " ".join(parts[:1]) + (f" [{', '.join(parts[1:])}]" if len(parts) > 1 else "")


def fmt(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass(slots=True)
class Row:
    workload: str
    variant: str
    metric: Metric
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (store, system)

    @property
    def label(self) -> str:
        title = WORKLOAD_TITLES.get(self.workload, self.workload)
        variant = f" {self.variant}" if self.variant else ""
        return f"{title}{variant}: {self.metric.label}"

    def cell(self, store: str, system: str) -> Cell:
        return self.cells.setdefault((store, system), Cell())


def _rows_in_order(trials: list[dict[str, Any]]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for trial in trials:
        key = (trial["workload"], trial["variant"])
        if key not in seen:
            seen.append(key)
    order = list(METRICS)
    return sorted(seen, key=lambda k: order.index(k[0]) if k[0] in order else 99)


def build_rows(trials: list[dict[str, Any]]) -> list[Row]:
    """Aggregate the trials into table rows (figure, store, system)."""
    limits = _limits_by_store_rep(trials)
    rows: list[Row] = []
    for workload, variant in _rows_in_order(trials):
        group = [t for t in trials if (t["workload"], t["variant"]) == (workload, variant)]
        for metric in METRICS.get(workload, ()):
            if workload == "W1":
                metric = Metric(
                    metric.key, metric.label, metric.better, _w1_targets(metric, variant)
                )
            row = Row(workload, variant, metric)
            for trial in group:
                cell = row.cell(trial["store"], trial["system"])
                value = _metric_value(trial, metric.key, limits)
                if trial["status"] == "ok":
                    if value is not None:
                        cell.values.append(value)
                elif trial["status"] == "timeout":
                    cell.timeouts += 1
                    measured = ((trial.get("progress") or {}).get("metrics") or {}).get(metric.key)
                    bound = _timeout_bound(trial, metric.key)
                    if isinstance(measured, int | float):
                        cell.values.append(float(measured))  # measured in full before the kill
                    elif bound is not None:
                        cell.lower_bounds.append(bound)
                elif trial["status"] == "skipped":
                    cell.skipped += 1
                else:
                    cell.errors += 1
            rows.append(row)
        if workload == "W4" and variant == _longest_w4(trials):
            rows.append(_w4_ratio_row(trials))
    return rows


def _w1_targets(metric: Metric, variant: str) -> tuple[tuple[str, str], ...]:
    if metric.key == "signals_per_s":
        return W6_TARGETS.get(variant, ())
    return W1_TARGETS.get(variant, ()) if metric.key == "act_per_s" else ()


def _limits_by_store_rep(trials: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    return {
        (t["store"], t["rep"]): t["metrics"]["commits_per_s"]
        for t in trials
        if t["workload"] == "L" and t["variant"] == "1 conn" and t["status"] == "ok"
    }


def _metric_value(
    trial: dict[str, Any], key: str, limits: dict[tuple[str, int], float]
) -> float | None:
    metrics = trial.get("metrics") or {}
    if key == "act_fraction_of_l":
        limit = limits.get((trial["store"], trial["rep"]))
        if limit is None or "act_per_s" not in metrics:
            return None
        return float(metrics["act_per_s"]) / limit
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) else None


def _timeout_bound(trial: dict[str, Any], key: str) -> float | None:
    """For a timed-out W4 chain, a lower bound of the figure from its last progress record:
    steps get slower as the history grows, if they change at all."""
    progress = trial.get("progress") or {}
    if trial["workload"] != "W4" or progress.get("done", 0) <= 0:
        return None
    if key == "ms_per_step":
        return float(progress["elapsed_s"]) / float(progress["done"]) * 1000
    if key == "last_ms_per_step" and key in progress:
        return float(progress[key])
    return None


def _w4_steps(variant: str) -> int:
    return int(variant.split()[0])


def _longest_w4(trials: list[dict[str, Any]]) -> str | None:
    variants = {t["variant"] for t in trials if t["workload"] == "W4"}
    return max(variants, key=_w4_steps) if variants else None


def _w4_ratio_row(trials: list[dict[str, Any]]) -> Row:
    w4 = [t for t in trials if t["workload"] == "W4"]
    variants = sorted({t["variant"] for t in w4}, key=_w4_steps)
    row = Row("W4", f"{variants[-1]} ÷ {variants[0]}", W4_RATIO)
    if len(variants) < 2:
        return row
    short, long = variants[0], variants[-1]
    by_key = {(t["store"], t["system"], t["rep"], t["variant"]): t for t in w4}
    for (store, system, rep, variant), trial in by_key.items():
        if variant != long:
            continue
        cell = row.cell(store, system)
        base = by_key.get((store, system, rep, short))
        if base is None:
            continue
        if base["status"] != "ok":
            if base["status"] in ("timeout", "skipped"):
                cell.skipped += 1
            else:
                cell.errors += 1
            continue
        short_ms = float(base["metrics"]["ms_per_step"])
        if trial["status"] == "ok":
            cell.values.append(float(trial["metrics"]["ms_per_step"]) / short_ms)
        elif trial["status"] == "skipped":
            cell.skipped += 1
        elif trial["status"] == "timeout":
            cell.timeouts += 1
            bound = _timeout_bound(trial, "ms_per_step")
            if bound is not None:
                cell.lower_bounds.append(bound / short_ms)
        else:
            cell.errors += 1
    return row


def _versus(row: Row, store: str, peer_system: str) -> str:
    """How many times better duratask is than ``peer_system`` on this figure (> 1: duratask
    is better): duratask ÷ peer for rates, peer ÷ duratask for times and costs."""
    ours, theirs = row.cells.get((store, "duratask")), row.cells.get((store, peer_system))
    if not (ours and theirs and ours.values and theirs.values) or not row.metric.better:
        return ""
    a, b = statistics.median(ours.values), statistics.median(theirs.values)
    if a <= 0 or b <= 0:
        return ""
    factor = a / b if row.metric.better == "higher" else b / a
    return f"{factor:.2f}x"


def _columns(systems: Iterable[str]) -> list[tuple[str, str]]:
    """The table's value columns in order, as (kind, system): ("value", system) for a
    system's figures, ("versus", best) for duratask against a peer's fastest configuration,
    after that peer's columns."""
    present = set(systems)
    columns: list[tuple[str, str]] = [("value", "duratask")]
    for peer in PEERS.values():
        shown = [s for s in peer.systems if s in present]
        columns += [("value", s) for s in shown]
        if peer.best in present:
            columns.append(("versus", peer.best))
    return columns


def render_table(rows: list[Row], systems: Iterable[str]) -> str:
    columns = _columns(systems)
    values = [system for kind, system in columns if kind == "value"]
    header = ["figure", "store"]
    header += [system if kind == "value" else f"dt vs {system}" for kind, system in columns]
    header.append("target")
    lines: list[list[str]] = []
    for row in rows:
        stores = sorted({s for s, _ in row.cells}, key=_store_rank)
        for store in stores:
            if row.workload == "L":  # the store's own limit: shown in the first column
                cells = {"duratask": row.cells.get((store, "raw"), Cell())}
            else:
                cells = {system: row.cells.get((store, system), Cell()) for system in values}
            if all(c.empty for c in cells.values()):
                continue
            line = [row.label, store]
            for kind, system in columns:
                if kind == "versus":
                    line.append(_versus(row, store, system) if row.workload != "L" else "")
                else:
                    cell = cells.get(system, Cell())
                    line.append(cell.text() if not cell.empty else "")
            ours = cells.get("duratask", Cell())
            line.append(row.metric.target_for(store) if not ours.empty else "")
            lines.append(line)
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header)]
    out = [_join(header, widths), _join(["-" * w for w in widths], widths)]
    previous = ""
    for line in lines:
        label = line[0]
        shown = label if label != previous else ""
        previous = label
        out.append(_join([shown, *line[1:]], widths))
    return "\n".join(out)


def _store_rank(store: str) -> int:
    return STORE_ORDER.index(store) if store in STORE_ORDER else len(STORE_ORDER)


def _join(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def figures_json(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        for (store, system), cell in sorted(row.cells.items()):
            if cell.empty:
                continue
            out.append(
                {
                    "workload": row.workload,
                    "variant": row.variant,
                    "metric": row.metric.key,
                    "label": row.label,
                    "store": store,
                    "system": system,
                    "better": row.metric.better,
                    "target": row.metric.target_for(store) if system == "duratask" else "",
                    **cell.summary(),
                }
            )
    return out


def write_json(path: Path, meta: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    rows = build_rows(trials)
    document = {"meta": meta, "figures": figures_json(rows), "trials": trials}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
