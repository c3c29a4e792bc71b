"""The engine's OpenAI-compatible HTTP server: ``openai_schema`` (request bodies), ``responses``
(reply bodies), ``app`` (FastAPI routes), ``api_keys`` and ``auth`` (API keys, tenants' salts,
admin routes), ``serve`` (uvicorn lifecycle)."""
