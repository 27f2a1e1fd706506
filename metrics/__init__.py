"""qualmet's built-in metric plugins, one module per metric; installed as ``qualmet.builtin_metrics``.

Each module uses only the public plugin API (``import qualmet`` and ``@qualmet.metric``).
"""
