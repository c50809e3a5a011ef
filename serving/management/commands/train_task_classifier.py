"""manage.py train_task_classifier: rebuild serving/routing/data/classifier.json."""

from django.core.management.base import BaseCommand, CommandError

from serving.routing.classifier import WEIGHTS
from serving.routing.classifier_training import to_json, train


class Command(BaseCommand):
    help = "Train the routing task classifier on MiniLM embeddings; print held-out accuracy."

    def add_arguments(self, parser):
        parser.add_argument("--min-accuracy", type=float, default=0.85)

    def handle(self, *args, **o):
        from serving.engine.embeddings import MiniLMEmbedder

        embedder = MiniLMEmbedder(device="cpu", backend="torch")
        report = train(embedder.embed)
        self.stdout.write(
            f"train {report.train_size} examples, accuracy {report.train_accuracy:.3f}; "
            f"held-out {report.heldout_size}, accuracy {report.heldout_accuracy:.3f}"
        )
        for truth, row in report.confusion.items():
            self.stdout.write(f"  {truth:>8} -> " + ", ".join(f"{k} {v}" for k, v in row.items()))
        if report.heldout_accuracy < o["min_accuracy"]:
            raise CommandError(f"held-out accuracy below {o['min_accuracy']}; weights not written")
        WEIGHTS.write_text(to_json(report) + "\n")
        self.stdout.write(f"wrote {WEIGHTS}")
