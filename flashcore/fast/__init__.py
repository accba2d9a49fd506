"""The seed's import path, kept working: ``from flashcore.fast.attention_production import attention_with_kv_cache``.
The code lives in flashcore.api; this package only gives it the seed's name."""
