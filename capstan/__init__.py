"""Capstan: a Kubernetes operator that records and feeds real-time rooms."""
