"""The engine's OpenAI-compatible HTTP server: ``protocol`` (request bodies), ``responses``
(reply bodies), ``app`` (FastAPI routes), ``serve`` (uvicorn lifecycle)."""
