"""The gateway's response caches: an exact cache in Redis and a tenant-scoped semantic cache in
pgvector (see docs/caching.md). :class:`serving.cache.stage.CacheStage` is what the pipeline
calls; the other modules are its parts."""
