from django.apps import AppConfig


class ServingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "serving"
    verbose_name = "Serving"

    def ready(self) -> None:
        """Plug serving into the layers below it, which never import it: the request log's
        stream ingestor, the dead-letter table and the stream metrics (switchyard.streams),
        the model workers' readiness check (switchyard.health), and the model names a tier
        may allow (tenants.services)."""
        from serving.gateway import metrics
        from serving.models import DeadLetter
        from serving.readiness import model_workers_readiness
        from serving.request_log import request_log_ingestor
        from serving.routing.catalog import model_names
        from switchyard import health, streams
        from tenants import services as tenant_services

        streams.register_ingestor(request_log_ingestor)
        streams.register_dead_letters(DeadLetter)
        streams.register_metrics(metrics.REGISTRY)
        health.register_readiness_check("model_workers", model_workers_readiness)
        tenant_services.register_model_names(model_names)
