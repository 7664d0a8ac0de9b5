"""What a host is, read through pyinfra facts: one module per source, parsers beside them.

Every fact is a thin ``FactBase`` subclass: ``command()`` prints something, ``process()`` hands
the lines to a pure ``parse_*`` function, so the unit tests feed the parsers real recorded
outputs without any host. Commands are written for ``sh`` (dash on Debian/Ubuntu), need no extra
packages, work without root, and always exit 0: pyinfra marks a host failed when a fact's
command fails, and "nvidia-smi is broken" or "lspci is missing" are facts to report, not
reasons to stop.

``model`` is the data they fill (also the recorded-facts file format); ``gather`` reads them all
into one ``HostFacts``.
"""
