"""Where a search's files live (``storage``) and the Parquet tables it writes (``results``)."""

from tune_tl.store.storage import Location

__all__ = ["Location"]
