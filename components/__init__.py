"""IntentOps Kubeflow components: one folder per pipeline stage (component.py + README.md), see README.md."""
