"""manage.py export_config [--output FILE]: tiers, deployments, model groups, routing rules and
prices as YAML (no secrets), for apply_config."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand

from serving.config_as_code import dump_yaml, export_config


class Command(BaseCommand):
    help = (
        "Write the configuration (tiers, deployments, model groups, routing rules, prices) as "
        "YAML, to stdout or --output. Upstream API keys are never included."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="write to this file instead of stdout")

    def handle(self, *args, output: str | None = None, **opts):
        text = dump_yaml(export_config())
        if not output:
            self.stdout.write(text, ending="")
            return
        path = Path(output)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        self.stderr.write(f"Wrote {path}.")
