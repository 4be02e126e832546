"""Model registry on MLflow: tracking store (store), lineage tags (lineage), model cards (card),
promotion and rollback on aliases (aliases), references and loading (resolve), export (export)."""
