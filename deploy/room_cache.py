"""The room cache on the hosts given (the inventory group ``room_cache``): apt-cacher-ng and
nginx, filled once with the Ollama release, cuda-keyring and the course models.

    gpulab models fetch --inventory inventories/lab.py --store ~/gpulab-models   # once
    pyinfra inventories/lab.py deploy/room_cache.py --limit room_cache

Then every host with ``room_cache: 10.0.0.5`` in its data takes those from the cache.
"""

from gpulab.deploys.room_cache import room_cache

room_cache()
