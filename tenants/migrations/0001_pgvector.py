"""Enable pgvector first: every later migration may use vector columns.

Fails with one clear sentence when the server does not have the extension available.
"""

from django.db import migrations


def enable_pgvector(apps, schema_editor):
    with schema_editor.connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if cur.fetchone() is None:
            from switchyard.preflight import PGVECTOR_MISSING

            raise RuntimeError(PGVECTOR_MISSING)
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.RunPython(enable_pgvector, migrations.RunPython.noop, elidable=False),
    ]
