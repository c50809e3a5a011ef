"""The project's URLconf: the composition root, which may import every app.

The management API (``/api/v1/``) is one router over every app's viewsets, assembled here so
that no app's URLs import an app above it."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from serving import views as serving_views
from serving.api import views as serving_api
from serving.cache.api import TenantCacheView
from switchyard import health
from tenants.api import views as tenants_api

api_router = DefaultRouter()
api_router.register("tiers", tenants_api.TierViewSet, basename="tier")
api_router.register("tenants", tenants_api.TenantViewSet, basename="tenant")
api_router.register("keys", tenants_api.ApiKeyViewSet, basename="apikey")
api_router.register("budgets", tenants_api.BudgetViewSet, basename="budget")
api_router.register("audit", tenants_api.AuditEventViewSet, basename="audit")
api_router.register("deployments", serving_api.DeploymentViewSet, basename="deployment")
api_router.register("model-groups", serving_api.ModelGroupViewSet, basename="model-group")
api_router.register("routing-rules", serving_api.RoutingRuleViewSet, basename="routing-rule")
api_router.register("prices", serving_api.PriceViewSet, basename="price")
api_router.register("tenant-terms", serving_api.TenantTermsViewSet, basename="tenant-terms")
api_router.register("alert-contacts", serving_api.AlertContactsViewSet, basename="alert-contacts")

api_urlpatterns = api_router.urls + [
    path("tenants/<slug:slug>/cache/", TenantCacheView.as_view(), name="tenant-cache"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("v1/", include("serving.urls")),
    path("metrics", serving_views.prometheus_metrics, name="metrics"),
    path("api/v1/", include(api_urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("console.urls")),
]
