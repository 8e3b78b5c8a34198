"""Sources turn the outside (a manifest directory, later the Kubernetes API) into snapshots."""
