"""KServe resources for fanflow's model servers and its ensemble gateway.

Two users: the Argo workflow's service steps (a pod renders the resource at run time, see
``fanflow.kube.pod``) and ``fanflow export kserve RUN``, which writes, for a finished
run, one ``InferenceService`` per selected model and the gateway in front of them.

The gateway is a plain ``Deployment`` and ``Service``, not an ``InferenceGraph``: an
InferenceGraph's Ensemble node answers with a map of the members' responses and merges
nothing, and answers 200 with a member's error buried inside. fanflow's gateway already
speaks the same V2 protocol as its members, merges their tags (union by default) with
provenance, and marks a degraded answer; a Deployment runs it without a router hop and
without Knative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fanflow.kube.manifests import MANAGED_BY, RUN_LABEL, SERVER_PORT
from fanflow.kube.names import dns_name, label_value
from fanflow.vocab.manifest import ARTIFACT_KEY

API_VERSION = "serving.kserve.io/v1beta1"
MODEL_SERVER = "fanflow.serving.model_server:serve_model"
GATEWAY = "fanflow.serving.gateway:serve_gateway"

# The keyword arguments each server takes in a step's ``with``, as its command's options
# (None: the pod decides; the host is every interface of the pod, the store is the run's).
SERVER_OPTIONS: dict[str, dict[str, str | None]] = {
    MODEL_SERVER: {
        "model": None,
        "name": None,
        "loader": "--loader",
        "torch_threads": "--torch-threads",
        "max_body_bytes": "--max-body-bytes",
        "store": None,
        "host": None,
        "port": None,
    },
    GATEWAY: {
        "members": None,
        "strategy": "--strategy",
        "threshold": "--threshold",
        "weights": None,
        "member_timeout": "--member-timeout",
        "quorum": "--quorum",
        "member_connections": "--member-connections",
        "max_body_bytes": "--max-body-bytes",
        "host": None,
        "port": None,
    },
}
MODULES = {MODEL_SERVER: "fanflow.serving.model_server", GATEWAY: "fanflow.serving.gateway"}
# Knative's queue-proxy takes these ports in a serverless InferenceService's pod.
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091})


class ServiceError(ValueError):
    """Arguments a server cannot be started with on Kubernetes."""


def artifact_name(model: Any) -> str:
    """``sha256:HEX.suffix`` for a model given as a candidate (``{"name", "model"}``), a
    manifest's artifact reference, or that name itself."""
    if isinstance(model, dict) and "model" in model and ARTIFACT_KEY not in model:
        model = model["model"]
    if isinstance(model, dict) and isinstance(model.get(ARTIFACT_KEY), str):
        return model[ARTIFACT_KEY] + (model.get("suffix") or "")
    if isinstance(model, str) and model.startswith("sha256:"):
        return model
    raise ServiceError(
        f"cannot serve {str(model)[:80]!r} from a cluster: expected a model file in the artifact store "
        "(a selected candidate or an artifact reference)"
    )


def model_name(kwargs: dict[str, Any]) -> str:
    """The name a model server serves under: the server's own rule, so that a grid
    candidate (``cnn[lr=0.01]``) gets the same URL-safe name in a cluster as on one machine."""
    from fanflow.serving.predictor import model_name as served_model_name

    name = kwargs.get("name")
    return served_model_name(kwargs.get("model"), str(name) if name else None)


@dataclass(frozen=True)
class Server:
    """What a predictor container runs: the name it serves under, its command, its port."""

    name: str
    command: list[str]
    port: int = SERVER_PORT


def port_problem(port: Any) -> str | None:
    """Why ``port`` cannot be a predictor's port on Kubernetes (None when it can)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return f"port {port!r}: expected a port number from 1 to 65535"
    if port in RESERVED_PORTS:
        taken = ", ".join(map(str, sorted(RESERVED_PORTS)))
        return f"port {port} is taken by Knative in a serverless InferenceService (reserved: {taken})"
    return None


def server_command(uses: str, kwargs: dict[str, Any], store: str) -> Server:
    """The container of a service step's server, from its resolved ``with`` (a manifest:
    artifacts still references). A ``port`` given is the container's port (0 or none: 8080)."""
    options = SERVER_OPTIONS[uses]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ServiceError(f"{uses} takes no {', '.join(unknown)}")
    port = kwargs.get("port") or SERVER_PORT
    problem = port_problem(port)
    if problem:
        raise ServiceError(problem)
    command = ["python", "-m", MODULES[uses]]
    if uses == MODEL_SERVER:
        name = model_name(kwargs)
        command += ["--store", store, "--artifact", artifact_name(kwargs.get("model")), "--name", name]
    else:
        name = "ensemble"
        members = kwargs.get("members")
        if not isinstance(members, list) or not members:
            raise ServiceError("the gateway needs members: a list of served models ({url, model})")
        for member in members:
            if not isinstance(member, dict) or not {"url", "model"} <= set(member):
                raise ServiceError(f"a member is a served model's {{url, model}}, got {member!r}")
            command += ["--member", f"{member['model']}={member['url']}"]
        for member, weight in (kwargs.get("weights") or {}).items():
            command += ["--weight", f"{member}={weight}"]
    for key, option in options.items():
        if option and kwargs.get(key) is not None:
            command += [option, str(kwargs[key])]
    command += ["--host", "0.0.0.0", "--port", str(port)]
    return Server(name, command, port)


def _container(image: str, server: Server, requests: dict | None, secret: str | None) -> dict:
    container: dict[str, Any] = {
        "name": "kserve-container",
        "image": image,
        "command": server.command[:3],
        "args": server.command[3:],
        "ports": [{"containerPort": server.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": server.port},
            "periodSeconds": 5,
        },
    }
    if requests:
        container["resources"] = requests
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    return container


def inference_service(
    name: str,
    image: str,
    server: Server,
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    requests: dict | None = None,
    secret: str | None = None,
) -> dict[str, Any]:
    """An InferenceService whose custom predictor runs ``server`` (one replica at least:
    the gateway calls its members with a short deadline, so they must not scale to zero)."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {**MANAGED_BY, **(labels or {})}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "containers": [_container(image, server, requests, secret)],
            }
        },
    }


def predictor_url(service: str, namespace: str | None) -> str:
    """Where an InferenceService's predictor answers inside the cluster: KServe names its
    Service ``<name>-predictor``, in raw and serverless deployment alike."""
    host = f"{service}-predictor" + (f".{namespace}.svc.cluster.local" if namespace else "")
    return f"http://{host}"


# -- fanflow export kserve RUN ---------------------------------------------------------------


def selected_models(output: Any) -> list[dict] | None:
    """The candidates in a selection step's output: dicts with a ``name`` and a ``model``
    file artifact; None when the output is not such a list."""
    if not isinstance(output, list) or not output:
        return None
    for candidate in output:
        if not isinstance(candidate, dict) or not isinstance(candidate.get("name"), str):
            return None
        model = candidate.get("model")
        if not isinstance(model, dict) or not isinstance(model.get(ARTIFACT_KEY), str):
            return None
    return output


def gateway_resources(
    name: str,
    image: str,
    members: list[dict[str, str]],
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    strategy: str = "union",
    secret: str | None = None,
) -> list[dict[str, Any]]:
    """The ensemble gateway as a Deployment and the ClusterIP Service in front of it."""
    server = server_command(GATEWAY, {"members": members, "strategy": strategy}, store="")
    selector = {"app.kubernetes.io/name": name}
    all_labels = {**MANAGED_BY, **selector, **(labels or {})}
    container = _container(image, server, {"requests": {"cpu": "500m"}}, secret)
    container["name"] = "gateway"
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**metadata, "labels": all_labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": all_labels}, "spec": {"containers": [container]}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**metadata, "labels": all_labels},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": SERVER_PORT, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def export_run(
    workflow_name: str,
    run_id: str,
    candidates: list[dict],
    *,
    image: str,
    artifacts: str,
    namespace: str | None = None,
    prefix: str | None = None,
    strategy: str = "union",
    secret: str | None = None,
    requests: dict | None = None,
) -> list[dict[str, Any]]:
    """One InferenceService per selected candidate, then the gateway that fronts them all.
    Two models whose names would make the same InferenceService name are refused (one would
    otherwise serve every gateway member of the other's name)."""
    prefix = dns_name(prefix or workflow_name, 40)
    labels = {"app.kubernetes.io/part-of": prefix, RUN_LABEL: label_value(run_id)}
    documents, members, taken = [], [], {}
    for candidate in candidates:
        server = server_command(MODEL_SERVER, {"model": candidate}, artifacts)
        service = dns_name(f"{prefix}-{server.name}", 45)
        if service in taken:
            raise ServiceError(
                f"models {taken[service]!r} and {server.name!r} would both be InferenceService "
                f"{service!r} (Kubernetes names are lower case, with '-' for '_'); "
                "rename one of them"
            )
        taken[service] = server.name
        documents.append(
            inference_service(
                service,
                image,
                server,
                namespace=namespace,
                labels={**labels, "fanflow.dev/model": label_value(server.name)},
                annotations={"fanflow.dev/artifact": artifact_name(candidate)},
                requests=requests,
                secret=secret,
            )
        )
        members.append({"model": server.name, "url": predictor_url(service, namespace)})
    documents += gateway_resources(
        dns_name(f"{prefix}-gateway", 45),
        image,
        members,
        namespace=namespace,
        labels=labels,
        strategy=strategy,
        secret=secret,
    )
    return documents
