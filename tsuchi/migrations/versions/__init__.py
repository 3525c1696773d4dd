"""tsuchi's Alembic revisions, oldest first (``rNNNN_*.py``; each names the one it revises)."""
