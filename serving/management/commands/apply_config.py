"""manage.py apply_config FILE [--dry-run] [--prune]: make the database match a YAML file from
export_config, through the audited services; prints what changes."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from serving.config_as_code import ConfigError, apply, load_yaml, printable


class Command(BaseCommand):
    help = (
        "Apply a configuration file (tiers, deployments, model groups, routing rules, prices): "
        "only the differences are made, all or nothing, each audited. Safe to run twice."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="YAML file (as export_config writes it); - for stdin")
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would change; write nothing"
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="also delete tiers, deployments, groups and rules that a section of the file "
            "leaves out (sections absent from the file are never touched)",
        )

    def handle(self, *args, file: str, dry_run: bool, prune: bool, **opts):
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from exc
        try:
            changes = apply(load_yaml(text), dry_run=dry_run, prune=prune)
        except ConfigError as exc:
            raise CommandError(printable(f"{exc} Nothing was changed.")) from exc
        for change in changes:
            self.stdout.write(printable(change.text()))
        n = len(changes)
        if not n:
            self.stdout.write("No changes: the configuration already matches the file.")
        elif dry_run:
            self.stdout.write(f"Dry run: {n} change(s) would be made; nothing was written.")
        else:
            self.stdout.write(f"Applied {n} change(s).")
