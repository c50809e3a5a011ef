"""Dead letters: stream entries ingestion could not store (switchyard.streams). Operators see
them with the reason; admins retry one (stored again by its stream's ingestor) or delete it."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.decorators import admin_required, operator_required
from console.params import query_param
from serving.models import DeadLetter
from switchyard.streams import dead_letter_retry as retry_letter


@operator_required
def dead_letter_list(request):
    stream = query_param(request, "stream", max_length=64)
    qs = DeadLetter.objects.all()
    if stream:
        qs = qs.filter(stream=stream)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    rows = [{"letter": d, "payload": json.dumps(d.payload, indent=1, sort_keys=True)} for d in page]
    streams = DeadLetter.objects.order_by("stream").values_list("stream", flat=True).distinct()
    return render(
        request,
        "console/dead_letters.html",
        {"page": page, "rows": rows, "stream": stream, "streams": list(streams)},
    )


@require_POST
@admin_required
def dead_letter_retry(request, pk: int):
    letter = get_object_or_404(DeadLetter, pk=pk)
    reason = retry_letter(letter=letter)
    if reason:
        messages.error(request, f"Entry {letter.entry_id} still cannot be stored: {reason}")
    else:
        messages.success(request, f"Entry {letter.entry_id} stored.")
    return redirect("console:dead-letters")


@require_POST
@admin_required
def dead_letter_delete(request, pk: int):
    letter = get_object_or_404(DeadLetter, pk=pk)
    letter.delete()
    messages.success(request, f"Dead letter {letter.entry_id} of {letter.stream} deleted.")
    return redirect("console:dead-letters")
