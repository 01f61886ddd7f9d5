"""Testing an app the way the platform uses it: commands, published records, subscriptions.

``OpenFactoryTester`` starts an app's asset runtime, calls its methods as
another asset would (a ``<method>_CMD`` record on the app's log, executed by
the real dispatcher, answered by ``<method>_RESULT``), records everything
published on the app's key from the moment it started, and feeds other
assets' attribute updates into the app's subscriptions, waiting until they
were handled::

    from flask_openfactory.testing import OpenFactoryTester

    with OpenFactoryTester(create_app("testing")) as ofa:
        result = ofa.call("move_axis", x=10, y=20)
        assert result.status == "OK"
        ofa.assert_published("position_x", value=10.0)

The pytest plugin (``flask_openfactory.pytest_plugin``) gives the same object
as the ``ofa`` fixture. Made for the ``memory://`` transport (one process, the
testing config), it works on any transport: it only uses the runtime's
public operations and the transport's followers.
"""

from .matching import ANY as ANY  # kept importable from here, as before the split
from .records import AssetRecords
from .runtime_lookup import runtime_of
from .tester import DEFAULT_SENDER as DEFAULT_SENDER
from .tester import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .tester import NoResultError, OpenFactoryTester

__all__ = ["AssetRecords", "NoResultError", "OpenFactoryTester", "runtime_of"]
