"""Management API (config as code) for serving and prices: deployments, model groups, routing
rules, price lists and tenant terms, beside tenants.api's tiers, tenants, keys and budgets."""
