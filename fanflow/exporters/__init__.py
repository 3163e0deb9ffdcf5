"""Exporters: the workflow drawn (Mermaid, DOT) or translated for other engines (Argo, KServe)."""
