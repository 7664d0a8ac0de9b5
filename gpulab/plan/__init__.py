"""Pure decisions over a host's facts and settings: what it gets, and why.

``host`` makes the ``HostPlan`` every deploy reads; ``driver``, ``ollama``, ``vllm`` and
``apt_sources`` hold the rules the deploys apply (package names, scripts, file edits).
Nothing here imports pyinfra or touches a host.
"""
