"""WebSocket routes (the streaming API arrives with the gateway)."""

websocket_urlpatterns: list = []
