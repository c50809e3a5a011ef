"""Azure OpenAI: the OpenAI wire format at a per-deployment path, with an ``api-key`` header
and an ``api-version`` query parameter.

``{base_url}/openai/deployments/{upstream_model}/chat/completions?api-version=…`` where the
deployment's ``base_url`` is the resource endpoint (``https://NAME.openai.azure.com``) and its
upstream model name is the Azure deployment name.
https://learn.microsoft.com/azure/ai-services/openai/reference
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

DEFAULT_API_VERSION = "2024-10-21"


def url(base_url: str, deployment: str, path: str, api_version: str) -> str:
    """The Azure URL for an OpenAI path (``/chat/completions``, ``/embeddings``, …)."""
    query = urlencode({"api-version": api_version or DEFAULT_API_VERSION})
    return f"{base_url}/openai/deployments/{quote(deployment, safe='')}{path}?{query}"


def headers(api_key: str, request_id: str) -> dict[str, str]:
    h = {"content-type": "application/json", "x-request-id": request_id}
    if api_key:
        h["api-key"] = api_key
    return h
