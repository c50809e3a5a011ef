from django.urls import path, re_path

from serving import anthropic_views, usage_api, views

# `(?s:…)` lets a name or path hold any character, newlines included, so every /v1 URL gets
# an answer in OpenAI's error shape rather than Django's HTML 404.
urlpatterns = [
    path("chat/completions", views.chat_completions, name="v1-chat-completions"),
    path("completions", views.completions, name="v1-completions"),
    path("embeddings", views.embeddings, name="v1-embeddings"),
    path("models", views.models, name="v1-models"),
    re_path(r"^models/(?P<model>(?s:.+))\Z", views.models, name="v1-model"),
    path("usage", usage_api.usage, name="v1-usage"),
    path("messages", anthropic_views.messages, name="v1-messages"),
    path("messages/count_tokens", anthropic_views.count_tokens, name="v1-messages-count-tokens"),
    path("openapi.json", views.openapi, name="v1-openapi"),
    re_path(r"^(?P<rest>(?s:.*))\Z", views.not_found),
]
