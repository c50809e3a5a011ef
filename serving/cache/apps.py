from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "serving.cache"
    label = "cache"
    verbose_name = "Response caches"
    default_auto_field = "django.db.models.BigAutoField"
