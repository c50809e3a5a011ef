from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "serving.cache"
    label = "cache"
    verbose_name = "Response caches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the semantic cache's write-behind stream ingestor."""
        from serving.cache.writeback import semantic_write_ingestor
        from switchyard import streams

        streams.register_ingestor(semantic_write_ingestor)
