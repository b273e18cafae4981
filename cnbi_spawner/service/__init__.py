"""The hub-managed ``cnbi`` service: culler, catalog, health, metrics (and builds).

Entry point: ``cnbi-hub service`` (:mod:`cnbi_spawner.service.app`).
"""
