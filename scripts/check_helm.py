"""Renders deploy/helm/switchyard with Helm's own Go engine (helm-python-sdk,
no helm binary needed), lints it, validates every rendered object against
the Kubernetes JSON schemas (kubernetes-validate, strict, at the chart's
oldest supported version and the newest bundled one), and checks what the
chart promises: probes, the preStop sleep and a grace period that fits the
drain, the security context, keys from Secrets. Refusals the chart must
make (a grace period too short, a [server] table in `config`) are checked
too. Writes the default render's config file to the path given, for
`switchyard check-config`. Run by scripts/check-deploy.sh inside its venv.

Usage: python check_helm.py CHART_DIR CONFIG_OUT
"""

import sys

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

OLDEST_KUBERNETES = "1.30.0"  # the preStop `sleep` action is on by default from 1.30
NEWEST_KUBERNETES = kubernetes_validate.latest_version()

# The Prometheus Operator's CRD is not in the Kubernetes schemas: the
# fields this chart writes, checked by hand (minimal, not the whole CRD).
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "authorization": {
                                "type": "object",
                                "required": ["type", "credentials"],
                                "properties": {
                                    "credentials": {
                                        "type": "object",
                                        "required": ["name", "key"],
                                    }
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

VARIANTS = {
    "default": {},
    "fixed replicas, ServiceMonitor, rollout on config change": {
        "autoscaling": {"enabled": False},
        "serviceMonitor": {"enabled": True},
        "rolloutOnConfigChange": True,
    },
    "config from an existing Secret, no PDB": {
        "existingConfigSecret": "switchyard-config",
        "podDisruptionBudget": {"enabled": False},
        "serviceMonitor": {"enabled": True, "bearerTokenSecret": {}},
    },
}

MUST_REFUSE = {
    "shutdown.terminationGracePeriodSeconds": {"shutdown": {"terminationGracePeriodSeconds": 30}},
    "must not contain a [server] table": {"config": "[server]\nlisten = \"0.0.0.0:1\"\n"},
    "providerKeys": {"providerKeys": [{"env": "OPENAI_API_KEY"}]},
}


def fail(message):
    print(f"FAIL {message}", file=sys.stderr)
    sys.exit(1)


def merged_values(chart_dir, values):
    with helm.Chart.load(chart_dir) as chart:
        return chart.merge_values(values)


def render(chart_dir, values):
    with helm.Chart.load(chart_dir) as chart:
        rendered = chart.render(values, name="gw", namespace="ai")
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend((path, o) for o in yaml.safe_load_all(text) if o)
    return objects


def validate(path, obj):
    if obj["kind"] == "ServiceMonitor":
        jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
        return
    for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            fail(f"{path}: {obj['kind']} against Kubernetes {version}: {where}: {e.message}")


def check_deployment(deployment, values):
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    expect = {
        "readiness probe on /readyz": container["readinessProbe"]["httpGet"]["path"] == "/readyz",
        "liveness probe on /healthz": container["livenessProbe"]["httpGet"]["path"] == "/healthz",
        "preStop sleeps": container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0,
        "runAsNonRoot": pod["securityContext"]["runAsNonRoot"] is True,
        "readOnlyRootFilesystem": container["securityContext"]["readOnlyRootFilesystem"] is True,
        "no privilege escalation": container["securityContext"]["allowPrivilegeEscalation"] is False,
        "all capabilities dropped": container["securityContext"]["capabilities"]["drop"] == ["ALL"],
        "provider keys from Secrets": all(
            "secretKeyRef" in e["valueFrom"] for e in container["env"] if "valueFrom" in e
        )
        and any("valueFrom" in e for e in container["env"]),
        "writable data and /tmp volumes": {m["mountPath"] for m in container["volumeMounts"]}
        >= {"/var/lib/switchyard", "/tmp", "/etc/switchyard"},
    }
    shutdown = values["shutdown"]
    needed = sum(shutdown[k] for k in ("preStopSleepSeconds", "drainDelaySeconds", "drainTimeoutSeconds"))
    expect["grace period > preStop + drain_delay + drain_timeout"] = pod["terminationGracePeriodSeconds"] > needed
    for what, ok in expect.items():
        if not ok:
            fail(f"Deployment: {what}")


def check_variant(chart_dir, name, values):
    objects = render(chart_dir, values)
    kinds = {}
    for path, obj in objects:
        validate(path, obj)
        kinds.setdefault(obj["kind"], obj)
    required = {"Deployment", "Service", "ServiceAccount"}
    required |= {"ConfigMap"} if not values.get("existingConfigSecret") else set()
    required |= {"HorizontalPodAutoscaler"} if values.get("autoscaling", {}).get("enabled", True) else set()
    required |= {"PodDisruptionBudget"} if values.get("podDisruptionBudget", {}).get("enabled", True) else set()
    required |= {"ServiceMonitor"} if values.get("serviceMonitor", {}).get("enabled") else set()
    missing = required - kinds.keys()
    if missing:
        fail(f"{name}: no {', '.join(sorted(missing))} rendered")
    check_deployment(kinds["Deployment"], merged_values(chart_dir, values))
    print(f"ok  {name}: {', '.join(sorted(kinds))} valid against Kubernetes {OLDEST_KUBERNETES} and {NEWEST_KUBERNETES}")
    return kinds


def check_refusals(chart_dir):
    for expected, values in MUST_REFUSE.items():
        try:
            render(chart_dir, values)
        except helm.HelmError as e:
            if expected not in str(e):
                fail(f"values {values} refused, but not naming {expected!r}: {e}")
            print(f"ok  refused: {expected}")
            continue
        fail(f"values {values} rendered; the chart should refuse them ({expected})")


def main():
    chart_dir, config_out = sys.argv[1], sys.argv[2]
    report = helm.lint(chart_dir, strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if problems or report.get("errors"):
        fail(f"helm lint: {problems or report['errors']}")
    print("ok  helm lint (strict)")
    default = check_variant(chart_dir, "default", VARIANTS["default"])
    for name, values in VARIANTS.items():
        if name != "default":
            check_variant(chart_dir, name, values)
    check_refusals(chart_dir)
    with open(config_out, "w") as f:
        f.write(default["ConfigMap"]["data"]["switchyard.toml"])


if __name__ == "__main__":
    main()
