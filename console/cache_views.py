"""The console's cache pages: hit rates and savings per tenant, browse and purge entries."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.cache_forms import EntrySearchForm, SharedPoolForm
from console.decorators import admin_required, operator_required
from serving.cache.selectors import cache_entries, cache_stats
from serving.cache.services import cache_entry_delete, cache_purge
from tenants import services
from tenants.models import Tenant

STATS_DAYS = 30


@operator_required
def cache_overview(request):
    tenants = Tenant.objects.select_related("tier").order_by("name")[:200]
    rows = [(t, cache_stats(tenant=t, days=STATS_DAYS)) for t in tenants]
    return render(request, "console/cache/overview.html", {"rows": rows, "days": STATS_DAYS})


@operator_required
def tenant_cache(request, slug: str):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    # Prompts are request bodies: shown (and searchable) only where the tier keeps bodies.
    show_bodies = tenant.tier.log_bodies
    search = EntrySearchForm(request.GET or None)
    q = search.cleaned_data["q"].strip() if show_bodies and search.is_valid() else ""
    page = Paginator(cache_entries(tenant=tenant, q=q), 25).get_page(request.GET.get("page"))
    ctx = {
        "tenant": tenant,
        "tier": tenant.tier,
        "stats": cache_stats(tenant=tenant, days=STATS_DAYS),
        "days": STATS_DAYS,
        "search": search,
        "q": q,
        "show_bodies": show_bodies,
        "page": page,
        "pool_form": SharedPoolForm(initial={"cache_shared_pool": tenant.cache_shared_pool}),
    }
    return render(request, "console/cache/tenant.html", ctx)


@require_POST
@admin_required
def tenant_cache_purge(request, slug: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    result = cache_purge(tenant=tenant, actor=request.user)
    messages.success(
        request,
        f"Purged {result.semantic_entries} semantic and {result.exact_entries} exact entries "
        f"of {tenant.slug}.",
    )
    return redirect("console:cache-detail", slug=slug)


@require_POST
@admin_required
def tenant_cache_entry_delete(request, slug: str, entry_id: int):
    tenant = get_object_or_404(Tenant, slug=slug)
    if not cache_entry_delete(tenant=tenant, entry_id=entry_id, actor=request.user):
        raise Http404("No such cache entry for this tenant.")
    messages.success(request, "Cache entry deleted.")
    return redirect("console:cache-detail", slug=slug)


@require_POST
@admin_required
def tenant_cache_pool(request, slug: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    form = SharedPoolForm(request.POST)
    if form.is_valid():
        shared = form.cleaned_data["cache_shared_pool"]
        services.tenant_update(tenant=tenant, actor=request.user, cache_shared_pool=shared)
        messages.success(
            request, f"{tenant.slug} now uses {'the shared' if shared else 'a private'} cache."
        )
    return redirect("console:cache-detail", slug=slug)
