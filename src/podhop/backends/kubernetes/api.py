"""Talking to one Kubernetes API server with the official client: connect, call, explain failures.

Why the official ``kubernetes`` client: it is the Kubernetes project's own,
released with every minor version, and covers all podhop needs — the node
proxy (the kubelet's checkpoint API and resource metrics), exec through
websockets, server-side apply through its dynamic client, metrics.k8s.io
through custom objects — with kubeconfig handling (contexts, exec
credential plugins such as EKS's ``aws eks get-token``) that matches
kubectl's. (kr8s is pleasant but smaller; lightkube has no proxy or exec.)

Every call goes through :func:`call`, which turns the client's exceptions
into one :class:`~podhop.errors.ClusterError` line naming the operation, the
HTTP status and the API server's own message, the cause chained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from podhop.errors import ClusterError, NotFoundError, PodhopError

T = TypeVar("T")
#: Seconds for an ordinary API request (list, get, patch); long operations pass their own.
REQUEST_TIMEOUT_S = 30.0


class ApiError(ClusterError):
    """The API server refused or failed a request; ``status`` is the HTTP status (0: unreachable)."""

    def __init__(self, message: str, status: int = 0, *, hint: str | None = None) -> None:
        self.status = status
        super().__init__(message, hint=hint)


def connect(kubeconfig: Path, context: str | None = None) -> tuple[Any, str]:
    """An ``ApiClient`` for the kubeconfig's ``context`` (default: its current one), and that
    context's name."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    try:
        contexts, current = config.list_kube_config_contexts(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        chosen = context or (current or {}).get("name")
        if context and context not in {c["name"] for c in contexts}:
            names = ", ".join(c["name"] for c in contexts)
            raise NotFoundError(f"context {context!r} not in {kubeconfig} (contexts: {names})")
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), context=context, client_configuration=cfg
        )
    except ConfigException as exc:
        raise ClusterError(f"{kubeconfig}: not a usable kubeconfig: {exc}") from exc
    except yaml.YAMLError as exc:  # not YAML at all: its message spans lines, the last one says where
        where = " ".join(str(exc).split())
        raise ClusterError(f"{kubeconfig}: not a usable kubeconfig: not YAML ({where})") from exc
    except (TypeError, AttributeError, KeyError) as exc:  # YAML, but not a kubeconfig's shape (a list, ...)
        raise ClusterError(f"{kubeconfig}: not a usable kubeconfig: not a Config mapping ({exc})") from exc
    except PermissionError as exc:
        hint = "podhop's own clusters are root's: run as root (sudo)" if os.geteuid() != 0 else None
        raise ClusterError(f"{kubeconfig}: cannot read: permission denied", hint=hint) from exc
    except (OSError, ValueError) as exc:
        raise ClusterError(f"{kubeconfig}: cannot read: {exc}") from exc
    cfg.retries = 2
    return client.ApiClient(cfg), str(chosen or "kubernetes")


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and doc.get("message"):
                return str(doc["message"])
        except (ValueError, TypeError):
            pass
        return str(body)[:300]
    return str(getattr(exc, "reason", "") or exc)


def call(
    what: str, fn: Callable[..., T], *args: Any, timeout: float | None = REQUEST_TIMEOUT_S, **kwargs: Any
) -> T:
    """``fn(*args, **kwargs)`` with the client's failures as one line (404 as :class:`NotFoundError`);
    ``timeout`` is passed as the generated client's ``_request_timeout`` (None: pass none)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if timeout is not None:
        kwargs["_request_timeout"] = timeout
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        status = int(exc.status or 0)
        message = f"{what}: {_message(exc)}"
        if status == 404:
            raise NotFoundError(message) from exc
        hint = None
        if status in (401, 403):
            hint = "check the kubeconfig's credentials and podhop's RBAC (podhop kube manifests)"
        raise ApiError(message + f" (HTTP {status})", status, hint=hint) from exc
    except HTTPError as exc:
        raise ApiError(f"{what}: cannot reach the API server: {exc}", hint="is the cluster up?") from exc
    except PodhopError:
        raise
    except OSError as exc:
        raise ApiError(f"{what}: {exc}") from exc


def plain(api: Any, obj: Any) -> Any:
    """A client model object as the plain JSON-shaped dict ``kubectl get -o json`` prints."""
    return api.sanitize_for_serialization(obj)
