"""The route table of the editors' area: which endpoint answers which path and method.

Every route is :func:`~digest.web.admin.session.guarded` but the login form and ``GET
/admin/logout``, which only redirects; the readers' pages are for admins only.
"""

from __future__ import annotations

from functools import partial

from starlette.routing import Route

from digest.web.admin.insight import insight_routes
from digest.web.admin.issues import approve, edit_issue, overview, show_issue
from digest.web.admin.login import LOGIN_DELAY, login, logout, show_login, to_overview
from digest.web.admin.preview import preview_frame, send_test, show_preview, show_test
from digest.web.admin.readers import reader_routes
from digest.web.admin.session import FRAME_PREFIX, PREFIX, guarded
from digest.web.routing import page

__all__ = ["admin_routes"]


def admin_routes(*, login_delay: float = LOGIN_DELAY) -> list[Route]:
    """The routes of the editors' area; a failed login is answered ``login_delay`` late."""
    return [
        page(
            f"{PREFIX}/login",
            show=show_login,
            change=partial(login, delay=login_delay),
            name="admin_login",
        ),
        page(f"{PREFIX}/logout", show=to_overview, change=guarded(logout), name="admin_logout"),
        page(f"{PREFIX}/", show=guarded(overview), name="admin"),
        # Before the issues' paths, which would take /admin/readers/<id> for a week.
        *reader_routes(),
        *insight_routes(),  # before /{newsletter}/{week}
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}",
            show=guarded(show_issue),
            change=guarded(edit_issue),
            name="admin_issue",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/approve",
            show=guarded(show_issue),
            change=guarded(approve),
            name="admin_approve",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/preview",
            show=guarded(show_preview),
            name="admin_preview",
        ),
        page(
            f"{FRAME_PREFIX}{{newsletter}}/{{week}}",
            show=guarded(preview_frame),
            name="admin_frame",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/test",
            show=guarded(show_test),
            change=guarded(send_test),
            name="admin_test",
        ),
    ]
