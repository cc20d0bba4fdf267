"""The editors' area under ``/admin``: log in, see, edit, preview, test and approve issues.

Sessions and forms in :mod:`.session`, logging in in :mod:`.login`, the issues in
:mod:`.issues`, previews and test sends in :mod:`.preview`, the route table in :mod:`.routes`.
"""

from digest.web.admin.routes import admin_routes
from digest.web.admin.session import FRAME_PREFIX, PREFIX, SESSION_COOKIE, _session_hash

__all__ = ["FRAME_PREFIX", "PREFIX", "SESSION_COOKIE", "_session_hash", "admin_routes"]
