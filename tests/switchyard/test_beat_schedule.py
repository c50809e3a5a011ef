"""Every task Celery beat schedules can be sent: ``apply_async`` refuses a task whose soft
time limit (its own or the app's default) is above its hard limit, and beat then never runs it."""

from __future__ import annotations

from switchyard.celery import app as celery_app


def test_every_scheduled_task_has_its_soft_limit_within_its_hard_limit():
    celery_app.loader.import_default_modules()  # what a worker imports at start: every tasks.py
    assert celery_app.conf.beat_schedule
    for name, entry in celery_app.conf.beat_schedule.items():
        task = celery_app.tasks[entry["task"]]
        soft, hard = task.soft_time_limit, task.time_limit
        assert not (soft and hard and soft > hard), f"{name}: soft {soft} s > hard {hard} s"
