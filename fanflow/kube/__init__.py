"""Everything Kubernetes: the Argo Workflows plan and its rendering (``plan``, ``render``,
``conditions``), KServe manifests (``kserve``), the access a workflow's service account
needs (``rbac``), names and manifest helpers (``names``, ``manifests``), and what a pod runs
(``pod``, which keeps a run's records in its artifact store: ``records``).

Nothing outside this package imports it but the command line (``fanflow.cli.kube``)."""
