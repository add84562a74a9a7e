from django.urls import path
from django.views.generic import TemplateView

app_name = "demo"

urlpatterns: list = [
    path("", TemplateView.as_view(template_name="demo/placeholder.html"), name="board"),
]
