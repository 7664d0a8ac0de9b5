"""The machines of the repository's Vagrantfile, as ``vagrant ssh-config`` reports them.

    vagrant up --provider libvirt
    pyinfra inventories/vagrant.py deploy/gpu_host.py
    gpulab verify inventories/vagrant.py

One group, ``vagrant``: every running machine, reached as Vagrant reaches it (its address,
user and key; sudo for a non-root user). Vagrant makes new guests under old addresses, so host
keys are not checked here. Add rehearsal data (an ``apt_proxy``, mirrors) in
``group_data/vagrant.py`` in the folder you run pyinfra and gpulab from.
"""

from pathlib import Path

from gpulab.lab.vagrant import vagrant_hosts

vagrant = vagrant_hosts(Path(__file__).resolve().parents[1])
