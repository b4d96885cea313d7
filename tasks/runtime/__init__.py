"""Where work runs: Dask clusters, devices and precision, the allocator."""
