"""Model registry on MLflow: tracking store, lineage tags, registered model versions."""
