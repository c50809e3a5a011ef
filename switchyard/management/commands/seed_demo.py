"""``manage.py seed_demo``: the demo data of :mod:`switchyard.seed`, printed as JSON (one line,
read by `make run`)."""

import json

from django.core.management.base import BaseCommand

from switchyard.seed import seed_demo


class Command(BaseCommand):
    help = "Create the demo tier, tenant, key and operator (idempotent); print them as JSON."

    def handle(self, *args, **opts):
        self.stdout.write(json.dumps(seed_demo()))
