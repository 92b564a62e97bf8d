"""The Grafana dashboard's PromQL queries: list them, name the metrics they read, and run them on a Prometheus.

    python3 deploy/dashboard_check.py --prometheus http://127.0.0.1:9090   # every query must return data

Standard library only, so that it runs with any python3 (deploy/verify.sh uses the host's).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "vitrine.json"

# Grafana variables and the values used to run the queries outside Grafana.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "${job}": ".+", "$job": ".+"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "inf", "nan",
}


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL expression) for every Prometheus target of every panel."""
    return [(p["title"], t.get("refId", "?"), t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])
            if t.get("expr")]


def render(expr: str) -> str:
    """The expression with Grafana's variables replaced by concrete values."""
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (label matchers, durations, grouping and function names removed;
    names given in a `__name__` matcher, such as `{__name__=~"a|b"}`, kept)."""
    names = set()
    for match in re.finditer(r'__name__\s*=~?\s*"([^"]*)"', render(expr)):
        names.update(match.group(1).split("|"))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', render(expr))  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range durations and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or suffix of a number (1e3)
        names.add(word)
    return names


def instant_query(prometheus: str, expr: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Result vector of an instant query; raises RuntimeError when Prometheus reports an error."""
    url = f"{prometheus.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def check(prometheus: str, dashboard: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Run every query; (panel, refId, PASS/FAIL, detail) per query. Data means at least one finite value."""
    rows = []
    for title, ref, expr in queries(dashboard):
        try:
            result = instant_query(prometheus, render(expr))
        except (OSError, RuntimeError, ValueError) as exc:
            rows.append((title, ref, "FAIL", f"query error: {exc}"))
            continue
        values = [float(r["value"][1]) for r in result if "value" in r]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            rows.append((title, ref, "PASS", f"{len(result)} series, e.g. {finite[0]:.6g}"))
        else:
            rows.append((title, ref, "FAIL", "no data" if not result else f"{len(result)} series, none finite"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print one line per dashboard query; exit 1 if any returned no data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="Grafana dashboard JSON")
    args = parser.parse_args(argv)
    rows = check(args.prometheus, load(args.dashboard))
    for title, ref, verdict, detail in rows:
        print(f"  {verdict}  {title} [{ref}]: {detail}")
    failed = sum(1 for row in rows if row[2] != "PASS")
    print(f"dashboard queries: {len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
