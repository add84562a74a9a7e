from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    # GET /events/?channel=<topic>
    path("events/", include("django_eventstream.urls")),
    path("", lambda request: HttpResponse("eventstream baseline\n")),
]
