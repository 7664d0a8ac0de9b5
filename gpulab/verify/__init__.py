"""``gpulab verify``: a pytest-testinfra suite that proves each host of the room ready.

    gpulab verify inventories/lab.py [--limit HOST] [--json] [--html room.html]
    pytest --pyargs gpulab.verify --inventory inventories/lab.py -n 4 --dist loadgroup

Hosts and their SSH data come from the pyinfra inventory the deploy used; what each host
should have comes from the same validated settings and ``HostPlan``. ``checks`` holds the pure
verdicts, ``probes`` what each check reads through testinfra, ``plugin`` the pytest side and
``report`` the table, JSON and HTML page.
"""
