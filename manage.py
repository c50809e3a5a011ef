#!/usr/bin/env python
"""Django's command-line utility for Switchyard.

Without DATABASE_URL/REDIS_URL it finds the services that `make run` started from the same
data dir (SWITCHYARD_DATA_DIR, default .switchyard/); when there are none it says so in one
sentence and exits with status 2.
"""

import os
import sys

NEEDS_NO_SERVICES = {"help", "--help", "-h", "version", "--version"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    from django.core.exceptions import ImproperlyConfigured

    if sys.argv[1:2] and not NEEDS_NO_SERVICES.intersection(sys.argv[1:2]):
        from django.conf import settings

        try:
            settings.INSTALLED_APPS  # noqa: B018 - loads the settings, which find the services
        except ImproperlyConfigured as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.exit(2)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
