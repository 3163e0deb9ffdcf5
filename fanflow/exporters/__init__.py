"""Exporters: the workflow drawn (Mermaid, DOT, PNG). Kubernetes manifests are ``fanflow.kube``'s."""
