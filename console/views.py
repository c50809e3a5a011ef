from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from tenants.selectors import dashboard_figures


@login_required
def dashboard(request):
    return render(request, "console/dashboard.html", {"figures": dashboard_figures()})
