"""Management API for a tenant's caches: statistics, and purge (operator admins)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from serving.cache.selectors import cache_stats
from serving.cache.services import cache_purge
from tenants.models import Tenant

_PURGED = inline_serializer(
    "CachePurged",
    {
        "tenant": serializers.CharField(),
        "exact_entries": serializers.IntegerField(),
        "semantic_entries": serializers.IntegerField(),
    },
)


class TenantCacheView(APIView):
    """``GET`` the tenant's cache statistics (last 30 days); ``DELETE`` purges its entries."""

    @extend_schema(responses=inline_serializer("CacheStats", {"stats": serializers.DictField()}))
    def get(self, request, slug: str):
        tenant = get_object_or_404(Tenant, slug=slug)
        return Response({"tenant": tenant.slug, "stats": cache_stats(tenant=tenant).as_dict()})

    @extend_schema(request=None, responses=_PURGED)
    def delete(self, request, slug: str):
        tenant = get_object_or_404(Tenant, slug=slug)
        result = cache_purge(tenant=tenant, actor=request.user)
        return Response(
            {
                "tenant": tenant.slug,
                "exact_entries": result.exact_entries,
                "semantic_entries": result.semantic_entries,
            }
        )
