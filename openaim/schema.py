"""Every table of the platform, gathered so that Alembic sees one schema."""

from inference import catalog, jobs, results, router, watcher  # noqa: F401  (registers the tables)
from openaim import audit  # noqa: F401
from openaim.db import Base
from viewer import feedback, reads, review_models, sessions, users  # noqa: F401

metadata = Base.metadata
