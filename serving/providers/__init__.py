"""Provider adapters: how the gateway speaks to upstreams that are not OpenAI-compatible
(Anthropic's Messages API) or that address models differently (Azure OpenAI), and how it
answers clients that speak Anthropic's API."""
