"""deploy/helm/gatehook: rendered by helm and validated by kubeconform against the Kubernetes
schemas (strict, offline; scripts/install-k8s-tools builds both and prepares the schemas),
and what the chart depends on checked against the code."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehook.metrics import Metrics, MetricsServer
from gatehook.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "gatehook"
BIN = ROOT / ".venv" / "bin"
SCHEMAS = ROOT / ".venv" / "share" / "k8s-schemas"
VERSIONS = ("1.25.0", "1.34.0")  # scripts/k8s_schemas.py prepares these
REQUIRED = {
    "nats.url": "nats://gatehook-worker:worker-secret@nats:4222",
    "nats.consoleUrl": "nats://gatehook-console:console-secret@nats:4222",
    "mongodb.url": "mongodb://mongo:27017",
    "console.token": "0123456789abcdef-token",
}
EVERYTHING_ON = {
    **REQUIRED,
    "metrics.serviceMonitor.enabled": "true",
    "secrets.key": "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0=",
    "nats.tlsSecret": "nats-client-tls",
    "nats.credsSecret": "nats-worker-creds",
    "nats.consoleCredsSecret": "nats-console-creds",
    "console.oidc.issuer": "https://login.example.com",
    "console.oidc.redirectUrl": "https://console.example.com/oidc/callback",
    "gateway.enabled": "true",
    "nats.gatewayUrl": "nats://gatehook-gateway:gateway-secret@nats:4222",
    "gateway.credsSecret": "nats-gateway-creds",
}
EVERYTHING_OFF = {
    "existingSecret": "my-connections",
    "console.enabled": "false",
    "networkPolicy.enabled": "false",
    "worker.hpa.enabled": "false",
    "worker.pdb.enabled": "false",
}


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is missing: run scripts/install-k8s-tools"
    return str(path)


def helm(values: dict[str, str], kube: str = "1.34.0") -> subprocess.CompletedProcess[str]:
    args = [_tool("helm"), "template", "gh", str(CHART), "--kube-version", kube]
    for key, value in values.items():
        args += ["--set-string" if key.endswith(("url", "Url", "token", "key")) else "--set"]
        args += [f"{key}={value}"]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


def render(values: dict[str, str], kube: str = "1.34.0") -> str:
    done = helm(values, kube)
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(values: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(render(values)) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def kubeconform(manifests: str, kube: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            _tool("kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            kube,
            "-schema-location",
            f"{SCHEMAS}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}"
            "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-schema-location",
            f"{SCHEMAS}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    report["returncode"] = done.returncode
    return report


@pytest.mark.parametrize("kube", VERSIONS)
@pytest.mark.parametrize("values", [EVERYTHING_ON, EVERYTHING_OFF], ids=["all-on", "all-off"])
def test_chart_renders_and_validates(values: dict[str, str], kube: str) -> None:
    report = kubeconform(render(values, kube), kube)
    summary = report["summary"]
    assert report["returncode"] == 0, report
    assert summary["invalid"] == summary["errors"] == summary["skipped"] == 0, report
    # all on: worker, console and gateway with their Services, HPAs, PDBs, policies
    assert summary["valid"] == (15 if values is EVERYTHING_ON else 2)  # worker + its Service


def test_validation_can_fail() -> None:
    """kubeconform really checks: an unknown field and a wrong type are refused."""
    worker = objects(REQUIRED)[("Deployment", "gh-gatehook-worker")]
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 40  # no such field
    worker["spec"]["replicas"] = "two"
    report = kubeconform(yaml.safe_dump(worker), "1.34.0")
    assert report["returncode"] != 0
    assert report["summary"]["invalid"] == 1
    message = report["resources"][0]["msg"]
    assert "terminationGracePeriod" in message or "replicas" in message


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({}, "set nats.url and mongodb.url, or existingSecret"),
        ({**REQUIRED, "console.token": "short"}, "console.token must be at least 16"),
        (
            {**REQUIRED, "worker.drainTimeoutSeconds": "40"},
            "terminationGracePeriodSeconds must be longer",
        ),
    ],
)
def test_chart_refuses_what_would_not_work(values: dict[str, str], says: str) -> None:
    done = helm(values)
    assert done.returncode != 0
    assert says in done.stderr


def _env_field(name: str) -> bool:
    """Whether ``name`` is a setting gatehook reads (GATEHOOK_A__B -> Settings.a.b)."""
    assert name.startswith("GATEHOOK_"), name
    model: Any = Settings
    for part in name.removeprefix("GATEHOOK_").lower().split("__"):
        field = model.model_fields.get(part)
        if field is None:
            return False
        model = field.annotation
    return True


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_chart_facts_match_the_code() -> None:
    objs = objects(EVERYTHING_ON)
    worker = objs[("Deployment", "gh-gatehook-worker")]
    console = objs[("Deployment", "gh-gatehook-console")]
    gateway = objs[("Deployment", "gh-gatehook-gateway")]
    secret = objs[("Secret", "gh-gatehook-connections")]
    pods = {
        "worker": worker["spec"]["template"]["metadata"]["labels"],
        "console": console["spec"]["template"]["metadata"]["labels"],
        "gateway": gateway["spec"]["template"]["metadata"]["labels"],
    }
    for deployment in (worker, console, gateway):
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e for e in container["env"]}
        unknown = [n for n in env if not _env_field(n)]
        assert not unknown, f"{deployment['metadata']['name']} sets unknown settings {unknown}"
        for e in env.values():  # every Secret reference names the Secret and one of its keys
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"]
        # files the settings name are mounted, from the Secret volumes the pod has
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec["volumes"]}
        for e in env.values():
            if e["name"].endswith("_FILE"):
                folder = str(Path(e["value"]).parent)
                assert folder in mounts, e
                assert volumes[mounts[folder]]["secret"]["secretName"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/healthz"
            assert container[probe]["httpGet"]["port"] in ports
        assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= pods[deployment["metadata"]["name"].rsplit("-", 1)[1]].items()
        )

    (w,) = worker["spec"]["template"]["spec"]["containers"]
    wenv = {e["name"]: e.get("value") for e in w["env"]}
    metrics_port = int(wenv["GATEHOOK_METRICS__PORT"])
    assert {p["name"]: p["containerPort"] for p in w["ports"]} == {"metrics": metrics_port}
    assert wenv["GATEHOOK_METRICS__HOST"] == "0.0.0.0"
    drain = float(wenv["GATEHOOK_DRAIN_TIMEOUT_S"])
    assert Settings(drain_timeout_s=drain).drain_timeout_s == drain
    # the grace period outlasts the drain and the supervisor's margin (cli/serve.py: + 5 s)
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain + 5
    assert w["args"][:2] == ["gatehook", "worker"]
    assert "--processes" in _cli("worker", "--help")
    (c,) = console["spec"]["template"]["spec"]["containers"]
    cenv = {e["name"]: e.get("value") for e in c["env"]}
    assert c["args"] == ["gatehook", "console"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": int(cenv["GATEHOOK_CONSOLE__PORT"])
    }
    assert json.loads(cenv["GATEHOOK_CONSOLE__TENANTS"]) == []
    assert secret["stringData"]["console-nats-url"].startswith("nats://gatehook-console:")
    assert cenv["GATEHOOK_CONSOLE__OIDC__ISSUER"] == "https://login.example.com"
    assert cenv["GATEHOOK_CONSOLE__OIDC__TOKEN_SIGN_IN"] == "false"
    volumes = {v["name"]: v for v in console["spec"]["template"]["spec"]["volumes"]}
    assert volumes["nats-creds"]["secret"]["secretName"] == "nats-console-creds"
    assert "GATEHOOK_SECRETS__KEY" in wenv  # the workers seal; the console needs no key
    assert "GATEHOOK_SECRETS__KEY" not in cenv

    service = objs[("Service", "gh-gatehook-worker-metrics")]
    assert _labels_match(service["spec"]["selector"], pods["worker"])
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    console_service = objs[("Service", "gh-gatehook-console")]
    assert _labels_match(console_service["spec"]["selector"], pods["console"])
    pdb = objs[("PodDisruptionBudget", "gh-gatehook-worker")]
    assert _labels_match(pdb["spec"]["selector"]["matchLabels"], pods["worker"])
    hpa = objs[("HorizontalPodAutoscaler", "gh-gatehook-worker")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert "replicas" not in worker["spec"]  # the HPA owns the count
    monitor = objs[("ServiceMonitor", "gh-gatehook-worker")]
    assert _labels_match(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    for component in ("worker", "console"):
        policy = objs[("NetworkPolicy", f"gh-gatehook-{component}")]
        assert _labels_match(policy["spec"]["podSelector"]["matchLabels"], pods[component])
        inbound = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
        assert inbound == [metrics_port if component == "worker" else 8089]
        outbound = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {4222, 53} <= outbound
    worker_out = {
        p["port"]
        for rule in objs[("NetworkPolicy", "gh-gatehook-worker")]["spec"]["egress"]
        for p in rule["ports"]
    }
    assert {27017, 443} <= worker_out


def _cli(*args: str) -> str:
    done = subprocess.run(
        [str(BIN / "gatehook"), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def test_the_probed_path_is_served_on_the_metrics_port() -> None:
    """What the worker's probes ask for, from a real metrics server: 503 until ready."""
    state = {"ready": False}
    server = MetricsServer(Metrics(), lambda: dict(state), "127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
        refused.value.close()
        state["ready"] = True
        with urllib.request.urlopen(url, timeout=5) as ok:
            assert ok.status == 200
    finally:
        server.stop()


def test_chart_lints_strictly() -> None:
    args = [_tool("helm"), "lint", "--strict", str(CHART)]
    for key, value in REQUIRED.items():
        args += ["--set-string", f"{key}={value}"]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout
