from django.conf import settings
from django.urls import URLPattern, path, re_path

from . import views

app_name = "demo"

urlpatterns: list[URLPattern] = [
    path("", views.board, name="board"),
    path("api/board/", views.board_data, name="board-data"),
    path("api/me/", views.private_data, name="private-data"),
    path("fragments/board/", views.board_fragment, name="board-fragment"),
    path("trackers/<slug:slug>/", views.change, name="change"),
    path("join/", views.join, name="join"),
    path("leave/", views.leave, name="leave"),
    path("favicon.ico", views.favicon),
]

if settings.DEBUG:
    # Development only (`make run` has no nginx in front): serve the apps' static
    # files. The pattern is relative to the script prefix (uvicorn --root-path),
    # like STATIC_URL ("static/"); in production nginx serves STATIC_ROOT.
    urlpatterns.append(re_path(r"^static/(?P<path>.*)$", views.static_file))
