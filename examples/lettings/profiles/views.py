"""List profiles and show one, looked up by username."""

from django.shortcuts import get_object_or_404, render

from .models import Profile


def index(request):
    """List every profile by username."""
    profiles = Profile.objects.select_related("user").order_by("user__username")
    return render(request, "profiles/index.html", {"profiles": profiles})


def profile(request, username):
    """Show one user's profile; 404 for an unknown username."""
    item = get_object_or_404(Profile.objects.select_related("user"), user__username=username)
    return render(request, "profiles/profile.html", {"profile": item})
