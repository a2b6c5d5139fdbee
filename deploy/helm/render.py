"""Regenerate what the chart ships that is made from something else, then the plain manifests:

    .venv/bin/python deploy/helm/render.py

- ``switchgear/files/slo-rules.yaml``: what ``switchgear slo rules`` writes for the chart's
  default ``config.slo`` (the PrometheusRule's rules), and ``files/slo-rules.sha256``: the
  fingerprint helm computes for that ``config.slo`` (the chart refuses to ship the file's rules
  for another one);
- ``deploy/kubernetes/switchgear.yaml``: the chart rendered with its default values (release
  ``switchgear`` in namespace ``switchgear``), for those who apply plain manifests.

Run it after changing the chart; tests/deploy/test_helm_chart.py fails while either is stale.

With values of your own whose ``config.slo`` differs from the chart's, print the rules for them
and hand them to helm:

    .venv/bin/python deploy/helm/render.py --slo-rules-for my-values.yaml > slo-rules.yaml
    helm install switchgear deploy/helm/switchgear -f my-values.yaml \\
      --set-file prometheusRule.rules=slo-rules.yaml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "switchgear"
RULES = CHART / "files" / "slo-rules.yaml"
FINGERPRINT = CHART / "files" / "slo-rules.sha256"
MANIFESTS = ROOT / "deploy" / "kubernetes" / "switchgear.yaml"
#: Where scripts/setup --dev puts helm (from requirements/kubernetes-tools).
HELM = ROOT / ".venv" / "kubernetes-tools" / "bin" / "helm"
RELEASE, NAMESPACE = "switchgear", "switchgear"
HEADER = ("# Switchgear's chart (deploy/helm/switchgear) rendered with its default values, release\n"
          f"# {RELEASE!r} in namespace {NAMESPACE!r}, by deploy/helm/render.py: do not edit here.\n")
#: Renders without the shipped-rules check, to read what the check compares.
ANY_RULES = ("--set-string", "prometheusRule.rules=groups: []")


def helm(*arguments: str) -> str:
    """helm's output for ``arguments``; a CalledProcessError carrying its stderr on failure."""
    return subprocess.run([str(HELM), *arguments], capture_output=True, text=True,
                          check=True).stdout


def template(arguments: Sequence[str] = (), chart: Path = CHART) -> str:
    """``chart`` rendered by ``helm template`` with ``arguments`` (values files, --set)."""
    return helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, *arguments)


def objects(rendered: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of a render."""
    return [item for item in yaml.safe_load_all(rendered) if item]


def find(items: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``, when given) among ``items``."""
    found = [item for item in items
             if item["kind"] == kind and name in (None, item["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} named {name}"
    return found[0]


def gateway_config(items: list[dict[str, Any]]) -> str:
    """The gateway's config file as the chart's ConfigMap carries it."""
    text: str = find(items, "ConfigMap", RELEASE)["data"]["switchgear.yaml"]
    return text


def slo_rules(config: str) -> str:
    """What ``switchgear slo rules`` writes for the gateway config ``config``."""
    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder) / "switchgear.yaml", Path(folder) / "slo-rules.yaml"
        source.write_text(config)
        subprocess.run([sys.executable, "-m", "switchgear", "slo", "rules", "--config",
                        str(source), "-o", str(output)], check=True)
        return output.read_text()


def slo_rules_for(values: Path) -> str:
    """The SLO rules for the gateway config the chart renders with the values file ``values``."""
    return slo_rules(gateway_config(objects(template(["-f", str(values), *ANY_RULES]))))


def generate(chart: Path, manifests: Path) -> None:
    """Write ``chart``'s SLO rules and their fingerprint, then its default render to
    ``manifests``."""
    items = objects(template(ANY_RULES, chart))
    rule = find(items, "PrometheusRule")
    fingerprint = rule["metadata"]["annotations"]["switchgear/slo-config-sha256"]
    (chart / RULES.relative_to(CHART)).write_text(slo_rules(gateway_config(items)))
    (chart / FINGERPRINT.relative_to(CHART)).write_text(fingerprint + "\n")
    manifests.write_text(HEADER + template((), chart))


def main() -> None:
    """Regenerate the chart's SLO rules and the plain manifests in place, or print the SLO rules
    for a values file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slo-rules-for", type=Path, metavar="VALUES",
                        help="print the SLO rules for the chart rendered with this values file")
    arguments = parser.parse_args()
    if arguments.slo_rules_for is not None:
        sys.stdout.write(slo_rules_for(arguments.slo_rules_for))
        return
    generate(CHART, MANIFESTS)
    for path in (RULES, FINGERPRINT, MANIFESTS):
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
