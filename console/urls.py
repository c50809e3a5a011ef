from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from console import billing_views, cache_views, dead_letter_views, routing_views, views

app_name = "console"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="console/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tenants/", views.tenant_list, name="tenant-list"),
    path("tenants/new/", views.tenant_create, name="tenant-create"),
    path("tenants/<slug:slug>/", views.tenant_detail, name="tenant-detail"),
    path("tenants/<slug:slug>/edit/", views.tenant_edit, name="tenant-edit"),
    path("tenants/<slug:slug>/delete/", views.tenant_delete, name="tenant-delete"),
    re_path(
        r"^tenants/(?P<slug>[-\w]+)/(?P<action>suspend|activate)/$",
        views.tenant_status,
        name="tenant-status",
    ),
    path("tenants/<slug:slug>/keys/new/", views.key_create, name="key-create"),
    path("tenants/<slug:slug>/keys/<int:key_id>/revoke/", views.key_revoke, name="key-revoke"),
    path("tenants/<slug:slug>/budgets/set/", views.budget_set, name="budget-set"),
    path(
        "tenants/<slug:slug>/budgets/<int:budget_id>/delete/",
        views.budget_delete,
        name="budget-delete",
    ),
    path("tiers/", views.tier_list, name="tier-list"),
    path("tiers/new/", views.tier_create, name="tier-create"),
    # Names are free text (any character): objects are addressed by primary key in URLs.
    path("tiers/<int:pk>/edit/", views.tier_edit, name="tier-edit"),
    path("tiers/<int:pk>/delete/", views.tier_delete, name="tier-delete"),
    path("audit/", views.audit_list, name="audit"),
    path("traffic/", views.traffic, name="traffic"),
    path("playground/", views.playground, name="playground"),
    path("tenants/<slug:slug>/requests/", views.tenant_requests, name="tenant-requests"),
    path("billing/", billing_views.usage, name="billing-usage"),
    path("billing/export.csv", billing_views.usage_export, name="billing-export"),
    path("billing/alerts/", billing_views.alerts, name="billing-alerts"),
    path("billing/invoices/", billing_views.invoices, name="billing-invoices"),
    path(
        "billing/invoices/<slug:slug>/<str:month>/", billing_views.invoice, name="billing-invoice"
    ),
    path(
        "billing/invoices/<slug:slug>/<str:month>.csv",
        billing_views.invoice_download,
        name="billing-invoice-csv",
    ),
    path("billing/calculator/", billing_views.calculator, name="billing-calculator"),
    path("cache/", cache_views.cache_overview, name="cache-overview"),
    path("tenants/<slug:slug>/cache/", cache_views.tenant_cache, name="cache-detail"),
    path("tenants/<slug:slug>/cache/purge/", cache_views.tenant_cache_purge, name="cache-purge"),
    path("tenants/<slug:slug>/cache/pool/", cache_views.tenant_cache_pool, name="cache-pool"),
    path(
        "tenants/<slug:slug>/cache/entries/<int:entry_id>/delete/",
        cache_views.tenant_cache_entry_delete,
        name="cache-entry-delete",
    ),
    path("routing/", routing_views.deployment_list, name="deployment-list"),
    path("routing/deployments/new/", routing_views.deployment_create, name="deployment-create"),
    path(
        "routing/deployments/<slug:name>/edit/",
        routing_views.deployment_edit,
        name="deployment-edit",
    ),  # fmt: skip
    path("routing/rules/", routing_views.rule_list, name="rule-list"),
    path("routing/rules/new/", routing_views.rule_create, name="rule-create"),
    path("routing/rules/<int:pk>/edit/", routing_views.rule_edit, name="rule-edit"),
    path("routing/rules/<int:pk>/delete/", routing_views.rule_delete, name="rule-delete"),
    path("routing/groups/new/", routing_views.group_create, name="group-create"),
    path("routing/groups/<int:pk>/edit/", routing_views.group_edit, name="group-edit"),
    path("routing/test/", routing_views.test_route, name="test-route"),
    path("billing/prices/", billing_views.prices, name="billing-prices"),
    path("billing/prices/add/", billing_views.price_add, name="billing-price-add"),
    path("billing/terms/add/", billing_views.terms_add, name="billing-terms-add"),
    path("billing/contacts/", billing_views.contacts_set, name="billing-contacts"),
    path("routing/tiers/<int:pk>/", routing_views.tier_routing_edit, name="plan-routing-edit"),
    path("dead-letters/", dead_letter_views.dead_letter_list, name="dead-letters"),
    path(
        "dead-letters/<int:pk>/retry/",
        dead_letter_views.dead_letter_retry,
        name="dead-letter-retry",
    ),
    path(
        "dead-letters/<int:pk>/delete/",
        dead_letter_views.dead_letter_delete,
        name="dead-letter-delete",
    ),
]
