from django.urls import path

from . import views

urlpatterns = [
    path("events/stream/", views.stream),
    path("events/poll/", views.poll),
    path("", views.index),
]
