"""The adversarial suite: each attack of a hostile tenant (or a hostile caller of a worker,
or a hostile operator) runs against real processes: a uvicorn gateway, the model worker,
Redis and PostgreSQL. The gateway fixtures come from :mod:`tests.gateway_fixtures`."""
