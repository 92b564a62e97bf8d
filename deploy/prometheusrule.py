"""Write deploy/prometheus/alerts.yml as a Prometheus Operator `PrometheusRule` (on stdout).

The rules have one source, alerts.yml (checked by promtool's unit tests and loaded by the compose
Prometheus); the Kubernetes copy is this script's output, committed, and a test checks that the two agree:

    python3 deploy/prometheusrule.py > deploy/k8s/prometheus-operator/prometheusrule.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

ALERTS = Path(__file__).resolve().parent / "prometheus" / "alerts.yml"

HEADER = """\
# Vitrine's alerting rules for a cluster running the Prometheus Operator: deploy/prometheus/alerts.yml,
# unchanged, under spec. Generated, do not edit:
#   python3 deploy/prometheusrule.py > deploy/k8s/prometheus-operator/prometheusrule.yaml
# A Prometheus that selects rules by label (ruleSelector; kube-prometheus-stack: `release: <its release>`)
# needs that label added below.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: vitrine
  labels:
    app.kubernetes.io/name: vitrine
spec:
"""


def prometheus_rule(alerts: str) -> str:
    """The PrometheusRule text: the rules file from its `groups:` line on, indented under `spec`."""
    lines = alerts.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "\n".join(f"  {line}" if line else "" for line in lines[start:])
    return HEADER + body + "\n"


if __name__ == "__main__":
    sys.stdout.write(prometheus_rule(ALERTS.read_text()))
