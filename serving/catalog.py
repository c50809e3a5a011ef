"""The public model names the platform knows (tiers may allow only these).

Until deployments live in the database (routing issue) the catalogue is the
``SWITCHYARD_MODELS`` setting: the default worker's chat model and the embedding model.
"""

from __future__ import annotations

from django.conf import settings


def model_names() -> list[str]:
    return list(dict.fromkeys(settings.SWITCHYARD_MODELS))
