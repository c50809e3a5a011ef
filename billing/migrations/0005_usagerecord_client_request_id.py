from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_merge_prices_and_cache_fields"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagerecord",
            name="client_request_id",
            field=models.CharField(blank=True, db_index=True, default="", max_length=128),
        ),
    ]
