"""The course models alone, into each host's Ollama store (see ``gpulab plan`` for what moves).

    gpulab models fetch --inventory inventories/lab.py --store ~/gpulab-models   # once
    pyinfra inventories/lab.py deploy/models.py

With ``models_distribution: seeded`` and ``models_store: ~/gpulab-models`` in the inventory.
"""

from gpulab.deploys.models import course_models

course_models()
