from django.urls import include, path

urlpatterns = [
    path("events/", include("events.urls")),
    path("", include("project.demo.urls")),
]
