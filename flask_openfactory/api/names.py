"""Names the API's modules share: its config prefix, blueprint names and logger.

Blueprint names are part of the endpoints that access control, ``url_for``
and the runtime's start-on-request rules look for.
"""

from __future__ import annotations

import logging

log = logging.getLogger("flask_openfactory.api")  # one logger for the whole HTTP API

CONFIG_PREFIX = "OPENFACTORY_"
DEFAULT_MAX_BODY = 64 * 1024
API_BLUEPRINT = "openfactory"
UI_BLUEPRINT = "openfactory_ui"
METHODS_BLUEPRINT = "openfactory_methods"
