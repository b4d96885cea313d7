"""A LocalCluster of segflow's listens on loopback only, its dashboard included."""

import ipaddress
import os

import psutil

from segflow.tasks.runtime.cluster import dask_client


def test_local_cluster_listens_on_loopback_only():
    with dask_client(workers=1) as client:
        here = psutil.Process(os.getpid())
        listening = [
            conn.laddr
            for process in (here, *here.children(recursive=True))
            for conn in process.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        ]
        assert client.dashboard_link.startswith("http://127.0.0.1:")
    # scheduler and dashboard here; the nanny and the worker in their processes
    assert len(listening) >= 4
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening), listening
