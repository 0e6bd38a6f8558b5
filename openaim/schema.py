"""Every table of the platform, gathered so that Alembic sees one schema."""

from openaim.db import Base
from viewer import audit, sessions, users  # noqa: F401  (registers the tables)

metadata = Base.metadata
