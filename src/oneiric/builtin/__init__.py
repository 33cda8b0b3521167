"""Providers shipped with oneiric (documented in docs/builtins.md): ``cache`` (MemoryCache,
SqliteCache), ``heartbeat`` (Heartbeat), ``tasks`` (CacheStats, Echo, Sleep), ``events``
(LogEvents) and ``workflow`` (Workflow). Import the module you name in a factory path; nothing is
imported here, so naming one provider does not load the others."""
