"""The public model names the platform knows (tiers may allow only these).

The configured ``SWITCHYARD_MODELS``, every model a deployment serves, every model group, and
``auto`` (the router's alias). Blocking (reads PostgreSQL): for async code use
``serving.routing.router.allowed_models`` with the cached routing table.
"""

from __future__ import annotations

from django.conf import settings


def model_names() -> list[str]:
    from serving.models import Deployment, ModelGroup
    from serving.routing.table import AUTO

    deployed = Deployment.objects.values_list("model", flat=True).distinct()
    groups = ModelGroup.objects.values_list("name", flat=True)
    return list(dict.fromkeys([*settings.SWITCHYARD_MODELS, *deployed, *groups, AUTO]))
