"""Backends: the inference servers behind the router, chosen by the deployment's ``backend`` kind."""

from __future__ import annotations

import importlib

from switchgear.backends.base import Backend
from switchgear.config import DeploymentConfig

#: backend kind → "module:class"; imported only when a deployment uses it.
BACKENDS = {
    "anthropic": "switchgear.backends.anthropic:AnthropicBackend",
    "embedded": "switchgear.backends.embedded:EmbeddedBackend",
    "openai_http": "switchgear.backends.openai_http:OpenAIHTTPBackend",
    "simulated": "switchgear.backends.simulated:SimulatedBackend",
}


def build_backend(config: DeploymentConfig) -> Backend:
    """The backend for one deployment, built (not yet started) from its config."""
    module_name, _, class_name = BACKENDS[config.backend].partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(config)
    return backend
