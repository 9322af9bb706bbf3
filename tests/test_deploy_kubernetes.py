"""deploy/kubernetes (NGC Triton on GPU nodes + the web page) validated offline: no cluster is reached.

The kustomizations are rendered (in Python, for the features they use; checked against ``kubectl kustomize``
where kubectl is installed), every object is validated against the Kubernetes API schemas of the versions in
:data:`KUBERNETES_VERSIONS` with kubernetes-validate in strict mode (unknown fields are errors), and then
the tests check what the deployment relies on, taking the expected values from the project itself: ports
from the serving contract, Triton's flags from docker-compose.yml and server/admin_key.py, the web command
from docker/web.Dockerfile, the adapter's metric from its rule. A Prometheus Operator ServiceMonitor (a CRD,
no schema here) is checked by hand.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tomllib
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deepfake_edge.cli import build_parser
from deepfake_edge.server.admin_key import KEY_ENVIRONMENT_VARIABLE, restricted_api_flags
from deepfake_edge.serving_contract import GRPC_PORT, HTTP_PORT, METRICS_PORT

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
ADAPTER = DEPLOY / "prometheus-adapter"
SERVICE_MONITOR = DEPLOY / "monitoring" / "servicemonitor.yaml"
SECRET_TEMPLATE = DEPLOY / "admin-key-secret.template.yaml"
WEB_DOCKERFILE = ROOT / "docker" / "web.Dockerfile"
REPOSITORY_DOCKERFILE = ROOT / "docker" / "model-repository.Dockerfile"
NAMESPACE = "deepfake-edge"
# The oldest release these manifests claim (docs/kubernetes.md) and a current one.
KUBERNETES_VERSIONS = ("1.31", "1.35")
# Files in deploy/kubernetes/ that the kustomization deliberately does not apply (see its comment).
NOT_APPLIED = {"kustomization.yaml", SECRET_TEMPLATE.name}


# -- rendering -----------------------------------------------------------------------------------------------
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}
CLUSTER_SCOPED_KINDS = {"Namespace"}


def split_image(image: str) -> tuple[str, str | None]:
    """``registry:5000/name:tag`` -> (``registry:5000/name``, ``tag``); no tag -> (image, None)."""
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, None)


def pod_spec(obj: dict) -> dict | None:
    return obj.get("spec", {}).get("template", {}).get("spec")


def containers(obj: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(obj) or {}
    return spec.get("containers", []) + (spec.get("initContainers", []) if init else [])


def render(folder: Path) -> list[dict]:
    """What ``kubectl kustomize folder`` prints, for the kustomization features used here (others fail)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unsupported, f"render() does not implement kustomization fields {unsupported}"
    objects = []
    for resource in kustomization["resources"]:
        objects += [obj for obj in yaml.safe_load_all((folder / resource).read_text()) if obj]
    for obj in objects:
        if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED_KINDS:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for container in containers(obj):
            name, tag = split_image(container["image"])
            for image in kustomization.get("images", []):
                if image["name"] == name:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def adapter_objects() -> list[dict]:
    return render(ADAPTER)


def find(objects: list[dict], kind: str, name: str) -> dict:
    (match,) = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    return match


def container(objects: list[dict], deployment: str, name: str | None = None) -> dict:
    (match,) = [c for c in containers(find(objects, "Deployment", deployment), init=False)
                if name is None or c["name"] == name]
    return match


def container_port(spec: dict, port: int | str) -> int:
    """A probe's or Service's port (number or container-port name) as a number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port]
    return number


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def compose() -> dict:
    """docker-compose.yml as written (variables not substituted: no docker-compose needed)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_default(value: str) -> str:
    """``${VAR:-default}`` -> default, as compose resolves it with VAR unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def triton(objects: list[dict]) -> dict:
    return container(objects, "triton", "triton")


def adapter_rules(adapter_objects: list[dict]) -> list[dict]:
    (configmap,) = [obj for obj in adapter_objects if obj["kind"] == "ConfigMap"]
    return yaml.safe_load(configmap["data"]["config.yaml"])["rules"]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``768Mi``, ``8Gi``) as a number."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units[unit]


# -- schema validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly_against_the_kubernetes_schemas(objects: list[dict],
                                                                        adapter_objects: list[dict],
                                                                        version: str) -> None:
    template = yaml.safe_load(SECRET_TEMPLATE.read_text())
    errors = []
    for obj in [*objects, *adapter_objects, template]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, error.path))}: {error.message}")
    assert not errors, "\n".join(errors)
    kinds = {obj["kind"] for obj in objects}
    assert kinds == {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                     "NetworkPolicy"}, kinds


def test_strict_validation_rejects_a_misspelt_field(objects: list[dict]) -> None:
    broken = copy.deepcopy(find(objects, "Deployment", "triton"))
    pod_spec(broken)["containers"][0]["readinesProbe"] = pod_spec(broken)["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_the_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    present = {path.name for path in DEPLOY.glob("*.yaml")}
    assert listed == present - NOT_APPLIED
    assert {path.name for path in ADAPTER.glob("*.yaml")} == {"kustomization.yaml", "rules-configmap.yaml",
                                                             "values.yaml"}


@pytest.mark.parametrize("folder", [DEPLOY, ADAPTER], ids=["app", "prometheus-adapter"])
def test_python_rendering_equals_kubectl_kustomize(folder: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (its built-in kustomize is the reference for render())")
    result = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    def key(obj: dict) -> tuple:
        return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    assert sorted(yaml.safe_load_all(result.stdout), key=key) == sorted(render(folder), key=key)


def test_service_monitor_crd_parses_and_scrapes_tritons_metrics_port(objects: list[dict]) -> None:
    (monitor,) = list(yaml.safe_load_all(SERVICE_MONITOR.read_text()))
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    service = find(objects, "Service", "triton")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["port"] == METRICS_PORT and endpoint["path"] == "/metrics"


# -- Triton --------------------------------------------------------------------------------------------------
def test_triton_runs_the_ngc_image_of_docker_compose(objects: list[dict]) -> None:
    expected = compose_default(compose()["services"]["triton"]["image"])
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", expected), expected
    assert triton(objects)["image"] == expected


def test_triton_args_are_composes_command_with_the_admin_key_from_a_secret(objects: list[dict]) -> None:
    container = triton(objects)
    reference = f"$({KEY_ENVIRONMENT_VARIABLE})"  # expanded by the kubelet from the container's env
    expected = [re.sub(rf"\$\{{{KEY_ENVIRONMENT_VARIABLE}[^}}]*\}}", reference, arg)
                for arg in compose()["services"]["triton"]["command"]]
    assert "command" not in container, "keep the image's entrypoint, as docker-compose.yml does"
    assert container["args"] == expected
    # The flags `deepfake-edge serve` passes (server/admin_key.py), not only a copy of the compose file.
    assert set(restricted_api_flags(reference)) <= set(container["args"])
    (variable,) = [env for env in container["env"] if env["name"] == KEY_ENVIRONMENT_VARIABLE]
    assert "value" not in variable
    reference_to = variable["valueFrom"]["secretKeyRef"]
    assert not reference_to.get("optional", False), "without its Secret the pod must not start (no open admin API)"
    template = yaml.safe_load(SECRET_TEMPLATE.read_text())
    assert reference_to["name"] == template["metadata"]["name"]
    assert reference_to["key"] in template["stringData"]


def test_no_key_in_the_manifests_and_the_template_placeholder_cannot_become_one(objects: list[dict]) -> None:
    assert not [obj for obj in objects if obj["kind"] == "Secret"]
    for obj in objects:
        for c in containers(obj):
            for env in c.get("env", []):
                assert env["name"] != KEY_ENVIRONMENT_VARIABLE or "value" not in env
    (placeholder,) = yaml.safe_load(SECRET_TEMPLATE.read_text())["stringData"].values()
    with pytest.raises(ValueError):
        restricted_api_flags(placeholder)
    # Only Triton gets the key: the web page runs inference, which needs none.
    web = find(objects, "Deployment", "web")
    assert "deepfake-edge-admin-key" not in json.dumps(web)


def test_triton_probes_use_its_health_endpoints_on_the_contracts_http_port(objects: list[dict]) -> None:
    container = triton(objects)
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        action = container[probe]["httpGet"]
        assert container_port(container, action["port"]) == HTTP_PORT, probe
        paths[probe] = action["path"]
    assert paths == {"startupProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live",
                     "readinessProbe": "/v2/health/ready"}
    startup = container["startupProbe"]
    # At least docker-compose.yml's start_period (300 s): a new pod builds its TensorRT engines first.
    start_period = int(compose()["services"]["triton"]["healthcheck"]["start_period"].removesuffix("s"))
    assert startup["periodSeconds"] * startup["failureThreshold"] >= start_period
    assert "--strict-readiness=true" in container["args"]


def test_triton_service_ports_come_from_the_serving_contract(objects: list[dict]) -> None:
    container = triton(objects)
    service = find(objects, "Service", "triton")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {name: p["port"] for name, p in ports.items()} == {"http": HTTP_PORT, "grpc": GRPC_PORT,
                                                              "metrics": METRICS_PORT}
    for name, port in ports.items():
        assert container_port(container, port["targetPort"]) == port["port"], name
    annotations = find(objects, "Deployment", "triton")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == METRICS_PORT and annotations["prometheus.io/path"] == "/metrics"


def test_triton_serves_the_ngc_repository_that_its_init_container_copies_in(objects: list[dict]) -> None:
    deployment = find(objects, "Deployment", "triton")
    container = triton(objects)
    (init,) = pod_spec(deployment)["initContainers"]
    repository = next(arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--model-repository="))
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == repository]
    assert mount.get("readOnly") is True
    (init_mount,) = [m for m in init["volumeMounts"] if m["name"] == mount["name"]]
    # The image holds the repository where the init container copies from (docker/model-repository.Dockerfile).
    (source, destination), = re.findall(r"^COPY (\S+) (\S+)$", REPOSITORY_DOCKERFILE.read_text(), re.MULTILINE)
    assert source == "model_repository/ngc"
    assert f"cp -R {destination}/. {init_mount['mountPath']}/" in " ".join(init["command"])
    assert split_image(init["image"])[0].endswith("deepfake-edge-model-repository")
    # Every ngc config caches TensorRT engines under trt_engine_cache_path: it must be writable.
    exporter = (ROOT / "export" / "repository.py").read_text()
    (cache,) = set(re.findall(r'"trt_engine_cache_path": f"(/[^{"]+)/', exporter))
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert any(cache == path or cache.startswith(f"{path}/") for path in writable), (cache, writable)


def test_triton_runs_on_gpu_nodes_with_one_gpu(objects: list[dict]) -> None:
    spec = pod_spec(find(objects, "Deployment", "triton"))
    resources = triton(objects)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    for c in containers(find(objects, "Deployment", "web")):
        assert "nvidia.com/gpu" not in json.dumps(c.get("resources", {}))


# -- autoscaling and disruptions -----------------------------------------------------------------------------
def test_hpa_scales_the_triton_deployment_on_the_adapters_queue_time_metric(objects: list[dict],
                                                                            adapter_objects: list[dict]) -> None:
    hpa = find(objects, "HorizontalPodAutoscaler", "triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    deployment = find(objects, "Deployment", target["name"])
    assert (target["apiVersion"], target["kind"]) == (deployment["apiVersion"], deployment["kind"])
    assert deployment is find(objects, "Deployment", "triton")
    assert "replicas" not in deployment["spec"], "the HPA owns Triton's replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    metric_name = metric["pods"]["metric"]["name"]
    (rule,) = [rule for rule in adapter_rules(adapter_objects) if rule["name"]["as"] == metric_name]
    # The rule: per pod, rate(queue microseconds) / rate(successful requests) over the same window.
    assert re.match(r"nv_inference_queue_duration_us\{", rule["seriesQuery"])
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    numerator, denominator = re.split(r"\s/\s", rule["metricsQuery"])
    window = r"\[(\d+[smh])\]"
    (queue_window,) = re.findall(r"rate\(nv_inference_queue_duration_us\{<<\.LabelMatchers>>\}" + window, numerator)
    (success_window,) = re.findall(r"rate\(nv_inference_request_success\{<<\.LabelMatchers>>\}" + window, denominator)
    assert queue_window == success_window
    assert numerator.count("by (<<.GroupBy>>)") == denominator.count("by (<<.GroupBy>>)") == 1
    assert metric["pods"]["target"]["type"] == "AverageValue" and quantity(metric["pods"]["target"]["averageValue"]) > 0
    # The chart reads exactly this ConfigMap (values.yaml), which lives where the kustomization puts it.
    values = yaml.safe_load((ADAPTER / "values.yaml").read_text())
    (configmap,) = [obj for obj in adapter_objects if obj["kind"] == "ConfigMap"]
    assert values["rules"]["existing"] == configmap["metadata"]["name"]


def test_pdb_selects_the_triton_pods_and_leaves_one_serving(objects: list[dict]) -> None:
    pdb = find(objects, "PodDisruptionBudget", "triton")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert matches(selector, find(objects, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"])
    assert not matches(selector, find(objects, "Deployment", "web")["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"]["maxUnavailable"] < find(objects, "HorizontalPodAutoscaler", "triton")["spec"]["minReplicas"]


def test_every_service_and_deployment_selects_its_own_pods(objects: list[dict]) -> None:
    deployments = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Deployment"}
    for deployment in deployments.values():
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(deployment["spec"]["selector"]["matchLabels"], template_labels)
    for service in (obj for obj in objects if obj["kind"] == "Service"):
        selected = [name for name, d in deployments.items()
                    if matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert selected == [service["metadata"]["name"]], (service["metadata"]["name"], selected)
        for port in service["spec"]["ports"]:
            container_port(container(objects, service["metadata"]["name"]), port["targetPort"])


# -- every pod -----------------------------------------------------------------------------------------------
def test_every_container_has_requests_within_limits(objects: list[dict]) -> None:
    for obj in objects:
        for c in containers(obj):
            resources = c.get("resources", {})
            for resource in ("cpu", "memory"):
                request, limit = resources["requests"][resource], resources["limits"][resource]
                assert quantity(request) <= quantity(limit), (c["name"], resource)


def test_every_pod_meets_the_restricted_pod_security_standard(objects: list[dict]) -> None:
    namespace = find(objects, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = [obj for obj in objects if pod_spec(obj) is not None]
    assert {obj["metadata"]["name"] for obj in pods} == {"triton", "web"}
    for obj in pods:
        spec = pod_spec(obj)
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] > 0
        assert pod_context["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        assert not any(spec.get(host) for host in ("hostNetwork", "hostPID", "hostIPC"))
        assert all("hostPath" not in volume for volume in spec.get("volumes", []))
        for c in containers(obj):
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and not context.get("privileged"), c["name"]
            assert context["capabilities"]["drop"] == ["ALL"], c["name"]
            assert context["readOnlyRootFilesystem"] is True, c["name"]
            assert context.get("runAsUser", pod_context["runAsUser"]) > 0, c["name"]


# -- the web page --------------------------------------------------------------------------------------------
def test_web_runs_its_images_command_against_the_triton_service(objects: list[dict]) -> None:
    web = container(objects, "web")
    assert "command" not in web and "args" not in web, "the image's CMD is the one command (docker/web.Dockerfile)"
    dockerfile = WEB_DOCKERFILE.read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    command = json.loads(cmd)
    args = build_parser().parse_args(command[1:])
    host, port = args.triton_url.rsplit(":", 1)
    service = find(objects, "Service", host)
    (grpc,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    assert args.protocol == "grpc" and grpc["name"] == "grpc" and int(port) == GRPC_PORT
    assert container_port(web, "http") == args.port and args.host == "0.0.0.0"
    (uid,) = re.findall(r"useradd .*--uid (\d+) web", dockerfile)
    assert pod_spec(find(objects, "Deployment", "web"))["securityContext"]["runAsUser"] == int(uid)
    assert web["readinessProbe"]["httpGet"]["path"] == "/api/health" and "/api/health" in dockerfile
    assert web["livenessProbe"]["httpGet"]["path"] != "/api/health", "a Triton outage must not restart the page"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container_port(web, web[probe]["httpGet"]["port"]) == args.port


def test_project_images_carry_the_projects_version(objects: list[dict]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    web_image = container(objects, "web")["image"]
    assert web_image.rsplit("/", 1)[-1] == compose()["services"]["web"]["image"] == f"deepfake-edge-web:{version}"
    (init,) = pod_spec(find(objects, "Deployment", "triton"))["initContainers"]
    assert split_image(init["image"])[1] == version


def test_network_policy_lets_only_the_web_page_and_prometheus_reach_triton(objects: list[dict]) -> None:
    policy = find(objects, "NetworkPolicy", "triton-ingress")
    triton_labels = find(objects, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    web_labels = find(objects, "Deployment", "web")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["spec"]["podSelector"]["matchLabels"], triton_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    container_spec = triton(objects)
    allowed = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every source"
        ports = {container_port(container_spec, p["port"]) for p in rule["ports"]}
        for source in rule["from"]:
            if "namespaceSelector" in source:
                assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
                allowed["prometheus"] = ports
            else:
                assert matches(source["podSelector"]["matchLabels"], web_labels)
                allowed["web"] = ports
    assert allowed == {"web": {HTTP_PORT, GRPC_PORT}, "prometheus": {METRICS_PORT}}


# -- against the real Triton ---------------------------------------------------------------------------------
@pytest.mark.server
def test_probe_paths_and_the_adapters_counters_are_tritons_own(tmp_path: Path, objects: list[dict],
                                                              adapter_objects: list[dict]) -> None:
    """The probes' paths answer, and the counters the adapter rule divides exist and count requests, on the
    real tritonserver 2.51 (the release of the NGC 24.10 image)."""
    from test_server_launcher import write_tiny_repository

    from deepfake_edge.server.triton import TritonServer, free_port

    container_spec = triton(objects)
    paths = {container_spec[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    (rule,) = adapter_rules(adapter_objects)
    counters = re.findall(r"rate\((\w+)\{", rule["metricsQuery"])
    assert len(counters) == 2
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with TritonServer(write_tiny_repository(tmp_path / "repo"), **ports) as server:
        for path in paths:
            with urllib.request.urlopen(f"http://{server.http_url}{path}", timeout=5) as response:
                assert response.status == 200, path
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]})
        for _ in range(5):
            request = urllib.request.Request(f"http://{server.http_url}/v2/models/tiny/infer", data=body.encode())
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
            metrics = response.read().decode()
    values = {}
    for counter in counters:
        (value,) = re.findall(rf'^{counter}\{{[^}}]*model="tiny"[^}}]*\}} (\S+)$', metrics, re.MULTILINE)
        values[counter] = float(value)
    assert values["nv_inference_request_success"] == 5
    assert values["nv_inference_queue_duration_us"] >= 0
