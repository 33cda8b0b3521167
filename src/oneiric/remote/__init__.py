"""Remote manifests (SPEC §9): TUF-verified fleet steering.

- ``manifest``: manifest targets -> validated components and selections (pure);
- ``client`` / ``fetch``: python-tuf ngclient and its transport (worker threads only);
- ``artifacts``: wheels unpacked under the state dir and put on the import path;
- ``apply`` / ``sync`` / ``store``: the host loop, the one-step apply, fail-static persistence;
- ``check``: ``oneiricd --check`` of ``[remote]``;
- ``publish``: the publisher side behind ``oneiricctl manifest ...``.

Only ``client``, ``fetch`` and ``publish`` import python-tuf; they are imported lazily.
"""
