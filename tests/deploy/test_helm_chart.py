"""The Helm chart and the images: structure read from the files, lint where Helm is at hand.

There is no cluster and usually no `helm` binary here, so most checks read the chart's
values and template text; `test_chart_lints_under_every_value_set` renders every
template through Helm itself when `helm` or the Helm library (`make helm-lint` fetches
it) is present.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "runstream"
TEMPLATES = CHART / "templates"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"

SERVICES = ["gateway", "projector", "analysis_worker", "execution_worker", "chart_worker"]
WORKERS = {"analysisWorker": "analysis-worker", "executionWorker": "execution-worker",
           "chartWorker": "chart-worker"}


def template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


def block(text: str, key: str) -> str:
    """The lines of the YAML block under the first `key:` (by indentation)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{key}:":
            indent = len(line) - len(line.lstrip())
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent \
                        and not nxt.lstrip().startswith("{{"):
                    break
                body.append(nxt)
            return "\n".join(body)
    raise AssertionError(f"no `{key}:` block")


def test_chart_metadata_is_a_helm_v2_application_chart() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "runstream"
    assert chart["type"] == "application"
    assert isinstance(chart["version"], str) and isinstance(chart["appVersion"], str)


def test_every_component_has_resource_requests_and_limits(values: dict[str, Any]) -> None:
    for key in ["gateway", "projector", *WORKERS, "nats", "postgres"]:
        resources = values[key]["resources"]
        assert set(resources) == {"requests", "limits"}, key
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[part]), (key, part)


def test_containers_run_as_non_root_on_a_read_only_root_without_capabilities(
    values: dict[str, Any],
) -> None:
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["podSecurityContext"]["runAsUser"] != 0
    container = values["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    for name in ["gateway.yaml", "projector.yaml", "_worker.tpl", "nats.yaml", "postgres.yaml"]:
        text = template(name)
        assert "toYaml .Values.securityContext" in text or \
            "toYaml $.Values.securityContext" in text, name
        assert "runAsNonRoot" in text or "podCommon" in text, name


@pytest.mark.parametrize("name", ["gateway.yaml", "projector.yaml", "_worker.tpl"])
def test_every_deployment_has_probes_resources_config_and_writable_tmp(name: str) -> None:
    text = template(name)
    assert "kind: Deployment" in text
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe in text or "runstream.metricsProbes" in text, (name, probe)
    assert re.search(r"resources:\n\s+\{\{- (toYaml|include \"runstream\.scaledResources\" "
                     r"\(dict \"resources\") \$\w+\.resources", text), name
    assert "configMapRef" in text
    assert "mountPath: /tmp" in text and "emptyDir" in text


def test_gateway_is_probed_on_readyz_and_healthz_and_listens_on_all_interfaces(
    values: dict[str, Any],
) -> None:
    text = template("gateway.yaml")
    assert "path: /readyz" in block(text, "readinessProbe")
    assert "path: /healthz" in block(text, "livenessProbe")
    assert re.search(r"name: RUNSTREAM_HTTP_HOST\n\s+value: \"0\.0\.0\.0\"", text)
    assert "name: RUNSTREAM_HTTP_PORT" in text
    assert values["gateway"]["port"] == 8000


def test_projector_and_workers_are_probed_on_the_metrics_side_port() -> None:
    helpers = template("_helpers.tpl")
    probes = helpers.split('define "runstream.metricsProbes"', 1)[1].split("{{- end -}}")[0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in probes
    assert probes.count("port: metrics") == 3
    for name in ("projector.yaml", "_worker.tpl"):
        text = template(name)
        assert "name: RUNSTREAM_METRICS_PORT" in text
        assert "runstream.metricsProbes" in text
        assert "containerPort: {{ $.Values.metricsPort }}" in text or \
            "containerPort: {{ .Values.metricsPort }}" in text


def test_projector_replicas_and_partitions_are_rendered(values: dict[str, Any]) -> None:
    # Defaults: one partition, one writer, rolled with Recreate (never two at once).
    assert (values["projector"]["replicas"], values["projector"]["partitions"]) == (1, 1)
    text = template("projector.yaml")
    deployment = text.split("kind: Deployment", 1)[1]
    assert "replicas: {{ $p.replicas | default 1 }}" in block(deployment, "spec")
    assert "$partitions := int ($p.partitions | default 1)" in text
    strategy = block(deployment, "strategy")
    assert "{{- if gt $partitions 1 }}" in strategy
    assert "type: RollingUpdate" in strategy and "type: Recreate" in strategy
    assert strategy.index("type: RollingUpdate") < strategy.index("{{- else }}") \
        < strategy.index("type: Recreate")
    assert "HorizontalPodAutoscaler" not in text
    # P reaches the projector and the gateway through the one shared ConfigMap.
    config = template("configmap.yaml")
    assert re.search(r"RUNSTREAM_PARTITIONS: \{\{ \.Values\.projector\.partitions "
                     r"\| default 1 \| toString \| quote \}\}", config)
    for name in ("projector.yaml", "gateway.yaml"):
        assert "-config" in block(template(name), "envFrom")
    # Every settings class reads it from RUNSTREAM_PARTITIONS.
    from runstream.gateway.settings import GatewaySettings
    from runstream.projector.service import ProjectorSettings

    assert "partitions" in GatewaySettings.model_fields
    assert "partitions" in ProjectorSettings.model_fields
    # The lint value sets render a partitioned projector.
    lint = (CHART.parent / "lint.py").read_text(encoding="utf-8")
    assert '"projector": {"replicas": 2, "partitions": 4}' in lint


def test_gateway_workers_reach_the_gateway_and_its_resources_are_per_worker(
    values: dict[str, Any],
) -> None:
    # Default: one process per pod, as before; the value reaches the gateway's setting.
    assert values["gateway"]["workers"] == 1
    text = template("gateway.yaml")
    assert '$workers := int (hasKey $g "workers" | ternary $g.workers 1)' in text
    assert '{{ fail "gateway.workers must be at least 1" }}' in text
    assert re.search(r"name: RUNSTREAM_GATEWAY_WORKERS\n\s+value: \{\{ \$workers "
                     r"\| toString \| quote \}\}", text)
    from runstream.gateway.settings import GatewaySettings

    assert GatewaySettings.model_fields["gateway_workers"].default == 1
    # Requests and limits are per worker: the pod gets `workers` times each of them.
    assert '"runstream.scaledResources" (dict "resources" $g.resources "times" $workers)' \
        in block(text, "resources")
    assert "toYaml $g.resources" not in text
    # The lint value sets render three workers.
    lint = (CHART.parent / "lint.py").read_text(encoding="utf-8")
    assert '"gateway": {"workers": 3}' in lint


def test_each_worker_has_a_cpu_autoscaler_and_a_disruption_budget(
    values: dict[str, Any],
) -> None:
    worker = template("_worker.tpl")
    assert "kind: HorizontalPodAutoscaler" in worker
    assert "name: cpu" in worker and "averageUtilization:" in worker
    assert "kind: PodDisruptionBudget" in worker
    for key, component in WORKERS.items():
        scaling = values[key]["autoscaling"]
        assert 1 <= scaling["minReplicas"] <= scaling["maxReplicas"], key
        assert 0 < scaling["targetCPUUtilizationPercentage"] <= 100, key
        file = template(f"{component}.yaml")
        assert f'"component" "{component}"' in file
        assert '"values" $w' in file or f'.Values.{key}' in file


def test_execution_worker_egress_is_only_dns_and_nats(values: dict[str, Any]) -> None:
    policy = template("networkpolicy.yaml").split("\n---\n")[0]
    assert '"component" "execution-worker"' in block(policy, "podSelector")
    assert "- Egress" in block(policy, "policyTypes")
    egress = block(policy, "egress")
    ports = sorted(int(p) for p in re.findall(r"port: (\d+)", egress))
    assert ports == [53, 53, 4222]
    assert "ipBlock" not in egress and "0.0.0.0" not in egress
    # Each rule names its peers: a rule without `to` would allow every destination.
    assert egress.count("- to:") == 2
    assert values["networkPolicy"]["enabled"] is True
    assert values["networkPolicy"]["dns"], "an empty DNS peer list would open port 53 to all"
    # Ingress: only the metrics port, only from the scrapers.
    ingress = block(policy, "ingress")
    assert "port: metrics" in ingress and "metricsScrapers" in ingress


def test_ingress_is_sse_safe(values: dict[str, Any]) -> None:
    annotations = values["ingress"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-buffering"] == "off"
    assert annotations[prefix + "proxy-read-timeout"] == "3600"
    assert annotations[prefix + "proxy-send-timeout"] == "3600"
    assert annotations[prefix + "proxy-http-version"] == "1.1"
    for value in annotations.values():
        assert isinstance(value, str), "annotation values must be strings"
    text = template("ingress.yaml")
    assert "toYaml . | nindent 4" in block(text, "annotations")
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert 'proxy_set_header Connection "upgrade";' in text


def test_retention_runs_runstream_cleanup_as_a_cronjob_on_its_schedule(
    values: dict[str, Any],
) -> None:
    from runstream.cli.durations import parse_duration

    cleanup = values["cleanup"]
    assert cleanup["enabled"] is True
    fields = cleanup["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields), fields
    assert parse_duration(cleanup["olderThan"])  # what `runstream cleanup` reads
    assert set(cleanup["resources"]) == {"requests", "limits"}
    text = template("cleanup-cronjob.yaml")
    assert "kind: CronJob" in text and "concurrencyPolicy: Forbid" in text
    assert "schedule: {{ $c.schedule | quote }}" in text
    assert '"service" "cli"' in text and 'args: ["cleanup"]' in text
    assert re.search(r"name: RUNSTREAM_CLEANUP_OLDER_THAN\n\s+value: \{\{ \$c\.olderThan", text)
    assert "runstream.databaseEnv" in text and "configMapRef" in text
    assert "restartPolicy: Never" in text
    pod = text.split("template:", 1)[1]  # the Job's pods reach Postgres as ops pods do
    assert '"component" "cli"' in pod and '"cli"' in template("networkpolicy.yaml")
    assert "toYaml .Values.securityContext" in text and "runstream.podCommon" in text


def test_jwt_secret_is_generated_once_and_kept() -> None:
    helpers = template("_helpers.tpl")
    assert "randAlphaNum 48" in helpers
    assert 'lookup "v1" "Secret"' in helpers
    assert '"key" "RUNSTREAM_JWT_SECRET"' in template("secrets.yaml")


def test_workers_get_neither_the_database_nor_the_jwt_secret() -> None:
    for name in ["_worker.tpl", "analysis-worker.yaml", "execution-worker.yaml",
                 "chart-worker.yaml"]:
        text = re.sub(r"\{\{/\*.*?\*/\}\}", "", template(name), flags=re.S)
        for secret in ("RUNSTREAM_DATABASE_URL", "runstream.databaseEnv",
                       "RUNSTREAM_JWT_SECRET"):
            assert secret not in text, (name, secret)


def settings_fields() -> set[str]:
    """RUNSTREAM_* names the services read: fields of every pydantic `*Settings` class."""
    names = set()
    for file in [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]:
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Settings") \
                    and node.name != "BusSettings":  # a msgspec struct, not the environment
                names |= {"RUNSTREAM_" + item.target.id.upper() for item in node.body
                          if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
    return names


def test_every_runstream_variable_the_chart_sets_is_a_setting() -> None:
    known = settings_fields()
    assert "RUNSTREAM_NATS_URL" in known and "RUNSTREAM_METRICS_PORT" in known
    chart_text = "".join(p.read_text(encoding="utf-8") for p in TEMPLATES.iterdir())
    chart_text += (CHART / "values.yaml").read_text(encoding="utf-8")
    used = set(re.findall(r"\bRUNSTREAM_[A-Z0-9_]+\b", chart_text))
    used.discard("RUNSTREAM_X")  # the lint fixtures' placeholder, not set by the chart
    assert used, "the chart sets no RUNSTREAM_* variable?"
    assert sorted(used - known) == []


def test_every_image_the_chart_uses_is_a_dockerfile_target_running_its_service() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    targets = dict(re.findall(r"^FROM \S+ AS ([a-z_-]+)\n((?:(?!FROM ).*\n)*)", dockerfile, re.M))
    members = {}
    for pyproject in ROOT.glob("services/*/pyproject.toml"):
        members[pyproject.parent.name] = tomllib.loads(pyproject.read_text())["project"]["name"]
    used = set(re.findall(r'"service" "([a-z_]+)"', "".join(
        p.read_text(encoding="utf-8") for p in TEMPLATES.iterdir())))
    assert set(SERVICES) <= used
    for service in [*SERVICES, "cli"]:
        body = targets[service]
        if service == "cli":
            assert 'ENTRYPOINT ["runstream"]' in body
        else:
            assert f'ENTRYPOINT ["python", "-m", "runstream.{service}"]' in body
        assert f"--from=build-{service} " in body
        build = targets[f"build-{service}"]
        assert "uv sync --locked --no-dev" in build
        assert f"--package {members[service]}" in build
    runtime = targets["runtime"]
    assert re.search(r"^USER 10001", runtime, re.M)


def test_dockerignore_sends_only_the_build_inputs() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert lines[lines.index("*")] == "*"
    for needed in ("!pyproject.toml", "!uv.lock", "!libs/", "!services/"):
        assert needed in lines
    for copied in re.findall(r"^COPY (?!--)(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.M):
        assert f"!{copied}" in lines or f"!{copied}/" in lines, copied


def run_lint(*args: str) -> dict[str, Any]:
    """deploy/helm/lint.py in a child process (the Helm library brings a Go runtime)."""
    run = subprocess.run([sys.executable, str(ROOT / "deploy" / "helm" / "lint.py"),
                          "--json", *args], capture_output=True, text=True, timeout=240)
    if run.returncode == 2:
        pytest.skip("no helm binary and no Helm library (make helm-lint fetches it)")
    return json.loads(run.stdout)


def test_chart_lints_under_every_value_set() -> None:
    outcome = run_lint()
    assert set(outcome["results"]) == {"defaults", "everything-on",
                                       "external-postgres-and-nats",
                                       "existing-secrets-no-autoscaling"}
    failed = {name: problems for name, problems in outcome["results"].items() if problems}
    assert failed == {}, outcome["backend"]


def test_lint_catches_a_chart_that_cannot_render() -> None:
    """The lint test above can fail: an external NATS without a URL is refused."""
    outcome = run_lint("--sets", json.dumps({
        "nats-off-without-url": {"nats": {"enabled": False}},
        "nats-off-without-peers": {"nats": {"enabled": False, "url": "nats://n:4222"}},
        "no-gateway-workers": {"gateway": {"workers": 0}},
        "gateway-cpu-not-a-quantity": {"gateway": {"workers": 2, "resources": {
            "requests": {"cpu": "lots"}}}},
        "gateway-fractional-cpu-per-worker": {"gateway": {"workers": 3, "resources": {
            "requests": {"cpu": "0.5", "memory": "256Mi"}, "limits": {"cpu": 2}}}},
    }))
    assert outcome["results"]["nats-off-without-url"]
    assert outcome["results"]["nats-off-without-peers"]
    assert "gateway.workers must be at least 1" in str(outcome["results"]["no-gateway-workers"])
    assert "cannot scale" in str(outcome["results"]["gateway-cpu-not-a-quantity"])
    assert outcome["results"]["gateway-fractional-cpu-per-worker"] == []


def _installed_libs(package: Path) -> set[str]:
    """The workspace libraries a package installs: its own and theirs, transitively."""
    project = tomllib.loads((package / "pyproject.toml").read_text())
    deps = {re.split(r"[<>=\[ ;]", d)[0] for d in project["project"]["dependencies"]}
    libs = {d.removeprefix("runstream-").replace("-", "_") for d in deps
            if d.startswith("runstream-")}
    for lib in list(libs):
        libs |= _installed_libs(ROOT / "libs" / lib)
    return libs


def test_tiltfile_builds_every_service_and_syncs_the_libraries_each_one_installs() -> None:
    source = (ROOT / "tilt" / "Tiltfile").read_text(encoding="utf-8")
    tree = ast.parse(source)  # Starlark is a syntactic subset of Python
    wanted = [node for node in tree.body if isinstance(node, ast.Assign)
              and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id in ("LIBS", "WORKER_LIBS", "SERVICES")]
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "Tiltfile", "exec"), namespace)
    services: dict[str, list[str]] = namespace["SERVICES"]
    assert sorted(services) == sorted(SERVICES)
    for service, libs in services.items():
        assert sorted(libs) == sorted(_installed_libs(ROOT / "services" / service)), service
    assert "deploy', 'helm', 'runstream'" in source
    assert "port_forwards=['8000:8000']" in source
