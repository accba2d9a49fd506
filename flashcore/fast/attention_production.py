"""The seed's name for flashcore.api (see flashcore.fast)."""
from flashcore.api import attention_with_kv_cache

__all__ = ["attention_with_kv_cache"]
