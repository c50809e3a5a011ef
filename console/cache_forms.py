"""Forms of the console's cache pages."""

from __future__ import annotations

from django import forms


class SharedPoolForm(forms.Form):
    cache_shared_pool = forms.BooleanField(
        required=False,
        label="Use the shared cache pool",
        help_text="The tenant then reads and writes only shared entries (other opted-in "
        "tenants' answers), never private ones.",
    )


class EntrySearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Prompt contains")
