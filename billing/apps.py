from django.apps import AppConfig


class BillingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        """Register the usage stream's ingestor with the platform's stream machinery."""
        from billing.usage import usage_ingestor
        from switchyard import streams

        streams.register_ingestor(usage_ingestor)
