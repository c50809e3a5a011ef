"""The semantic cache: a prompt that means the same, in the same context, is answered from
pgvector, only within the tenant's scope, above the tier's threshold and within its TTL, and
only when the second check agrees. The instant upstream echoes the prompt, so a hit shows
which prompt's answer was served."""

import asyncio
import datetime as dt
import json

import websockets
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from serving.cache.models import SemanticCacheEntry
from serving.cache.services import cache_enforce_caps, cache_expire
from tenants import services
from tenants.models import AuditEvent
from tests.serving.gateway.cache_helpers import wait_exact_entries, wait_for, wait_semantic_entries
from tests.serving.gateway.conftest import MODEL

# These tiers also answer sampled requests (the client's default temperature is 1).
SEMANTIC = {
    "exact_cache_enabled": False,
    "semantic_cache_enabled": True,
    "semantic_cache_sampled": True,
}
FRANCE = "What is the capital of France?"
FRANCE_AGAIN = "Tell me the capital of France."  # MiniLM cosine 0.946


def _ask(caller, text: str, system: str | None = None, **kw):
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    raw = caller.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, **kw
    )
    return raw.headers["x-switchyard-cache"], raw.parse().choices[0].message.content


def _seed(caller, text: str, n: int = 1, **kw) -> None:
    assert _ask(caller, text, **kw)[0] == "miss"
    wait_semantic_entries(caller.tenant, n)


def test_paraphrase_above_threshold_is_a_semantic_hit(make_caller):
    caller = make_caller(semantic_cache_threshold=0.9, **SEMANTIC)
    _seed(caller, FRANCE)
    assert _ask(caller, FRANCE_AGAIN) == ("hit-semantic", f"echo: {FRANCE}")
    wait_for(lambda: SemanticCacheEntry.objects.get(tenant=caller.tenant).hits == 1)


def test_threshold_is_respected(make_caller):
    caller = make_caller(semantic_cache_threshold=0.99, **SEMANTIC)
    _seed(caller, FRANCE)
    assert _ask(caller, FRANCE_AGAIN) == ("miss", f"echo: {FRANCE_AGAIN}")
    assert _ask(caller, FRANCE)[0] == "hit-semantic"  # identical text: similarity 1


def test_similar_words_different_meaning_is_a_miss(make_caller):
    caller = make_caller(semantic_cache_threshold=0.6, **SEMANTIC)
    _seed(caller, "convert 5 km to miles")
    _seed(caller, FRANCE, n=2)
    # Cosine 0.99 and 0.68: above this tier's threshold, refused by the second check.
    assert _ask(caller, "convert 5 miles to km") == ("miss", "echo: convert 5 miles to km")
    assert _ask(caller, "What is the capital of Spain?")[0] == "miss"
    assert _ask(caller, "convert 6 km to miles")[0] == "miss"


def test_context_hash_separates_conversations(make_caller):
    caller = make_caller(semantic_cache_threshold=0.9, **SEMANTIC)
    _seed(caller, FRANCE, system="Answer in French.")
    assert _ask(caller, FRANCE, system="Answer in German.")[0] == "miss"
    assert _ask(caller, FRANCE)[0] == "miss"  # no system prompt at all
    assert _ask(caller, FRANCE, system="Answer in French.", temperature=0.2)[0] == "miss"
    assert _ask(caller, FRANCE_AGAIN, system="Answer in French.")[0] == "hit-semantic"


def test_tenant_b_never_receives_tenant_as_entry(make_caller):
    a = make_caller(**SEMANTIC)
    b = make_caller(**SEMANTIC)
    _seed(a, FRANCE)
    assert _ask(b, FRANCE) == ("miss", f"echo: {FRANCE}")
    assert _ask(a, FRANCE)[0] == "hit-semantic"


def test_shared_pool_reads_only_shared_entries(make_caller):
    shared_a = make_caller(**SEMANTIC)
    shared_c = make_caller(**SEMANTIC)
    private_b = make_caller(**SEMANTIC)
    for caller in (shared_a, shared_c):
        services.tenant_update(tenant=caller.tenant, cache_shared_pool=True)
    _seed(shared_a, FRANCE)
    _seed(private_b, "What is the boiling point of water?")
    assert _ask(shared_c, FRANCE)[0] == "hit-semantic"  # another tenant's shared entry
    assert _ask(private_b, FRANCE)[0] == "miss"  # private tenants never read the pool
    assert _ask(shared_c, "What is the boiling point of water?")[0] == "miss"  # B's is private


def test_expired_entries_are_not_served_and_are_deleted(make_caller):
    caller = make_caller(**SEMANTIC)
    _seed(caller, FRANCE)
    entry = SemanticCacheEntry.objects.get(tenant=caller.tenant)
    assert entry.expires - entry.created == dt.timedelta(seconds=3600)  # the tier's TTL
    past = timezone.now() - dt.timedelta(seconds=1)
    SemanticCacheEntry.objects.filter(pk=entry.pk).update(expires=past)
    assert _ask(caller, FRANCE)[0] == "miss"
    # The miss's fresh answer replaces the expired entry...
    wait_for(lambda: not SemanticCacheEntry.objects.filter(pk=entry.pk).exists())
    assert SemanticCacheEntry.objects.filter(tenant=caller.tenant).count() == 1
    assert _ask(caller, FRANCE)[0] == "hit-semantic"
    # ...and the expiry task deletes what expires without being asked again.
    SemanticCacheEntry.objects.filter(tenant=caller.tenant).update(expires=past)
    assert cache_expire() == 1
    assert not SemanticCacheEntry.objects.filter(tenant=caller.tenant).exists()


def test_no_cache_refreshes_the_entry_instead_of_adding_one(make_caller):
    caller = make_caller(**SEMANTIC)
    _seed(caller, FRANCE)
    first = SemanticCacheEntry.objects.get(tenant=caller.tenant)
    raw = caller.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": FRANCE}],
        extra_headers={"Cache-Control": "no-cache"},
    )  # fmt: skip
    assert raw.headers["x-switchyard-cache"] == "miss"
    wait_for(lambda: not SemanticCacheEntry.objects.filter(pk=first.pk).exists())
    assert SemanticCacheEntry.objects.filter(tenant=caller.tenant).count() == 1


def test_tier_switch_off_means_no_semantic_cache(make_caller):
    caller = make_caller(exact_cache_enabled=False, semantic_cache_enabled=False)
    for _ in range(2):
        assert _ask(caller, FRANCE)[0] == "miss"
    assert not SemanticCacheEntry.objects.filter(tenant=caller.tenant).exists()


def test_semantic_hit_streams_over_websocket(make_caller):
    caller = make_caller(semantic_cache_threshold=0.9, **SEMANTIC)
    _seed(caller, FRANCE)

    async def run() -> list[dict]:
        url = caller.base_url.replace("http", "ws") + "/v1/ws"
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {caller.key}"}
        ) as ws:
            await ws.recv()
            body = {"model": MODEL, "messages": [{"role": "user", "content": FRANCE_AGAIN}]}
            await ws.send(json.dumps({"type": "request", "id": "q", "body": body}))
            msgs = []
            while not msgs or msgs[-1]["type"] not in ("done", "error"):
                msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
            return msgs

    msgs = asyncio.run(run())
    assert msgs[-1]["type"] == "done"
    text = "".join(
        (c.get("delta") or {}).get("content") or ""
        for m in msgs
        if m["type"] == "chunk"
        for c in m["data"]["choices"]
    )
    assert text == f"echo: {FRANCE}"


def test_purge_via_api_empties_both_caches(make_caller, alice, bob):
    caller = make_caller(**{**SEMANTIC, "exact_cache_enabled": True})
    other = make_caller(**{**SEMANTIC, "exact_cache_enabled": True})
    _ask(caller, FRANCE, temperature=0)
    _ask(other, FRANCE, temperature=0)
    wait_semantic_entries(caller.tenant, 1)
    wait_exact_entries(caller.tenant, 1)
    wait_semantic_entries(other.tenant, 1)
    url = f"/api/v1/tenants/{caller.tenant.slug}/cache/"
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}")
    assert viewer.delete(url).status_code == 403
    assert viewer.get(url).json()["stats"]["semantic_entries"] == 1
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    r = admin.delete(url)
    assert r.status_code == 200
    assert r.json() == {"tenant": caller.tenant.slug, "exact_entries": 1, "semantic_entries": 1}
    assert admin.delete("/api/v1/tenants/nobody/cache/").status_code == 404
    assert AuditEvent.objects.filter(action="cache.purge", tenant=caller.tenant).exists()
    assert _ask(caller, FRANCE, temperature=0)[0] == "miss"
    assert _ask(other, FRANCE, temperature=0)[0] == "hit-exact"  # B's entries untouched
    assert SemanticCacheEntry.objects.filter(tenant=other.tenant).count() == 1


def test_cap_keeps_the_newest_entries(make_caller):
    caller = make_caller(cache_max_entries=2, **SEMANTIC)
    prompts = ["alpha question one", "bravo question two", "charlie question three"]
    for i, text in enumerate(prompts, start=1):
        _seed(caller, text, n=i)
    dropped = cache_enforce_caps()
    assert dropped[caller.tenant.pk] == 1
    left = set(
        SemanticCacheEntry.objects.filter(tenant=caller.tenant).values_list("prompt", flat=True)
    )
    assert left == set(prompts[1:])


def test_sampled_requests_skip_the_semantic_cache_unless_the_tier_opts_in(make_caller):
    caller = make_caller(exact_cache_enabled=False, semantic_cache_enabled=True)
    assert _ask(caller, FRANCE, temperature=0.7)[0] == "miss"  # neither looked up nor stored
    assert _ask(caller, FRANCE, temperature=0)[0] == "miss"
    wait_semantic_entries(caller.tenant, 1)  # the deterministic one only
    assert _ask(caller, FRANCE_AGAIN, temperature=0)[0] == "hit-semantic"
    assert _ask(caller, FRANCE_AGAIN, temperature=0.7)[0] == "miss"
    assert SemanticCacheEntry.objects.filter(tenant=caller.tenant).count() == 1


def test_lookups_embed_on_the_embedding_deployment_off_the_gateways_cpu(make_caller, worker):
    from serving.routing.deployments import deployment_set
    from tests.gateway_fixtures import GatewayProcess

    deployment_set(name="instant-embed", model="all-minilm-l6-v2", base_url=f"{worker.url}/v1",
                   kind="local_worker", api_key=worker.token)  # fmt: skip
    before = worker.app.state.batcher.batches_run
    gw = GatewayProcess(SWITCHYARD_CACHE_EMBEDDER="deployment")
    try:
        caller = make_caller(**SEMANTIC)
        caller.base_url = gw.url
        _seed(caller, FRANCE)
        assert _ask(caller, FRANCE_AGAIN) == ("hit-semantic", f"echo: {FRANCE}")
    finally:
        gw.stop()
    # Both lookups were embedded by the worker's MiniLM, not in the gateway process.
    assert worker.app.state.batcher.batches_run >= before + 2


def test_on_a_redacting_tier_both_caches_serve_and_no_raw_pii_is_stored(make_caller):
    """The exact key is planned in admission's round trip, before screening, from the request
    as received (an HMAC: Redis holds no testable hash of it); the semantic entry is keyed and
    stored from the redacted prompt, so the raw e-mail address is stored nowhere."""
    from serving.cache import exact
    from switchyard.redis_client import get_redis

    caller = make_caller(pii_redaction=True, exact_cache_enabled=True,
                         semantic_cache_enabled=True)  # fmt: skip
    text = "Write to jane.doe@example.com about the capital of France."
    assert _ask(caller, text, temperature=0) == ("miss", "echo: Write to [EMAIL] about the "
                                                 "capital of France.")  # fmt: skip
    wait_semantic_entries(caller.tenant, 1)
    wait_exact_entries(caller.tenant, 1)
    assert _ask(caller, text, temperature=0)[0] == "hit-exact"
    entry = SemanticCacheEntry.objects.get(tenant=caller.tenant)
    assert "jane.doe" not in entry.prompt and "[EMAIL]" in entry.prompt
    r = get_redis()
    for key in r.zrange(exact.index_key(caller.tenant.pk), 0, -1):
        assert b"jane.doe" not in key and b"jane.doe" not in (r.get(key) or b"")
    # Another address, same words: the redacted prompt matches, semantically.
    other = text.replace("jane.doe", "john.roe")
    assert _ask(caller, other, temperature=0)[0] == "hit-semantic"
