#!/usr/bin/env python3
"""Schemathesis against the running local stack, from infra/openapi.yaml (`scripts/dev.sh fuzz-api`).

Two runs with every check, a fixed seed and a bounded number of examples per operation:

- as a user (`x-local-user: fuzz-user-<random>`) over the user routes,
- as an operator (`x-local-operator: arn:aws:iam::111122223333:user/ops`) over the admin routes.

The document is used as it is, except for its security schemes: locally the callers are named by the
`x-local-user` and `x-local-operator` headers (builds with `claim-api/local-auth`), not by a Cognito
token or a SigV4 signature, so the copy the runs read declares those headers as the schemes. That way
the authentication checks (a request without the header must answer 401 or 403) test what the local
build really enforces instead of an `Authorization` header it never reads.

Before the runs, a few devices of this run are imported and two of them claimed by the run's user, and
their ThingNames, claim ids and codes are offered to the generator (besides random values), so the
fuzzer also reaches the 200/202/204 answers and checks their bodies and headers.

Exits non-zero if either run found a failure (or could not run); prints a summary either way. Failures
that match a known handler defect are labelled so in the summary, but still fail the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "infra" / "openapi.yaml"
STATIC_CONFIG = Path(__file__).with_name("schemathesis.toml")
OPERATOR = "arn:aws:iam::111122223333:user/ops"
# The demo vendor `scripts/dev.sh` configures; its claim-thing publishes to the local staging broker.
VENDOR = "demo-vendor"

# Known defects not fixed yet (see tests/tests/end_to_end/hostile_corpus.rs): none. An entry is
# (checks, a pattern of the test case that shows it, label); a failure matching one is labelled with it in
# the summary, and still fails the run.
KNOWN_DEFECTS: list[tuple[tuple[str, ...], re.Pattern[str], str]] = []


def local_document(out: Path) -> Path:
    """infra/openapi.yaml with the local stand-ins for the two security schemes."""
    document = yaml.safe_load(DOCUMENT.read_text())
    schemes = document["components"]["securitySchemes"]
    schemes["cognito"] = {
        "type": "apiKey",
        "in": "header",
        "name": "x-local-user",
        "description": "Local stand-in for the Cognito authorizer (claim-api/local-auth).",
    }
    schemes["iam"] = {
        "type": "apiKey",
        "in": "header",
        "name": "x-local-operator",
        "description": "Local stand-in for IAM authorization (claim-api/local-auth).",
    }
    path = out / "openapi-local.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def call(api: str, method: str, path: str, header: tuple[str, str], body: object | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{api}{path}", data=data, method=method)
    request.add_header(*header)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def seed(api: str, run: str, user: str) -> dict[str, list[str]]:
    """Devices of this run, all held already: three by `user`, one by another user. Returns the values
    for the generator: their ThingNames (paths and claim codes) and `user`'s claim ids.

    None is left free on purpose: a new claim binds its Idempotency-Key to the device (docs/api.md), and
    the generator reuses short keys ("0") all the time, so a later schema-valid claim with the same key
    and another code would be refused (400) by contract, not by a defect. Claims of held devices answer
    200 (or 409 for the other user's) and store no key."""
    things = [f"fuzz-{run}-{i}" for i in range(4)]
    status, body = call(
        api,
        "PUT",
        "/v1/admin/devices",
        ("x-local-operator", OPERATOR),
        {"devices": [{"thing_name": t, "vendor": VENDOR, "sku": "FUZZ"} for t in things]},
    )
    if status != 200 or any(r.get("status") != "created" for r in body["results"]):
        raise SystemExit(f"fuzz-api: importing the run's devices failed: {status} {body}")
    claims = []
    for i, thing in enumerate(things):
        holder = user if i < 3 else f"fuzz-other-{run}"
        status, body = call(api, "POST", "/v1/claims", ("x-local-user", holder), {"code": thing})
        if status != 202:
            raise SystemExit(f"fuzz-api: claiming {thing} failed: {status} {body}")
        if holder == user:
            claims.append(body["claim_id"])
    return {"things": things, "claims": claims}


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def write_config(out: Path, seeded: dict[str, list[str]]) -> Path:
    """The checked-in settings plus this run's dictionaries (real ThingNames, claim ids, codes)."""
    text = STATIC_CONFIG.read_text()
    text += f"""
# ---- written by tests/hostile/fuzz_api.py for this run ----
[dictionaries.things]
values = {toml_list(seeded["things"])}

[dictionaries.claims]
values = {toml_list(seeded["claims"])}

[parameters]
"path.thing_name" = {{ dictionary = "things", probability = 0.3 }}
"path.claim_id" = {{ dictionary = "claims", probability = 0.3 }}
"body.code" = {{ dictionary = "things", probability = 0.3 }}
"""
    path = out / "schemathesis.toml"
    path.write_text(text)
    return path


def run_schemathesis(
    binary: str, config: Path, document: Path, api: str, name: str, identity: str, scope: list[str], args, out: Path
) -> tuple[int, float]:
    report_dir = out / name
    command = [
        binary,
        "--config-file",
        str(config),
        "run",
        str(document),
        "--url",
        api,
        "--header",
        identity,
        *scope,
        "--checks",
        "all",
        # Locally any printable header value names a valid caller: there is no invalid credential to
        # try, so `ignored_auth`'s "invalid credentials" probe cannot pass. A request without the header
        # must still answer 401/403: `missing_required_header` checks that.
        "--exclude-checks",
        "ignored_auth",
        "--seed",
        str(args.seed),
        "--max-examples",
        str(args.max_examples),
        "--workers",
        str(args.workers),
        # Known defects fail every operation early on; keep generating so they do not hide others.
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit,har",
        "--report-dir",
        str(report_dir),
    ]
    print(f"==> fuzz-api: {name}: {' '.join(command[3:])}", flush=True)
    started = time.monotonic()
    status = subprocess.run(command, cwd=out, check=False).returncode
    return status, time.monotonic() - started


def failures(report_dir: Path) -> list[tuple[str, str, str, str, str]]:
    """(operation, check, test case id, detail) of every failed check in the run's JUnit report, and
    the known defect it matches ("" if none)."""
    found = []
    for report in report_dir.glob("junit*.xml"):
        for element in ET.parse(report).getroot().iter("testcase"):
            operation = element.get("name") or "?"
            for failure in list(element.iter("failure")) + list(element.iter("error")):
                text = failure.text or failure.get("message") or ""
                cases = re.split(r"^\d+\. Test Case ID: ", text, flags=re.M)
                if len(cases) == 1:  # an error, not a failed check
                    first = next((line for line in text.splitlines() if line.strip()), "error")
                    found.append((operation, "error", "-", first.strip(), ""))
                    continue
                for case in cases[1:]:
                    case_id = case.split("\n", 1)[0].strip()
                    for check, title, body in re.findall(r"^- (ST\d+) (.*)\n((?:(?!^- ST|^\[\d{3}\]).*\n?)*)", case, flags=re.M):
                        detail = next((line.strip() for line in body.splitlines() if line.strip()), title)
                        known = next((label for kind, pattern, label in KNOWN_DEFECTS
                                      if check in kind and pattern.search(case)), "")
                        found.append((operation, f"{check} {title}", case_id, detail, known))
    return found


def disable_imported(api: str, report_dir: Path) -> None:
    """Disables every device an import in the run's HAR report created or updated."""
    things = set()
    for report in report_dir.glob("har*.json"):
        for entry in json.loads(report.read_text())["log"]["entries"]:
            request, response = entry["request"], entry["response"]
            if request["method"] != "PUT" or response["status"] != 200:
                continue
            try:
                rows = json.loads(response["content"].get("text") or "{}").get("results", [])
            except ValueError:
                continue
            things.update(
                row["thing_name"]
                for row in rows
                if row.get("status") in ("created", "updated") and isinstance(row.get("thing_name"), str)
            )
    for thing in sorted(things):
        path = "/v1/admin/devices/" + urllib.parse.quote(thing, safe=":") + "/disable"
        call(api, "POST", path, ("x-local-operator", OPERATOR), {"reason": "fuzz-api: imported by a fuzz run"})
    print(f"==> fuzz-api: disabled the {len(things)} device(s) the operator run imported")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=os.environ.get("CLAIM_API_URL"), help="the API base URL (CLAIM_API_URL)")
    parser.add_argument("--schemathesis", default="schemathesis", help="the schemathesis binary")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_API_SEED", "20260101")))
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_API_EXAMPLES", "200")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FUZZ_API_WORKERS", "1")))
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "fuzz-api", help="reports go here")
    args = parser.parse_args()
    if not args.api:
        parser.error("--api or CLAIM_API_URL is needed (source .local/endpoints.env)")
    api = args.api.rstrip("/")

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    run = uuid.uuid4().hex[:12]
    user = f"fuzz-user-{run}"
    document = local_document(args.out)
    config = write_config(args.out, seed(api, run, user))

    results = []
    # The operator run imports devices with generated names ("0", "00", ...). Disabled afterwards, so
    # that a later user run on the same stack cannot claim one: a new claim binds the request's
    # Idempotency-Key, and a schema-valid reuse of that key is then refused (400) by contract.
    for name, identity, scope in [
        ("user", f"x-local-user: {user}", ["--exclude-path-regex", "^/v1/admin/"]),
        ("operator", f"x-local-operator: {OPERATOR}", ["--include-path-regex", "^/v1/admin/"]),
    ]:
        status, seconds = run_schemathesis(args.schemathesis, config, document, api, name, identity, scope, args, args.out)
        results.append((name, status, seconds, failures(args.out / name)))
    disable_imported(api, args.out / "operator")

    print("\n==> fuzz-api summary (seed %d, %d examples per operation; reports in %s)" % (args.seed, args.max_examples, args.out))
    failed = False
    for name, status, seconds, found in results:
        new = sum(1 for *_, known in found if not known)
        print(f"    {name}: exit status {status}, {len(found)} failed check(s), {new} not a known defect, {seconds:.0f} s")
        for operation, check, case_id, detail, known in found:
            label = f"known defect: {known}" if known else "NEW"
            print(f"      - [{label}] {operation}: {check} ({case_id}): {detail[:140]}")
        failed |= status != 0 or bool(found)
    print("==> fuzz-api: %s" % ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
