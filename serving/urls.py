from django.urls import path

from billing import usage_api
from serving import views

urlpatterns = [
    path("chat/completions", views.chat_completions, name="v1-chat-completions"),
    path("completions", views.completions, name="v1-completions"),
    path("embeddings", views.embeddings, name="v1-embeddings"),
    path("models", views.models, name="v1-models"),
    path("models/<path:model>", views.models, name="v1-model"),
    path("usage", usage_api.usage, name="v1-usage"),
    path("<path:rest>", views.not_found),
]
