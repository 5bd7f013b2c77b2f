"""Run the Autobahn|Testsuite fuzzing client against the echo endpoint and summarise its report.

``make conformance`` builds the suite's Python 2.7 environment (``.venv-autobahn/``) and runs
``python -m tests.conformance.autobahn --wstest .venv-autobahn/bin/wstest``. This script starts
:mod:`signaling.testing.echo` on a free loopback port, writes the suite's spec (every case but
12.* and 13.*: permessage-deflate, which the hub does not offer), runs ``wstest -m
fuzzingclient``, then reads the suite's ``index.json`` and prints the count of cases per
behaviour and every case that is not OK, NON-STRICT or INFORMATIONAL. It exits 1 if there is
one. The suite's HTML report stays in ``test-artifacts/autobahn/`` for a closer look.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from signaling.testing.ports import free_port

REPO = Path(__file__).resolve().parents[2]
#: Cases the hub does not take part in: 12.* and 13.* test permessage-deflate.
EXCLUDED = ["12.*", "13.*"]
#: Behaviours that pass: NON-STRICT is a failure detected later than it could be (e.g. invalid
#: UTF-8 at the message's end rather than in the fragment), INFORMATIONAL has no verdict.
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
AGENT = "connvo-rtc"


def case_key(case_id: str) -> tuple[int, ...]:
    """``"9.10.2"`` sorts after ``"9.2.1"``."""
    return tuple(int(part) for part in case_id.split("."))


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the echo endpoint exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the echo endpoint is not listening on {port} after "
                                 f"{timeout:g} s") from None
            time.sleep(0.05)


def run_suite(wstest: str, outdir: Path, timeout: float) -> None:
    """Start the echo endpoint, run the fuzzing client against it, stop the endpoint."""
    if os.sep in wstest:  # a path: wstest runs in outdir
        wstest = str(Path(wstest).resolve())
    outdir = outdir.resolve()
    port = free_port()
    outdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": AGENT, "url": f"ws://127.0.0.1:{port}/ws"}],
        "cases": ["*"],
        "exclude-cases": EXCLUDED,
        "exclude-agent-cases": {},
    }
    spec_file = outdir / "fuzzingclient.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    echo = subprocess.Popen([sys.executable, "-m", "signaling.testing.echo", "--port", str(port)],
                            cwd=REPO)
    try:
        wait_listening(port, echo)
        print(f"wstest -m fuzzingclient against ws://127.0.0.1:{port}/ws "
              f"(excluding {', '.join(EXCLUDED)}); the log is in {outdir}/wstest.log", flush=True)
        # The suite's Python 2 libraries warn that Python 2 is unsupported, on every start.
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        (outdir / "index.json").unlink(missing_ok=True)  # never summarise an older run
        log_file = outdir / "wstest.log"
        with open(log_file, "wb") as log:
            done = subprocess.run([wstest, "-m", "fuzzingclient", "-s", str(spec_file)],
                                  cwd=outdir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout, check=False)
        if done.returncode != 0:
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"{tail}\nwstest exited with {done.returncode}")
    finally:
        echo.terminate()
        try:
            echo.wait(5)
        except subprocess.TimeoutExpired:
            echo.kill()
            echo.wait()


def summarise(index_file: Path) -> int:
    """Print the summary of the suite's ``index.json``; the number of failing cases."""
    results: dict[str, dict[str, str]] = json.loads(index_file.read_text())[AGENT]
    counts = Counter(result["behavior"] for result in results.values())
    print(f"Autobahn|Testsuite, {len(results)} cases (12.* and 13.* excluded):")
    for behavior, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {behavior:<14} {count}")
    failing = sorted((case for case, result in results.items()
                      if result["behavior"] not in PASSING), key=case_key)
    for case in failing:
        result = results[case]
        print(f"  FAILED {case}: behavior {result['behavior']}, close "
              f"{result['behaviorClose']} (remote close code {result['remoteCloseCode']}); "
              f"see {index_file.parent / result['reportfile'].replace('.json', '.html')}")
    print("every case OK, NON-STRICT or INFORMATIONAL" if not failing
          else f"{len(failing)} case(s) failed")
    return len(failing)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.autobahn",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--wstest", default=str(REPO / ".venv-autobahn" / "bin" / "wstest"),
                        help="the suite's wstest command (Python 2.7)")
    parser.add_argument("--outdir", type=Path,
                        default=REPO / "test-artifacts" / "autobahn",
                        help="where the suite writes its report")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds the whole suite may take")
    parser.add_argument("--summary-only", action="store_true",
                        help="only summarise the report already in --outdir")
    args = parser.parse_args(argv)
    if not args.summary_only:
        run_suite(args.wstest, args.outdir, args.timeout)
    sys.exit(1 if summarise(args.outdir / "index.json") else 0)


if __name__ == "__main__":
    main()
