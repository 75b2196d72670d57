"""Run the benchmark suite: ``python -m benchmarks.run [options]`` (or ``make bench``).

Every repetition first measures L, the storage limit, then runs each workload on each store
(and, with ``--compare dbos,durabletask-sdk``, the same workload with each peer in its default
and in its fastest configuration), each trial in a fresh process on a fresh hub. Prints one
table of medians and spreads and writes a JSON file with every trial. See
benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.hubs import (
    AZURE_SIZE,
    AZURE_WORKLOADS,
    DEFAULT_PG_URL,
    STORES,
    HubPlace,
    filesystem_of,
    probe_duratask_postgres,
    probe_postgres,
)
from benchmarks.measure import read_progress
from benchmarks.peers import PEERS, Peer

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")


@dataclass(slots=True)
class Trial:
    rep: int
    workload: str
    variant: str
    store: str
    system: str  # "duratask", a peer system ("dbos-best", ...), or "raw" for L
    params: dict[str, Any]
    status: str = "pending"  # ok, timeout, error, or skipped (after a timeout)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    progress: dict[str, Any] | None = None
    wall_s: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.workload, self.variant, self.store, self.system)

    def record(self) -> dict[str, Any]:
        return {
            "rep": self.rep,
            "workload": self.workload,
            "variant": self.variant,
            "store": self.store,
            "system": self.system,
            "params": self.params,
            "status": self.status,
            "metrics": self.metrics,
            "error": self.error,
            "progress": self.progress,
            "wall_s": self.wall_s,
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="duratask benchmarks: workloads W1-W7 beside the storage limit L.",
    )
    parser.add_argument(
        "--stores",
        default=",".join(STORES),
        help="comma-separated stores to run on (default: %(default)s; postgresql and azure "
        "are skipped with a note when unavailable; azure runs on an Azurite started for the "
        "run, installed by make azurite)",
    )
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help="comma-separated workloads (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default: 3)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every count (0.1 for a smoke run)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one trial may take before it is killed and recorded as a timeout "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--worker-processes",
        default="",
        help="W1 again with K worker subprocesses, for each K of a comma-separated list "
        "(e.g. 1,2); W1 always also runs with the worker in the benchmark process",
    )
    parser.add_argument(
        "--compare",
        default="",
        help="comma-separated peers to run side by side, each in its default and its fastest "
        "configuration: "
        + ", ".join(f"{p.name} (pip '{p.requirement}')" for p in PEERS.values())
        + "; a missing package is installed into this environment",
    )
    parser.add_argument("--pg-url", default=os.environ.get("DURATASK_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument(
        "--workdir",
        default=tempfile.gettempdir(),
        help="where SQLite hubs are created (its disk is what L measures; default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        default=str(REPO / "benchmarks" / "results" / "latest.json"),
        help="where to write the JSON results (default: benchmarks/results/latest.json)",
    )
    sizes = parser.add_argument_group("sizes (before --scale)")
    sizes.add_argument("--w1-orchestrations", type=int, default=1000)
    sizes.add_argument("--w1-activities", type=int, default=5, help="not scaled")
    sizes.add_argument("--w2-activities", type=int, default=1000)
    sizes.add_argument("--w3-orchestrations", type=int, default=200)
    sizes.add_argument("--w4-steps", default="500,5000", help="chain lengths, comma-separated")
    sizes.add_argument("--w5-instances", type=int, default=10000)
    sizes.add_argument("--w6-signals", type=int, default=20000)
    sizes.add_argument("--w6-calls", type=int, default=200)
    sizes.add_argument("--w7-schedules", type=int, default=1000)
    sizes.add_argument(
        "--idle-window",
        type=float,
        default=5.0,
        help="W5 and W7 idle window in seconds (not scaled)",
    )
    sizes.add_argument(
        "--limit-seconds", type=float, default=3.0, help="duration of each L loop (not scaled)"
    )
    sizes.add_argument(
        "--limit-connections", type=int, default=4, help="PostgreSQL L in parallel (N)"
    )
    parser.set_defaults(azure_url="")  # set once the run's Azurite listens
    args = parser.parse_args(argv)
    args.stores = _split(args.stores, STORES, "store")
    args.only = _split(args.only.upper(), WORKLOADS, "workload")
    args.compare = _split(args.compare.lower(), tuple(PEERS), "peer") if args.compare else []
    args.worker_processes = sorted({int(k) for k in _split(args.worker_processes) if int(k) > 0})
    if args.repeat < 1 or args.scale <= 0 or args.timeout <= 0:
        parser.error("--repeat, --scale and --timeout must be positive")
    return args


def _split(text: str, allowed: tuple[str, ...] | None = None, what: str = "") -> list[str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if allowed is not None:
        unknown = [i for i in items if i not in allowed]
        if unknown:
            raise SystemExit(f"unknown {what}(s) {unknown}; choose from {', '.join(allowed)}")
    return items


def scaled(count: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(count * scale))


# -- availability ------------------------------------------------------------------------------


@dataclass(slots=True)
class Availability:
    """Which (store, system) pairs can run, and why the others cannot."""

    pairs: set[tuple[str, str]] = field(default_factory=set)
    limit_stores: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def check_availability(args: argparse.Namespace) -> Availability:
    found = Availability()
    pg_facts: dict[str, str] | None = None
    if "postgresql" in args.stores:
        pg_facts, why = probe_postgres(args.pg_url)
        if pg_facts is None:
            found.notes.append(f"postgresql skipped: {why}")
        else:
            found.facts["postgresql"] = pg_facts
    if "azure" in args.stores:
        why = start_azurite(args)
        if why:
            found.notes.append(f"azure skipped: {why}")
    for store in args.stores:
        if store == "azure" and not args.azure_url:
            continue
        if store == "postgresql":
            if pg_facts is None:
                continue
            why = probe_duratask_postgres(args.pg_url)
            if why:
                found.notes.append(f"duratask on postgresql skipped: {why}")
                continue
        found.pairs.add((store, "duratask"))
    for name in args.compare:
        peer = PEERS[name]
        why = ensure_peer(peer)
        if why:
            found.notes.append(f"--compare {name} unavailable: {why}")
            continue
        from importlib import metadata

        found.facts.setdefault("peer_versions", {})[name] = metadata.version(peer.distribution)
        stores = [
            store
            for store in args.stores
            if store in peer.stores and (store != "postgresql" or pg_facts is not None)
        ]
        if not stores:
            found.notes.append(
                f"--compare {name}: runs on {', '.join(peer.stores)} only, and --stores has none"
            )
        for store in stores:
            for system in peer.systems:
                found.pairs.add((store, system))
    for store in ("sqlite", "postgresql", "azure"):
        if any(s == store for s, _ in found.pairs):
            found.limit_stores.append(store)
    return found


_AZURITE: list[Any] = []


def start_azurite(args: argparse.Namespace) -> str:
    """Start the run's Azurite (in memory, stopped with the run); why it cannot, or ""."""
    args.azure_url = ""
    try:
        import azure.data.tables  # noqa: F401
        from tests import azurite

        emulator = azurite.start()
    except (ImportError, RuntimeError, OSError) as exc:
        return f"{type(exc).__name__}: {exc} (pip install 'duratask[azure]'; make azurite)"
    _AZURITE.append(emulator)
    args.azure_url = emulator.url("{hub}")
    return ""


def stop_azurite() -> None:
    while _AZURITE:
        _AZURITE.pop().stop()


def ensure_peer(peer: Peer) -> str:
    """Why a peer's package cannot be imported (installing it with pip if it is missing), or
    the empty string if it can."""
    if importlib.util.find_spec(peer.module) is None:
        print(
            f"--compare {peer.name}: installing {peer.requirement} into {sys.prefix} ...",
            flush=True,
        )
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", peer.requirement],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            lines = [line for line in lines if not line.startswith("WARNING")] or lines
            last = lines[-1][:300] if lines else f"exit status {done.returncode}"
            return f"pip install {peer.requirement} failed: {last}"
        importlib.invalidate_caches()
    probe = subprocess.run(
        [sys.executable, "-c", f"import {peer.workloads_module}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        return f"importing {peer.module} failed: {lines[-1] if lines else probe.returncode}"
    return ""


# -- the plan ------------------------------------------------------------------------------------


def plan(args: argparse.Namespace, found: Availability) -> list[Trial]:
    s = args.scale
    w4_steps = sorted({scaled(int(n), s, 2) for n in _split(args.w4_steps)})
    trials: list[Trial] = []
    systems = ["duratask", *(system for name in args.compare for system in PEERS[name].systems)]
    for rep in range(1, args.repeat + 1):
        for store in found.limit_stores:
            trials.append(Trial(rep, "L", "1 conn", store, "raw", _limit(args, 1)))
            if store == "postgresql" and args.limit_connections > 1:
                n = args.limit_connections
                trials.append(Trial(rep, "L", f"{n} conns", store, "raw", _limit(args, n)))
        rows: list[tuple[str, str, dict[str, Any], bool]] = []  # workload, variant, params, peers
        if "W1" in args.only:
            w1 = {
                "orchestrations": scaled(args.w1_orchestrations, s),
                "activities": args.w1_activities,
            }
            rows.append(("W1", "in-process", {**w1, "worker_processes": 0}, True))
            for k in args.worker_processes:
                variant = f"{k} proc" + ("s" if k > 1 else "")
                rows.append(("W1", variant, {**w1, "worker_processes": k}, False))
        if "W2" in args.only:
            rows.append(("W2", "", {"activities": scaled(args.w2_activities, s)}, True))
        if "W3" in args.only:
            rows.append(("W3", "", {"orchestrations": scaled(args.w3_orchestrations, s, 2)}, True))
        if "W4" in args.only:
            for steps in w4_steps:
                rows.append(("W4", f"{steps} steps", {"steps": steps}, True))
        if "W5" in args.only:
            w5 = {"instances": scaled(args.w5_instances, s), "idle_window": args.idle_window}
            rows.append(("W5", "", w5, True))
        if "W6" in args.only:
            w6 = {"signals": scaled(args.w6_signals, s), "calls": scaled(args.w6_calls, s, 2)}
            rows.append(("W6", "1 entity", {**w6, "entities": 1}, False))
            rows.append(("W6", "100 entities", {**w6, "entities": 100}, False))
        if "W7" in args.only:
            w7 = {"schedules": scaled(args.w7_schedules, s), "idle_window": args.idle_window}
            rows.append(("W7", "", w7, False))
        for workload, variant, params, peers in rows:
            for store in args.stores:
                for system in systems if peers else ["duratask"]:
                    if (store, system) not in found.pairs:
                        continue
                    if system != "duratask" and workload not in _peer_workloads(system):
                        continue
                    if params.get("worker_processes") and store in ("memory", "azure"):
                        continue  # an in-memory hub cannot be shared between processes
                    if store == "azure" and workload not in AZURE_WORKLOADS:
                        continue
                    if store == "azure":
                        params = azure_sized(params)
                    trials.append(Trial(rep, workload, variant, store, system, dict(params)))
    return trials


def azure_sized(params: dict[str, Any]) -> dict[str, Any]:
    """A workload's sizes on Azurite: a tenth of its orchestrations (W1, W3) or of W2's
    activities, since a storage-account store steps some 100 times slower; W4's chain
    lengths stay, for its ratio."""
    sized = dict(params)
    key = "orchestrations" if "orchestrations" in sized else "activities"
    if key in sized:
        sized[key] = max(2, round(int(sized[key]) * AZURE_SIZE))
    return sized


def _peer_workloads(system: str) -> tuple[str, ...]:
    from benchmarks.peers import peer_of

    return peer_of(system).workloads


def _limit(args: argparse.Namespace, connections: int) -> dict[str, Any]:
    return {"seconds": args.limit_seconds, "connections": connections}


# -- running trials ------------------------------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.timed_out: set[tuple[str, str, str, str]] = set()
        self.current: subprocess.Popen[bytes] | None = None

    def skip_reason(self, trial: Trial, done: list[Trial]) -> str:
        if trial.key in self.timed_out:
            return "timed out in an earlier repetition; not run again"
        if trial.workload == "W4":
            steps = int(trial.params["steps"])
            for other in done:
                if (
                    other.rep == trial.rep
                    and other.workload == "W4"
                    and (other.store, other.system) == (trial.store, trial.system)
                    and other.status in ("timeout", "skipped")
                    and int(other.params["steps"]) < steps
                ):
                    return "a shorter chain timed out in this repetition; not run"
        return ""

    def execute(self, trial: Trial) -> None:
        place = HubPlace.new(trial.store, str(self.workdir), self.args.pg_url, self.args.azure_url)
        directory = Path(place.directory)
        spec = {
            "system": trial.system,
            "workload": trial.workload,
            "params": trial.params,
            "place": place.to_json(),
            "progress": str(directory / "progress.json"),
        }
        (directory / "spec.json").write_text(json.dumps(spec))
        result_path, log_path = directory / "result.json", directory / "trial.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        started = time.perf_counter()
        try:
            with log_path.open("wb") as log:
                self.current = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.trial",
                        str(directory / "spec.json"),
                        str(result_path),
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    self.current.wait(timeout=self.args.timeout)
                except subprocess.TimeoutExpired:
                    self.kill_current()
                    trial.status = "timeout"
                    trial.error = f"killed after {self.args.timeout:g} s"
                    trial.progress = read_progress(directory / "progress.json")
                    self.timed_out.add(trial.key)
            trial.wall_s = time.perf_counter() - started
            if trial.status != "timeout":
                self._read_result(trial, result_path, log_path)
        finally:
            self.kill_current()
            self.current = None
            place.cleanup()

    def _read_result(self, trial: Trial, result_path: Path, log_path: Path) -> None:
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            code = None if self.current is None else self.current.returncode
            result = {"error": f"the trial process exited with {code} and left no result"}
        if "metrics" in result:
            trial.status, trial.metrics = "ok", result["metrics"]
            return
        trial.status = "error"
        log_tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        trial.error = "\n".join([result.get("error", "?"), *log_tail])

    def kill_current(self) -> None:
        """Kill the running trial with every process it started (its own session)."""
        proc = self.current
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def headline(trial: Trial) -> str:
    m = trial.metrics
    if trial.status != "ok":
        first = trial.error.splitlines()[0] if trial.error else ""
        progress = trial.progress or {}
        if progress.get("done", -1) >= 0:
            first += f"; {progress['done']:,} of {progress['of']:,} done"
        if progress.get("phase"):
            first += f" in phase '{progress['phase']}'"
        return f"{trial.status.upper()}: {first}".strip()
    pick = {
        "L": ("commits_per_s", "commits/s"),
        "W1": ("act_per_s", "activities/s"),
        "W2": ("seconds", "s"),
        "W3": ("p50_ms", "ms p50"),
        "W4": ("ms_per_step", "ms/step"),
        "W5": ("deliver_seconds", "s to deliver"),
        "W6": ("signals_per_s", "signals/s"),
        "W7": ("idle_cpu_pct", "% CPU idle"),
    }
    key, unit = pick[trial.workload]
    text = f"{report.fmt(float(m.get(key, float('nan'))))} {unit}"
    if trial.workload == "W5":
        text += f", {report.fmt(m['rss_mb'])} MiB, {report.fmt(m['idle_cpu_pct'])}% CPU idle"
    if trial.workload == "W3":
        text += f", p99 {report.fmt(m['p99_ms'])}"
    if trial.workload == "W6":
        text += f", call_entity p50 {report.fmt(m['call_p50_ms'])} ms"
    if trial.workload == "W1" and "worker_cpu_s_per_1k" in m:
        text += f"; CPU-s per 1k: worker {report.fmt(m['worker_cpu_s_per_1k'])}"
        if "pg_cpu_s_per_1k" in m:
            text += f", PostgreSQL {report.fmt(m['pg_cpu_s_per_1k'])}"
    return text


# -- metadata ------------------------------------------------------------------------------------


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return f"{rev}{' (modified)' if dirty else ''}" if rev else "?"


def source_digest() -> str:
    """A digest of duratask's source files: tells whether the code changed during a run."""
    import hashlib

    import duratask

    digest = hashlib.sha256()
    for path in sorted(Path(duratask.__file__).parent.rglob("*")):
        if path.suffix in (".py", ".sql") and path.is_file():
            digest.update(path.as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def metadata(args: argparse.Namespace, found: Availability, workdir: Path) -> dict[str, Any]:
    import duratask

    return {
        "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "duratask_version": duratask.__version__,
        "git": git_revision(),
        "source_digest": source_digest(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "workdir": str(workdir),
        "workdir_filesystem": filesystem_of(str(workdir)),
        "args": {k: v for k, v in vars(args).items()},
        "notes": found.notes,
        **found.facts,
    }


def print_header(meta: dict[str, Any], trials: list[Trial]) -> None:
    print(
        f"duratask {meta['duratask_version']} (git {meta['git']}, sources "
        f"{meta['source_digest']}), Python {meta['python']}, "
        f"SQLite {meta['sqlite']}, {meta['cpus']} CPUs, load {meta['loadavg_at_start'][0]:.2f}"
    )
    print(f"hubs in {meta['workdir']} ({meta['workdir_filesystem']})")
    if "postgresql" in meta:
        pg = meta["postgresql"]
        print(
            f"PostgreSQL {pg['server_version']} (synchronous_commit={pg['synchronous_commit']}, "
            f"fsync={pg['fsync']})"
        )
    for name, version in meta.get("peer_versions", {}).items():
        peer = PEERS[name]
        print(f"peer {name}: {peer.title} {version}, as {' and '.join(peer.systems)}")
    for note in meta["notes"]:
        print(f"note: {note}")
    print(f"{len(trials)} trials; each in a fresh process on a fresh hub\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = check_availability(args)
    base = Path(args.workdir)
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="duratask-bench-", dir=base))
    trials = plan(args, found)
    meta = metadata(args, found, workdir)
    print_header(meta, trials)
    runner = Runner(args, workdir)
    done: list[Trial] = []
    interrupted = False
    width = len(str(len(trials)))
    try:
        for index, trial in enumerate(trials, 1):
            label = (
                f"[{index:>{width}}/{len(trials)}] rep {trial.rep}  {trial.workload:<3}"
                f"{trial.variant:<12} {trial.store:<10} {trial.system:<13}"
            )
            print(label, end=" ", flush=True)
            reason = runner.skip_reason(trial, done)
            if reason:
                trial.status, trial.error = "skipped", reason
            else:
                runner.execute(trial)
            done.append(trial)
            suffix = f"  ({trial.wall_s:.1f} s)" if trial.wall_s else ""
            print(f"{headline(trial)}{suffix}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        runner.kill_current()
        print("\ninterrupted: reporting the trials that finished", flush=True)
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        stop_azurite()
    meta["loadavg_at_end"] = list(os.getloadavg())
    meta["git_at_end"] = git_revision()
    meta["source_digest_at_end"] = source_digest()
    if meta["source_digest_at_end"] != meta["source_digest"]:
        found.notes.append(
            "duratask's source files changed during this run (git "
            f"{meta['git']} -> {meta['git_at_end']}): the figures mix code versions"
        )
    meta["interrupted"] = interrupted
    records = [t.record() for t in done]
    rows = report.build_rows(records)
    systems = {"duratask", *(t.system for t in done if t.system != "raw")}
    print()
    print(report.render_table(rows, systems))
    failures = [t for t in done if t.status == "error"]
    for trial in failures:
        print(
            f"\nerror in rep {trial.rep} {trial.workload} {trial.variant} {trial.store} "
            f"{trial.system}:\n  " + trial.error.replace("\n", "\n  ")
        )
    for note in found.notes:
        print(f"note: {note}")
    out = Path(args.json)
    report.write_json(out, meta, records)
    print(f"\nJSON written to {out}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
