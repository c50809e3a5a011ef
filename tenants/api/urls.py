from django.urls import path
from rest_framework.routers import DefaultRouter

from serving.cache.api import TenantCacheView
from tenants.api import views

router = DefaultRouter()
router.register("tiers", views.TierViewSet, basename="tier")
router.register("tenants", views.TenantViewSet, basename="tenant")
router.register("keys", views.ApiKeyViewSet, basename="apikey")
router.register("budgets", views.BudgetViewSet, basename="budget")
router.register("audit", views.AuditEventViewSet, basename="audit")

urlpatterns = router.urls + [
    path("tenants/<slug:slug>/cache/", TenantCacheView.as_view(), name="tenant-cache"),
]
