"""Sandbox execution speed, all backends measured in one run (issue 4 part 6).

Trivial snippet ``print(1)`` (output checked). For each method: latency p50/p99 of one call
(after warm-up) and closed-loop throughput with one caller thread per worker (2 workers on
this 2-core machine). Methods:

* local warm session   - a started bwrap box, a call on its existing REPL session
* local cold start     - a brand-new bwrap box (setpriv + bwrap + interpreter + fork-server)
                         started, one call, stopped
* process warm session - the unisolated fork-server (for reference)
* fresh python -I -S   - ``subprocess.run([python, "-I", "-S", "-c", "print(1)"])``
* docker warm session  - our docker backend (persistent container, pipe round trip)
* docker exec_run      - ``container.exec_run(["python3", "-c", "print(1)"])`` into a long-lived
                         container, what a naive Docker tool does per call

Docker rows need an engine (``DOCKER_HOST``; ``scripts/podman_lane.sh env`` starts Podman).
Ratios are against ``docker exec_run`` and ``fresh python`` measured in the same run.

    python benchmarks/sandbox_exec.py [--n 300] [--seconds 4] [--no-docker]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

from rao_envs.sandboxes import available_backends, make_sandbox
from rao_envs.sandboxes.local import default_python

SNIPPET = "print(1)"


def pct(xs, p):
    """The ``p``-th percentile of ``xs`` (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def latency(fn, n, warm=5):
    """Seconds taken by each of ``n`` calls of ``fn``, after ``warm`` untimed calls."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def throughput(make_fn, workers, seconds):
    """Closed loop: ``workers`` threads, each with its own callable, for ``seconds``."""
    fns = [make_fn() for _ in range(workers)]
    for fn in fns:
        fn()
    counts = [0] * workers
    stop = threading.Event()

    def loop(i):
        fn = fns[i]
        while not stop.is_set():
            fn()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def check(r):
    """Raise unless the result ``r`` printed exactly the snippet's ``1``."""
    if r.stdout != "1\n":
        raise RuntimeError(f"bad result {r!r}")


def main() -> int:
    """Measure every available method and print the table; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="timed calls per latency row")
    ap.add_argument("--cold-n", type=int, default=30, help="timed calls for cold-start rows")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per throughput row")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--no-docker", action="store_true")
    args = ap.parse_args()
    rows = []  # (name, lat list, exec/s or None, note)
    boxes = []

    def add(name, lat, tput=None, note=""):
        rows.append((name, lat, tput, note))
        print(f"  measured {name}", file=sys.stderr)

    avail = available_backends()
    if avail["local"] is None:
        sb = make_sandbox("local").start()
        boxes.append(sb)
        add("local warm session", latency(lambda: check(sb.run(SNIPPET)), args.n),
            throughput(lambda: (lambda b: (lambda: check(b.run(SNIPPET))))(boxes.append(make_sandbox("local").start())
                                                                          or boxes[-1]),
                       args.workers, args.seconds))

        def cold():
            with make_sandbox("local") as b:
                check(b.run(SNIPPET))

        add("local cold start", latency(cold, args.cold_n, warm=2),
            throughput(lambda: cold, args.workers, args.seconds))
    else:
        print(f"local backend unavailable: {avail['local']}", file=sys.stderr)

    pb = make_sandbox("process", warn=False).start()
    boxes.append(pb)
    add("process warm session (no isolation)", latency(lambda: check(pb.run(SNIPPET)), args.n))

    py = default_python()

    def fresh():
        out = subprocess.run([py, "-I", "-S", "-c", SNIPPET], capture_output=True)
        assert out.stdout == b"1\n"

    add(f"fresh `{os.path.basename(py)} -I -S` subprocess", latency(fresh, min(args.n, 100)),
        throughput(lambda: fresh, args.workers, args.seconds))

    docker_note = ""
    if not args.no_docker:
        try:
            from rao_envs.sandboxes.docker_backend import connect

            client = connect(timeout=60)
            db = make_sandbox("docker").start()
            boxes.append(db)
            add("docker warm session (our backend)", latency(lambda: check(db.run(SNIPPET)), args.n),
                throughput(lambda: (lambda b: (lambda: check(b.run(SNIPPET))))(
                    boxes.append(make_sandbox("docker").start()) or boxes[-1]), args.workers, args.seconds))

            def dcold():
                with make_sandbox("docker") as b:
                    check(b.run(SNIPPET))

            add("docker cold start (our backend)", latency(dcold, max(5, args.cold_n // 3), warm=1))
            cont = db.container  # exec_run into the same long-lived container

            def exec_run():
                res = cont.exec_run([db.python, "-I", "-S", "-c", SNIPPET], user=db.user, workdir="/work")
                assert res.output.strip() == b"1", res

            add("docker exec_run (naive per-call exec)", latency(exec_run, min(args.n, 50), warm=2),
                throughput(lambda: exec_run, args.workers, args.seconds))
            engine = ", ".join(c.get("Name", "") + " " + c.get("Version", "")
                               for c in client.version().get("Components", [])[:1])
            docker_note = f"docker rows: {engine} via {os.environ.get('DOCKER_HOST', 'default socket')}"
            client.close()
        except Exception as e:  # noqa: BLE001 - the table says why docker rows are missing
            docker_note = f"docker rows skipped: {type(e).__name__}: {str(e)[:200]}"
    for b in boxes:
        b.stop()

    base = {name: statistics.median(lat) for name, lat, _, _ in rows}
    ref_exec = next((v for k, v in base.items() if k.startswith("docker exec_run")), None)
    ref_fresh = next((v for k, v in base.items() if k.startswith("fresh")), None)
    print()
    print(f"Sandbox exec of `{SNIPPET}`, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"throughput with {args.workers} closed-loop workers")
    hdr = f"| {'method':<40} | {'p50 ms':>8} | {'p99 ms':>8} | {'exec/s':>8} | {'vs exec_run':>11} | {'vs fresh py':>11} |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for name, lat, tput, _ in rows:
        p50 = statistics.median(lat)
        r1 = f"{ref_exec / p50:.1f}x" if ref_exec else "n/a"
        r2 = f"{ref_fresh / p50:.1f}x" if ref_fresh else "n/a"
        tp = f"{tput:.0f}" if tput else "-"
        print(f"| {name:<40} | {p50 * 1e3:8.2f} | {pct(lat, 99) * 1e3:8.2f} | {tp:>8} | {r1:>11} | {r2:>11} |")
    if docker_note:
        print(docker_note)
    warm = [lat for name, lat, _, _ in rows if name == "local warm session"]
    if warm:
        p50 = statistics.median(warm[0]) * 1e3
        tput = next(t for n, _, t, _ in rows if n == "local warm session")
        vs_fresh = ref_fresh / (p50 / 1e3) if ref_fresh else 0.0
        print(f"targets: local warm p50 <= 3 ms: {'met' if p50 <= 3 else 'MISSED'} ({p50:.2f} ms); "
              f">= 800 exec/s: {'met' if tput >= 800 else 'MISSED'} ({tput:.0f}); "
              f">= 15x faster than a fresh python: {'met' if vs_fresh >= 15 else 'MISSED'} ({vs_fresh:.1f}x); "
              + (f">= 25x faster than exec_run: {'met' if ref_exec / (p50 / 1e3) >= 25 else 'MISSED'} "
                 f"({ref_exec / (p50 / 1e3):.0f}x)" if ref_exec else "exec_run not measured"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
