"""IntentOps Kubeflow pipelines: composition of the components in components/, compiled YAML committed here."""
