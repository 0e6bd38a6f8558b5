"""Every table of the platform, gathered so that Alembic sees one schema."""

from inference import catalog, jobs, results, router, study_index, watcher  # noqa: F401  (registers the tables)
from openaim import audit  # noqa: F401
from openaim.db import Base
from viewer.access import sessions, throttle, users  # noqa: F401
from viewer.feedback import records as feedback_records  # noqa: F401
from viewer.reading import reads  # noqa: F401
from viewer.review import records as review_records  # noqa: F401

metadata = Base.metadata
