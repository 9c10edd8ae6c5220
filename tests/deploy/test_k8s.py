"""deploy/k8s renders with kustomize, validates against the Kubernetes and KEDA schemas, and matches the code.

Offline: `kubectl kustomize` renders without a cluster; built-in kinds are checked strictly (unknown
fields fail) with the schemas of the kubernetes-validate package; KEDA's objects with the
openAPIV3Schema of KEDA's own CRDs (tests/deploy/schemas), made strict the same way.
"""

from __future__ import annotations

import copy
import importlib
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from rq import Queue

from tests.deploy.tools import DEPLOY, check_parse, code_metric_names, metric_names, setting_default, tool
from tests.helpers import ROOT

K8S = DEPLOY / "k8s"
SCHEMAS = Path(__file__).parent / "schemas"
# The oldest and the newest Kubernetes minor the manifests are checked against.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# KEDA v2.20.2 pkg/scalers/{prometheus,redis}_scaler.go: the metadata each trigger type reads.
TRIGGER_METADATA = {
    "prometheus": {
        "required": {"serverAddress", "query", "threshold"},
        "optional": {"queryParameters", "activationThreshold", "namespace", "customHeaders", "ignoreNullValues"}
        | {"unsafeSsl", "awsRegion", "timeout", "identityOwner"},
    },
    "redis": {
        "required": {"listName"},
        "optional": {"address", "addresses", "host", "hosts", "port", "ports", "username", "password"}
        | {"listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl"},
    },
}


@cache
def rendered() -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize deploy/k8s`, as objects."""
    out = subprocess.run([tool("kubectl"), "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def examples() -> list[dict[str, Any]]:
    """The example manifests (not part of the kustomization)."""
    return [d for path in sorted((K8S / "examples").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]


def of_kind(kind: str, docs: tuple[dict[str, Any], ...] | None = None) -> list[dict[str, Any]]:
    """Objects of one kind."""
    return [d for d in (rendered() if docs is None else docs) if d["kind"] == kind]


def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    return [strict(v) for v in schema] if isinstance(schema, list) else schema


@cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """Validator of one KEDA kind from its vendored CRD."""
    crd = yaml.safe_load((SCHEMAS / f"keda.sh_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta, checked by the API server
    return jsonschema.Draft7Validator(schema)


def keda_errors(doc: dict[str, Any]) -> list[str]:
    """Schema violations of a KEDA object, and trigger metadata KEDA would not read or would miss."""
    errors = [f"{e.json_path}: {e.message}" for e in crd_validator(doc["kind"]).iter_errors(doc)]
    for trigger in doc.get("spec", {}).get("triggers", []):
        known = TRIGGER_METADATA[trigger["type"]]
        keys = set(trigger["metadata"])
        errors += [f"{trigger['type']} trigger lacks {k}" for k in known["required"] - keys]
        errors += [f"{trigger['type']} trigger: unknown {k}" for k in keys - known["required"] - known["optional"]]
    return errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    kinds = set()
    for doc in rendered():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.add(doc["kind"])
    assert {"Deployment", "Service", "StatefulSet", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


def test_validation_is_strict() -> None:
    deployment = copy.deepcopy(of_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolisy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    scaled = copy.deepcopy(of_kind("ScaledObject")[0])
    scaled["spec"]["minReplicas"] = 1
    scaled["spec"]["triggers"][0]["metadata"]["treshold"] = "2"
    assert len(keda_errors(scaled)) == 2, keda_errors(scaled)


def test_keda_objects_match_the_keda_crds() -> None:
    docs = [d for d in (*rendered(), *examples()) if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        assert not keda_errors(doc), (doc["metadata"]["name"], keda_errors(doc))


def model_of(deployment: dict[str, Any]) -> str:
    """The model a worker Deployment serves: its `--name` argument."""
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return str(args[args.index("--name") + 1])


def workers() -> list[dict[str, Any]]:
    """Worker Deployments."""
    return [d for d in of_kind("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]


def test_each_worker_has_a_gpu_warm_readiness_and_time_to_finish_its_job() -> None:
    (config,) = of_kind("ConfigMap")
    timeout = int(config["data"].get("DIFFUSION_JOB_TIMEOUT_SECONDS", setting_default("worker", "job_timeout_seconds")))
    assert workers()
    for deployment in workers():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"] == ["python", "/srv/deploy/healthcheck.py", "worker"]
        assert pod["terminationGracePeriodSeconds"] >= timeout + 60
        assert "preStop" not in container.get("lifecycle", {}), "SIGTERM itself is the drain (RQ warm shutdown)"
        assert deployment["metadata"]["labels"]["diffusion/model"] == model_of(deployment)
        assert "replicas" not in deployment["spec"], "the ScaledObject owns replicas"


def test_pods_run_as_the_images_numeric_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for deployment in of_kind("Deployment"):
        context = deployment["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsNonRoot"] and f"USER {context['runAsUser']}:" in dockerfile


def test_every_worker_and_the_api_are_scraped_on_their_metrics_port() -> None:
    for deployment in of_kind("Deployment"):
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        port = template["metadata"]["annotations"]["prometheus.io/port"]
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert int(port) in {p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if deployment in workers():
            assert env["DIFFUSION_METRICS_PORT"] == port
        else:
            assert int(port) == 8000 and "8000" in (ROOT / "Dockerfile").read_text()
    assert str(setting_default("worker", "metrics_port")) == "9101"


def test_each_worker_scales_on_its_own_models_queued_and_running_jobs(tmp_path: Path) -> None:
    """The KEDA query names metrics the code defines, selects the Deployment's model, and parses."""
    objects = {d["spec"]["scaleTargetRef"]["name"]: d for d in of_kind("ScaledObject")}
    queries = {}
    for deployment in workers():
        model = model_of(deployment)
        (trigger,) = objects[deployment["metadata"]["name"]]["spec"]["triggers"]
        query = trigger["metadata"]["query"]
        assert metric_names(query) == {"diffusion_queue_depth", "diffusion_jobs_running"}, query
        assert metric_names(query) <= code_metric_names()
        assert query.count(f'{{model="{model}"}}') == 2, query
        queries[model] = query
    check_parse(queries, tmp_path)


def queue_names_from_code(prefix: str, model: str) -> list[str]:
    """The model's RQ queue names from contract/ (the module holding them may be renamed)."""
    for module in ("contract.queues", "contract.keys"):
        try:
            names = importlib.import_module(module).queue_names
        except (ModuleNotFoundError, AttributeError):
            continue
        return list(names(prefix, model))
    raise AssertionError("no queue_names() in contract.queues or contract.keys")


def test_redis_list_triggers_name_the_models_rq_queue_lists() -> None:
    (config,) = of_kind("ConfigMap")
    prefix = config["data"]["DIFFUSION_KEY_PREFIX"]
    by_target = {d["spec"]["scaleTargetRef"]["name"]: d for d in of_kind("ScaledObject", tuple(examples()))}
    for deployment in workers():
        scaled = by_target.get(deployment["metadata"]["name"])
        if scaled is None:
            continue
        lists = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"]}
        expected = {Queue.redis_queue_namespace_prefix + q for q in queue_names_from_code(prefix, model_of(deployment))}
        assert lists == expected
        addresses = {t["metadata"]["address"] for t in scaled["spec"]["triggers"]}
        assert addresses == {"redis.diffusion.svc:6379"} and of_kind("StatefulSet")[0]["metadata"]["name"] == "redis"
    assert by_target, "the Redis-list example scales no worker Deployment"


def test_redis_statefulset_matches_redis_conf_and_keeps_its_aof_on_a_volume() -> None:
    (statefulset,) = of_kind("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    flags = {args[i].removeprefix("--"): args[i + 1] for i in range(0, len(args), 2)}
    conf = dict(line.split(None, 1) for line in (DEPLOY / "redis.conf").read_text().splitlines() if line[:1].isalpha())
    for key in ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy", "dir"):
        assert flags[key] == conf[key], key
    assert flags["save"] == "" and conf["save"] == '""'
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": flags["dir"]} in container["volumeMounts"]


def test_disruption_budgets_and_services_select_existing_pods() -> None:
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in (*of_kind("Deployment"), *of_kind("StatefulSet"))]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pods)

    budgets = of_kind("PodDisruptionBudget")
    assert len(budgets) == 1 + len(workers())
    for budget in budgets:
        assert selects(budget["spec"]["selector"]["matchLabels"]), budget["metadata"]["name"]
    for service in of_kind("Service"):
        assert selects(service["spec"]["selector"]), service["metadata"]["name"]
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "api"


def test_each_worker_keeps_its_compile_cache_on_a_volume() -> None:
    """Compiled graphs outlive a container restart: a volume is mounted where the image puts the inductor cache."""
    match = re.search(r"TORCHINDUCTOR_CACHE_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert match is not None
    for deployment in workers():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert "TORCHINDUCTOR_CACHE_DIR" not in {e["name"] for e in container.get("env", [])}, "the image's path"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get(match.group(1)) in {v["name"] for v in pod["volumes"]}, model_of(deployment)
