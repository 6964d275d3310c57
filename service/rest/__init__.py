"""REST (FastAPI): the app (`app`), reading a request (`inputs`) and the encoder of the core's
results to JSON (`encode`)."""

from service.rest.app import STATIC_DIR, create_app
from service.rest.inputs import OPTION_FIELDS, options_from_fields

__all__ = ["OPTION_FIELDS", "STATIC_DIR", "create_app", "options_from_fields"]
