"""Catalog: the index of recorded lessons (see issue: catalog)."""
