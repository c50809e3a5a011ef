"""Management API clients for the shared cast: alice (admin), bob (viewer), charlie (no role)."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def admin_api(alice) -> APIClient:
    return client_for(alice)


@pytest.fixture
def viewer_api(bob) -> APIClient:
    return client_for(bob)
