"""The asset runtime of one app in one process: state, lifecycle, commands (see ``core``)."""

from .announcement import standard_attributes
from .core import AssetRuntime
from .errors import CallPending, ResultNotRecorded, RuntimeStopped, StaleRead
from .method_results import MethodResults
from .processes import gunicorn_deployment, process_start_time
from .settings import (
    ASSET_TYPE,
    AVAILABLE,
    CALL_WINDOW_MARGIN,
    CANDIDATE_GRACE,
    DEPLOYMENT_LOCK_SECONDS,
    STANDALONE,
    START_CHECK_SECONDS,
    RuntimeSettings,
)
from .state import FollowerState

__all__ = [
    "ASSET_TYPE",
    "AVAILABLE",
    "CALL_WINDOW_MARGIN",
    "CANDIDATE_GRACE",
    "DEPLOYMENT_LOCK_SECONDS",
    "STANDALONE",
    "START_CHECK_SECONDS",
    "AssetRuntime",
    "CallPending",
    "FollowerState",
    "MethodResults",
    "ResultNotRecorded",
    "RuntimeSettings",
    "RuntimeStopped",
    "StaleRead",
    "gunicorn_deployment",
    "process_start_time",
    "standard_attributes",
]
