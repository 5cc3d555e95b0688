"""Benchmark ``edr replay`` end to end, process start to exit (prints figures; not a test).

On ../shared/evtx-attack-samples with the full SigmaHQ set (``--sigma
../shared/sigma/rules``), ``--runs`` times, each run side by side:

- cold: an empty rule cache (the first start after a rule change: every rule
  file parsed and compiled);
- warm: the cache the cold run filled;
- warm with ``--workers 1`` (the files read in the replaying process only).

Each line gives the wall time of the whole command and the CPU time of the
command with its worker processes (this machine is shared: the CPU time
says what the command costs, the wall time what a user waits). Then the
alerts: every run's alert multiset (rule.id, log file, record) must be
that of the single-worker run, and the documents identical but for
``event.created`` and the chain link that covers it; ``--baseline FILE`` compares with a saved alert file too.

Also measured: the start of a bare interpreter and of ``edr version``, and
with ``--importtime`` the modules that cost a warm replay most to import.

``--zircolite DIR``: also time Zircolite (a checkout with its dependencies
installed in the interpreter given by ``--zircolite-python``) on the same
files with its SigmaHQ ruleset, side by side.

Usage: python scripts/bench_replay.py [--runs N] [--workers N] [--shared DIR] [--baseline FILE]
                                      [--importtime] [--zircolite DIR [--zircolite-python PY]]
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

AlertKey = tuple[str, str, Any]


def adopt_orphans() -> None:
    """Become the subreaper of what the commands leave behind (a fork server outlives its parent briefly).

    Their CPU time then counts in this process's RUSAGE_CHILDREN once reaped.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        print("warning: cannot become a subreaper; CPU times may miss fork-server workers", file=sys.stderr)


def reap_orphans() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def timed(cmd: list[str], env: dict[str, str] | None = None, stdout: Any = subprocess.PIPE,
          cwd: Path | None = None) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Run ``cmd``; (wall seconds to its exit, CPU seconds of it and every descendant, the result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, cwd=cwd)
    wall = time.perf_counter() - started
    reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result


def documents(ndjson: bytes) -> list[dict[str, Any]]:
    """The alert documents of an NDJSON output, ``event.created`` (the time of writing) left out.

    So is ``edr.chain.hash``: its link covers the whole line, ``event.created`` included, so it
    differs between any two runs (the chain itself is ``edr alerts verify``'s business).
    """
    out = []
    for line in ndjson.splitlines():
        if line.strip():
            doc = json.loads(line)
            doc.pop("event.created", None)
            doc.pop("edr.chain.hash", None)
            out.append(doc)
    return out


def alert_key(doc: dict[str, Any]) -> AlertKey:
    """(rule.id, the file the record came from, its record): by what the alert carries."""
    edr_log = doc.get("edr.log") if isinstance(doc.get("edr.log"), dict) else {}
    path = doc.get("log.file.path") or doc.get("edr.log.path") or edr_log.get("path") or ""
    record = doc.get("edr.log.record", edr_log.get("record", doc.get("winlog.record_id")))
    return (str(doc.get("rule.id")), str(path), record)


def summary_line(stderr: bytes) -> str:
    return next((line for line in stderr.decode(errors="replace").splitlines()
                 if line.startswith("replay:") and " events/s" in line), "(no summary line)")


def compare(label: str, docs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> bool:
    """Print whether ``docs`` are ``reference`` (multiset of keys, then the documents in order)."""
    keys = collections.Counter(map(alert_key, docs))
    ref_keys = collections.Counter(map(alert_key, reference))
    if keys != ref_keys:
        missing, extra = ref_keys - keys, keys - ref_keys
        print(f"  {label}: ALERTS DIFFER: {sum(missing.values())} missing, {sum(extra.values())} extra; "
              f"e.g. missing {list(missing)[:3]}, extra {list(extra)[:3]}")
        return False
    same_order = docs == reference
    print(f"  {label}: {len(docs)} alerts, multiset identical"
          f"{', documents identical in order' if same_order else ' (documents differ in order or content)'}")
    return True


def replay_cmd(sigma: Path, samples: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "edr", "replay", "--no-progress", "--workers", str(workers),
            "--sigma", str(sigma), str(samples), "--stdout"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    parser.add_argument("--baseline", metavar="FILE", help="an alert NDJSON file to compare every run with")
    parser.add_argument("--save", metavar="FILE", help="write the single-worker run's alerts there")
    parser.add_argument("--importtime", action="store_true", help="the costliest imports of a warm replay")
    parser.add_argument("--zircolite", metavar="DIR", help="a Zircolite checkout to time side by side")
    parser.add_argument("--zircolite-python", metavar="PY", default=sys.executable)
    args = parser.parse_args()
    adopt_orphans()
    shared = Path(args.shared).resolve()
    sigma, samples = shared / "sigma" / "rules", shared / "evtx-attack-samples"
    if not sigma.is_dir() or not samples.is_dir():
        print(f"reference data not found under {shared}", file=sys.stderr)
        return 2
    # as an installed edr runs: modules compiled once to bytecode (kept in a directory of this run)
    pycache = tempfile.mkdtemp(prefix="bench_replay_pycache.")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = pycache
    files = sorted(samples.rglob("*.evtx"))
    print(f"edr replay of {len(files)} EVTX files with {sigma}; {args.workers} worker(s); "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory(prefix="bench_replay_cache.") as cache:  # writes the bytecode
        timed(replay_cmd(sigma, samples, args.workers), {**os.environ, "EDR__SIGMA__CACHE_DIR": cache})
    starts = [timed([sys.executable, "-c", "pass"])[0] for _ in range(3)]
    versions = [timed([sys.executable, "-m", "edr", "version"])[0] for _ in range(3)]
    print(f"process start: bare interpreter {statistics.median(starts):.3f} s, `edr version` "
          f"{statistics.median(versions):.3f} s (median of 3)")

    reference: list[dict[str, Any]] | None = None
    if args.baseline:
        reference = documents(Path(args.baseline).read_bytes())
    rows: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    identical = True
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="bench_replay_cache.") as cache:
            env = {**os.environ, "EDR__SIGMA__CACHE_DIR": cache}
            outputs: dict[str, list[dict[str, Any]]] = {}
            for label, workers in (("cold", args.workers), ("warm", args.workers), ("warm, --workers 1", 1)):
                wall, cpu, result = timed(replay_cmd(sigma, samples, workers), env)
                rows[label].append((wall, cpu))
                outputs[label] = documents(result.stdout)
                print(f"run {run}, {label:<18} {wall:6.2f} s wall {cpu:6.2f} s CPU, exit {result.returncode}, "
                      f"{len(outputs[label])} alerts | {summary_line(result.stderr)}")
            single = outputs["warm, --workers 1"]
            if run == 1 and args.save:
                Path(args.save).write_text("".join(json.dumps(d) + "\n" for d in single))
            for label in ("cold", "warm"):
                identical &= compare(f"{label} vs --workers 1", outputs[label], single)
            if reference is not None:
                identical &= compare("--workers 1 vs baseline", single, reference)
    print("summary (median over runs, wall / CPU):")
    for label, values in rows.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        print(f"  {label:<18} wall {statistics.median(walls):.2f} s (runs: {' '.join(f'{w:.2f}' for w in walls)}), "
              f"CPU {statistics.median(cpus):.2f} s (runs: {' '.join(f'{c:.2f}' for c in cpus)})")
    print("  targets: warm <= 1.0 s wall, cold <= 5 s wall; alerts " + ("IDENTICAL" if identical else "DIFFER"))

    if args.importtime:
        with tempfile.TemporaryDirectory(prefix="bench_replay_cache.") as cache:
            env = {**os.environ, "EDR__SIGMA__CACHE_DIR": cache}
            timed(replay_cmd(sigma, samples, args.workers), env)
            _wall, _cpu, result = timed([sys.executable, "-X", "importtime", *replay_cmd(sigma, samples,
                                                                                          args.workers)[1:]], env)
        costs = []
        for line in result.stderr.decode(errors="replace").splitlines():
            if line.startswith("import time:") and "|" in line:
                _self, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
                if cumulative.isdigit():
                    costs.append((int(cumulative), name))
        top = [(us, name) for us, name in sorted(costs, reverse=True) if not name.startswith(" ")][:12]
        print("costliest top-level imports of a warm replay (cumulative):")
        for us, name in top:
            print(f"  {us / 1000:8.1f} ms  {name}")

    if args.zircolite:
        zircolite(Path(args.zircolite), args.zircolite_python, samples, len(files), args.runs)
    shutil.rmtree(pycache, ignore_errors=True)
    return 0 if identical else 1


def zircolite(checkout: Path, python: str, samples: Path, count: int, runs: int) -> None:
    """Time Zircolite on ``samples`` with its bundled SigmaHQ ruleset for Windows logs (its own conversion
    of SigmaHQ, with an early filter on channels and event IDs: not the same rule set as edr's)."""
    script = checkout / "zircolite.py"
    rules = checkout / "rules" / "rules_windows_generic.json"
    if not script.is_file() or not rules.is_file():
        print(f"zircolite: {script} or {rules} not found: skipped")
        return
    for run in range(1, runs + 1):
        with tempfile.TemporaryDirectory(prefix="bench_replay_zircolite.") as work:
            out = Path(work) / "detected.json"
            wall, cpu, result = timed([python, str(script), "--evtx", str(samples), "--ruleset", str(rules),
                                       "--outfile", str(out), "--nolog"], stdout=subprocess.PIPE,
                                      cwd=checkout)  # it reads config/config.yaml from there
            said = [line.strip() for line in result.stdout.decode(errors="replace").splitlines()
                    if "rules loaded" in line or "Total events processed" in line]
            print(f"zircolite run {run}: {wall:6.2f} s wall {cpu:6.2f} s CPU on {count} files, "
                  f"exit {result.returncode} | {'; '.join(said)}")


if __name__ == "__main__":
    sys.exit(main())
