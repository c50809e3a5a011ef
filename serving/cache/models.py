"""The semantic cache's table: one answered prompt per row, searched by cosine distance."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

from serving.engine.embeddings import DIMENSIONS


class SemanticCacheEntry(models.Model):
    """An answer the gateway may serve again to a prompt that means the same.

    ``scope`` is ``t:<tenant id>`` (private, the default) or ``shared`` (tenants that opted into
    the shared pool); lookups filter by scope, model and ``context_hash`` (system prompt,
    earlier turns and output-changing parameters), so the vector (of the last user message only)
    never matches across conversations or tenants. ``tenant`` is the owner, for purges and caps.
    """

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="semantic_cache_entries"
    )
    scope = models.CharField(max_length=32)
    model = models.CharField(max_length=128)
    context_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=DIMENSIONS)
    prompt = models.TextField()
    response = models.JSONField(help_text="The OpenAI response body as served (non-streaming).")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)
    last_hit = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["scope", "model", "context_hash"], name="semcache_lookup"),
            models.Index(fields=["tenant", "-created"], name="semcache_tenant_created"),
            models.Index(fields=["expires"], name="semcache_expires"),
            HnswIndex(
                name="semcache_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.model} {self.prompt[:40]}"
