"""ClassCast service: the composition root (relay, API, pages, CLI)."""
