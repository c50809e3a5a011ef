import getpass

from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.management.commands._helpers import run_service
from tenants.roles import Role


class Command(BaseCommand):
    help = "Create or update an operator account with a role (admin or viewer)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=[r.value for r in Role], default=Role.VIEWER.value)
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password",
            help="set this password (else prompted; --no-password keeps the current one)",
        )
        parser.add_argument("--no-password", action="store_true")

    def handle(self, *args, username, role, email, password, no_password, **opts):
        if password is None and not no_password:
            if not self.stdin_is_tty():
                raise CommandError("Give --password or --no-password when not on a terminal.")
            password = getpass.getpass(f"Password for {username}: ")
        user = run_service(
            services.operator_set,
            username=username,
            role=Role(role),
            password=password,
            email=email,
        )
        self.stdout.write(f"operator {user.username}: {role}")

    @staticmethod
    def stdin_is_tty() -> bool:
        import sys

        return sys.stdin.isatty()
