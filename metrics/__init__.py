"""qualmet's built-in metric plugins, one module per metric; installed as ``qualmet.builtin_metrics``.

Each module uses only the public plugin API (``import qualmet``, ``@qualmet.metric``, the context it is
given, and the box helpers in ``qualmet.boxes``), as a user's plugin would (tested).
"""
