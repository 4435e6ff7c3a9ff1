"""Helpers the tests share: the test stack's paths, ports and environment (`stack`), tenants
(`tenants`), campaigns, runs and the ledger (`runs`), and waiting on conditions (`waiting`).

Test modules import from here, never from `conftest` or from one another.
"""
