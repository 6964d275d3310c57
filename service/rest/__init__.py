"""REST (FastAPI): the app (`app`) and the encoder of the core's results to JSON (`encode`)."""

from service.rest.app import OPTION_FIELDS, STATIC_DIR, create_app, options_from_fields

__all__ = ["OPTION_FIELDS", "STATIC_DIR", "create_app", "options_from_fields"]
