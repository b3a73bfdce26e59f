"""List lettings and show one."""

from django.shortcuts import get_object_or_404, render

from .models import Letting


def index(request):
    """List every letting, newest last."""
    lettings = Letting.objects.select_related("address").order_by("id")
    return render(request, "lettings/index.html", {"lettings": lettings})


def letting(request, letting_id):
    """Show one letting and its address; 404 when it does not exist."""
    item = get_object_or_404(Letting.objects.select_related("address"), id=letting_id)
    return render(request, "lettings/letting.html", {"letting": item, "address": item.address})
