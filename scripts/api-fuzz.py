#!/usr/bin/env python3
"""schemathesis against the running service and its own OpenAPI document, every check on.

Usage: api-fuzz.py PATH/TO/notifications [--document FILE] [extra schemathesis arguments]

Starts redis-server, the MongoDB-wire server and one instance (generous rate limit, so 429s do
not hide answers), then runs `schemathesis run` on http://127.0.0.1:PORT/openapi.yaml with
`--checks all` and every phase (examples, coverage, fuzzing, stateful: the document's links
chain a created notification into its reads and deletes). A fixed seed makes a run
reproducible; a failure exits non-zero with schemathesis's own report. `--document FILE` tests
the service against that file instead of the document it serves (a binary embeds openapi.yaml
when it is built, so this checks an edited document without a rebuild). Then a second run with
a user token instead of the API key, on the routes a user token may call.
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


TOKEN_SECRET = "api-fuzz-user-token-secret-of-32-bytes"


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
        service = e2e.Service(servers, RATE_LIMIT_POLICIES="*:1000000/1s,user:1000000/1s", LOG_LEVEL="warning", USER_TOKEN_KEYS=f"fuzz:{TOKEN_SECRET}")

        def schemathesis_run(credential, *arguments):
            command = [
                schemathesis, "--config-file", os.path.join(e2e.ROOT, "config/schemathesis.toml"),
                "run", document or f"http://127.0.0.1:{service.port}/openapi.yaml",
                "--url", f"http://127.0.0.1:{service.port}",
                "--checks", "all",
                "--header", f"Authorization: Bearer {credential}",
                "--seed", SEED, "--max-examples", MAX_EXAMPLES,
                # One worker: with two, CPython 3.11 failed an `ast.parse` that hypothesis runs to describe
                # a strategy ("AST constructor recursion depth mismatch", seen in a CI run) - a tool error.
                "--workers", "1",
                "--generation-database", "none", "--no-color", "--request-timeout", "10",
                *arguments, *extra,
            ]
            # Run from a scratch directory: schemathesis keeps a cache of past failures (.schemathesis)
            # in its working directory, which would make a run depend on the ones before it.
            scratch = tempfile.mkdtemp(prefix="notifications-fuzz-")
            try:
                return subprocess.run(command, cwd=scratch, timeout=900).returncode
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

        # The backend's credential, on every operation.
        returncode = schemathesis_run(e2e.KEY, "--phases", "examples,coverage,fuzzing,stateful")
        if returncode == 0:
            # A browser's: a user token for alice (the documents' example user), on the routes a
            # user token may call; every other user is 403, as documented.
            status, _, minted = e2e.call(service.port, "POST", "/v1/users/alice/tokens", {"ttlSeconds": 3600}, e2e.auth())
            assert status == 201, minted
            returncode = schemathesis_run(
                minted["token"], "--phases", "examples,coverage,fuzzing",
                "--include-path-regex", r"^/v1/users/\{userId\}/(notifications|preferences)",
                # An operation id is never alice's in a generated request: all 403/404, which
                # schemathesis takes for missing credentials (the API-key run covers it).
                "--exclude-path-regex", "/operations/")
        if service.process.poll() is not None:
            sys.exit(f"api-fuzz: the service exited during the run:\n{service.logs()}")
        sys.exit(returncode)
    finally:
        if service:
            service.stop()
        servers.stop()
        e2e.remove_service_logs()


if __name__ == "__main__":
    main()
