#!/usr/bin/env python3
"""schemathesis against the running service and its own OpenAPI document, every check on.

Usage: api-fuzz.py PATH/TO/notifications [--document FILE] [extra schemathesis arguments]

Starts redis-server, the MongoDB-wire server and one instance (generous rate limit, so 429s do
not hide answers), then runs `schemathesis run` on http://127.0.0.1:PORT/openapi.yaml with
`--checks all` and every phase (examples, coverage, fuzzing, stateful: the document's links
chain a created notification into its reads and deletes). A fixed seed makes a run
reproducible; a failure exits non-zero with schemathesis's own report. `--document FILE` tests
the service against that file instead of the document it serves (a binary embeds openapi.yaml
when it is built, so this checks an edited document without a rebuild).
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (the servers and the service as child processes)

SEED = "20261125"
MAX_EXAMPLES = "40"


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: api-fuzz.py PATH/TO/notifications [--document FILE] [schemathesis arguments]")
    e2e.BINARY = os.path.abspath(sys.argv[1])
    extra = sys.argv[2:]
    document = None
    if extra[:1] == ["--document"] and len(extra) >= 2:
        document = os.path.abspath(extra[1])
        extra = extra[2:]
    schemathesis = os.path.join(e2e.ROOT, ".venv/bin/schemathesis")
    servers = e2e.Servers()
    service = None
    try:
        service = e2e.Service(servers, RATE_LIMIT_POLICIES="*:1000000/1s", LOG_LEVEL="warning")
        command = [
            schemathesis, "--config-file", os.path.join(e2e.ROOT, "config/schemathesis.toml"),
            "run", document or f"http://127.0.0.1:{service.port}/openapi.yaml",
            "--url", f"http://127.0.0.1:{service.port}",
            "--checks", "all",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--header", f"Authorization: Bearer {e2e.KEY}",
            "--seed", SEED, "--max-examples", MAX_EXAMPLES,
            # One worker: with two, CPython 3.11 failed an `ast.parse` that hypothesis runs to describe
            # a strategy ("AST constructor recursion depth mismatch", seen in a CI run) - a tool error.
            "--workers", "1",
            "--generation-database", "none", "--no-color", "--request-timeout", "10",
            *extra,
        ]
        # Run from a scratch directory: schemathesis keeps a cache of past failures (.schemathesis)
        # in its working directory, which would make a run depend on the ones before it.
        scratch = tempfile.mkdtemp(prefix="notifications-fuzz-")
        try:
            result = subprocess.run(command, cwd=scratch, timeout=900)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if service.process.poll() is not None:
            sys.exit(f"api-fuzz: the service exited during the run:\n{service.logs()}")
        sys.exit(result.returncode)
    finally:
        if service:
            service.stop()
        servers.stop()
        e2e.remove_service_logs()


if __name__ == "__main__":
    main()
