"""The one configuration loader: defaults < ``mlos-core.yaml`` < environment < command line.

Each setting is declared once in ``_FIELDS`` with its YAML path (the seeds' shape:
``api.http.port``, ``api.ipc.socket_path``...), its environment variable and its type; the
command line (``mlos_core.__main__``) passes what the user gave explicitly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from .thread_priority import parse_class


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    http_enabled: bool = True
    grpc_enabled: bool = True  # the Open Inference Protocol over gRPC, on the same host
    grpc_port: int = 8001
    ipc_enabled: bool = True
    socket_path: str = ""  # empty: <data_dir>/mlos.sock
    data_dir: str = "~/.mlos"
    models_dir: str = "/var/lib/mlos/models"
    load_on_start: str = "lazy"  # lazy | eager
    load_on_register: bool = True
    memory_budget_mb: float = 0.0  # 0: no budget
    keep_alive: float = -1.0  # seconds a model stays loaded while idle; -1 forever, 0 unload after each use
    max_queue: int = 256  # per model: requests waiting or running, in every state
    max_batch_size: int = 32
    max_batch_delay_us: int = 0
    instances: int = 0  # concurrent executions per model; 0: 1 when batching, else 2
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    max_request_mb: float = 64.0
    zerocopy: bool = True  # the local zero-copy path (kernel_shim: /dev/mlos-ml or its userspace broker)
    zerocopy_socket: str = ""  # the userspace broker's socket; empty: kernel_shim's default
    inference_priority: str = "normal"  # kernel_shim class of inference threads: realtime|high|normal|batch
    # Open Inference Protocol system shared memory: "auto" allows clients to register regions
    # only while the server listens on loopback alone (see mlos_core.shm_regions)
    allow_client_shm: str = "auto"  # auto | true | false
    demo: bool = False
    log_level: str = "info"
    # ---- access control (mlos_core.auth) ----
    api_keys: list = field(default_factory=list)  # accepted keys; empty: no key asked
    api_key_file: str = ""  # a file of keys, one per line (# comments)
    api_key_header: str = "x-api-key"  # a header carrying the bare key, beside Authorization: Bearer
    public_health: bool = False  # liveness/readiness answer without a key
    public_metrics: bool = False  # /metrics answers without a key
    allow_unauthenticated: bool = False  # serve a non-loopback address without a key
    # ---- what register may read (mlos_core.model_roots) ----
    model_roots: list = field(default_factory=list)  # empty: the defaults model_roots.default_roots gives
    # ---- limits and timeouts ----
    request_timeout: float = 60.0  # seconds to receive a request body
    idle_timeout: float = 30.0  # seconds a connection may stay idle or half-sent before it is closed
    max_connections: int = 1024  # open client connections; more are refused
    max_inflight: int = 1024  # requests admitted at once, server-wide, before their bodies are read
    max_body_memory_mb: float = 512.0  # request bodies held at once, server-wide
    drain_timeout: float = 5.0  # seconds DELETE waits for a model's running requests before cancelling
    json_inline_max_mb: float = 1.0  # JSON bodies up to this are parsed on the event loop, larger ones apart
    reset_registry: bool = False  # move an unreadable registry aside and start empty
    # Serving on a Ray cluster (mlos_core.cluster; docs/scaling-out.md): empty serves from this process
    ray_address: str = ""  # "auto", or the head's HOST:PORT
    ray_namespace: str = "mlos"
    cluster_store_dir: str = "~/.mlos/cluster"  # on the head node: registrations and package blobs
    cluster_node_dir: str = "~/.mlos/node"  # on each node: its packages (MLOS_NODE_DIR, read on the node)
    cluster_min_replicas: int = 1  # autoscaling bounds of the shared deployment; per model: register options
    cluster_max_replicas: int = 2
    cluster_target_ongoing_requests: float = 2.0
    cluster_upscale_delay_s: float = 30.0
    cluster_downscale_delay_s: float = 600.0
    cluster_look_back_period_s: float = 30.0  # the window ongoing requests are averaged over
    cluster_max_ongoing_requests: int = 16  # per replica, before the router holds requests back
    cluster_models_per_replica: int = 4  # the multiplexing LRU
    cluster_replica_cpus: float = 1.0
    cluster_replica_resources: str = ""  # JSON object of custom Ray resources a replica needs

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def ipc_path(self) -> Path:
        return Path(self.socket_path).expanduser() if self.socket_path else self.data_path / "mlos.sock"

    @property
    def shim_socket(self) -> str:
        """The userspace zero-copy broker's socket: in the server's private run directory, so two
        servers never share one (kernel_shim refuses a broker it did not start)."""
        return str(Path(self.zerocopy_socket).expanduser()) if self.zerocopy_socket else str(
            self.data_path / "run" / "shim.sock")


# setting -> (YAML path, environment variable)
_FIELDS: dict[str, tuple[str, str]] = {
    "host": ("api.http.host", "MLOS_HOST"),
    "port": ("api.http.port", "MLOS_HTTP_PORT"),
    "http_enabled": ("api.http.enabled", "MLOS_HTTP_ENABLED"),
    "grpc_enabled": ("api.grpc.enabled", "MLOS_GRPC_ENABLED"),
    "grpc_port": ("api.grpc.port", "MLOS_GRPC_PORT"),
    "ipc_enabled": ("api.ipc.enabled", "MLOS_IPC_ENABLED"),
    "socket_path": ("api.ipc.socket_path", "MLOS_SOCKET"),
    "max_request_mb": ("api.http.max_request_mb", "MLOS_MAX_REQUEST_MB"),
    "data_dir": ("storage.data_dir", "MLOS_DATA_DIR"),
    "models_dir": ("storage.model_repository", "MLOS_MODELS_DIR"),
    "load_on_start": ("models.load_on_start", "MLOS_LOAD_ON_START"),
    "load_on_register": ("models.load_on_register", "MLOS_LOAD_ON_REGISTER"),
    "memory_budget_mb": ("models.memory_budget_mb", "MLOS_MEMORY_BUDGET_MB"),
    "keep_alive": ("models.keep_alive", "MLOS_KEEP_ALIVE"),
    "max_queue": ("models.max_queue", "MLOS_MAX_QUEUE"),
    "max_batch_size": ("models.max_batch_size", "MLOS_MAX_BATCH_SIZE"),
    "max_batch_delay_us": ("models.max_batch_delay_us", "MLOS_MAX_BATCH_DELAY_US"),
    "instances": ("models.instances", "MLOS_INSTANCES"),
    "intra_op_threads": ("models.intra_op_threads", "MLOS_INTRA_OP_THREADS"),
    "inter_op_threads": ("models.inter_op_threads", "MLOS_INTER_OP_THREADS"),
    "zerocopy": ("zerocopy.enabled", "MLOS_ZEROCOPY"),
    "zerocopy_socket": ("zerocopy.socket_path", "MLOS_SHIM_SOCKET"),
    "inference_priority": ("models.inference_priority", "MLOS_INFERENCE_PRIORITY"),
    "allow_client_shm": ("api.http.allow_client_shm", "MLOS_ALLOW_CLIENT_SHM"),
    "demo": ("demo", "MLOS_DEMO"),
    "log_level": ("logging.level", "MLOS_LOG_LEVEL"),
    "api_keys": ("security.api_keys", "MLOS_API_KEY"),
    "api_key_file": ("security.api_key_file", "MLOS_API_KEY_FILE"),
    "api_key_header": ("security.api_key_header", "MLOS_API_KEY_HEADER"),
    "public_health": ("security.public_health", "MLOS_PUBLIC_HEALTH"),
    "public_metrics": ("security.public_metrics", "MLOS_PUBLIC_METRICS"),
    "allow_unauthenticated": ("security.allow_unauthenticated", "MLOS_ALLOW_UNAUTHENTICATED"),
    "model_roots": ("security.model_roots", "MLOS_MODEL_ROOTS"),
    "request_timeout": ("limits.request_timeout", "MLOS_REQUEST_TIMEOUT"),
    "idle_timeout": ("limits.idle_timeout", "MLOS_IDLE_TIMEOUT"),
    "max_connections": ("limits.max_connections", "MLOS_MAX_CONNECTIONS"),
    "max_inflight": ("limits.max_inflight", "MLOS_MAX_INFLIGHT"),
    "max_body_memory_mb": ("limits.max_body_memory_mb", "MLOS_MAX_BODY_MEMORY_MB"),
    "drain_timeout": ("limits.drain_timeout", "MLOS_DRAIN_TIMEOUT"),
    "json_inline_max_mb": ("limits.json_inline_max_mb", "MLOS_JSON_INLINE_MAX_MB"),
    "reset_registry": ("storage.reset_registry", "MLOS_RESET_REGISTRY"),
    "ray_address": ("cluster.ray_address", "MLOS_RAY_ADDRESS"),
    "ray_namespace": ("cluster.namespace", "MLOS_RAY_NAMESPACE"),
    "cluster_store_dir": ("cluster.store_dir", "MLOS_CLUSTER_STORE_DIR"),
    "cluster_node_dir": ("cluster.node_dir", "MLOS_NODE_DIR"),
    "cluster_min_replicas": ("cluster.min_replicas", "MLOS_CLUSTER_MIN_REPLICAS"),
    "cluster_max_replicas": ("cluster.max_replicas", "MLOS_CLUSTER_MAX_REPLICAS"),
    "cluster_target_ongoing_requests": ("cluster.target_ongoing_requests", "MLOS_CLUSTER_TARGET_ONGOING_REQUESTS"),
    "cluster_upscale_delay_s": ("cluster.upscale_delay_s", "MLOS_CLUSTER_UPSCALE_DELAY_S"),
    "cluster_downscale_delay_s": ("cluster.downscale_delay_s", "MLOS_CLUSTER_DOWNSCALE_DELAY_S"),
    "cluster_look_back_period_s": ("cluster.look_back_period_s", "MLOS_CLUSTER_LOOK_BACK_PERIOD_S"),
    "cluster_max_ongoing_requests": ("cluster.max_ongoing_requests", "MLOS_CLUSTER_MAX_ONGOING_REQUESTS"),
    "cluster_models_per_replica": ("cluster.models_per_replica", "MLOS_CLUSTER_MODELS_PER_REPLICA"),
    "cluster_replica_cpus": ("cluster.replica_cpus", "MLOS_CLUSTER_REPLICA_CPUS"),
    "cluster_replica_resources": ("cluster.replica_resources", "MLOS_CLUSTER_REPLICA_RESOURCES"),
}
CONFIG_ENV = "MLOS_CONFIG"


class ConfigError(ValueError):
    pass


def _convert(name: str, value: Any, kind: type) -> Any:
    if kind is list:
        # YAML gives a list; the environment a comma-separated string (MLOS_MODEL_ROOTS=/a,/b);
        # the command line a repeated flag
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"setting {name}: expected a list of strings, not {value!r}")
        return [v.strip() for v in items if v.strip()]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: {value!r} is not a valid {kind.__name__}") from None


def _dig(doc: Mapping, dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _validate(s: Settings) -> Settings:
    for name in ("port", "grpc_port"):
        if not 0 <= getattr(s, name) <= 65535:
            raise ConfigError(f"{name} {getattr(s, name)} is outside 0-65535")
    if s.load_on_start not in ("lazy", "eager"):
        raise ConfigError(f"models.load_on_start must be lazy or eager, not {s.load_on_start!r}")
    for name in ("max_queue", "max_batch_size"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if s.instances < 0 or s.memory_budget_mb < 0 or s.max_request_mb <= 0 or s.max_batch_delay_us < 0:
        raise ConfigError("instances, memory_budget_mb, max_batch_delay_us must be >= 0 and max_request_mb > 0")
    s.allow_client_shm = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false",
                          "off": "false"}.get(s.allow_client_shm.strip().lower(), s.allow_client_shm.strip().lower())
    if s.allow_client_shm not in ("auto", "true", "false"):
        raise ConfigError(f"allow_client_shm must be auto, true or false, not {s.allow_client_shm!r}")
    try:
        s.inference_priority = parse_class(s.inference_priority)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if s.keep_alive < 0 and s.keep_alive != -1:
        raise ConfigError("keep_alive is seconds >= 0, or -1 to keep models loaded forever")
    for name in ("request_timeout", "idle_timeout", "max_body_memory_mb", "json_inline_max_mb"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be > 0")
    for name in ("max_connections", "max_inflight"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if s.max_body_memory_mb < s.max_request_mb:
        raise ConfigError(f"max_body_memory_mb ({s.max_body_memory_mb:g}) must be at least max_request_mb "
                          f"({s.max_request_mb:g}): one request of the largest size must fit")
    if s.drain_timeout < 0:
        raise ConfigError("drain_timeout must be >= 0 seconds")
    if not s.api_key_header.strip() or not s.api_key_header.replace("-", "").isalnum():
        raise ConfigError(f"api_key_header {s.api_key_header!r} is not an HTTP header name")
    _validate_cluster(s)
    return s


def _validate_cluster(s: Settings) -> None:
    if not 0 <= s.cluster_min_replicas <= s.cluster_max_replicas or s.cluster_max_replicas < 1:
        raise ConfigError("cluster replicas: need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
    if s.cluster_target_ongoing_requests <= 0 or s.cluster_max_ongoing_requests < 1:
        raise ConfigError("cluster: target_ongoing_requests must be > 0 and max_ongoing_requests >= 1")
    if s.cluster_upscale_delay_s < 0 or s.cluster_downscale_delay_s < 0 or s.cluster_replica_cpus < 0:
        raise ConfigError("cluster: delays and replica_cpus must be >= 0")
    if s.cluster_look_back_period_s <= 0:
        raise ConfigError("cluster: look_back_period_s must be > 0")
    if s.cluster_models_per_replica < 1:
        raise ConfigError("cluster: models_per_replica must be at least 1")
    if s.cluster_replica_resources:
        try:
            resources = json.loads(s.cluster_replica_resources)
        except ValueError:
            resources = None
        if not isinstance(resources, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                for k, v in resources.items()):
            raise ConfigError('cluster.replica_resources must be a JSON object of resource amounts, '
                              'e.g. {"worker": 0.5}')


def load_settings(
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    types = {f.name: (list if f.default_factory is list else type(f.default)) for f in fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or environ.get(CONFIG_ENV)
    if path:
        try:
            with open(Path(path).expanduser(), "rb") as f:
                doc = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path}: not valid YAML: {e}") from None
        if not isinstance(doc, Mapping):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        for name, (dotted, _) in _FIELDS.items():
            value = _dig(doc, dotted)
            if value is not None:
                values[name] = _convert(dotted, value, types[name])
    for name, (_, env) in _FIELDS.items():
        if env in environ and environ[env] != "":
            values[name] = _convert(env, environ[env], types[name])
    for name, value in (overrides or {}).items():
        if value is not None:
            if name not in types:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _convert(name, value, types[name])
    return _validate(Settings(**values))
