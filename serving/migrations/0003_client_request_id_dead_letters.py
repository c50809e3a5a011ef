import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("serving", "0002_routing_groups_rules_health"),
    ]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="client_request_id",
            field=models.CharField(blank=True, db_index=True, default="", max_length=128),
        ),
        migrations.CreateModel(
            name="DeadLetter",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("stream", models.CharField(db_index=True, max_length=64)),
                ("entry_id", models.CharField(blank=True, max_length=64)),
                (
                    "payload",
                    models.JSONField(default=dict, help_text="The entry's fields, sanitised."),
                ),
                ("error", models.CharField(max_length=500)),
                (
                    "created",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
            ],
            options={"ordering": ["-created", "-id"]},
        ),
    ]
