from django.urls import path
from rest_framework.routers import DefaultRouter

from serving.api import views as serving_views
from serving.cache.api import TenantCacheView
from tenants.api import views

router = DefaultRouter()
router.register("tiers", views.TierViewSet, basename="tier")
router.register("tenants", views.TenantViewSet, basename="tenant")
router.register("keys", views.ApiKeyViewSet, basename="apikey")
router.register("budgets", views.BudgetViewSet, basename="budget")
router.register("audit", views.AuditEventViewSet, basename="audit")
router.register("deployments", serving_views.DeploymentViewSet, basename="deployment")
router.register("model-groups", serving_views.ModelGroupViewSet, basename="model-group")
router.register("routing-rules", serving_views.RoutingRuleViewSet, basename="routing-rule")
router.register("prices", serving_views.PriceViewSet, basename="price")
router.register("tenant-terms", serving_views.TenantTermsViewSet, basename="tenant-terms")

urlpatterns = router.urls + [
    path("tenants/<slug:slug>/cache/", TenantCacheView.as_view(), name="tenant-cache"),
]
